--- Pure text helpers for the ghost-text path: position encodings, what "one word" and
--- "one line" of a suggestion are, and how a server item maps onto the cursor line.
--- No editor state here (only plain Lua), so test/unit.lua checks it all directly.

local M = {}

--- Byte length of the UTF-8 sequence that starts with byte `b`.
local function seq_len(b)
  if b < 0x80 then
    return 1
  elseif b >= 0xF0 then
    return 4
  elseif b >= 0xE0 then
    return 3
  elseif b >= 0xC0 then
    return 2
  end
  return 1 -- a stray continuation byte counts as one unit, as Neovim does
end

--- Code units of one character of `len` UTF-8 bytes in `encoding`.
local function units(len, encoding)
  if encoding == 'utf-8' then
    return len
  elseif encoding == 'utf-32' then
    return 1
  end
  return len == 4 and 2 or 1 -- utf-16: astral characters take a surrogate pair
end

--- LSP `character` of byte column `col` (0-based) in `line`.
---@param line string
---@param col integer
---@param encoding string 'utf-8'|'utf-16'|'utf-32'
---@return integer
function M.char_index(line, col, encoding)
  if encoding == 'utf-8' then
    return math.min(col, #line)
  end
  local i, n = 1, 0
  col = math.min(col, #line)
  while i <= col do
    local len = seq_len(line:byte(i))
    n = n + units(len, encoding)
    i = i + len
  end
  return n
end

--- Byte column (0-based) of LSP `character` in `line`. Past the end clamps to the end; inside
--- a character (half a surrogate pair) rounds up to the character's end.
---@param line string
---@param character integer
---@param encoding string
---@return integer
function M.byte_col(line, character, encoding)
  if encoding == 'utf-8' then
    return math.max(0, math.min(character, #line))
  end
  local i, n = 1, 0
  while i <= #line and n < character do
    local len = seq_len(line:byte(i))
    n = n + units(len, encoding)
    i = i + len
  end
  return math.min(i - 1, #line)
end

--- Lines of `text` split on '\n' (a '\r' before it is dropped).
---@param text string
---@return string[]
function M.lines(text)
  local out = {}
  for s in (text .. '\n'):gmatch('(.-)\r?\n') do
    out[#out + 1] = s
  end
  return out
end

--- A byte that belongs to a word: ASCII letters, digits, '_' and every byte of a multibyte
--- character (so accepting a word never splits a character).
local function is_word_byte(b)
  return b >= 0x80 or (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95
end

--- The part of `text` that "accept one word" inserts: leading blanks, then either a run of
--- word characters or a run of punctuation. A suggestion that starts with a line break
--- accepts the break and the next line's indentation.
---@param text string
---@return string
function M.next_word(text)
  if text == '' then
    return ''
  end
  local nl = text:match('^\r?\n[ \t]*')
  if nl then
    return nl
  end
  local blanks = text:match('^[ \t]*')
  local i = #blanks + 1
  local b = text:byte(i)
  if b == nil or b == 10 or b == 13 then
    return blanks
  end
  local word = is_word_byte(b)
  while i <= #text do
    b = text:byte(i)
    if b == 10 or b == 13 or b == 32 or b == 9 or is_word_byte(b) ~= word then
      break
    end
    i = i + 1
  end
  return text:sub(1, i - 1)
end

--- The part of `text` that "accept one line" inserts: the rest of the current line, or, when
--- the suggestion starts with a line break, the break and the whole next line.
---@param text string
---@return string
function M.next_line(text)
  local first = text:find('\n', 1, true)
  if first == nil then
    return text
  end
  if first > 1 then
    local chunk = text:sub(1, first - 1)
    return (chunk:gsub('\r$', ''))
  end
  local second = text:find('\n', 2, true)
  if second == nil then
    return text
  end
  return (text:sub(1, second - 1):gsub('\r$', ''))
end

--- The text of an `InlineCompletionItem.insertText` (a string or a snippet StringValue; a
--- snippet's tabstops and placeholders are reduced to their text).
---@param insert string|table
---@return string
function M.insert_text(insert)
  if type(insert) == 'string' then
    return insert
  end
  if type(insert) ~= 'table' or type(insert.value) ~= 'string' then
    return ''
  end
  local s = insert.value
  s = s:gsub('%${%d+:([^}]*)}', '%1'):gsub('%${%d+}', ''):gsub('%$%d+', ''):gsub('\\([%$}\\])', '%1')
  return s
end

---@class copilot_lsp.Ghost
---@field text string what is still to be inserted at the cursor
---@field replace integer bytes after the cursor that accepting all of it replaces

--- Map a server item onto the cursor line. `line` is the cursor line, `col` the cursor byte
--- column, `row` its 0-based line number. Returns nil when the item does not fit: its range is
--- elsewhere, or the text it replaces before the cursor is not what the buffer holds.
---@param item table lsp.InlineCompletionItem
---@param row integer
---@param line string
---@param col integer
---@param encoding string
---@return copilot_lsp.Ghost?
function M.ghost(item, row, line, col, encoding)
  local text = M.insert_text(item.insertText)
  local replace = 0
  local range = item.range
  if type(range) == 'table' and range.start and range['end'] then
    if range.start.line ~= row then
      return nil
    end
    local start_col = M.byte_col(line, range.start.character, encoding)
    if start_col > col then
      return nil
    end
    local typed = line:sub(start_col + 1, col)
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    text = text:sub(#typed + 1)
    if range['end'].line == row then
      replace = math.max(0, M.byte_col(line, range['end'].character, encoding) - col)
    end
  end
  if text == '' then
    return nil
  end
  return { text = text, replace = replace }
end

--- After the user typed `typed` at the ghost's anchor: the ghost that remains, or nil when
--- the typing diverged from the suggestion (or used it all up).
---@param ghost copilot_lsp.Ghost
---@param typed string
---@return copilot_lsp.Ghost?
function M.type_through(ghost, typed)
  if typed == '' or ghost.text:sub(1, #typed) ~= typed or #typed >= #ghost.text then
    return nil
  end
  return { text = ghost.text:sub(#typed + 1), replace = ghost.replace }
end

return M
