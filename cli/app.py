"""The `diffgemma` command line (Typer). Torch-free: heavy work happens in the daemon."""

from __future__ import annotations

import importlib

import typer

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

app = typer.Typer(
    name="diffgemma",
    help="Local code infilling and inline rewrites with DiffusionGemma, a text-diffusion LLM.",
    epilog=reflow(_EPILOG),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Each command group lives in its own module with a `register(app)` function; keep their
# top-level imports light so `diffgemma --help` stays fast.
_COMMAND_MODULES = (
    "diffgemma.cli.infill_cmd",  # infill
    "diffgemma.cli.edit_cmd",  # edit
    "diffgemma.cli.watch_cmd",  # watch
    "diffgemma.cli.daemon_cmds",  # serve, daemon start|stop|status
    "diffgemma.cli.quantize_cmd",  # quantize
    "diffgemma.cli.lsp_cmd",  # lsp
    "diffgemma.cli.eval_cmd",  # eval, train
    "diffgemma.cli.bench_cmd",  # bench
)


def _register_all() -> None:
    # A command module that fails to import is a broken install: the error surfaces, no command
    # silently goes missing.
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    # One-line errors and distinct exit codes even for argument errors (see cli/errors.py).
    run_app(app)


if __name__ == "__main__":
    main()
