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


def test_what_a_run_asks_for_is_decided_once_from_how_it_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffgemma.cli import plumbing

    monkeypatch.setattr(plumbing, "stderr_is_terminal", lambda: False)
    piped = plumbing.output_for(quiet=False)  # `printf ... | diffgemma infill - > out`: nothing to draw
    assert (piped.live, piped.confidence, piped.reports(applied=False)) == (False, False, False)
    assert plumbing.output_for(quiet=False, json=True).confidence  # --json prints the tokens
    monkeypatch.setattr(plumbing, "stderr_is_terminal", lambda: True)
    shown = plumbing.output_for(quiet=False)  # a live view: drafts, dimmed where unsure
    assert (shown.live, shown.confidence, shown.reports(applied=False)) == (True, True, True)
    quiet = plumbing.output_for(quiet=True)
    assert (quiet.live, quiet.confidence, quiet.reports(applied=True)) == (False, False, False)
