--- Ghost text for Neovim 0.10 and 0.11, which have no `vim.lsp.inline_completion`: requests
--- `textDocument/inlineCompletion` on each change (cancelling the previous request), drops
--- answers for a buffer or cursor that has moved on, draws the suggestion with extmarks
--- (inline virtual text, then virtual lines) and accepts all of it, one word or one line.
--- It tells the server what became of each suggestion, for its local event log (`copilot-lsp
--- stats`): `textDocument/didShowCompletion` when one is drawn, the item's command
--- (`workspace/executeCommand`) when all of it is accepted, and
--- `textDocument/didPartiallyAcceptCompletion` (in the client's position units) for a word or
--- a line.

local text = require('copilot_lsp.text')

local api = vim.api
local M = {}

local ns = api.nvim_create_namespace('copilot_lsp.ghost')
local has_011 = vim.fn.has('nvim-0.11') == 1
local TRIGGER_INVOKED, TRIGGER_AUTOMATIC = 1, 2
local REQUEST_CANCELLED, CONTENT_MODIFIED = -32800, -32801

M.enabled = true
M.hl_group = 'CopilotLspGhost'

--- Counters, for `:CopilotLsp status` and the tests.
M.stats = { requests = 0, cancelled = 0, dropped = 0, shown = 0, accepted = 0, errors = 0, reported = 0 }

--- The last answer that reached the buffer: { items = ..., row = ..., col = ..., line = ... }.
M.last = nil

---@class copilot_lsp.Anchor
---@field tick integer b:changedtick
---@field row integer 0-based
---@field col integer byte column

---@class copilot_lsp.Shown : copilot_lsp.Ghost, copilot_lsp.Anchor
---@field after string the cursor line after the cursor when shown (to detect typing through)
---@field item? table the server's item (echoed back in the outcome notifications)
---@field full? string the item's whole text
---@field done? integer bytes of `full` already in the buffer (accepted or typed)

---@class copilot_lsp.BufState
---@field client_id integer
---@field seq integer
---@field pending? { id: integer, anchor: copilot_lsp.Anchor, seq: integer }
---@field ghost? copilot_lsp.Shown
---@field scheduled boolean
---@field keys string[]

---@type table<integer, copilot_lsp.BufState>
local states = {}

-- Neovim 0.11 made client methods `client:method()`; 0.10 has `client.method()`.
local function request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function cancel_request(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

local function in_insert()
  return api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

---@return copilot_lsp.Anchor?
local function anchor(bufnr)
  if api.nvim_get_current_buf() ~= bufnr then
    return nil
  end
  local cursor = api.nvim_win_get_cursor(0)
  return { tick = api.nvim_buf_get_changedtick(bufnr), row = cursor[1] - 1, col = cursor[2] }
end

local function same(a, b)
  return a ~= nil and b ~= nil and a.tick == b.tick and a.row == b.row and a.col == b.col
end

local function line_at(bufnr, row)
  return api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
end

local function cancel(bufnr)
  local st = states[bufnr]
  if not st or not st.pending then
    return
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  if client then
    cancel_request(client, st.pending.id)
  end
  st.pending = nil
  -- An answer the server sent before it saw the cancel is still dropped when it arrives.
  st.seq = st.seq + 1
  M.stats.cancelled = M.stats.cancelled + 1
end

local function render(bufnr)
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  local g = states[bufnr] and states[bufnr].ghost
  if not g then
    return
  end
  local lines = vim.split(g.text, '\n', { plain = true })
  local opts = { hl_mode = 'combine', virt_text_pos = 'inline' }
  if lines[1] ~= '' then
    opts.virt_text = { { lines[1], M.hl_group } }
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { lines[i], M.hl_group } }
    end
  end
  api.nvim_buf_set_extmark(bufnr, ns, g.row, g.col, opts)
end

local function clear(bufnr)
  if states[bufnr] then
    states[bufnr].ghost = nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

---@param g copilot_lsp.Ghost
---@param at copilot_lsp.Anchor
local function show(bufnr, g, at)
  local line = line_at(bufnr, at.row)
  states[bufnr].ghost = {
    text = g.text,
    replace = g.replace,
    tick = at.tick,
    row = at.row,
    col = at.col,
    after = line:sub(at.col + 1),
    item = g.item,
    full = g.full,
    done = g.done,
  }
  render(bufnr)
end

--- Tell the server what became of the shown suggestion `g`: 'shown', 'all' (the item's
--- command, as clients with built-in inline completion run it) or 'partial' (`g.done` bytes
--- of the item's text are in the buffer, sent in the client's position units).
---@param g copilot_lsp.Shown
---@param what 'shown'|'all'|'partial'
local function report(bufnr, g, what)
  local st = states[bufnr]
  local client = st and vim.lsp.get_client_by_id(st.client_id)
  if not client or not g or type(g.item) ~= 'table' then
    return
  end
  if what == 'shown' then
    notify(client, 'textDocument/didShowCompletion', { item = g.item })
  elseif what == 'all' then
    local cmd = g.item.command
    if type(cmd) ~= 'table' or type(cmd.command) ~= 'string' then
      return
    end
    request(client, 'workspace/executeCommand', { command = cmd.command, arguments = cmd.arguments },
      function() end, bufnr)
  else
    local accepted = g.full:sub(1, g.done)
    notify(client, 'textDocument/didPartiallyAcceptCompletion', {
      item = g.item,
      acceptedLength = text.char_index(accepted, #accepted, client.offset_encoding),
    })
  end
  M.stats.reported = M.stats.reported + 1
end

--- Whether a suggestion is shown at the cursor of `bufnr`.
function M.visible(bufnr)
  local st = states[bufnr]
  return st ~= nil and st.ghost ~= nil and same(st.ghost, anchor(bufnr))
end

--- The suggestion text still to be inserted at the cursor, or nil.
function M.current(bufnr)
  local st = states[bufnr]
  return st and st.ghost and st.ghost.text or nil
end

local function on_result(bufnr, seq, at, err, result)
  local st = states[bufnr]
  if not st then
    return
  end
  if st.pending and st.pending.seq == seq then
    st.pending = nil
  end
  if st.seq ~= seq then
    M.stats.dropped = M.stats.dropped + 1 -- a newer request superseded this one
    return
  end
  if err then
    if err.code ~= REQUEST_CANCELLED and err.code ~= CONTENT_MODIFIED then
      M.stats.errors = M.stats.errors + 1
      vim.lsp.log.warn('copilot_lsp: inlineCompletion failed:', err)
    end
    return
  end
  if not in_insert() or not same(at, anchor(bufnr)) then
    M.stats.dropped = M.stats.dropped + 1 -- the buffer or the cursor changed meanwhile
    return
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  local encoding = client and client.offset_encoding or 'utf-16'
  local items = type(result) == 'table' and (result.items or result) or {}
  local line = line_at(bufnr, at.row)
  M.last = { items = items, row = at.row, col = at.col, line = line }
  for _, item in ipairs(items) do
    local g = text.ghost(item, at.row, line, at.col, encoding)
    if g then
      g.text = g.text:gsub('\r\n', '\n')
      g.item = item
      g.full = text.insert_text(item.insertText):gsub('\r\n', '\n')
      g.done = math.max(0, #g.full - #g.text)
      show(bufnr, g, at)
      M.stats.shown = M.stats.shown + 1
      report(bufnr, states[bufnr].ghost, 'shown')
      return
    end
  end
  clear(bufnr)
end

--- Ask the server for a suggestion at the cursor (cancelling the request in flight).
---@param bufnr integer
---@param kind? integer 1 invoked (a key), 2 automatic (typing)
function M.request(bufnr, kind)
  kind = kind or TRIGGER_AUTOMATIC
  local st = states[bufnr]
  if not st or not M.enabled or not in_insert() then
    return
  end
  local at = anchor(bufnr)
  if not at then
    return
  end
  if kind == TRIGGER_AUTOMATIC and (same(st.ghost, at) or (st.pending and same(st.pending.anchor, at))) then
    return -- already shown or already asked for this exact state
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  if not client then
    return
  end
  cancel(bufnr)
  local line = line_at(bufnr, at.row)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = at.row, character = text.char_index(line, at.col, client.offset_encoding) },
    context = { triggerKind = kind },
  }
  st.seq = st.seq + 1
  local seq = st.seq
  local ok, id = request(client, 'textDocument/inlineCompletion', params, function(err, result)
    on_result(bufnr, seq, at, err, result)
  end, bufnr)
  if ok and id then
    st.pending = { id = id, anchor = at, seq = seq }
    M.stats.requests = M.stats.requests + 1
  end
end

local function schedule_request(bufnr)
  local st = states[bufnr]
  if not st or st.scheduled or not M.enabled then
    return
  end
  st.scheduled = true
  vim.schedule(function()
    if states[bufnr] ~= st then
      return
    end
    st.scheduled = false
    if api.nvim_get_current_buf() == bufnr and in_insert() then
      M.request(bufnr, TRIGGER_AUTOMATIC)
    end
  end)
end

local function on_text_changed(bufnr)
  local st = states[bufnr]
  local g = st and st.ghost
  local at = anchor(bufnr)
  if not st or not at then
    return
  end
  if g then
    if same(g, at) then
      return -- our own accept, already redrawn
    end
    -- Typing what the suggestion says keeps the rest on screen, without a new request.
    if at.row == g.row and at.col > g.col then
      local line = line_at(bufnr, at.row)
      if line:sub(at.col + 1) == g.after then
        local typed = line:sub(g.col + 1, at.col)
        local rest = text.type_through(g, typed)
        if rest then
          -- Still the same item: the server sees the typed text when it settles it.
          rest.item, rest.full, rest.done = g.item, g.full, (g.done or 0) + #typed
          cancel(bufnr)
          show(bufnr, rest, at)
          return
        end
      end
    end
    clear(bufnr)
  end
  schedule_request(bufnr)
end

local function on_cursor_moved(bufnr)
  local st = states[bufnr]
  local at = anchor(bufnr)
  if not st or not at then
    return
  end
  -- A text change is handled by TextChangedI; here only a cursor that moved by itself.
  if st.ghost and st.ghost.tick == at.tick and not same(st.ghost, at) then
    clear(bufnr)
  end
  if not st.ghost then
    schedule_request(bufnr)
  end
end

--- Accept the shown suggestion: 'all', 'word' or 'line'. Returns false when none is shown.
---@param bufnr? integer
---@param what? 'all'|'word'|'line'
---@return boolean
function M.accept(bufnr, what)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  what = what or 'all'
  local st = states[bufnr]
  local g = st and st.ghost
  local at = anchor(bufnr)
  if not g or not same(g, at) then
    if g then
      clear(bufnr)
    end
    return false
  end
  local chunk = g.text
  if what == 'word' then
    chunk = text.next_word(g.text)
  elseif what == 'line' then
    chunk = text.next_line(g.text)
  end
  if chunk == '' then
    chunk = g.text
  end
  local all = #chunk >= #g.text
  local lines = vim.split(chunk, '\n', { plain = true })
  local line = line_at(bufnr, g.row)
  local end_col = math.min(#line, g.col + (all and g.replace or 0))
  cancel(bufnr)
  api.nvim_buf_set_text(bufnr, g.row, g.col, g.row, end_col, lines)
  local row = g.row + #lines - 1
  local col = (#lines == 1 and g.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  M.stats.accepted = M.stats.accepted + 1
  if all then
    clear(bufnr)
    report(bufnr, g, 'all')
  else
    show(bufnr, {
      text = g.text:sub(#chunk + 1),
      replace = g.replace,
      item = g.item,
      full = g.full,
      done = (g.done or 0) + #chunk,
    }, {
      tick = api.nvim_buf_get_changedtick(bufnr),
      row = row,
      col = col,
    })
    report(bufnr, states[bufnr].ghost, 'partial')
  end
  return true
end

--- Hide the suggestion and cancel the request in flight. Returns false when none is shown.
function M.dismiss(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local shown = M.visible(bufnr)
  cancel(bufnr)
  clear(bufnr)
  return shown
end

--- Ask for a suggestion now (triggerKind Invoked), even when automatic requests would not.
function M.trigger(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  clear(bufnr)
  M.request(bufnr, TRIGGER_INVOKED)
end

local function map_keys(bufnr, keys)
  local st = states[bufnr]
  -- Accept/dismiss keys fall through to their usual meaning when nothing is shown. The
  -- dismiss key also cancels a request still in flight (copilot.vim's `<C-]>` does the
  -- same), so a suggestion the user declined before it arrived never appears after the key.
  local function fallthrough(lhs, action, desc)
    if not lhs then
      return
    end
    vim.keymap.set('i', lhs, function()
      local cmd = ('<Cmd>lua require("copilot_lsp.ghost").%s(%d)<CR>'):format(action, bufnr)
      if M.visible(bufnr) then
        return cmd
      end
      if action == 'dismiss' and st.pending then
        return cmd .. lhs
      end
      return lhs
    end, { buffer = bufnr, expr = true, silent = true, desc = desc })
    st.keys[#st.keys + 1] = lhs
  end
  fallthrough(keys.accept, 'accept_all', 'copilot_lsp: accept the suggestion')
  fallthrough(keys.accept_word, 'accept_word', 'copilot_lsp: accept one word')
  fallthrough(keys.accept_line, 'accept_line', 'copilot_lsp: accept one line')
  fallthrough(keys.dismiss, 'dismiss', 'copilot_lsp: dismiss the suggestion')
  if keys.trigger then
    vim.keymap.set('i', keys.trigger, function()
      M.trigger(bufnr)
    end, { buffer = bufnr, silent = true, desc = 'copilot_lsp: suggest now' })
    st.keys[#st.keys + 1] = keys.trigger
  end
end

function M.accept_all(bufnr)
  return M.accept(bufnr, 'all')
end

function M.accept_word(bufnr)
  return M.accept(bufnr, 'word')
end

function M.accept_line(bufnr)
  return M.accept(bufnr, 'line')
end

--- Start showing suggestions from client `client_id` in `bufnr`.
---@param bufnr integer
---@param client_id integer
---@param opts copilot_lsp.Options
function M.attach(bufnr, client_id, opts)
  if states[bufnr] then
    M.detach(bufnr)
  end
  M.hl_group = opts.hl_group
  states[bufnr] = { client_id = client_id, seq = 0, scheduled = false, keys = {} }
  local group = api.nvim_create_augroup('copilot_lsp.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd('TextChangedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      on_text_changed(bufnr)
    end,
  })
  api.nvim_create_autocmd('CursorMovedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      on_cursor_moved(bufnr)
    end,
  })
  api.nvim_create_autocmd('InsertEnter', {
    group = group,
    buffer = bufnr,
    callback = function()
      schedule_request(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      cancel(bufnr)
      clear(bufnr)
    end,
  })
  map_keys(bufnr, opts.keys)
end

function M.detach(bufnr)
  local st = states[bufnr]
  if not st then
    return
  end
  cancel(bufnr)
  clear(bufnr)
  pcall(api.nvim_del_augroup_by_name, 'copilot_lsp.ghost.' .. bufnr)
  for _, lhs in ipairs(st.keys) do
    pcall(vim.keymap.del, 'i', lhs, { buffer = bufnr })
  end
  states[bufnr] = nil
end

function M.attached(bufnr)
  return states[bufnr] ~= nil
end

--- Enable or disable suggestions everywhere (the server keeps running).
function M.set_enabled(on)
  M.enabled = on
  if not on then
    for bufnr in pairs(states) do
      cancel(bufnr)
      clear(bufnr)
    end
  end
end

M._ns = ns

return M
