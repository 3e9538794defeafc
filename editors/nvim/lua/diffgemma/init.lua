-- diffgemma for Neovim: ghost-text infill, "Rewrite selection" and next-edit suggestions
-- (diffgemma.next_edit) from `diffgemma lsp`.
--
-- Runs on Neovim 0.7 (Debian 12) and later: it uses vim.lsp.start_client/buf_attach_client
-- and extmark virtual text, which exist there; on Neovim builds that ship
-- vim.lsp.inline_completion, that built-in ghost text is used instead.
--
--   require("diffgemma").setup{
--     settings = { model = nil, socket = nil, maxTokens = 64, debounceMs = 75 },
--     accept_key = "<Tab>",
--     next_edit = { enable = true, accept_key = "<Tab>", dismiss_key = "<Esc>", jump_key = "<M-n>" },
--   }

local text_util = require("diffgemma.text")

local M = {}

local defaults = {
  -- how to start the server
  cmd = { "diffgemma", "lsp" },
  -- filetypes to attach to; nil attaches to every normal file buffer
  filetypes = nil,
  -- sent as initializationOptions and on :DiffgemmaSettings (see the README for the keys)
  settings = {},
  -- insert-mode key that accepts the shown ghost text (falls through to its normal meaning
  -- when nothing is shown); false to map nothing
  accept_key = "<Tab>",
  -- key that hides the ghost text in insert mode; false to map nothing
  dismiss_key = false,
  -- insert-mode key that shows the next alternative (settings = { alternatives = 3 } asks the
  -- server for several); false to map nothing
  cycle_key = "<M-]>",
  -- ask for ghost text as you type; false: only on :DiffgemmaSuggest / require("diffgemma").suggest()
  auto_trigger = true,
  -- wait this long after the last keystroke before asking (the server debounces too)
  trigger_delay_ms = 50,
  -- highlight group of the ghost text
  hl_group = "Comment",
  -- use vim.lsp.inline_completion when this Neovim has it
  use_builtin_inline_completion = true,
  -- next-edit suggestions, shown in normal mode after an edit: <Tab> goes to the suggestion and
  -- accepts it, <Esc> dismisses it, the jump key goes to it or to the next suggested place
  -- (keys fall through to their normal meaning when nothing is shown; false maps nothing)
  next_edit = {
    enable = true,
    accept_key = "<Tab>",
    dismiss_key = "<Esc>",
    jump_key = "<M-n>",
    trigger_delay_ms = 50, -- after the edit; the server waits nextEdit.debounceMs as well
    removed_hl = "DiffDelete", -- the lines a suggestion replaces
    added_hl = "DiffAdd", -- its new lines
  },
  -- files that mark a project root (the server reads nearby files for context)
  root_markers = { ".git", "pyproject.toml", "package.json", "Cargo.toml", "go.mod", "Makefile" },
}

M.config = vim.deepcopy(defaults)
M.ns = vim.api.nvim_create_namespace("diffgemma")
M.client_id = nil
M.state = { state = "stopped", message = "", latencyMs = nil, model = nil }

-- the ghost text on screen: { bufnr, row, col, text, tick, extmark }
local shown = nil
local timer = nil
local request_seq = 0
local builtin = nil

local function builtin_inline()
  if builtin == nil then
    local ok, mod = pcall(require, "vim.lsp.inline_completion")
    builtin = (ok and M.config.use_builtin_inline_completion and mod.enable ~= nil) and mod or false
  end
  return builtin or nil
end

local function notify(msg, level)
  vim.schedule(function()
    vim.notify("diffgemma: " .. msg, level or vim.log.levels.INFO)
  end)
end

-- client:request() is the method form from Neovim 0.11 on; 0.7-0.10 take client.request()
local function request(client, method, params, handler, bufnr)
  if vim.fn.has("nvim-0.11") == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

