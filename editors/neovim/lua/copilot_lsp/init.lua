--- copilot_lsp: Copilot-style inline completions in Neovim from the `copilot-lsp` server.
---
--- `require('copilot_lsp').setup{...}` starts the server for file buffers and shows its
--- suggestions: through `vim.lsp.inline_completion` on Neovim 0.12+, through this plugin's own
--- ghost text (lua/copilot_lsp/ghost.lua) on 0.10 and 0.11. See README.md for the options.

local config = require('copilot_lsp.config')

local api = vim.api
local M = {}

M.name = 'copilot_lsp'

---@type copilot_lsp.Options?
M.options = nil

--- What the server reported last: kind is 'off', 'starting', 'loading', 'ready' or 'error'.
M.state = { kind = 'off', detail = nil }

local has_011 = vim.fn.has('nvim-0.11') == 1

local function notify_client(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

local function set_state(kind, detail)
  M.state = { kind = kind, detail = detail }
  local state = M.state
  -- Callers include on_exit, a fast event: autocmds must wait for the main loop.
  vim.schedule(function()
    api.nvim_exec_autocmds('User', { pattern = 'CopilotLspStatus', modeline = false, data = state })
  end)
end

--- A short status for a statusline: '' when off, else e.g. 'copilot:ready'.
function M.statusline()
  if M.state.kind == 'off' then
    return ''
  end
  return 'copilot:' .. M.state.kind
end

local function show_message(err, result, ctx, cfg)
  if result and result.type == vim.lsp.protocol.MessageType.Error then
    set_state('error', result.message)
  end
  return vim.lsp.handlers['window/showMessage'](err, result, ctx, cfg)
end

local function on_progress(ev)
  local data = ev.data or {}
  local client = data.client_id and vim.lsp.get_client_by_id(data.client_id)
  if not client or client.name ~= M.name or type(data.params) ~= 'table' then
    return
  end
  local value = data.params.value
  if type(value) ~= 'table' then
    return
  end
  -- A begin whose title or message mentions loading or the model starts the model load.
  local what = (tostring(value.title or '') .. ' ' .. tostring(value.message or '')):lower()
  if value.kind == 'begin' and (what:find('model') or what:find('load')) then
    M._load_token = data.params.token
    set_state('loading', value.message or value.title)
  elseif data.params.token == M._load_token then
    if value.kind == 'report' then
      set_state('loading', value.message)
    elseif value.kind == 'end' then
      M._load_token = nil
      local msg = value.message
      if msg and msg:lower():find('fail') then
        set_state('error', msg)
      elseif M.state.kind ~= 'error' then
        set_state('ready', msg)
      end
    end
  end
end

local function filetype_ok(o, bufnr)
  local ft = vim.bo[bufnr].filetype
  if vim.tbl_contains(o.exclude_filetypes, ft) then
    return false
  end
  return o.filetypes == nil or vim.tbl_contains(o.filetypes, ft)
end

--- Start (or reuse) the server for `bufnr` when it is a file buffer of an accepted filetype.
function M.start(bufnr)
  local o = M.options
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if not o or not o.enabled or not api.nvim_buf_is_valid(bufnr) then
    return nil
  end
  if vim.bo[bufnr].buftype ~= '' or api.nvim_buf_get_name(bufnr) == '' or not filetype_ok(o, bufnr) then
    return nil
  end
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  if M.state.kind == 'off' then
    set_state('starting')
  end
  return vim.lsp.start({
    name = M.name,
    cmd = config.cmd(o),
    root_dir = vim.fs.root(bufnr, o.root_markers) or vim.fn.getcwd(),
    init_options = config.server_options(o),
    capabilities = capabilities,
    handlers = { ['window/showMessage'] = show_message },
    on_exit = function(code)
      if code ~= 0 then
        set_state('error', 'server exited with code ' .. tostring(code))
      else
        set_state('off')
      end
    end,
  }, {
    bufnr = bufnr,
    -- One server (and one model in memory) for the whole editor.
    reuse_client = function(client, conf)
      return client.name == conf.name
    end,
  })
end

-- Neovim 0.12+: the built-in inline completion, with keys for word and line on top.
local function partial_accept(bufnr, what)
  local text = require('copilot_lsp.text')
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      local full = text.insert_text(item.insert_text)
      local cursor = api.nvim_win_get_cursor(0)
      local row, col = cursor[1] - 1, cursor[2]
      local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
      local rest = full
      local r = item.range
      if r and r.start.row == row and r.start.col <= col then
        local typed = line:sub(r.start.col + 1, col)
        if full:sub(1, #typed) == typed then
          rest = full:sub(#typed + 1)
        end
      end
      local chunk = what == 'word' and text.next_word(rest) or text.next_line(rest)
      if chunk == '' then
        chunk = rest
      end
      local lines = vim.split(chunk, '\n', { plain = true })
      api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
      api.nvim_win_set_cursor(0, { row + #lines, (#lines == 1 and col or 0) + #lines[#lines] })
    end,
  })
end

local function attach_builtin(bufnr, o)
  vim.lsp.inline_completion.enable(o.enabled, { bufnr = bufnr })
  local function map(lhs, fn, desc)
    if lhs then
      vim.keymap.set('i', lhs, function()
        if not fn() then
          return lhs
        end
      end, { buffer = bufnr, expr = true, silent = true, desc = desc })
    end
  end
  map(o.keys.accept, function()
    return vim.lsp.inline_completion.get({ bufnr = bufnr })
  end, 'copilot_lsp: accept the suggestion')
  map(o.keys.accept_word, function()
    return partial_accept(bufnr, 'word')
  end, 'copilot_lsp: accept one word')
  map(o.keys.accept_line, function()
    return partial_accept(bufnr, 'line')
  end, 'copilot_lsp: accept one line')
end

local function on_attach(bufnr, client_id)
  local client = vim.lsp.get_client_by_id(client_id)
  if not client or client.name ~= M.name or not M.options then
    return
  end
  if config.use_builtin(M.options) then
    attach_builtin(bufnr, M.options)
  else
    require('copilot_lsp.ghost').attach(bufnr, client_id, M.options)
  end
end

--- Change server settings at run time (sent as `workspace/didChangeConfiguration`).
---@param settings table camelCase server options, merged over the current ones
function M.update_settings(settings)
  local o = assert(M.options, 'copilot_lsp: call setup() first')
  o.settings = vim.tbl_extend('force', o.settings, settings)
  for _, client in ipairs(clients()) do
    notify_client(client, 'workspace/didChangeConfiguration', { settings = config.server_options(o) })
  end
end

--- Turn suggestions on or off everywhere.
function M.set_enabled(on)
  local o = assert(M.options, 'copilot_lsp: call setup() first')
  o.enabled = on
  if config.use_builtin(o) then
    vim.lsp.inline_completion.enable(on)
  else
    require('copilot_lsp.ghost').set_enabled(on)
  end
  if on then
    M.start(api.nvim_get_current_buf())
  end
end

--- Accept the shown suggestion ('all', 'word' or 'line'); false when none is shown. For your
--- own mappings, e.g. to chain a key with a completion plugin.
function M.accept(what)
  if M.options and config.use_builtin(M.options) then
    if what == 'word' or what == 'line' then
      return partial_accept(api.nvim_get_current_buf(), what)
    end
    return vim.lsp.inline_completion.get()
  end
  return require('copilot_lsp.ghost').accept(0, what or 'all')
end

--- Whether a suggestion is shown at the cursor (0.10/0.11 path only; 0.12 has no such query).
function M.visible()
  return require('copilot_lsp.ghost').visible(api.nvim_get_current_buf())
end

local function status_report()
  local lines = {}
  local o = M.options
  lines[#lines + 1] = ('copilot_lsp: %s%s'):format(M.state.kind, M.state.detail and (' (' .. M.state.detail .. ')') or '')
  lines[#lines + 1] = ('  mode: %s'):format(
    o and config.use_builtin(o) and 'vim.lsp.inline_completion (built-in)' or 'ghost text (plugin)'
  )
  for _, client in ipairs(clients()) do
    lines[#lines + 1] = ('  client %d: %s, position encoding %s'):format(
      client.id,
      table.concat(client.config.cmd, ' '),
      client.offset_encoding
    )
  end
  local s = require('copilot_lsp.ghost').stats
  lines[#lines + 1] = ('  requests %d, cancelled %d, dropped %d, shown %d, accepted %d, errors %d'):format(
    s.requests,
    s.cancelled,
    s.dropped,
    s.shown,
    s.accepted,
    s.errors
  )
  lines[#lines + 1] = '  server log: ' .. (o and o.log_file or vim.lsp.get_log_path() .. ' (:LspLog)')
  return table.concat(lines, '\n')
end

local subcommands = {
  status = function()
    vim.notify(status_report())
  end,
  enable = function()
    M.set_enabled(true)
  end,
  disable = function()
    M.set_enabled(false)
  end,
  toggle = function()
    M.set_enabled(not (M.options and M.options.enabled))
  end,
  log = function()
    local o = M.options
    if o and o.log_file then
      vim.cmd.split(vim.fn.fnameescape(o.log_file))
    else
      vim.cmd.split(vim.fn.fnameescape(vim.lsp.get_log_path()))
    end
  end,
}

--- Set up the plugin. See README.md for every option.
---@param user? table
function M.setup(user)
  if vim.fn.has('nvim-0.10') ~= 1 then
    vim.notify('copilot_lsp needs Neovim 0.10 or later', vim.log.levels.ERROR)
    return
  end
  M.options = config.resolve(user)
  local o = M.options
  api.nvim_set_hl(0, 'CopilotLspGhost', { link = 'Comment', default = true })
  local group = api.nvim_create_augroup('copilot_lsp', { clear = true })
  api.nvim_create_autocmd('FileType', {
    group = group,
    callback = function(ev)
      M.start(ev.buf)
    end,
  })
  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      on_attach(ev.buf, ev.data.client_id)
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name then
        require('copilot_lsp.ghost').detach(ev.buf)
      end
    end,
  })
  api.nvim_create_autocmd('LspProgress', { group = group, callback = on_progress })
  api.nvim_create_user_command('CopilotLsp', function(cmd)
    local f = subcommands[cmd.fargs[1] or 'status']
    if not f then
      vim.notify('CopilotLsp: unknown subcommand ' .. cmd.fargs[1], vim.log.levels.ERROR)
      return
    end
    f()
  end, {
    nargs = '?',
    complete = function()
      return vim.tbl_keys(subcommands)
    end,
    desc = 'copilot_lsp: status, enable, disable, toggle, log',
  })
  require('copilot_lsp.ghost').enabled = o.enabled
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
      M.start(bufnr)
    end
  end
end

return M
