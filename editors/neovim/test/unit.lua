-- Unit tests of the pure helpers (text.lua, config.lua). Run:
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=editors/neovim' -l editors/neovim/test/unit.lua

local text = require('copilot_lsp.text')
local config = require('copilot_lsp.config')

local passed, failed = 0, 0

local function eq(got, want, what)
  if vim.deep_equal(got, want) then
    passed = passed + 1
  else
    failed = failed + 1
    io.stdout:write(('  FAIL %s: got %s, want %s\n'):format(what, vim.inspect(got), vim.inspect(want)))
  end
end

local function raises(f, pattern, what)
  local ok, err = pcall(f)
  eq(not ok and tostring(err):find(pattern) ~= nil, true, what .. ' (error: ' .. tostring(err) .. ')')
end

-- Position encodings over multibyte text: 'é' 2 bytes, '—' 3 bytes, '🐍' 4 bytes (2 UTF-16 units).
local line = 'é—🐍x'
eq(#line, 10, 'byte length of the sample')
eq(text.char_index(line, 0, 'utf-16'), 0, 'utf-16 at 0')
eq(text.char_index(line, 2, 'utf-16'), 1, 'utf-16 after é')
eq(text.char_index(line, 5, 'utf-16'), 2, 'utf-16 after —')
eq(text.char_index(line, 9, 'utf-16'), 4, 'utf-16 after 🐍 (surrogate pair)')
eq(text.char_index(line, 10, 'utf-16'), 5, 'utf-16 at end')
eq(text.char_index(line, 9, 'utf-32'), 3, 'utf-32 after 🐍')
eq(text.char_index(line, 9, 'utf-8'), 9, 'utf-8 is bytes')
eq(text.char_index(line, 99, 'utf-16'), 5, 'past the end clamps')
for _, enc in ipairs({ 'utf-8', 'utf-16', 'utf-32' }) do
  for _, col in ipairs({ 0, 2, 5, 9, 10 }) do
    eq(text.byte_col(line, text.char_index(line, col, enc), enc), col, ('byte_col inverts char_index (%s, %d)'):format(enc, col))
  end
end
eq(text.byte_col(line, 3, 'utf-16'), 9, 'half a surrogate pair rounds up to the character end')
eq(text.byte_col(line, 42, 'utf-16'), 10, 'character past the end clamps')
eq(text.byte_col('', 3, 'utf-16'), 0, 'empty line')

-- Lines.
eq(text.lines('a\nb'), { 'a', 'b' }, 'lines')
eq(text.lines('a\r\nb\n'), { 'a', 'b', '' }, 'lines with CRLF and a trailing break')
eq(text.lines(''), { '' }, 'lines of empty text')

-- One word.
eq(text.next_word('foo(bar)'), 'foo', 'word run')
eq(text.next_word('  foo bar'), '  foo', 'leading blanks then a word')
eq(text.next_word('(bar)'), '(', 'punctuation run')
eq(text.next_word('== 1'), '==', 'punctuation run of two')
eq(text.next_word('héllo wörld'), 'héllo', 'multibyte letters stay whole')
eq(text.next_word('🐍🐍 x'), '🐍🐍', 'emoji count as word bytes, never split')
eq(text.next_word('\n    return x'), '\n    ', 'a line break takes the next indentation')
eq(text.next_word('   \nx'), '   ', 'trailing blanks before a break')
eq(text.next_word(''), '', 'empty')

-- One line.
eq(text.next_line('a + b\n    return c'), 'a + b', 'rest of the current line')
eq(text.next_line('\n    return c\nmore'), '\n    return c', 'a leading break takes the next line')
eq(text.next_line('single'), 'single', 'no break: everything')
eq(text.next_line('\nlast'), '\nlast', 'break then the last line')

-- insertText forms.
eq(text.insert_text('plain'), 'plain', 'string insertText')
eq(text.insert_text({ kind = 'snippet', value = 'f(${1:x}, $2)$0' }), 'f(x, )', 'snippet reduced to text')
eq(text.insert_text(vim.NIL), '', 'null insertText')

-- Mapping an item onto the cursor line (utf-16 ranges over multibyte text).
local cur = '    s = "é🐍" + na' -- cursor at the end
local col = #cur
local nch = text.char_index(cur, col, 'utf-16')
eq(text.ghost({ insertText = 'me\n    return s' }, 3, cur, col, 'utf-16'), { text = 'me\n    return s', replace = 0 }, 'no range: insert at the cursor')
eq(
  text.ghost({
    insertText = 'name)',
    range = { start = { line = 3, character = nch - 2 }, ['end'] = { line = 3, character = nch } },
  }, 3, cur, col, 'utf-16'),
  { text = 'me)', replace = 0 },
  'a range starting before the cursor skips what is typed'
)
local with_suffix = cur .. ')'
eq(
  text.ghost({
    insertText = 'name)',
    range = { start = { line = 3, character = nch - 2 }, ['end'] = { line = 3, character = nch + 1 } },
  }, 3, with_suffix, col, 'utf-16'),
  { text = 'me)', replace = 1 },
  'a range ending after the cursor replaces the auto-closed bracket'
)
eq(
  text.ghost({
    insertText = 'xyz',
    range = { start = { line = 3, character = nch - 2 }, ['end'] = { line = 3, character = nch } },
  }, 3, cur, col, 'utf-16'),
  nil,
  'an item that contradicts the typed text is dropped'
)
eq(text.ghost({ insertText = 'x', range = { start = { line = 2, character = 0 }, ['end'] = { line = 2, character = 0 } } }, 3, cur, col, 'utf-16'), nil, 'an item for another line is dropped')
eq(text.ghost({ insertText = '' }, 3, cur, col, 'utf-16'), nil, 'empty text is no suggestion')
eq(
  text.ghost({ insertText = 'é🐍" + x', range = { start = { line = 0, character = 9 }, ['end'] = { line = 0, character = 9 } } }, 0, '    s = "', 9, 'utf-8'),
  { text = 'é🐍" + x', replace = 0 },
  'utf-8 ranges are byte offsets'
)

-- Typing through a suggestion.
local g = { text = 'return x', replace = 0 }
eq(text.type_through(g, 'ret'), { text = 'urn x', replace = 0 }, 'typed a prefix')
eq(text.type_through(g, 'rex'), nil, 'typed something else')
eq(text.type_through(g, 'return x'), nil, 'typed all of it')

-- Options.
local o = config.resolve({ settings = { model = '/m', temperature = 0 }, keys = { accept_word = false } })
eq(o.keys.accept, '<Tab>', 'default accept key kept')
eq(o.keys.accept_word, false, 'a key can be turned off')
eq(config.server_options(o), { completionFallback = false, model = '/m', temperature = 0 }, 'server options are the flat settings')
eq(config.server_options(config.resolve({ settings = { completionFallback = true } })).completionFallback, true, 'fallback can be turned on')
eq(config.cmd(config.resolve({})), { 'copilot-lsp', '--stdio' }, 'default command')
eq(config.cmd(config.resolve({ server_path = '/bin/c', log_file = '/tmp/l' })), { '/bin/c', '--log-file', '/tmp/l', '--stdio' }, 'log file')
eq(config.cmd(config.resolve({ cmd = { 'x', 'serve' } })), { 'x', 'serve' }, 'explicit cmd is used as is')
eq(config.resolve({ filetypes = { 'lua' } }).filetypes, { 'lua' }, 'lists replace')
raises(function()
  config.resolve({ builtin = 'yes' })
end, 'builtin', 'bad builtin rejected')
raises(function()
  config.resolve({ keys = { accept = 1 } })
end, 'keys.accept', 'bad key rejected')
raises(function()
  config.resolve({ settings = 'x' })
end, 'settings', 'bad settings rejected')
eq(config.use_builtin(config.resolve({ builtin = false })), false, 'builtin can be turned off')
if vim.fn.has('nvim-0.12') == 0 then
  eq(config.use_builtin(config.resolve({ builtin = true })), false, 'no built-in before 0.12, even when asked')
end

io.stdout:write(('neovim unit: %d passed, %d failed\n'):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
