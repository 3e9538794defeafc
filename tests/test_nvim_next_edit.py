"""Headless Neovim with editors/nvim: an edit typed in normal mode brings a next-edit suggestion
from a real `diffgemma lsp` and a real daemon (tiny checkpoint), drawn as a diff in virtual lines;
the keys dismiss it, jump to it, accept it, and jump to the next suggested place.

Plain text has no grammar to hold the random model back, and threshold 0 lets any change through,
so a suggestion comes; where it goes is the model's (random), where the next place is is not: the
other lines that still say the renamed word."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nvim_harness import lua_script, needs_nvim, run_nvim  # same folder: pytest puts it on sys.path
from test_lsp_server import Daemon, run_daemon

pytestmark = needs_nvim

SOURCE = "".join(f"item {i}: apples and pears\n" for i in range(30))

SCRIPT = lua_script(r"""
  local dg = require("diffgemma")
  local ne = require("diffgemma.next_edit")
  dg.setup({
    cmd = { os.getenv("DG_PYTHON"), "-m", "diffgemma.lsp" },
    settings = { socket = os.getenv("DG_SOCKET"), autoStart = false, debounceMs = 0, steps = 3,
                 enable = { ["*"] = false }, nextEdit = { debounceMs = 0, threshold = 0 } },
    auto_trigger = false,
  })
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DG_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.wait(30000, function() return dg.client_id ~= nil and vim.lsp.buf_is_attached(bufnr, dg.client_id) end, 20)
  vim.wait(120000, function() return dg.state.state == "ready" end, 20)
  local function press(keys)
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "x", false)
  end
  local function row() return vim.api.nvim_win_get_cursor(0)[1] - 1 end
  local function lines() return vim.api.nvim_buf_get_lines(bufnr, 0, -1, false) end
  local function wait_shown()
    for _ = 1, 3 do
      if vim.wait(150000, function() return ne.current() ~= nil end, 50) then return ne.current() end
      ne.suggest() -- random weights may propose nothing: ask again
    end
    return ne.current()
  end
  local function away(s)
    local first = s.edits[1].range.start.line
    return (first > 8) and 0 or (#lines() - 1)
  end

  -- the edit, as a user types it: change a word in normal mode; leaving insert mode asks
  vim.api.nvim_win_set_cursor(0, { 14, 9 })
  press("ciwbananas<Esc>")
  local first = wait_shown()
  result.first = first
  result.marks = vim.api.nvim_buf_get_extmarks(bufnr, ne.ns, 0, -1, { details = true })
  result.lines_before = lines()
  -- <Esc> dismisses
  press("<Esc>")
  result.after_dismiss = { shown = ne.current() ~= nil, lines = lines(),
    marks = #vim.api.nvim_buf_get_extmarks(bufnr, ne.ns, 0, -1, {}) }

  ne.suggest()
  local second = wait_shown()
  result.second = second
  -- the jump key goes to the suggestion from elsewhere
  vim.api.nvim_win_set_cursor(0, { away(second) + 1, 0 })
  press("<M-n>")
  result.jumped = { row = row(), shown = ne.current() ~= nil }
  -- at the suggestion, the jump key goes to the next suggested place (and asks there)
  press("<M-n>")
  result.jumped_next = { row = row(), shown = ne.current() ~= nil }

  ne.suggest()
  local third = wait_shown()
  result.third = third
  result.lines_before_accept = lines()
  -- <Tab> from elsewhere goes to the suggestion; <Tab> there accepts it
  vim.api.nvim_win_set_cursor(0, { away(third) + 1, 0 })
  press("<Tab>")
  result.tab_jump = { row = row(), shown = ne.current() ~= nil }
  press("<Tab>")
  result.accepted = { shown = ne.current() ~= nil, lines = lines(), cursor = vim.api.nvim_win_get_cursor(0),
    marks = #vim.api.nvim_buf_get_extmarks(bufnr, ne.ns, 0, -1, {}) }
""")


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def apply(lines: list[str], edits: list[dict[str, Any]]) -> list[str]:
    """The buffer's lines after the suggestion's whole-line edits (applied from the last one up)."""
    text = "".join(line + "\n" for line in lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    for edit in sorted(edits, key=lambda e: e["range"]["start"]["line"], reverse=True):
        start, end = edit["range"]["start"], edit["range"]["end"]
        a = starts[start["line"]] + start["character"]
        b = starts[end["line"]] + end["character"]
        text = text[:a] + edit["newText"] + text[b:]
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def test_next_edit_keys_dismiss_jump_and_accept(tmp_path: Path, daemon: Daemon) -> None:
    result = run_nvim(tmp_path, daemon, SOURCE, SCRIPT, name="notes.txt", timeout=900)
    assert "error" not in result, result.get("error")
    first = result["first"]
    assert first is not None and first["edits"], "no suggestion came"
    before = result["lines_before"]
    assert before[13] == "item 13: bananas and pears"
    # drawn as a diff: each replaced line highlighted, the new lines as virtual lines below
    edit = first["edits"][0]
    replaced = edit["range"]["end"]["line"] - edit["range"]["start"]["line"]
    line_marks = [m for m in result["marks"] if "virt_lines" not in m[3]]
    virt = [m for m in result["marks"] if "virt_lines" in m[3]]
    assert len(line_marks) >= min(replaced, len(before) - edit["range"]["start"]["line"])
    assert line_marks[0][1] == edit["range"]["start"]["line"]
    if edit["newText"]:
        shown = ["".join(chunk[0] for chunk in line) for line in virt[0][3]["virt_lines"]]
        assert len(shown) == len(edit["newText"].rstrip("\n").split("\n"))

    dismissed = result["after_dismiss"]
    assert dismissed == {"shown": False, "lines": before, "marks": 0}

    second = result["second"]
    assert result["jumped"] == {"row": second["edits"][0]["range"]["start"]["line"], "shown": True}
    # the other lines that still say "apples" are where the next edit is likely to be
    assert second["next"] is not None
    assert result["jumped_next"]["row"] == second["next"]["line"]
    assert "apples" in before[second["next"]["line"]]

    third = result["third"]
    assert result["tab_jump"] == {"row": third["edits"][0]["range"]["start"]["line"], "shown": True}
    accepted = result["accepted"]
    assert accepted["shown"] is False and accepted["marks"] == 0
    assert accepted["lines"] == apply(result["lines_before_accept"], third["edits"])
    assert accepted["lines"] != result["lines_before_accept"]
