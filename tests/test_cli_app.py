"""The command table: every command module registers, and one that fails to import is an error."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from diffgemma.cli import app as cli_app


def test_every_command_is_registered() -> None:
    out = CliRunner().invoke(cli_app.app, ["--help"], terminal_width=200).output
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {"infill", "edit", "watch", "serve", "daemon", "status", "quantize", "lsp", "eval", "train",
            "bench"} <= listed


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_app, "app", typer.Typer())
    monkeypatch.setattr(cli_app, "_COMMAND_MODULES", ("diffgemma.cli.infill_cmd", "diffgemma.cli.no_such_cmd"))
    with pytest.raises(ModuleNotFoundError, match="no_such_cmd"):
        cli_app._register_all()
