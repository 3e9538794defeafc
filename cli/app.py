"""The `diffgemma` command line (Typer). Torch-free: heavy work happens in the daemon."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from diffgemma.cli.errors import EXIT_CODES_HELP, run_app
from diffgemma.cli.options import reflow

_EPILOG = (
    """[bold]Examples[/bold]

  printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -
  diffgemma infill app.py:42                 print code for the end of line 42
  diffgemma infill app.py:42:9 --apply       write it into the file
  diffgemma edit app.py -s 10-14 -i 'add type hints'     rewrite, show a diff
  diffgemma watch src/                       fill markers on every save
  diffgemma status                           the daemon, model, device, memory

The daemon starts on first use and keeps the model loaded. Options fall back to DIFFGEMMA_*
environment variables, then to config.toml in the user config directory (DIFFGEMMA_CONFIG_DIR
moves it).

"""
    + EXIT_CODES_HELP
)

# Command name -> the module that defines it, in the order `--help` lists them. Each module has a
# `register(app)` function; only the module of the command that runs is imported (`--help`
# imports them all), so one command's start-up never pays for the others'.
COMMANDS: dict[str, str] = {
    "infill": "diffgemma.cli.infill_cmd",
    "edit": "diffgemma.cli.edit_cmd",
    "watch": "diffgemma.cli.watch_cmd",
    "serve": "diffgemma.cli.daemon_cmds",
    "daemon": "diffgemma.cli.daemon_cmds",
    "status": "diffgemma.cli.daemon_cmds",
    "quantize": "diffgemma.cli.quantize_cmd",
    "lsp": "diffgemma.cli.lsp_cmd",
    "eval": "diffgemma.cli.eval_cmd",
    "train": "diffgemma.cli.eval_cmd",
    "bench": "diffgemma.cli.bench_cmd",
}


class LazyCommands(TyperGroup):
    """The command table above, each command module imported when its command is first looked up.
    A module that fails to import is a broken install: the error surfaces, no command silently
    goes missing."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = typer.Typer(rich_markup_mode="rich")
            importlib.import_module(COMMANDS[cmd_name]).register(module)
            self.commands.update(typer.main.get_group(module).commands)
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="diffgemma",
    help="Local code infilling and inline rewrites with DiffusionGemma, a text-diffusion LLM.",
    epilog=reflow(_EPILOG),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=LazyCommands,
)


@app.callback()
def _commands() -> None:
    """The commands come from COMMANDS, not from this (empty) group callback."""


def main() -> None:
    # One-line errors and distinct exit codes even for argument errors (see cli/errors.py).
    run_app(app)


if __name__ == "__main__":
    main()
