"""Side-by-side quality evaluation: a model through the engine vs. trivial baselines and vs. itself
with each infill strategy switched.

    python -m diffgemma.evals.evaluate [--model PATH] [--limit N] [--out results.md]

Shared by ``diffgemma eval`` and ``benchmarks/eval_quality.py``. Runs in-process (no daemon),
seeded: every task gets the seed ``seed + task index``, so a rerun gives the same table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffgemma.evals import eval_suites as E

# What run_eval raises when the model cannot be found or read (its message is one line for the user).
from diffgemma.runtime.engine.loading import ModelLoadError

ALL_SUITES = ("line", "multiline", "humaneval", "rewrite")
# Suites run only when named: next-edit plays several suggestions per task (evals/next_edit_eval.py).
KNOWN_SUITES = (*ALL_SUITES, "next-edit")
ALL_GROUPS = ("baselines", "model", "strategies", "steps", "strength", "repair")
STEP_COUNTS = (4, 8, 16, 32)
STRENGTHS = (0.25, 0.5, 0.75, 1.0)
HUMANEVAL_MAX_TOKENS = 128
MULTILINE_MAX_TOKENS = 128


@dataclass
class Score:
    """Per (system, suite) tallies."""

    n: int = 0
    exact: int = 0
    parsed: int = 0
    passed: int = 0
    hole_tokens: int = 0
    truth_tokens: int = 0  # the cut-out text's length in tokens, to compare hole lengths with
    ms: float = 0.0

    def add(self, *, exact: bool, parsed: bool, passed: bool, hole_tokens: int, truth_tokens: int,
            ms: float) -> None:
        self.truth_tokens += truth_tokens
        self.n += 1
        self.exact += exact
        self.parsed += parsed
        self.passed += passed
        self.hole_tokens += hole_tokens
        self.ms += ms

    def as_dict(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"n": self.n, "exact": self.exact / n, "parses": self.parsed / n, "pass@1": self.passed / n,
                "hole_tokens": self.hole_tokens / n, "truth_tokens": self.truth_tokens / n, "ms": self.ms / n}


@dataclass
class System:
    name: str
    suites: tuple[str, ...]
    # (task, seed) -> (fill, hole tokens[, ms spent before this call on the same answer: a row that
    # gates another row's answer counts that row's engine time too])
    run: Callable[[E.Task, int], tuple[Any, ...]]
    limit: int | None = None  # only the first `limit` tasks of each suite (strategy comparisons)
    scores: dict[str, Score] = field(default_factory=dict)


def _engine_systems(engine: Any, groups: Sequence[str], default_steps: int, strategy_limit: int) -> list[System]:
    from diffgemma.runtime.engine.types import SamplingSettings

    def infill(**options: Any) -> Callable[[E.Task, int], tuple[str, int]]:
        steps = options.pop("steps", None)

        def run(task: E.Task, seed: int) -> tuple[str, int]:
            limit = HUMANEVAL_MAX_TOKENS if task.suite == "humaneval" else (
                MULTILINE_MAX_TOKENS if task.suite == "multiline" else None)
            result = engine.infill(task.prefix, task.suffix, max_tokens=limit,
                                   settings=SamplingSettings(seed=seed, steps=steps), **options)
            return result.text, result.hole_tokens

        return run

    def oracle() -> Callable[[E.Task, int], tuple[str, int]]:
        """The hole made exactly as long as the truth: what a perfect length choice would give."""

        def run(task: E.Task, seed: int) -> tuple[str, int]:
            size = max(1, len(engine.encode_text(task.prefix[len(task.prefix.rstrip(" \t")):] + task.truth)))
            result = engine.infill(task.prefix, task.suffix, max_tokens=size, length_search=False,
                                   settings=SamplingSettings(seed=seed))
            return result.text, result.hole_tokens

        return run

    def rewrite(strength: float) -> Callable[[E.Task, int], tuple[str, int]]:
        def run(task: E.Task, seed: int) -> tuple[str, int]:
            result = engine.edit(task.prefix, task.selection or "", task.suffix, strength=strength,
                                 settings=SamplingSettings(seed=seed))
            return result.text, result.hole_tokens

        return run

    answers: dict[tuple[str, int, bool], tuple[Any, float]] = {}

    def gated(refine: bool, gate: bool) -> Callable[[E.Task, int], tuple[Any, ...]]:
        return _gated(engine, answers, refine, gate)

    fills = ("line", "multiline", "humaneval")
    systems: list[System] = []
    if "model" in groups:
        systems.append(System(f"model (length search, suffix clamp, {default_steps} steps)", fills, infill()))
    if "strategies" in groups:
        systems.append(System("model, no length search", fills, infill(length_search=False), strategy_limit))
        systems.append(System("model, hole length = truth (oracle)", ("line",), oracle(), strategy_limit))
        systems.append(System("model, no suffix clamp", fills, infill(clamp_suffix=False), strategy_limit))
    if "repair" in groups:
        # the same tasks and seeds, the fill's syntax repaired and not, each as the model wrote it
        # (--allow-broken) and through the syntax gate (what every answer passes: the default)
        systems.append(System("model, --no-refine --allow-broken", fills, gated(refine=False, gate=False)))
        systems.append(System("model, --no-refine", fills, gated(refine=False, gate=True)))
        systems.append(System("model + repair, --allow-broken", fills, gated(refine=True, gate=False)))
        systems.append(System("model + repair (the default)", fills, gated(refine=True, gate=True)))
    if "steps" in groups:
        for steps in STEP_COUNTS:
            if steps != default_steps or "model" not in groups:
                systems.append(System(f"model, steps={steps}", ("line", "multiline"), infill(steps=steps),
                                      strategy_limit))
    if "strength" in groups:
        for strength in STRENGTHS:
            systems.append(System(f"model rewrite, strength={strength}", ("rewrite",), rewrite(strength),
                                  strategy_limit))
    return systems


def _gated(engine: Any, answers: dict[tuple[str, int, bool], tuple[Any, float]], refine: bool,
           gate: bool) -> Callable[[E.Task, int], tuple[Any, ...]]:
    """The engine's answer with and without repair, through the syntax gate the daemon puts every
    answer through (``gate``), or as it came: rows with the same ``refine`` share one engine call
    per task (``answers``), and a later row counts that call's time too."""
    from diffgemma.runtime.api.answer_gate import gate_result
    from diffgemma.runtime.api.protocol import InfillRequest, Result
    from diffgemma.runtime.engine.types import SamplingSettings

    def run(task: E.Task, seed: int) -> tuple[Any, ...]:
        key = (task.id, seed, refine)
        spent = 0.0
        if key not in answers:
            limit = HUMANEVAL_MAX_TOKENS if task.suite == "humaneval" else (
                MULTILINE_MAX_TOKENS if task.suite == "multiline" else None)
            t0 = time.perf_counter()
            result = engine.infill(task.prefix, task.suffix, max_tokens=limit, language="python", refine=refine,
                                   settings=SamplingSettings(seed=seed))
            answers[key] = (result, (time.perf_counter() - t0) * 1000)
        else:
            spent = answers[key][1]
        result = answers[key][0]
        text = result.text
        if gate:
            request = InfillRequest(prefix=task.prefix, suffix=task.suffix, language="python")
            text = gate_result(request, Result(text=text, finish_reason=result.finish_reason, timings={}, id="",
                                               model=""), "python").text
        return text, result.hole_tokens, spent

    return run


