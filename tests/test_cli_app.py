"""The command table: every command module registers, and one that fails to import is an error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from diffgemma.cli import app as cli_app


def test_every_command_is_registered() -> None:
    out = CliRunner().invoke(cli_app.app, ["--help"], terminal_width=200).output
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {"infill", "edit", "watch", "serve", "daemon", "status", "quantize", "lsp", "eval", "train",
            "bench"} <= listed


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_app.COMMANDS, "broken", "diffgemma.cli.no_such_cmd")
    for args in (["broken", "--help"], ["--help"]):  # running it, or listing it, imports it
        result = CliRunner().invoke(cli_app.app, args)
        assert isinstance(result.exception, ModuleNotFoundError) and "no_such_cmd" in str(result.exception)


def test_a_command_imports_only_its_own_module() -> None:
    """`diffgemma infill` starts without the other commands' modules (and never with torch)."""
    import subprocess
    import sys

    code = ("import sys; from diffgemma.cli.app import app; from typer.testing import CliRunner; "
            "CliRunner().invoke(app, ['infill', '--help']); print(sorted(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "diffgemma.cli.infill_cmd" in loaded
    for other in ("edit_cmd", "watch_cmd", "daemon_cmds", "quantize_cmd", "lsp_cmd", "eval_cmd", "bench_cmd"):
        assert f"diffgemma.cli.{other}" not in loaded
    assert "'torch'" not in loaded
