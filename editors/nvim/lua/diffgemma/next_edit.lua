-- Next-edit suggestions for diffgemma in Neovim: after an edit, the server's diffgemma/nextEdit
-- proposes the edit that follows; it is shown as a diff in place: the lines it replaces
-- highlighted (DiffDelete) and the new lines below them as virtual lines (DiffAdd). In normal
-- mode <Tab> goes to it and then accepts it, <Esc> dismisses it, and <M-n> jumps to it or to
-- the next suggested place. Extmark virt_lines exist from Neovim 0.6 on (CI runs 0.7).
--
-- The keys and whether it runs at all come from require("diffgemma").setup{ next_edit = {...} }.

local text_util = require("diffgemma.text")

local M = {}

M.ns = vim.api.nvim_create_namespace("diffgemma_next_edit")

-- the suggestion on screen: { bufnr, tick, edits, next, encoding }
local shown = nil
-- where the next edit is likely to be, for the jump key: { bufnr, tick, row, col }
local next_place = nil
local timer = nil
local request_seq = 0

local function core()
  return require("diffgemma")
end

local function split_lines(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    table.insert(lines, line)
  end
  if text:sub(-1) == "\n" then
    table.remove(lines) -- the newline that ends the last line
  end
  if text == "" then
    return {}
  end
  return lines
end

-- whole lines an edit replaces (a range ending mid-line reaches the end of the document)
local function replaced_count(edit)
  return edit.range["end"].line - edit.range.start.line + ((edit.range["end"].character > 0) and 1 or 0)
end

-- byte column of an LSP position's character on `row`
local function byte_col(bufnr, row, character, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  return text_util.byte_col(line, character, encoding)
end

--- The suggestion shown (nil when none): { bufnr, edits = {{range, newText, confidence}}, next }.
function M.current()
  if shown == nil then
    return nil
  end
  return { bufnr = shown.bufnr, edits = shown.edits, next = shown.next }
end

function M.clear(bufnr)
  if shown and (bufnr == nil or shown.bufnr == bufnr) then
    if vim.api.nvim_buf_is_valid(shown.bufnr) then
      vim.api.nvim_buf_clear_namespace(shown.bufnr, M.ns, 0, -1)
    end
    shown = nil
  end
end

local function render(bufnr, edits, next, encoding)
  M.clear()
  local cfg = type(core().config.next_edit) == "table" and core().config.next_edit or {}
  local removed_hl, added_hl = cfg.removed_hl or "DiffDelete", cfg.added_hl or "DiffAdd"
  local count = vim.api.nvim_buf_line_count(bufnr)
  for i, edit in ipairs(edits) do
    local first, n = edit.range.start.line, replaced_count(edit)
    for row = first, math.min(first + n, count) - 1 do
      local opts = { line_hl_group = removed_hl, hl_eol = true }
      if i == 1 and row == first then
        opts.virt_text = { { "  diffgemma: <Tab> accept, <Esc> dismiss", "Comment" } }
        opts.virt_text_pos = "eol"
      end
      vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, 0, opts)
    end
    local lines = {}
    for _, line in ipairs(split_lines(edit.newText)) do
      table.insert(lines, { { text_util.display(line, bufnr), added_hl } })
    end
    if #lines > 0 then
      -- below the replaced lines; an insertion goes above the line it is inserted before
      local row, above = first + n - 1, false
      if n == 0 then
        row, above = math.min(first, count - 1), first < count
      end
      vim.api.nvim_buf_set_extmark(bufnr, M.ns, math.max(row, 0), 0,
        { virt_lines = lines, virt_lines_above = above })
    end
  end
  shown = { bufnr = bufnr, tick = vim.api.nvim_buf_get_changedtick(bufnr), edits = edits, next = next,
            encoding = encoding }
end

--- Ask the server for a suggestion at the cursor of the current window.
function M.suggest()
  local client = core().get_client()
  local bufnr = vim.api.nvim_get_current_buf()
  if client == nil or not vim.lsp.buf_is_attached(bufnr, client.id) then
    return
  end
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(0, encoding)
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  request_seq = request_seq + 1
  local seq = request_seq
  core().request(client, "diffgemma/nextEdit", params, function(err, result)
    if err or seq ~= request_seq or not vim.api.nvim_buf_is_valid(bufnr) then
      return
    end
    if vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or type(result) ~= "table" then
      return -- changed meanwhile, or nothing to suggest (off, ghost text showing)
    end
    local next = type(result.next) == "table" and result.next or nil
    next_place = nil
    if next then
      next_place = { bufnr = bufnr, tick = tick, row = next.line,
                     col = byte_col(bufnr, next.line, next.character, encoding) }
    end
    local edits = type(result.edits) == "table" and result.edits or {}
    if #edits == 0 then
      M.last_reason = result.reason
      return
    end
    table.sort(edits, function(a, b) return a.range.start.line < b.range.start.line end)
    render(bufnr, edits, next, encoding)
    if M.on_shown then
      M.on_shown(M.current())
    end
  end, bufnr)
end

function M.schedule()
  local cfg = core().config.next_edit
  if not cfg or not cfg.enable then
    return
  end
  if timer == nil then
    timer = vim.loop.new_timer()
  end
  timer:stop()
  timer:start(cfg.trigger_delay_ms, 0, vim.schedule_wrap(function()
    M.suggest()
  end))
end

local function valid()
  if shown == nil or not vim.api.nvim_buf_is_valid(shown.bufnr) then
    return nil
  end
  if vim.api.nvim_buf_get_changedtick(shown.bufnr) ~= shown.tick then
    M.clear()
    return nil
  end
  return shown
end

-- whether the cursor's row is at the first edit (within a line of it)
local function cursor_at(s, row)
  local edit = s.edits[1]
  local first = edit.range.start.line
  local last = first + math.max(0, replaced_count(edit) - 1)
  return row >= first - 1 and row <= last + 1
end

local function move_to(bufnr, row, col)
  local win = vim.fn.bufwinid(bufnr)
  if win ~= -1 then
    local count = vim.api.nvim_buf_line_count(bufnr)
    vim.api.nvim_win_set_cursor(win, { math.min(row, count - 1) + 1, col })
  end
end

--- Apply the shown suggestion (one undo step); returns true when there was one.
function M.accept()
  local s = valid()
  if s == nil then
    return false
  end
  M.clear()
  vim.lsp.util.apply_text_edits(s.edits, s.bufnr, s.encoding)
  local first = s.edits[1]
  local lines = split_lines(first.newText)
  if #lines > 0 then
    move_to(s.bufnr, first.range.start.line + #lines - 1, #lines[#lines])
  else
    move_to(s.bufnr, first.range.start.line, 0)
  end
  return true
end

--- <Tab>: go to the suggestion when the cursor is elsewhere, else accept it. True when it acted.
function M.tab()
  local s = valid()
  if s == nil then
    return false
  end
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  if cursor_at(s, row) then
    return M.accept()
  end
  move_to(s.bufnr, s.edits[1].range.start.line, 0)
  return true
end

function M.dismiss()
  local had = shown ~= nil
  M.clear()
  return had
end

--- Go to the suggestion, or to the next suggested place (and ask for a suggestion there).
function M.jump()
  local bufnr = vim.api.nvim_get_current_buf()
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  local s = valid()
  if s and s.bufnr == bufnr and not cursor_at(s, row) then
    move_to(bufnr, s.edits[1].range.start.line, 0)
    return true
  end
  local place = next_place
  if place and place.bufnr == bufnr and place.tick == vim.api.nvim_buf_get_changedtick(bufnr) then
    M.clear()
    move_to(bufnr, place.row, place.col)
    M.suggest()
    return true
  end
  return false
end

--- Normal-mode keys and the autocommands that ask after an edit (called by diffgemma.setup).
function M.setup(group)
  local cfg = core().config.next_edit
  if not cfg or not cfg.enable then
    return
  end
  vim.api.nvim_create_autocmd({ "InsertLeave", "TextChanged" }, {
    group = group,
    callback = function(args)
      M.clear(args.buf)
      if vim.api.nvim_get_mode().mode:sub(1, 1) == "n" then
        M.schedule()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "TextChangedI", "BufLeave" }, {
    group = group,
    callback = function(args)
      M.clear(args.buf)
    end,
  })
  local function map(key, action, desc)
    if key then
      vim.keymap.set("n", key, function()
        if shown then
          return "<Cmd>lua require('diffgemma.next_edit')." .. action .. "()<CR>"
        end
        return key
      end, { expr = true, silent = true, desc = desc })
    end
  end
  map(cfg.accept_key, "tab", "diffgemma: go to / accept the suggested edit")
  map(cfg.dismiss_key, "dismiss", "diffgemma: dismiss the suggested edit")
  vim.api.nvim_create_user_command("DiffgemmaNextEdit", function()
    M.suggest()
  end, { desc = "Ask diffgemma for the edit that follows the recent ones" })
  if cfg.jump_key then
    vim.keymap.set("n", cfg.jump_key, function()
      M.jump()
    end, { silent = true, desc = "diffgemma: jump to the suggested edit or the next suggested place" })
  end
end

return M
