--- Options of `require('copilot_lsp').setup{}`: defaults, validation, and the server's
--- `initializationOptions` built from them.

local M = {}

---@class copilot_lsp.Keys
---@field accept string|false      accept the whole suggestion
---@field accept_word string|false accept the next word
---@field accept_line string|false accept the rest of the line (or the next line)
---@field dismiss string|false     hide the suggestion
---@field trigger string|false     ask for a suggestion now

---@class copilot_lsp.Options
---@field enabled boolean
---@field cmd string[]|nil           full command; default { server_path, '--stdio' }
---@field server_path string
---@field log_file string|nil        server log (`--log-file`); nil: Neovim's LSP log (`:LspLog`)
---@field filetypes string[]|nil     attach only to these; nil: every file buffer
---@field exclude_filetypes string[]
---@field root_markers string[]
---@field settings table             server options (camelCase), sent as initializationOptions
---@field builtin 'auto'|boolean      Neovim 0.12+'s vim.lsp.inline_completion ('auto': when present)
---@field keys copilot_lsp.Keys
---@field hl_group string

---@type copilot_lsp.Options
M.defaults = {
  enabled = true,
  cmd = nil,
  server_path = 'copilot-lsp',
  log_file = nil,
  filetypes = nil,
  exclude_filetypes = { 'help', 'gitcommit', 'gitrebase', 'TelescopePrompt', 'qf', 'netrw' },
  root_markers = { '.git' },
  settings = {},
  builtin = 'auto',
  keys = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    dismiss = '<C-]>',
    trigger = '<M-\\>',
  },
  hl_group = 'CopilotLspGhost',
}

local function is_list_of_strings(v)
  if type(v) ~= 'table' then
    return false
  end
  for _, s in ipairs(v) do
    if type(s) ~= 'string' then
      return false
    end
  end
  return true
end

--- Merge user options over the defaults and check them; errors name the bad option.
---@param user table|nil
---@return copilot_lsp.Options
function M.resolve(user)
  user = user or {}
  if type(user) ~= 'table' then
    error('copilot_lsp.setup: expected a table, got ' .. type(user))
  end
  local o = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), user)
  -- Lists replace, they do not merge by index.
  for _, k in ipairs({ 'filetypes', 'exclude_filetypes', 'root_markers', 'cmd' }) do
    if user[k] ~= nil then
      o[k] = user[k]
    end
  end
  local function check(name, ok, expected)
    if not ok then
      error(('copilot_lsp.setup: option %s: expected %s, got %s'):format(name, expected, vim.inspect(o[name] or user[name])))
    end
  end
  check('enabled', type(o.enabled) == 'boolean', 'a boolean')
  check('server_path', type(o.server_path) == 'string' and o.server_path ~= '', 'a non-empty string')
  check('cmd', o.cmd == nil or (is_list_of_strings(o.cmd) and #o.cmd > 0), 'a list of strings')
  check('log_file', o.log_file == nil or type(o.log_file) == 'string', 'a string')
  check('filetypes', o.filetypes == nil or is_list_of_strings(o.filetypes), 'a list of strings')
  check('exclude_filetypes', is_list_of_strings(o.exclude_filetypes), 'a list of strings')
  check('root_markers', is_list_of_strings(o.root_markers), 'a list of strings')
  check('settings', type(o.settings) == 'table', 'a table')
  check('builtin', o.builtin == 'auto' or type(o.builtin) == 'boolean', "'auto', true or false")
  check('hl_group', type(o.hl_group) == 'string', 'a string')
  for name, key in pairs(o.keys) do
    if key ~= false and type(key) ~= 'string' then
      error(('copilot_lsp.setup: option keys.%s: expected a key (string) or false'):format(name))
    end
  end
  return o
end

--- The server's command line.
---@param o copilot_lsp.Options
---@return string[]
function M.cmd(o)
  local cmd = o.cmd and vim.deepcopy(o.cmd) or { o.server_path }
  if o.log_file then
    table.insert(cmd, 2, o.log_file)
    table.insert(cmd, 2, '--log-file')
  end
  if not o.cmd then
    cmd[#cmd + 1] = '--stdio'
  end
  return cmd
end

--- `initializationOptions` (and `workspace/didChangeConfiguration` settings): the user's
--- `settings`, flat. Neovim draws ghost text itself (or 0.12 does), so the
--- `textDocument/completion` fallback is off unless the user turns it on.
---@param o copilot_lsp.Options
---@return table
function M.server_options(o)
  return vim.tbl_extend('force', { completionFallback = false }, o.settings)
end

--- Whether to use Neovim's built-in inline completion (0.12+).
---@param o copilot_lsp.Options
---@return boolean
function M.use_builtin(o)
  local has = vim.fn.has('nvim-0.12') == 1 and vim.lsp.inline_completion ~= nil
  if o.builtin == 'auto' then
    return has
  end
  return o.builtin and has
end

return M
