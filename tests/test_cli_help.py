"""Help texts and the small things a first run meets: no value placeholder after flags, no text
eaten as Rich markup, --version, a missing argument, the exit-code table, --host of the commands
that look for a daemon."""

from __future__ import annotations

import os
import re
import subprocess

import typer
from rich.style import Style
from test_cli_commands import cli_command

from diffgemma import __version__
from diffgemma.cli import app as cli_app
from diffgemma.cli.errors import EXIT_CODES_HELP
from diffgemma.runtime.api.config import MAX_HOLES


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})


def _texts() -> list[tuple[str, str]]:
    """Every help text, epilog and option help of every command, as written (Rich markup)."""
    group = typer.main.get_command(cli_app.app)
    ctx = typer.Context(group)
    texts: list[tuple[str, str]] = []

    def walk(command: object, path: str) -> None:
        texts.append((path, getattr(command, "help", None) or ""))
        texts.append((f"{path} epilog", getattr(command, "epilog", None) or ""))
        texts.extend((f"{path} {p.name}", getattr(p, "help", None) or "") for p in getattr(command, "params", []))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    for name in cli_app.COMMANDS:
        walk(group.resolve_command(ctx, [name])[1], name)
    return texts


def test_no_help_text_is_eaten_as_markup() -> None:
    """A [word ...] that is not a Rich style disappears from the rendered help (an unescaped list
    once read "alternatives: , index k")."""
    tag = re.compile(r"(?<!\\)\[([a-z#/@][^\[\]]*?)\]")
    eaten = []
    for where, text in _texts():
        for match in tag.finditer(text):
            if not match.group(1).startswith("/"):
                try:
                    Style.parse(match.group(1))
                except Exception:
                    eaten.append(f"{where}: {match.group(0)}")
    assert not eaten
    page = run("infill", "--help").stdout
    assert "alternatives: [text, ...], index k" in page


def test_flags_show_no_placeholder() -> None:
    for command in (["infill"], ["serve"], ["watch"], ["daemon", "status"]):
        page = run(*command, "--help").stdout
        assert "<bool>" not in page and "--help" in page
    assert re.search(r"--max-tokens\s+INTEGER", run("infill", "--help").stdout)  # options with values keep theirs


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout == f"diffgemma {__version__}\n"


def test_a_missing_argument_is_the_usage_line_and_one_error() -> None:
    for command, name in ((["infill"], "TARGET"), (["edit"], "FILE")):
        done = run(*command)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"Usage: diffgemma {command[0]} [OPTIONS] {{{name}}}",
            f"diffgemma: error: Missing argument '{name}' (see 'diffgemma {command[0]} --help')"]


def test_the_exit_codes_and_the_daemon_address_are_described_as_they_are() -> None:
    assert f"marker missing (or more than {MAX_HOLES})" in EXIT_CODES_HELP
    for command in (["status"], ["daemon", "status"], ["daemon", "stop"]):
        page = run(*command, "--help").stdout
        assert "the address of a TCP daemon" in page and "to listen on" not in page
    assert "the address to listen on" in run("serve", "--help").stdout
