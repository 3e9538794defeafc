"""Headless Neovim with editors/nvim, a real `diffgemma lsp` and a real daemon (tiny checkpoint):
ask for ghost text, read it back from the extmarks, accept it, and rewrite a selection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nvim_harness import needs_nvim, run_nvim  # same folder: pytest puts it on sys.path
from test_lsp_server import Daemon, run_daemon

pytestmark = needs_nvim

SOURCE = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    \n"

# Runs inside Neovim; writes what it saw to $DG_OUT as JSON and quits.
SCRIPT = r"""
local out_path = os.getenv("DG_OUT")
local result = { version = vim.version() }
local function finish()
  local f = io.open(out_path, "w")
  f:write(vim.fn.json_encode(result))
  f:close()
  vim.cmd("qa!")
end

local ok, err = pcall(function()
  local dg = require("diffgemma")
  dg.setup({
    cmd = { os.getenv("DG_PYTHON"), "-m", "diffgemma.lsp" },
    settings = { socket = os.getenv("DG_SOCKET"), autoStart = false, debounceMs = 0, maxTokens = 8 },
    auto_trigger = false,
  })
  vim.o.virtualedit = "onemore" -- normal mode may sit just past the end of a line, as insert mode does
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DG_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  result.attached = vim.wait(30000, function()
    return dg.client_id ~= nil and vim.lsp.buf_is_attached(bufnr, dg.client_id)
  end, 20)
  result.ready = vim.wait(120000, function() return dg.state.state == "ready" end, 20)
  result.status_line = dg.status()

  -- random weights may fill a hole with nothing: try a few cursor places
  local places = { { 6, 4 }, { 2, 11 }, { 6, 0 } }
  for _, place in ipairs(places) do
    vim.api.nvim_win_set_cursor(0, place)
    dg.suggest()
    if vim.wait(60000, function() return dg.current() ~= nil end, 20) then
      result.cursor = place
      break
    end
  end
  result.suggestion = dg.current()
  -- how Neovim itself would show the suggestion's lines (tabs expanded, controls as ^X)
  result.display_lines = {}
  if result.suggestion then
    for line in (result.suggestion.text .. "\n"):gmatch("(.-)\r?\n") do
      local expanded = line:gsub("\t", string.rep(" ", vim.bo[bufnr].tabstop))
      table.insert(result.display_lines, vim.fn.strtrans(expanded))
    end
  end
  result.marks = vim.api.nvim_buf_get_extmarks(bufnr, dg.ns, 0, -1, { details = true })
  -- accept with the key, as a user does: enter insert mode where the ghost text is, press <Tab>
  local keys = vim.api.nvim_replace_termcodes("i<Tab><Esc>", true, false, true)
  vim.api.nvim_feedkeys(keys, "x", false)
  result.accepted = dg.current() == nil
  result.marks_after_accept = vim.api.nvim_buf_get_extmarks(bufnr, dg.ns, 0, -1, { details = true })
  result.lines_after_accept = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)

  -- the rewrite is offered as a code action on a selection
  local params = vim.lsp.util.make_given_range_params({ 1, 0 }, { 2, 0 }, bufnr, "utf-16")
  params.context = { diagnostics = {} }
  local answers = vim.lsp.buf_request_sync(bufnr, "textDocument/codeAction", params, 30000) or {}
  result.code_actions = {}
  for _, answer in pairs(answers) do
    for _, action in ipairs(answer.result or {}) do
      table.insert(result.code_actions, { title = action.title, kind = action.kind })
    end
  end

  -- rewrite lines 1-2 (the add function) through the server's command + workspace/applyEdit
  local done = nil
  local second = vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1]
  dg.rewrite(bufnr, { 0, 0 }, { 1, #second }, "use a variable", function(e, r) done = { err = e, result = r } end)
  result.rewrite_done = vim.wait(120000, function() return done ~= nil end, 20)
  result.rewrite = done
  result.lines_after_rewrite = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  -- with no ghost text the key keeps its own meaning
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("A<Tab>x<Esc>", true, false, true), "x", false)
  result.first_line_after_tab = vim.api.nvim_buf_get_lines(bufnr, 0, 1, false)[1]
end)
if not ok then
  result.error = tostring(err)
  finish()
  return
end

