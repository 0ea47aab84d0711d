-- Headless end-to-end test: real Neovim, real copilot-lsp server, the plugin's ghost-text
-- path. Opens a Python buffer with multibyte text, types, waits for ghost text, accepts one
-- word, one line and the rest, and checks the buffer against what the server answered.
--
-- Run (see run.sh): COPILOT_LSP_BIN=... COPILOT_LSP_TEST_MODEL=... \
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=editors/neovim' -S editors/neovim/test/headless.lua

local api = vim.api
local uv = vim.uv or vim.loop
local has_011 = vim.fn.has('nvim-0.11') == 1

local function out(s)
  io.stdout:write(s .. '\n')
  io.stdout:flush()
end

local bin = os.getenv('COPILOT_LSP_BIN')
local model = os.getenv('COPILOT_LSP_TEST_MODEL')
if not bin or not model then
  out('SKIP neovim headless: COPILOT_LSP_BIN and COPILOT_LSP_TEST_MODEL must be set (run through .ci/editors.sh)')
  vim.cmd('cquit 77')
end

local tmp = vim.fn.tempname()
vim.fn.mkdir(tmp, 'p')
local log_file = tmp .. '/server.log'
local file = tmp .. '/sample.py'
local LINES = {
  '# Grüße — 🐍 snake café',
  'def greet(name: str) -> str:',
  '    """Say hello to ñame 🐍."""',
  '    message = "héllo, " + name',
  '    return message',
  '',
  '',
  'def shout(name):',
  '    loud = "¡hé 🐍 " + ',
}
vim.fn.writefile(LINES, file)
vim.o.showmode = false
-- The server's event log goes to a folder of the test's own (the server inherits the env).
local data_home = vim.fn.tempname()
-- A project folder (the log is per workspace folder; a file outside every folder is not logged).
vim.fn.mkdir(tmp .. '/.git', 'p')
vim.env.XDG_DATA_HOME = data_home

local plugin = require('copilot_lsp')
local ghost = require('copilot_lsp.ghost')
local text = require('copilot_lsp.text')

plugin.setup({
  server_path = bin,
  log_file = log_file,
  filetypes = { 'python' },
  builtin = false, -- this test covers the 0.10/0.11 path on every version
  settings = {
    model = model,
    temperature = 0,
    maxTokens = 24,
    -- Long enough that a request is still in flight when the next key arrives.
    debounceMs = 150,
    postprocess = os.getenv('COPILOT_LSP_TEST_POSTPROCESS') == 'true',
  },
})

local failures = 0
local function check(ok, what, detail)
  if ok then
    out('  ok   ' .. what)
  else
    failures = failures + 1
    out('  FAIL ' .. what .. (detail and (': ' .. detail) or ''))
  end
  return ok
end

local co
local function sleep(ms)
  vim.defer_fn(function()
    local ok, err = coroutine.resume(co)
    if not ok then
      out('  FAIL test error: ' .. tostring(err))
      failures = failures + 1
    end
  end, ms)
  coroutine.yield()
end

local function wait_until(cond, timeout_ms, what)
  local deadline = uv.now() + timeout_ms
  while not cond() do
    if uv.now() > deadline then
      error('timed out after ' .. timeout_ms .. ' ms waiting for ' .. what, 0)
    end
    sleep(20)
  end
end

--- Feed keys as typed input and let the main loop process them.
local function feed(keys)
  api.nvim_input(keys)
  sleep(30)
  wait_until(function()
    return vim.fn.getchar(1) == 0
  end, 5000, 'typeahead to drain')
end

local function buffer_text(buf)
  return table.concat(api.nvim_buf_get_lines(buf, 0, -1, false), '\n')
end

--- Byte offset of the cursor in the buffer text.
local function cursor_offset(buf)
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local lines = api.nvim_buf_get_lines(buf, 0, row - 1, false)
  local n = 0
  for _, l in ipairs(lines) do
    n = n + #l + 1
  end
  return n + col
end

local function extmarks(buf)
  return api.nvim_buf_get_extmarks(buf, ghost._ns, 0, -1, { details = true })
end