def _baselines() -> list[System]:
    def wrap(fn: Callable[[E.Task], str]) -> Callable[[E.Task, int], tuple[str, int]]:
        return lambda task, seed: (fn(task), 0)

    return [
        System("baseline: empty fill", ("line", "multiline", "humaneval"), wrap(E.empty_fill)),
        System("baseline: repeat previous line", ("line", "multiline", "humaneval"), wrap(E.previous_line_fill)),
        System("baseline: keep the corrupted selection", ("rewrite",), wrap(lambda t: t.selection or "")),
    ]


def build_tasks(suites: Sequence[str], limit: int, seed: int, engine: Any | None) -> dict[str, list[E.Task]]:
    tasks: dict[str, list[E.Task]] = {}
    if "line" in suites or "rewrite" in suites:
        tasks["line"] = E.span_tasks("line", limit, seed=seed)
    if "multiline" in suites:
        tasks["multiline"] = E.span_tasks("multiline", limit, seed=seed)
    if "humaneval" in suites:
        tasks["humaneval"] = E.load_humaneval(limit=limit)
    if "rewrite" in suites and engine is not None:
        tok = engine.tokenizer
        special = set(tok.all_special_ids)
        vocab = [i for i in range(len(tok)) if i not in special]
        tasks["rewrite"] = E.rewrite_tasks(
            tasks["line"], encode=engine.encode_text,
            decode=lambda ids: tok.decode(ids, clean_up_tokenization_spaces=False), vocab_ids=vocab, seed=seed,
        )
    if "line" not in suites:
        tasks.pop("line", None)
    return tasks


