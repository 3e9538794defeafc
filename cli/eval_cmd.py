"""`diffgemma eval` (quality table, in-process) and `diffgemma train` (train diffgemma-mini)."""

from __future__ import annotations

from pathlib import Path

import typer

from diffgemma.cli.errors import ModelLoadFailed, UsageProblem, guarded
from diffgemma.runtime.api import config


def eval_command(
    model: str | None = typer.Option(
        None, "--model", "-m", envvar=config.ENV_MODEL,
        help="Checkpoint directory or Hugging Face id (default: the shipped diffgemma-mini).",
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Tasks per suite."),
    strategy_limit: int | None = typer.Option(
        None, "--strategy-limit", min=1, help="Tasks per suite for the strategy rows (default: --limit)."
    ),
    suites: str = typer.Option(
        "line,multiline,humaneval,rewrite", "--suites",
        help="Comma-separated: line, multiline, humaneval, rewrite, next-edit (run only when named)."
    ),
    groups: str = typer.Option(
        "baselines,model,strategies,steps,strength", "--groups",
        help="Comma-separated rows: baselines, model, strategies, steps, strength.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Task choice and sampling seed."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Torch CPU threads (1 is fastest on a busy machine)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the markdown table here."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the raw report (JSON) here."),
) -> None:
    """Measure infill quality: the model vs. trivial baselines, and each infill strategy switched.

    Suites: HumanEval-Infilling (pass@1, sandboxed), single and multi-line spans cut from held-out standard-library files (exact match, still parses), rewrites of corrupted lines, and next-edit suggestions after a rename or a new parameter (exact match of the file once the suggestions are accepted; --suites next-edit). Runs in this process; no daemon needed. Prints a markdown table on stdout.
    """  # noqa: E501 - one line per paragraph: Rich wraps it to the terminal

    guarded(_evaluate)(model, limit=limit, strategy_limit=strategy_limit, suites=suites, groups=groups, seed=seed,
                       device=device, threads=threads, out=out, json_out=json_out)


def _evaluate(
    model: str | None, *, limit: int, strategy_limit: int | None, suites: str, groups: str, seed: int,
    device: str | None, threads: int | None, out: Path | None, json_out: Path | None,
) -> None:
    import json
    import sys

    from diffgemma.evals import evaluate

    try:
        suite_list = evaluate.parse_list(suites, evaluate.KNOWN_SUITES, "suite")
        group_list = evaluate.parse_list(groups, evaluate.ALL_GROUPS, "group")
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    if threads:
        evaluate.set_threads(threads)
    for target in (out, json_out):
        if target is not None and target.exists() and target.is_dir():
            raise UsageProblem(f"{target} is a directory")
    try:
        report = evaluate.run_eval(
            model, suites=suite_list, groups=group_list, limit=limit, strategy_limit=strategy_limit,
            seed=seed, device=device, progress=lambda m: print(m, file=sys.stderr, flush=True),
        )
    except evaluate.ModelLoadError as exc:
        raise ModelLoadFailed(str(exc)) from None
    table = evaluate.format_markdown(report)
    typer.echo(table)
    if out is not None:
        out.write_text(table, encoding="utf-8")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def train_command(
    out_dir: Path = typer.Argument(..., help="Directory to write the checkpoint into."),
    preset: str | None = typer.Option(
        None, "--preset", help="cpu, gpu or micro (default: gpu when CUDA is available, else cpu)."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Override the preset's step count."),
    seed: int = typer.Option(0, "--seed", min=0),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch CPU threads."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=0.1, help="Minutes: anneal by wall time too and stop when used."
    ),
    save_every: int = typer.Option(200, "--save-every", min=0, help="Write the checkpoint every N steps."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda."),
) -> None:
    """Train diffgemma-mini (a small DiffusionGemma) from scratch on this Python's standard library."""

    guarded(_train)(out_dir, preset=preset, steps=steps, seed=seed, threads=threads, time_budget=time_budget,
                    save_every=save_every, device=device)


def _train(
    out_dir: Path, *, preset: str | None, steps: int | None, seed: int, threads: int | None,
    time_budget: float | None, save_every: int, device: str | None,
) -> None:
    """Check the arguments, then run the training program (``python -m diffgemma.training.train``) in-process."""
    from diffgemma.training.train import PRESETS, main

    if preset is not None and preset not in PRESETS:
        raise UsageProblem(f"unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"{out_dir} exists and is not a directory")
    argv = [str(out_dir), "--seed", str(seed), "--save-every", str(save_every)]
    for flag, value in (("--preset", preset), ("--steps", steps), ("--threads", threads),
                        ("--time-budget", time_budget), ("--device", device)):
        if value is not None:
            argv += [flag, str(value)]
    code = main(argv)
    if code:
        raise typer.Exit(code)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("eval")(eval_command)
commands.command("train")(train_command)