local function finish()
  local log_tail = ''
  if failures > 0 then
    local ok, lines = pcall(vim.fn.readfile, log_file)
    if ok then
      log_tail = table.concat(vim.list_slice(lines, math.max(1, #lines - 30)), '\n')
      out('--- server log tail (' .. log_file .. ') ---\n' .. log_tail .. '\n---')
    end
  end
  local s = ghost.stats
  out(('  stats: requests %d, cancelled %d, dropped %d, shown %d, accepted %d, errors %d'):format(
    s.requests, s.cancelled, s.dropped, s.shown, s.accepted, s.errors))
  out('neovim headless (' .. tostring(vim.version()) .. '): ' .. (failures == 0 and 'PASS' or 'FAIL'))
  for _, c in ipairs(vim.lsp.get_clients({ name = 'copilot_lsp' })) do
    vim.lsp.stop_client(c.id)
  end
  vim.defer_fn(function()
    vim.cmd('cquit ' .. (failures == 0 and 0 or 1))
  end, 300)
end

-- Wait for a shown suggestion; if the server answers with nothing usable, type a little more.
local function wait_for_ghost(buf, extra_keys)
  for attempt = 1, 6 do
    local shown0, dropped0, requests0 = ghost.stats.shown, ghost.stats.dropped, ghost.stats.requests
    local ok = pcall(wait_until, function()
      return ghost.visible(buf)
    end, 20000, 'ghost text')
    if ok then
      return true
    end
    out(('       no ghost yet (attempt %d: shown %d->%d, dropped %d->%d, requests %d->%d, last answer %s)'):format(
      attempt, shown0, ghost.stats.shown, dropped0, ghost.stats.dropped, requests0, ghost.stats.requests,
      vim.inspect(ghost.last and ghost.last.items)))
    feed(extra_keys[attempt] or ' ')
  end
  return false
end

local function run()
  vim.cmd.edit(vim.fn.fnameescape(file))
  local buf = api.nvim_get_current_buf()
  vim.bo[buf].filetype = 'python'

  wait_until(function()
    return ghost.attached(buf) or plugin.state.kind == 'error'
  end, 30000, 'the server to attach')
  if not check(ghost.attached(buf), 'server started and attached to the Python buffer',
    tostring(plugin.state.detail)) then
    return
  end
  local client = vim.lsp.get_clients({ name = 'copilot_lsp', bufnr = buf })[1]
  out('       position encoding: ' .. client.offset_encoding)

  local loaded = pcall(wait_until, function()
    return plugin.state.kind == 'ready' or plugin.state.kind == 'error'
  end, 120000, 'the model to load')
  check(loaded and plugin.state.kind == 'ready', 'model load reported through $/progress (status ready)',
    'status ' .. plugin.state.kind .. ' ' .. tostring(plugin.state.detail))

  -- Type at the end of a line with multibyte text before the cursor, one key at a time.
  api.nvim_win_set_cursor(0, { #LINES, 0 })
  feed('A')
  check(api.nvim_get_mode().mode == 'i', 'insert mode')
  local requests0, cancelled0 = ghost.stats.requests, ghost.stats.cancelled
  feed('n')
  wait_until(function()
    return ghost.stats.requests > requests0
  end, 5000, 'a request after the first key')
  feed('a')
  wait_until(function()
    return ghost.stats.requests > requests0 + 1
  end, 5000, 'a request after the second key')
  check(ghost.stats.cancelled > cancelled0, 'each change cancels the request in flight',
    ('cancelled %d -> %d'):format(cancelled0, ghost.stats.cancelled))

  if not check(wait_for_ghost(buf, { 'm', 'e', ' ', 'x', '(', ' ' }), 'ghost text shown after typing') then
    return
  end
  local g = ghost.current(buf)
  local last = ghost.last
  out('       server answered: ' .. vim.inspect(last.items[1]))
  out('       ghost: ' .. vim.inspect(g))
  check(#g > 0, 'the suggestion is non-empty')
  local expected_ghost = text.ghost(last.items[1], last.row, last.line, last.col, client.offset_encoding)
  check(expected_ghost ~= nil and expected_ghost.text:gsub('\r\n', '\n') == g, 'the ghost text is what the server answered')

  local marks = extmarks(buf)
  local glines = vim.split(g, '\n', { plain = true })
  check(#marks == 1, 'one extmark draws the suggestion', #marks .. ' extmarks')
  if #marks == 1 then
    local d = marks[1][4]
    local row, col = unpack(api.nvim_win_get_cursor(0))
    check(marks[1][2] == row - 1 and marks[1][3] == col, 'the extmark sits at the cursor')
    if glines[1] ~= '' then
      -- Neovim stores control characters in virtual text the way it shows them (^X).
      local shown = glines[1]:gsub('[%z\1-\8\11-\31\127]', function(c)
        return vim.fn.strtrans(c)
      end)
      check(d.virt_text and d.virt_text[1][1] == shown and d.virt_text_pos == 'inline',
        'first line drawn as inline virtual text', vim.inspect(d.virt_text))
    end
    check(#(d.virt_lines or {}) == #glines - 1, 'following lines drawn as virtual lines',
      ('%d virt_lines for %d lines'):format(#(d.virt_lines or {}), #glines))
  end

  -- Accept one word, then one line, then the rest; check the buffer after each.
  local expected = buffer_text(buf)
  local function accept(key, what, chunk_of)
    local before_ghost = ghost.current(buf)
    local chunk = chunk_of(before_ghost)
    local off = cursor_offset(buf)
    expected = expected:sub(1, off) .. chunk .. expected:sub(off + 1)
    feed(key)
    check(buffer_text(buf) == expected, 'accept ' .. what .. ' inserts ' .. vim.inspect(chunk),
      'buffer:\n' .. buffer_text(buf))
    check(cursor_offset(buf) == off + #chunk, 'cursor after the accepted ' .. what)
    local rest = before_ghost:sub(#chunk + 1)
    if rest ~= '' then
      check(ghost.current(buf) == rest and ghost.visible(buf), 'the rest stays shown after accepting ' .. what,
        vim.inspect(ghost.current(buf)))
    end
    return rest
  end

  local rest = accept('<M-Right>', 'one word', text.next_word)
  if rest ~= '' then
    rest = accept('<M-Down>', 'one line', text.next_line)
  end
  if rest ~= '' then
    accept('<Tab>', 'all', function(s)
      return s
    end)
  end
  check(#extmarks(buf) == 0 or ghost.visible(buf), 'no stale ghost text after accepting all')

  -- What became of the suggestion reached the server's event log: shown, partly accepted
  -- (the word, the line), then accepted whole through the item's command.
  local flush = has_011 and client:request_sync('copilot/debugEvents', vim.NIL, 10000, buf)
    or client.request_sync('copilot/debugEvents', vim.NIL, 10000, buf)
  check(flush and flush.result and flush.result.flushed == true, 'the server flushed its event log',
    vim.inspect(flush))
  local events = {}
  for _, f in ipairs(vim.fn.glob(data_home .. '/copilot-lsp/events/*.jsonl', false, true)) do
    for _, l in ipairs(vim.fn.readfile(f)) do
      local ok, e = pcall(vim.json.decode, l)
      if ok and type(e) == 'table' then
        events[#events + 1] = e
      end
    end
  end
  local function has(pred)
    for _, e in ipairs(events) do
      if pred(e) then
        return true
      end
    end
    return false
  end
  check(has(function(e) return e.event == 'shown' end), 'the shown suggestion is in the event log',
    vim.inspect(events))
  check(has(function(e) return e.event == 'accepted' and e.how == 'partial' end),
    'the word accept arrived as a partial accept', vim.inspect(events))
  check(has(function(e) return e.event == 'accepted' and e.how == 'command' and e.complete end),
    'accepting all ran the item\'s command', vim.inspect(events))

  -- Dismiss hides what is shown and drops a request still in flight (accepting all asked
  -- anew): whichever of the two the key meets, nothing shows after it, not even an answer
  -- the server was already sending. Then a key falls through to its normal meaning.
  sleep(800)
  local shown0 = ghost.stats.shown
  feed('<C-]>')
  check(not ghost.visible(buf), 'dismiss hides the suggestion')
  sleep(2500)
  check(not ghost.visible(buf) and ghost.stats.shown == shown0, 'nothing shows after dismiss',
    ('shown %d -> %d'):format(shown0, ghost.stats.shown))
  local before = api.nvim_get_current_line()
  local col = api.nvim_win_get_cursor(0)[2]
  feed('<Tab>')
  local after = api.nvim_get_current_line()
  check(after == before:sub(1, col) .. '\t' .. before:sub(col + 1), 'Tab inserts a tab when no suggestion is shown',
    vim.inspect(after))

  -- An answer for an outdated buffer never shows: ask, then change the buffer before it
  -- arrives. The request is cancelled (the change asks anew) or, if its answer still comes,
  -- dropped because the buffer's changedtick moved on.
  sleep(1000)
  local gone0 = ghost.stats.dropped + ghost.stats.cancelled
  requests0 = ghost.stats.requests
  ghost.trigger(buf)
  wait_until(function()
    return ghost.stats.requests > requests0
  end, 5000, 'the triggered request')
  local tick_at_request = api.nvim_buf_get_changedtick(buf)
  api.nvim_buf_set_lines(buf, 0, 1, false, { '# changed while the request was in flight — ✓' })
  pcall(wait_until, function()
    return ghost.stats.dropped + ghost.stats.cancelled > gone0
  end, 30000, 'the outdated request to be cancelled or its answer dropped')
  check(ghost.stats.dropped + ghost.stats.cancelled > gone0, 'a request for an outdated buffer is cancelled or its answer dropped',
    ('dropped+cancelled %d -> %d'):format(gone0, ghost.stats.dropped + ghost.stats.cancelled))
  sleep(1500)
  check(not ghost.visible(buf) or api.nvim_buf_get_changedtick(buf) ~= tick_at_request,
    'nothing is shown for the outdated state')

  feed('<Esc>')
  check(#extmarks(buf) == 0, 'leaving insert mode clears the ghost text')
  out('       final buffer:\n' .. buffer_text(buf))
end

co = coroutine.create(function()
  local ok, err = pcall(run)
  if not ok then
    failures = failures + 1
    out('  FAIL ' .. tostring(err))
  end
  finish()
end)

-- Watchdog: never hang CI.
vim.defer_fn(function()
  out('  FAIL watchdog: the test did not finish in 240 s')
  failures = failures + 1
  finish()
end, 240000)

vim.schedule(function()
  local ok, err = coroutine.resume(co)
  if not ok then
    out('  FAIL ' .. tostring(err))
    vim.cmd('cquit 1')
  end
end)