-- client.notify() likewise
local function notify_server(client, method, params)
  if vim.fn.has("nvim-0.11") == 1 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function find_root(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local start = name ~= "" and vim.fn.fnamemodify(name, ":p:h") or vim.fn.getcwd()
  for _, marker in ipairs(M.config.root_markers) do
    local dir = vim.fn.finddir(marker, start .. ";")
    if dir ~= "" then
      return vim.fn.fnamemodify(dir, ":p:h:h")
    end
    local file = vim.fn.findfile(marker, start .. ";")
    if file ~= "" then
      return vim.fn.fnamemodify(file, ":p:h")
    end
  end
  return start
end

local function get_client()
  if M.client_id == nil then
    return nil
  end
  local client = vim.lsp.get_client_by_id(M.client_id)
  if client == nil or (client.is_stopped and client.is_stopped()) then
    return nil
  end
  return client
end

-- for diffgemma.next_edit
M.get_client = get_client
M.request = request

--- A short status line piece: "diffgemma: ready 84ms".
function M.status()
  local s = M.state
  local text = "diffgemma: " .. (s.state or "?")
  if s.state == "ready" and type(s.latencyMs) == "number" then
    text = text .. string.format(" %dms", math.floor(s.latencyMs + 0.5))
  end
  return text
end

-- ghost text ---------------------------------------------------------------------------------

local function wipe()
  if vim.api.nvim_buf_is_valid(shown.bufnr) then
    vim.api.nvim_buf_clear_namespace(shown.bufnr, M.ns, 0, -1)
  end
  shown = nil
end

function M.clear(bufnr)
  if shown and (bufnr == nil or shown.bufnr == bufnr) then
    local was = shown.bufnr
    wipe()
    -- the server holds next-edit suggestions back while ghost text shows: say it is gone
    local client = get_client()
    if client and vim.api.nvim_buf_is_valid(was) then
      notify_server(client, "diffgemma/ghostText", { textDocument = { uri = vim.uri_from_bufnr(was) }, visible = false })
    end
  end
end

--- The ghost text currently shown (nil when none): { bufnr, row, col, text }.
function M.current()
  if shown == nil then
    return nil
  end
  return { bufnr = shown.bufnr, row = shown.row, col = shown.col, text = shown.text,
           count = shown.items and #shown.items or 1 }
end

local function split_lines(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    table.insert(lines, line)
  end
  return lines
end

local function render(bufnr, row, col, text)
  if shown then
    wipe() -- replaced, not gone: the server still counts it as showing
  end
  local lines = {}
  for _, l in ipairs(split_lines(text)) do
    table.insert(lines, text_util.display(l, bufnr))
  end
  local first = table.remove(lines, 1) or ""
  local opts = { hl_mode = "combine" }
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  if first ~= "" then
    opts.virt_text = { { first, M.config.hl_group } }
    -- at the end of a line the text can sit exactly where it would be inserted; mid-line,
    -- Neovim 0.7 has no inline virtual text, so it goes after the line
    opts.virt_text_pos = (col >= #line) and "overlay" or "eol"
  end
  if #lines > 0 then
    opts.virt_lines = {}
    for _, l in ipairs(lines) do
      table.insert(opts.virt_lines, { { l, M.config.hl_group } })
    end
  end
  local id = vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, math.min(col, #line), opts)
  shown = {
    bufnr = bufnr,
    row = row,
    col = col,
    text = text,
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
    extmark = id,
  }
end

-- The text an item adds at the cursor: its insertText less what is already typed between the
-- item's range start and the cursor (servers may anchor the range before the cursor).
local function text_at_cursor(item, line, col, encoding)
  local text = item.insertText
  if type(text) == "table" then
    text = text.value or ""
  end
  if type(text) ~= "string" then
    return ""
  end
  local range = item.range
  if range and range.start then
    local start_col = text_util.byte_col(line, range.start.character, encoding)
    if start_col < col then
      local typed = line:sub(start_col + 1, col)
      if text:sub(1, #typed) ~= typed then
        return ""
      end
      text = text:sub(#typed + 1)
    end
  end
  return text
end

--- Ask the server for ghost text at the cursor of the current window.
function M.suggest()
  local client = get_client()
  local bufnr = vim.api.nvim_get_current_buf()
  if client == nil or not vim.lsp.buf_is_attached(bufnr, client.id) then
    return
  end
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local cursor = vim.api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  request_seq = request_seq + 1
  local seq = request_seq
  request(client, "textDocument/inlineCompletion", params, function(err, result)
    if err or seq ~= request_seq or not vim.api.nvim_buf_is_valid(bufnr) then
      return
    end
    -- typed or moved meanwhile: the answer is for a text that is gone
    if vim.api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return
    end
    local win = vim.fn.bufwinid(bufnr)
    if win ~= -1 then
      local now = vim.api.nvim_win_get_cursor(win)
      if now[1] - 1 ~= row or now[2] ~= col then
        return
      end
    end
    local items = result and (result.items or result) or {}
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    -- every item (the answer, then its alternatives), for cycling
    local texts, seen = {}, {}
    for _, item in ipairs(items) do
      local t = text_at_cursor(item, line, col, encoding)
      if t ~= "" and not seen[t] then
        seen[t] = true
        table.insert(texts, t)
      end
    end
    if #texts == 0 then
      M.clear(bufnr)
      return
    end
    render(bufnr, row, col, texts[1])
    shown.items, shown.index = texts, 1
    if M.on_shown then
      M.on_shown(M.current())
    end
  end, bufnr)
end

--- Show the next (step 1) or previous (step -1) alternative; returns true when there was one.
function M.cycle(step)
  local inline = builtin_inline()
  if inline and inline.select then
    return pcall(inline.select, { count = step or 1 })
  end
  if shown == nil or shown.items == nil or #shown.items < 2 then
    return false
  end
  local s = shown
  local index = ((s.index - 1 + (step or 1)) % #s.items) + 1
  render(s.bufnr, s.row, s.col, s.items[index])
  shown.items, shown.index = s.items, index
  return true
end

--- Insert the shown ghost text; returns true when there was some.
function M.accept()
  if shown == nil or not vim.api.nvim_buf_is_valid(shown.bufnr) then
    return false
  end
  local s = shown
  M.clear()
  if vim.api.nvim_buf_get_changedtick(s.bufnr) ~= s.tick then
    return false
  end
  local lines = split_lines(s.text)
  vim.api.nvim_buf_set_text(s.bufnr, s.row, s.col, s.row, s.col, lines)
  local last_row = s.row + #lines - 1
  local last_col = (#lines == 1) and (s.col + #lines[1]) or #lines[#lines]
  local win = vim.fn.bufwinid(s.bufnr)
  if win ~= -1 then
    vim.api.nvim_win_set_cursor(win, { last_row + 1, last_col })
  end
  return true
end

local function schedule_suggest()
  if not M.config.auto_trigger then
    return
  end
  if timer == nil then
    timer = vim.loop.new_timer()
  end
  timer:stop()
  timer:start(M.config.trigger_delay_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_get_mode().mode:sub(1, 1) == "i" then
      M.suggest()
    end
  end))
end

-- rewrite ------------------------------------------------------------------------------------

-- Rewrites run as jobs on the server: workspace/executeCommand answers at once with the job's
-- id, the edit arrives as workspace/applyEdit, and diffgemma/rewriteDone {job, applied} ends it.
-- job id -> on_done, filled by M.rewrite and emptied by on_rewrite_done (further down).
local rewrite_waiters = {}

local function lsp_position(bufnr, row, byte_col, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  byte_col = math.min(byte_col, #line)
  local character = byte_col
  if encoding ~= "utf-8" then
    local utf32, utf16 = vim.str_utfindex(line, byte_col)
    character = (encoding == "utf-32") and utf32 or utf16
  end
  return { line = row, character = character }
end

--- Rewrite lines/columns of a buffer through the server's diffgemma.rewriteSelection command.
--- start/finish are {row0, byte_col0} (finish exclusive); the edit comes back as workspace/applyEdit,
--- and on_done(err, {applied}) runs once the server's rewrite job has finished.
function M.rewrite(bufnr, start, finish, instruction, on_done)
  local client = get_client()
  if client == nil then
    notify("the language server is not running", vim.log.levels.WARN)
    return
  end
  local encoding = client.offset_encoding or "utf-16"
  local range = {
    start = lsp_position(bufnr, start[1], start[2], encoding),
    ["end"] = lsp_position(bufnr, finish[1], finish[2], encoding),
  }
  local args = { vim.uri_from_bufnr(bufnr), range }
  if instruction and instruction ~= "" then
    table.insert(args, instruction)
  end
  M.state.state = "rewriting"
  request(client, "workspace/executeCommand", {
    command = "diffgemma.rewriteSelection",
    arguments = args,
  }, function(err, result)
    if err then
      notify("rewrite failed: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    end
    if err or type(result) ~= "table" or not result.started then
      if on_done then
        on_done(err, { applied = false })
      end
      return
    end
    -- started: on_done runs when the job's rewriteDone arrives (after the edit is applied)
    rewrite_waiters[result.job] = on_done or function() end
  end, bufnr)
end

local function rewrite_command(opts)
  local bufnr = vim.api.nvim_get_current_buf()
  local start, finish
  local vstart = vim.api.nvim_buf_get_mark(bufnr, "<")
  local vend = vim.api.nvim_buf_get_mark(bufnr, ">")
  if opts.range > 0 and vstart[1] == opts.line1 and vend[1] == opts.line2 and vim.fn.visualmode() == "v" then
    -- characterwise visual selection: exact columns ('> is inclusive, on a byte of the last char)
    local last = vim.api.nvim_buf_get_lines(bufnr, vend[1] - 1, vend[1], false)[1] or ""
    local end_col = math.min(vend[2] + 1, #last)
    if end_col < #last then
      -- step past a multibyte character's remaining bytes
      end_col = vim.str_byteindex(last, vim.str_utfindex(last, end_col))
    end
    start, finish = { vstart[1] - 1, vstart[2] }, { vend[1] - 1, end_col }
  else
    local last = vim.api.nvim_buf_get_lines(bufnr, opts.line2 - 1, opts.line2, false)[1] or ""
    start, finish = { opts.line1 - 1, 0 }, { opts.line2 - 1, #last }
  end
  M.rewrite(bufnr, start, finish, opts.args)
end

-- server -------------------------------------------------------------------------------------

local function on_status(_, result)
  if type(result) == "table" then
    M.state = result
    if M.on_status then
      M.on_status(result)
    end
  end
end

local function on_rewrite_done(_, result)
  if type(result) ~= "table" or result.job == nil then
    return
  end
  local waiter = rewrite_waiters[result.job]
  rewrite_waiters[result.job] = nil
  if M.state.state == "rewriting" then
    M.state.state = "ready"
  end
  if waiter then
    waiter(nil, { applied = result.applied == true })
  end
end

local function start_client(bufnr)
  local client = get_client()
  if client then
    return client.id
  end
  local cfg = M.config
  -- an empty Lua table would go out as a JSON array; the server expects an object
  local settings = next(cfg.settings) == nil and vim.empty_dict() or cfg.settings
  M.client_id = vim.lsp.start_client({
    name = "diffgemma",
    cmd = cfg.cmd,
    root_dir = find_root(bufnr),
    init_options = settings,
    settings = { diffgemma = settings },
    handlers = { ["diffgemma/status"] = on_status, ["diffgemma/rewriteDone"] = on_rewrite_done },
    flags = { debounce_text_changes = 0 },
    on_exit = function(code)
      M.client_id = nil
      M.state = { state = "stopped", message = "exit " .. tostring(code) }
      vim.schedule(function()
        M.clear()
      end)
    end,
  })
  if M.client_id == nil then
    notify("could not start " .. table.concat(cfg.cmd, " "), vim.log.levels.ERROR)
  end
  return M.client_id
end

local function wanted(bufnr)
  if vim.bo[bufnr].buftype ~= "" or vim.api.nvim_buf_get_name(bufnr) == "" then
    return false
  end
  local ft = vim.bo[bufnr].filetype
  if M.config.filetypes == nil then
    return true
  end
  return vim.tbl_contains(M.config.filetypes, ft)
end

--- Attach the server to a buffer (done automatically for the filetypes in the config).
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local id = start_client(bufnr)
  if id == nil then
    return false
  end
  if not vim.lsp.buf_is_attached(bufnr, id) then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  local inline = builtin_inline()
  if inline then
    pcall(inline.enable, true, { bufnr = bufnr })
  end
  return true
end

local function map_keys()
  local cfg = M.config
  if cfg.accept_key then
    vim.keymap.set("i", cfg.accept_key, function()
      local inline = builtin_inline()
      if inline and inline.get and inline.get() then
        return ""
      end
      if shown then
        -- <Cmd> runs in the key stream (no textlock, no scheduling), so keys typed right
        -- after <Tab> see the accepted text
        return "<Cmd>lua require('diffgemma').accept()<CR>"
      end
      return cfg.accept_key
    end, { expr = true, silent = true, desc = "diffgemma: accept ghost text" })
  end
  if cfg.cycle_key then
    vim.keymap.set("i", cfg.cycle_key, function()
      M.cycle(1)
    end, { silent = true, desc = "diffgemma: next alternative" })
  end
  if cfg.dismiss_key then
    vim.keymap.set("i", cfg.dismiss_key, function()
      M.clear()
    end, { silent = true, desc = "diffgemma: hide ghost text" })
  end
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup("diffgemma", { clear = true })
  vim.api.nvim_create_autocmd({ "FileType", "BufReadPost", "BufNewFile" }, {
    group = group,
    callback = function(args)
      if wanted(args.buf) then
        M.attach(args.buf)
      end
    end,
  })
  if not builtin_inline() then
    vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
      group = group,
      callback = function(args)
        M.clear(args.buf)
        schedule_suggest()
      end,
    })
    vim.api.nvim_create_autocmd("CursorMovedI", {
      group = group,
      callback = function(args)
        if shown and shown.bufnr == args.buf then
          local c = vim.api.nvim_win_get_cursor(0)
          if c[1] - 1 ~= shown.row or c[2] ~= shown.col then
            M.clear(args.buf)
          end
        end
      end,
    })
    vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
      group = group,
      callback = function(args)
        M.clear(args.buf)
      end,
    })
  end
  map_keys()
  require("diffgemma.next_edit").setup(group)
  vim.api.nvim_create_user_command("DiffgemmaRewrite", rewrite_command, {
    range = true,
    nargs = "?",
    desc = "Rewrite the selected lines (optional instruction)",
  })
  vim.api.nvim_create_user_command("DiffgemmaSuggest", function()
    M.suggest()
  end, { desc = "Show diffgemma ghost text at the cursor" })
  vim.api.nvim_create_user_command("DiffgemmaStatus", function()
    print(M.status() .. ((M.state.message and M.state.message ~= "") and (" - " .. M.state.message) or ""))
  end, { desc = "Show the diffgemma server state" })
  -- buffers opened before setup()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and wanted(bufnr) then
      M.attach(bufnr)
    end
  end
end

return M
