"""`diffgemma bench`: the engine's speed next to transformers' generate, in one run."""

from __future__ import annotations

import typer

from diffgemma.cli.errors import ModelLoadFailed, guarded
from diffgemma.runtime.api import config


@guarded
def bench(
    model: str = typer.Option(None, "--model", "-m", envvar=config.ENV_MODEL,
                              help="Checkpoint dir or Hugging Face id (default: a tiny random checkpoint)."),
    repeats: int = typer.Option(5, min=1, max=100, help="Runs per path; the median is reported."),
    steps: int = typer.Option(16, min=1, max=256, help="Denoising steps per canvas, the same for every path."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
) -> None:
    """Measure ms per denoising step: our loop vs transformers' generate, same input and steps.

    Prints one table from one run; the last column is the speed ratio against generate.
    """
    import tempfile

    from diffgemma.evals.bench import ModelLoadError, describe, run_bench

    with tempfile.TemporaryDirectory() as tmp:
        target = model
        if not target:
            from diffgemma.training.tiny import write_tiny

            target = str(write_tiny(tmp))
        try:
            rows = run_bench(target, repeats=repeats, steps=steps, device=device)
        except ModelLoadError as exc:
            raise ModelLoadFailed(str(exc)) from None
    print(describe(rows, {"model": model or "tiny (random weights)", "device": device or "auto"}))


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command(
    "bench",
    epilog="Examples:\n\n  diffgemma bench --model ./tiny --steps 16\n\n"
    "  diffgemma bench --model google/diffusiongemma-26B-A4B-it --device cuda",
)(bench)
