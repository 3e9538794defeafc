"""Running a Lua script in headless Neovim with editors/nvim on the runtime path, against a real
daemon (test_lsp_server.run_daemon); the script writes what it saw to $DG_OUT as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_lsp_server import Daemon  # same folder: pytest puts it on sys.path

PLUGIN = Path(__file__).resolve().parents[1] / "editors" / "nvim"
NVIM = shutil.which("nvim")

needs_nvim = pytest.mark.skipif(NVIM is None, reason="nvim not installed (apt-get install -y neovim)")


# How a driving script ends: `result` (and the error, if the body raised) written to $DG_OUT as JSON.
SCRIPT_END = r"""end)
if not ok then result.error = tostring(err) end
local f = io.open(os.getenv("DG_OUT"), "w")
f:write(vim.fn.json_encode(result))
f:close()
vim.cmd("qa!")
"""


def lua_script(body: str) -> str:
    """A script for `run_nvim`: ``body`` runs protected and fills the table ``result``, which is
    written to $DG_OUT when it returns or raises; then Neovim quits."""
    return "local result = {}\nlocal ok, err = pcall(function()\n" + body + SCRIPT_END


def run_nvim(tmp_path: Path, daemon: Daemon, source: str, script: str, *, name: str = "calc.py",
             timeout: float = 400) -> dict[str, Any]:
    """Open ``source`` as $DG_FILE (called ``name``), run ``script`` and return the JSON it wrote."""
    assert NVIM is not None
    source_path = tmp_path / name
    source_path.write_text(source)
    script_path = tmp_path / "drive.lua"
    script_path.write_text(script)
    out = tmp_path / "out.json"
    env = {
        **daemon.env,
        "DG_OUT": str(out),
        "DG_FILE": str(source_path),
        "DG_SOCKET": str(daemon.socket),
        "DG_PYTHON": sys.executable,
        "XDG_STATE_HOME": str(tmp_path / "state"),  # the LSP log goes here, not to the user's
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    command = [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={PLUGIN}", "-S", str(script_path)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.exists(), f"nvim wrote nothing (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result
