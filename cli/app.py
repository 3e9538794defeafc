"""The `diffgemma` command line (Typer). Torch-free: heavy work happens in the daemon.

Help texts here and in the command modules are written as Typer shows them: one line per prose
paragraph (a trailing backslash continues a source line), so Rich wraps them to the terminal;
indented lines (examples, tables) keep their breaks.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from diffgemma import __version__
from diffgemma.cli.errors import EXIT_CODES_HELP, UsageError, run_app

_EPILOG = (
    """[bold]Examples[/bold]

  printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -
  diffgemma infill app.py:42                 print code for the end of line 42
  diffgemma infill app.py:42:9 --apply       write it into the file
  diffgemma edit app.py -s 10-14 -i 'add type hints'     rewrite, show a diff
  diffgemma next app.py                      the edit that follows your recent ones
  diffgemma watch src/                       fill markers on every save
  diffgemma status                           the daemon, model, device, memory

The daemon starts on first use and keeps the model loaded. Options fall back to DIFFGEMMA_* \
environment variables, then to config.toml in the user config directory (DIFFGEMMA_CONFIG_DIR \
moves it).

"""
    + EXIT_CODES_HELP
)


class Entry(NamedTuple):
    module: str  # defines the command in its Typer app ``commands``
    help: str  # the first paragraph of the command's own help (a test keeps the two equal)


# The commands, in the order `--help` lists them. `--help` lists them from this table and so
# imports none of their modules; running a command imports its module alone.
COMMANDS: dict[str, Entry] = {
    "infill": Entry("diffgemma.cli.infill_cmd", "Fill the hole at a cursor with code that joins the text after it."),
    "edit": Entry("diffgemma.cli.edit_cmd",
                  "Rewrite a selection of FILE, optionally following an instruction, and print a unified diff."),
    "next": Entry("diffgemma.cli.next_cmd",
                  "Propose the edit that follows your recent edits in FILE, and print it as a unified diff."),
    "watch": Entry("diffgemma.cli.watch_cmd", "Watch files and fill markers in them whenever they are saved."),
    "serve": Entry("diffgemma.cli.daemon_cmds",
                   "Run the daemon in the foreground: it owns the model and answers infill and edit requests."),
    "status": Entry("diffgemma.cli.daemon_cmds",
                    "Show the daemon, the model it holds, the device and the memory in use."),
    "quantize": Entry("diffgemma.cli.quantize_cmd", "Quantize the experts and the linear layers (with bitsandbytes) "
                      "to 4-bit NF4, blocks of 64, and write a checkpoint that loads fast."),
    "lsp": Entry("diffgemma.cli.lsp_cmd",
                 'Run the diffgemma language server: ghost-text infill and "Rewrite selection".'),
    "eval": Entry("diffgemma.cli.eval_cmd",
                  "Measure infill quality: the model vs. trivial baselines, and each infill strategy switched."),
    "train": Entry("diffgemma.cli.eval_cmd",
                   "Train diffgemma-mini (a small DiffusionGemma) from scratch on this Python's standard library."),
    "bench": Entry("diffgemma.cli.bench_cmd",
                   "Measure ms per denoising step: our loop vs transformers' generate, same input and steps."),
    "daemon": Entry("diffgemma.cli.daemon_cmds", "Run the daemon in the background and manage it."),
}


# No value placeholder after a flag in the help's options table: Typer's Rich help prints every
# option's type (`<bool>` after `--apply`, `--help` ...), though a flag takes no value; its
# plain-text help already leaves it out. Flags and counters get none.
_display_type_rich = TyperOption.display_type_rich


def _flag_free_display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag or self.count else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_free_display_type_rich  # type: ignore[method-assign]


class LazyCommands(TyperGroup):
    """The commands of COMMANDS: a command's module is imported when the command runs; `--help`
    lists every command by its table line. A module that fails to import is a broken install: the
    error surfaces, no command silently goes missing."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        entry = COMMANDS.get(args[0]) if args else None
        if entry is not None and args[0] not in self.commands:
            module = importlib.import_module(entry.module)
            self.commands.update(typer.main.get_group(module.commands).commands)
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            # Typer suggests among the commands loaded, which is none yet: suggest from the table.
            close = get_close_matches(args[0], COMMANDS) if args and "Did you mean" not in exc.message else []
            if close:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The list shows stand-ins made from the table, so listing imports no command module.
        loaded = self.commands
        self.commands = {name: loaded.get(name) or TyperCommand(name, help=entry.help)
                         for name, entry in COMMANDS.items()}
        try:
            super().format_help(ctx, formatter)
        finally:
            self.commands = loaded


app = typer.Typer(
    name="diffgemma",
    help="Local code infilling and inline rewrites with DiffusionGemma, a text-diffusion LLM.",
    epilog=_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=LazyCommands,
)


@app.callback(invoke_without_command=True)
def _commands(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """The commands come from COMMANDS, not from this group callback (which only reads --version).

    It runs before any command (so `--version` wins over one) and, for `--version` alone, without
    one; a flag's callback would be called on every run, given or not."""
    if version:
        print(f"diffgemma {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        raise UsageError("Missing command.", ctx)


def main() -> None:
    # One-line errors and distinct exit codes even for argument errors (see cli/errors.py).
    run_app(app)


if __name__ == "__main__":
    main()
