"""The command table: every command module registers, and one that fails to import is an error."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

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
    monkeypatch.setitem(cli_app.COMMANDS, "broken", cli_app.Entry("diffgemma.cli.no_such_cmd", "Never runs."))
    result = CliRunner().invoke(cli_app.app, ["broken", "--help"])  # running it imports it
    assert isinstance(result.exception, ModuleNotFoundError) and "no_such_cmd" in str(result.exception)
    listed = CliRunner().invoke(cli_app.app, ["--help"])  # listing it shows the table's line
    assert listed.exit_code == 0 and "Never runs." in listed.output


def _loaded_after(args: list[str]) -> str:
    code = ("import sys; from diffgemma.cli.app import app; from typer.testing import CliRunner; "
            f"CliRunner().invoke(app, {args!r}); print(sorted(sys.modules))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_a_command_imports_only_its_own_module() -> None:
    """`diffgemma infill` starts without the other commands' modules (and never with torch); its help
    does not load the HTTP client either."""
    loaded = _loaded_after(["infill", "--help"])
    assert "diffgemma.cli.infill_cmd" in loaded
    for other in ("edit_cmd", "watch_cmd", "daemon_cmds", "quantize_cmd", "lsp_cmd", "eval_cmd", "bench_cmd"):
        assert f"diffgemma.cli.{other}" not in loaded
    assert "'torch'" not in loaded and "'httpx'" not in loaded


def test_help_imports_no_command_module() -> None:
    """`diffgemma --help` lists the commands from the table: no command module, no HTTP client, no
    tree-sitter, no request code."""
    loaded = _loaded_after(["--help"])
    for module in ("diffgemma.cli.infill_cmd", "diffgemma.cli.daemon_cmds", "diffgemma.cli.options",
                   "diffgemma.context", "diffgemma.runtime.api.protocol", "'httpx'", "'tree_sitter'", "'torch'"):
        assert module not in loaded


def _real_commands() -> dict[str, Any]:
    """Each command as running it finds it (its module imported)."""
    group = typer.main.get_command(cli_app.app)
    ctx = typer.Context(group)
    return {name: group.resolve_command(ctx, [name])[1] for name in cli_app.COMMANDS}  # type: ignore[attr-defined]


def test_the_table_lists_each_command_by_its_own_help() -> None:
    """The line `--help` shows for a command is the first paragraph of that command's own help."""
    for name, command in _real_commands().items():
        assert command is not None and command.name == name
        assert inspect.cleandoc(command.help or "").split("\n\n")[0] == cli_app.COMMANDS[name].help, name


def test_help_texts_are_written_one_line_per_prose_paragraph() -> None:
    """Rich keeps a help text's line breaks: prose must be one line a paragraph (indented lines,
    examples and tables, keep theirs)."""
    commands = list(_real_commands().values())
    texts = [cli_app.app.info.epilog]
    while commands:
        command = commands.pop()
        texts += [command.help, command.epilog]
        commands += list(getattr(command, "commands", {}).values())
    for text in filter(None, texts):
        for paragraph in text.split("\n\n"):
            lines = paragraph.split("\n")
            assert len(lines) == 1 or any(line.startswith(" ") for line in lines), paragraph


def test_a_mistyped_command_gets_a_suggestion() -> None:
    result = CliRunner().invoke(cli_app.app, ["infil"])
    assert result.exit_code == 2 and "Did you mean 'infill'?" in result.output


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
