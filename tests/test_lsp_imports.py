"""The language server stays torch-free: it imports no torch or transformers, even on the paths it
takes lazily (context cutting, cross-file snippets, the daemon client)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import diffgemma.cli.lsp_cmd
import diffgemma.lsp.server as server
import diffgemma.context.crossfile, diffgemma.context.languages, diffgemma.context.window
import diffgemma.runtime.api.client, diffgemma.runtime.api.protocol
server.create_server()
heavy = sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules)
print(",".join(heavy) or "clean")
"""


def test_server_imports_no_torch() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "clean", out.stdout + out.stderr


def test_lsp_command_help() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from diffgemma.cli.app import main; main()", "lsp", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for option in ("--stdio", "--tcp", "--host", "--port"):
        assert option in out.stdout