def score_task(task: E.Task, fill: str) -> tuple[bool, bool, bool]:
    """(exact match, filled file parses, tests pass)."""
    exact = E.exact_match(fill, task.truth)
    if task.suite == "humaneval":
        passed = E.run_humaneval(task, fill).passed
        return exact, E.parses(task.prefix + fill + task.suffix), passed
    return exact, E.parses(task.file_prefix + fill + task.file_suffix), False


def run_eval(
    model: str | None,
    *,
    suites: Sequence[str] = ALL_SUITES,
    groups: Sequence[str] = ALL_GROUPS,
    limit: int = 20,
    strategy_limit: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every system on its suites; returns a JSON-ready report (``format_markdown`` renders it)."""
    from diffgemma.runtime.engine.mini import MINI_DIR

    engine = None
    info: dict[str, Any] = {}
    default_steps = 0
    if any(g != "baselines" for g in groups):
        from diffgemma.runtime.engine.engine import Engine

        engine = Engine.load(model or str(MINI_DIR), device=device)
        info = engine.info()
        default_steps = engine.defaults.steps
    tasks = build_tasks(suites, limit, seed, engine)
    systems = (_baselines() if "baselines" in groups else []) + (
        _engine_systems(engine, groups, default_steps, strategy_limit or limit) if engine is not None else [])
    truth_sizes: dict[tuple[str, int], int] = {}

    def size_of(task: E.Task) -> int:
        # The engine heals trailing indentation into the hole, so count it with the truth.
        healed = task.prefix[len(task.prefix.rstrip(" \t")):]
        return len(engine.encode_text(healed + task.truth)) if engine is not None else 0

    started = time.perf_counter()
    for system in systems:
        for suite in system.suites:
            if suite not in tasks:
                continue
            score = system.scores.setdefault(suite, Score())
            for index, task in enumerate(tasks[suite][: system.limit]):
                t0 = time.perf_counter()
                fill, hole, *earlier = system.run(task, seed + index)
                ms = (time.perf_counter() - t0) * 1000 + sum(earlier)
                exact, parsed, passed = score_task(task, fill)
                truth_tokens = truth_sizes.setdefault((suite, index), size_of(task))
                score.add(exact=exact, parsed=parsed, passed=passed, hole_tokens=hole, truth_tokens=truth_tokens,
                          ms=ms)
            if progress:
                d = score.as_dict()
                progress(f"{system.name} / {suite}: exact {d['exact']:.0%}, parses {d['parses']:.0%}"
                         + (f", pass@1 {d['pass@1']:.0%}" if suite == "humaneval" else "")
                         + f" ({d['ms']:.0f} ms/task)")
    next_rows = _next_edit_rows(engine, suites, groups, limit, seed, progress)
    if engine is not None:
        engine.close()
    return {
        "next_edit": next_rows,
        "model": info.get("model", model), "parameters": info.get("parameters"), "device": info.get("device"),
        "limit": limit, "strategy_limit": strategy_limit or limit, "seed": seed,
        "tasks": {**{k: len(v) for k, v in tasks.items()},
                  **({"next-edit": next_rows[0]["all"]["n"]} if next_rows else {})},
        "seconds": round(time.perf_counter() - started, 1),
        "systems": [{"name": s.name, "scores": {k: v.as_dict() for k, v in s.scores.items()}} for s in systems],
    }


def _next_edit_rows(engine: Any, suites: Sequence[str], groups: Sequence[str], limit: int, seed: int,
                    progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """The next-edit suite: ``limit`` tasks spread over its kinds, at the daemon's default threshold
    (and with the strategy rows at 0, any change at all, and the oracle rewrite's ceiling)."""
    if "next-edit" not in suites or engine is None:
        return []
    from diffgemma.evals import next_edit_eval, next_edit_suite
    from diffgemma.runtime.api.config import DEFAULT_NEXT_EDIT_THRESHOLD

    per_kind = -(-limit // len(next_edit_suite.KINDS))
    tasks = next_edit_suite.next_edit_tasks(per_kind, seed=seed)
    thresholds = [(f"model, next-edit threshold {DEFAULT_NEXT_EDIT_THRESHOLD:g}", DEFAULT_NEXT_EDIT_THRESHOLD)]
    if "strategies" in groups:
        thresholds.append(("model, next-edit threshold 0 (any change)", 0.0))
    return next_edit_eval.evaluate(engine, tasks, seed, thresholds, progress, oracle="strategies" in groups)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def format_markdown(report: dict[str, Any]) -> str:
    """One table: a row per system; per suite exact match / parses / pass@1 and the mean hole length
    the engine chose next to the truth's length (tokens); the mean time per task."""
    counts = report["tasks"]
    header = ["system"]
    columns: list[tuple[str, str]] = []
    for suite, metrics in (("line", ("exact", "parses", "hole")), ("multiline", ("exact", "parses", "hole")),
                           ("humaneval", ("pass@1", "parses", "hole")), ("rewrite", ("exact", "hole"))):
        if suite in counts:
            for metric in metrics:
                columns.append((suite, metric))
                header.append(f"{suite} {'hole/truth tok' if metric == 'hole' else metric}")
    header.append("ms/task")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system in report["systems"]:
        scores = system["scores"]
        if not scores:
            continue  # none of its suites was run
        cells = [system["name"]]
        for suite, metric in columns:
            score = scores.get(suite)
            if score is None:
                cells.append("")
            elif metric == "hole":
                cells.append(f"{score['hole_tokens']:.1f}/{score['truth_tokens']:.1f}" if score["hole_tokens"] else "")
            else:
                cells.append(_pct(score[metric]))
        ms = [s["ms"] for s in scores.values() if s["n"]]
        cells.append(f"{sum(ms) / len(ms):.0f}" if ms else "")
        lines.append("| " + " | ".join(cells) + " |")
    tasks = ", ".join(f"{k} {v}" for k, v in counts.items())
    if report.get("strategy_limit", report["limit"]) < report["limit"]:
        tasks += f" (strategy rows: the first {report['strategy_limit']} of each)"
    params = f", {report['parameters']:,} parameters" if report.get("parameters") else ""
    note = (f"Model: {report['model']}{params} on {report.get('device') or 'n/a'}; tasks: {tasks}; "
            f"seed {report['seed']}; {report['seconds']} s.")
    out = note + "\n\n" + ("\n".join(lines) + "\n" if columns else "")
    if report.get("next_edit"):
        from diffgemma.evals.next_edit_eval import format_rows

        out += "\nNext-edit suggestions (evals/next_edit_eval.py):\n\n" + format_rows(report["next_edit"])
    return out


def set_threads(threads: int) -> None:
    """Torch's CPU thread count for this process (1 is fastest on a busy machine)."""
    import torch

    torch.set_num_threads(threads)


def parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise ValueError(f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffgemma.evals.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint path or id (default: diffgemma-mini)")
    parser.add_argument("--limit", type=int, default=20, help="tasks per suite (default 20)")
    parser.add_argument("--strategy-limit", type=int, default=None,
                        help="tasks per suite for the strategy rows (default: --limit)")
    parser.add_argument("--suites", default=",".join(ALL_SUITES))
    parser.add_argument("--groups", default=",".join(ALL_GROUPS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw report here")
    args = parser.parse_args(argv)
    try:
        suites = parse_list(args.suites, KNOWN_SUITES, "suite")
        groups = parse_list(args.groups, ALL_GROUPS, "group")
        if args.limit < 1 or (args.strategy_limit is not None and args.strategy_limit < 1):
            raise ValueError("--limit and --strategy-limit must be at least 1")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        set_threads(args.threads)
    try:
        report = run_eval(args.model, suites=suites, groups=groups, limit=args.limit,
                          strategy_limit=args.strategy_limit, seed=args.seed,
                          device=args.device, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 6
    table = format_markdown(report)
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
