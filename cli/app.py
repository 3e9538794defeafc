"""The `diffgemma` command line (Typer). Torch-free: heavy work happens in the daemon."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="diffgemma",
    help="Local code infilling and inline rewrites with DiffusionGemma, a text-diffusion LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Each command group lives in its own module with a `register(app)` function; keep their
# top-level imports light so `diffgemma --help` stays fast.
_COMMAND_MODULES = (
    "diffgemma.cli.daemon_cmds",  # serve, daemon start|stop|status
    "diffgemma.cli.quantize_cmd",  # quantize
    "diffgemma.cli.lsp_cmd",  # lsp
    "diffgemma.cli.eval_cmd",  # eval, train
    "diffgemma.cli.bench_cmd",  # bench
)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()