-- Typing in insert mode asks by itself (auto_trigger). Insert mode only runs in Neovim's main
-- loop, so this part is driven from timers once this script has returned.
local dg = require("diffgemma")
dg.config.auto_trigger = true
dg.clear()
vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(0), 0 })
vim.cmd("startinsert!")
local deadline = vim.loop.now() + 15000
local tries = 1
local function poll()
  if dg.current() == nil and vim.loop.now() > deadline and tries < 8 then
    -- random weights may fill this spot with nothing (or with a line the syntax gate cuts to
    -- nothing): type one more character and ask again
    tries = tries + 1
    deadline = vim.loop.now() + 15000
    vim.api.nvim_feedkeys(string.sub("xyzwvuts", tries, tries), "t", false)
  elseif dg.current() ~= nil or vim.loop.now() > deadline then
    result.auto_tries = tries
    result.auto_mode = vim.api.nvim_get_mode().mode
    result.auto_suggestion = dg.current()
    result.auto_line = vim.api.nvim_get_current_line()
    result.auto_cursor = vim.api.nvim_win_get_cursor(0)
    vim.cmd("stopinsert")
    vim.defer_fn(function()
      result.cleared_on_leave = dg.current() == nil
      finish()
    end, 50)
    return
  end
  vim.defer_fn(poll, 20)
end
vim.defer_fn(function()
  -- as if typed: a comment, where whatever the random weights write is still code (the syntax gate
  -- gives back nothing that would break the buffer)
  vim.api.nvim_feedkeys(" # r", "t", false)
  vim.defer_fn(poll, 20)
end, 100)
"""


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def ghost_text(marks: list[Any]) -> tuple[int, int, str]:
    """(row, col, text) of the one ghost-text extmark: virt_text is the first line, virt_lines the rest."""
    assert len(marks) == 1
    _id, row, col, details = marks[0]
    first = "".join(chunk[0] for chunk in details.get("virt_text", []))
    rest = ["".join(chunk[0] for chunk in line) for line in details.get("virt_lines", [])]
    return row, col, "\n".join([first, *rest])


def test_ghost_text_accept_and_rewrite(tmp_path: Path, daemon: Daemon) -> None:
    result = run_nvim(tmp_path, daemon, SOURCE, SCRIPT)
    assert "error" not in result, result.get("error")
    assert result["attached"] and result["ready"]
    assert result["status_line"].startswith("diffgemma: ready")

    suggestion = result["suggestion"]
    assert suggestion, "no ghost text at any of the tried places"
    row0, col0 = result["cursor"][0] - 1, result["cursor"][1]
    assert (suggestion["row"], suggestion["col"]) == (row0, col0)

    # the extmark shows exactly the suggested text (in Neovim's display form) at the cursor
    row, col, shown = ghost_text(result["marks"])
    assert (row, col) == (row0, col0)
    assert shown == "\n".join(result["display_lines"])
    text = suggestion["text"]

    # accepting inserts it at the cursor and clears the ghost text
    assert result["accepted"] is True
    assert result["code_actions"] == [{"title": "Rewrite selection", "kind": "refactor.rewrite"}]
    assert result["marks_after_accept"] == []
    before = SOURCE.split("\n")
    expected = "\n".join([*before[:row0], before[row0][:col0] + text + before[row0][col0:], *before[row0 + 1 :]])
    assert "\n".join(result["lines_after_accept"]) + "\n" == expected

    # the rewrite came back as workspace/applyEdit and Neovim applied it to lines 1-2 only
    assert result["rewrite_done"]
    assert result["rewrite"].get("err") is None
    assert result["rewrite"]["result"] == {"applied": True}
    after_accept, after_rewrite = result["lines_after_accept"], result["lines_after_rewrite"]
    tail = after_accept[2:]
    assert after_rewrite[len(after_rewrite) - len(tail) :] == tail

    assert result["first_line_after_tab"] == after_rewrite[0] + "\tx"

    # typing in insert mode brought ghost text at the cursor by itself; leaving insert mode hid it
    assert result["auto_mode"].startswith("i")
    auto = result["auto_suggestion"]
    assert auto, f"no ghost text while typing ({result['auto_tries']} tries)"
    assert result["auto_line"].startswith(after_rewrite[-1] + " # r")
    assert [auto["row"] + 1, auto["col"]] == result["auto_cursor"]
    assert auto["col"] == len(result["auto_line"].encode())
    assert result["cleared_on_leave"]
