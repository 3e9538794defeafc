"""Headless Neovim with editors/nvim asking for several alternatives (a real `diffgemma lsp`, a real
daemon on the tiny checkpoint) and cycling through them with the cycle key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nvim_harness import lua_script, needs_nvim, run_nvim  # same folder: pytest puts it on sys.path
from test_lsp_server import Daemon, run_daemon

pytestmark = needs_nvim

SOURCE = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    \n"

SCRIPT = lua_script(r"""
  local dg = require("diffgemma")
  dg.setup({
    cmd = { os.getenv("DG_PYTHON"), "-m", "diffgemma.lsp" },
    settings = { socket = os.getenv("DG_SOCKET"), autoStart = false, debounceMs = 0, maxTokens = 8,
                 steps = 3, alternatives = 4 },
    auto_trigger = false,
  })
  vim.o.virtualedit = "onemore" -- normal mode may sit where insert mode does, past the line's end
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DG_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.wait(30000, function() return dg.client_id ~= nil and vim.lsp.buf_is_attached(bufnr, dg.client_id) end, 20)
  vim.wait(120000, function() return dg.state.state == "ready" end, 20)
  -- random weights: try places until one gives two or more distinct items
  for _, place in ipairs({ { 6, 4 }, { 2, 11 }, { 6, 0 }, { 2, 4 } }) do
    for _ = 1, 3 do
      dg.clear()
      vim.api.nvim_win_set_cursor(0, place)
      dg.suggest()
      vim.wait(60000, function() return dg.current() ~= nil end, 20)
      local cur = dg.current()
      if cur and cur.count >= 2 then break end
    end
    local cur = dg.current()
    if cur and cur.count >= 2 then break end
  end
  local first = dg.current()
  result.first = first
  if first and first.count >= 2 then
    result.cycled = dg.cycle(1)
    result.second = dg.current()
    -- the key, as a user presses it: back to the first after going round
    -- (read while still in insert mode: leaving it hides the ghost text)
    local keys = vim.api.nvim_replace_termcodes("i" .. string.rep("<M-]>", first.count - 1)
      .. "<Cmd>lua _G.dg_seen = require('diffgemma').current()<CR><Esc>", true, false, true)
    vim.api.nvim_feedkeys(keys, "xt", false)
    result.after_keys = _G.dg_seen or vim.NIL
  end
""")


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def test_cycle_key_walks_the_alternatives(tmp_path: Path, daemon: Daemon) -> None:
    result = run_nvim(tmp_path, daemon, SOURCE, SCRIPT)
    assert "error" not in result, result.get("error")
    first = result["first"]
    assert first is not None and first["count"] >= 2, "no place gave two distinct alternatives"
    assert result["cycled"] is True
    second = result["second"]
    assert second["text"] != first["text"] and second["count"] == first["count"]
    assert (second["row"], second["col"]) == (first["row"], first["col"])
    # count - 1 presses of the key from the second item come back round to the first
    assert result["after_keys"]["text"] == first["text"]
