"""The next-edit suite run through an engine (`runtime.engine.next_edit`), scored against its oracle.

A task is played as a user would: ask for a suggestion at the edit's line, accept every edit it
proposes, go to the place it names next (else stay), and ask again, with the accepted suggestions
added to the recent edits; until nothing is proposed and no place is named, or the task has had
one round more than it has lines to change (at most MAX_ROUNDS). The file must then be exactly
the oracle's.

Reported per system: exact match (the final file is the expected one), "no proposal" (the first
ask proposes nothing), the share of proposals after which the file parses, the share of proposals
whose every edited line is the expected line, rounds per task, latency per suggestion (p50, p95)
and decoder tokens per suggestion.
"""

from __future__ import annotations

import ast
import difflib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffgemma.context.line_edits import LineChange, apply_changes
from diffgemma.evals.next_edit_suite import KINDS, NextEditTask
from diffgemma.runtime.engine.next_edit import next_edit
from diffgemma.runtime.engine.types import EngineResult, SamplingSettings, TokenPiece

MAX_ROUNDS = 8


@dataclass
class Played:
    """One task played to its end."""

    exact: bool
    proposed_first: bool
    why_none: str | None = None  # the first ask proposed nothing: "kept", "unsure" or "syntax"
    proposals: int = 0
    parsing: int = 0
    right: int = 0
    rounds: int = 0
    ms: list[float] = field(default_factory=list)
    decoder_tokens: list[int] = field(default_factory=list)


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _right(edits: Sequence[LineChange], expected: str) -> bool:
    """Every edit turns its lines into the expected file's lines at the same place."""
    want = expected.split("\n")
    for edit in edits:
        got = edit.text.split("\n")[:-1] if edit.text.endswith("\n") else edit.text.split("\n")
        if edit.end_line - edit.start_line != len(got) or want[edit.start_line: edit.end_line] != got:
            return False
    return True


class OracleRewrite:
    """Stands in for the model with the answer: its rewrite of a window is the expected file's lines
    there, every token certain. Run through the same next-edit code (the real tokenizer sizes the
    windows), it measures what the window choice, the places and the rounds allow a perfect model."""

    def __init__(self, engine: Any) -> None:
        self.canvas_length = engine.canvas_length
        self.encode_text = engine.encode_text
        self.lines: list[str] = []
        self.expected: list[str] = []

    def look_at(self, task: NextEditTask, text: str) -> None:
        self.lines, self.expected = text.split("\n"), task.expected.split("\n")

    def _start(self, prefix: str, selection: str) -> int:
        count = selection.count("\n") + 1
        starts = [i for i in range(len(self.lines)) if "\n".join(self.lines[i: i + count]) == selection]
        tail = prefix[-200:]
        fits = [i for i in starts if ("\n".join(self.lines[:i]) + "\n" * bool(i)).endswith(tail)]
        return (fits or starts or [0])[0]

    def edit(self, prefix: str, selection: str, suffix: str, **options: Any) -> EngineResult:
        start = self._start(prefix, selection)
        text = "\n".join(self.expected[start: start + selection.count("\n") + 1])
        return EngineResult(text=text, finish_reason="stop", tokens=[TokenPiece(text, 1.0)] if text else [])


def play(engine: Any, task: NextEditTask, seed: int, threshold: float) -> Played:
    text, cursor = task.text, task.cursor_line
    edits = [(task.path, task.diff)]
    played = Played(exact=False, proposed_first=False)
    look = getattr(engine, "look_at", None)  # the oracle reads the file as it stands
    for round_ in range(min(len(task.changed_lines) + 1, MAX_ROUNDS)):
        if look is not None:
            look(task, text)
        started = time.perf_counter()
        answer = next_edit(engine, text, cursor, edits=edits, path=task.path, language="python",
                           threshold=threshold, settings=SamplingSettings(seed=seed + round_))
        played.ms.append((time.perf_counter() - started) * 1000)
        played.decoder_tokens.append(answer.timings.decoder_tokens)
        played.rounds += 1
        if not answer.edits:
            if round_ == 0:
                played.why_none = answer.why
            if answer.next_line is None or answer.next_line == cursor:
                break
            cursor = answer.next_line  # nothing here: go to the place it names, as a user would
            continue
        played.proposed_first |= round_ == 0
        played.proposals += 1
        new = apply_changes(text, answer.edits)
        played.parsing += _parses(new)
        played.right += _right(answer.edits, task.expected)
        edits.append((task.path, "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                              f"a/{task.path}", f"b/{task.path}"))))
        text = new
        cursor = answer.next_line if answer.next_line is not None else cursor
    played.exact = text == task.expected
    return played


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(results: list[Played]) -> dict[str, Any]:
    n = max(len(results), 1)
    proposals = sum(r.proposals for r in results)
    ms = [m for r in results for m in r.ms]
    tokens = [t for r in results for t in r.decoder_tokens]
    return {
        "n": len(results),
        "exact": sum(r.exact for r in results) / n,
        "no_proposal": sum(not r.proposed_first for r in results) / n,
        # of the first asks that proposed nothing: the model changed nothing, only unsure changes,
        # or sure changes that would break the syntax
        "none_kept": sum(r.why_none == "kept" for r in results) / n,
        "none_unsure": sum(r.why_none == "unsure" for r in results) / n,
        "none_syntax": sum(r.why_none == "syntax" for r in results) / n,
        "proposals": proposals,
        "parses": sum(r.parsing for r in results) / proposals if proposals else None,
        "right": sum(r.right for r in results) / proposals if proposals else None,
        "rounds": sum(r.rounds for r in results) / n,
        "ms_p50": _percentile(ms, 0.5),
        "ms_p95": _percentile(ms, 0.95),
        "decoder_tokens": statistics.fmean(tokens) if tokens else 0.0,
    }


def evaluate(engine: Any, tasks: list[NextEditTask], seed: int, thresholds: Sequence[tuple[str, float]],
             progress: Callable[[str], None] | None = None, oracle: bool = False) -> list[dict[str, Any]]:
    """One row per (name, threshold): the summary over all tasks and per kind; with ``oracle`` a
    last row for `OracleRewrite`, the ceiling of the rounds as they are played."""
    rows = []
    systems = [(name, threshold, engine) for name, threshold in thresholds]
    if oracle:
        systems.append(("oracle rewrite (the expected lines, certain)", thresholds[0][1], OracleRewrite(engine)))
    for name, threshold, runner in systems:
        played = [(task, play(runner, task, seed + index, threshold)) for index, task in enumerate(tasks)]
        by_kind = {kind: summary([p for t, p in played if t.kind == kind]) for kind in KINDS
                   if any(t.kind == kind for t, _ in played)}
        s = summary([p for _, p in played])
        rows.append({"name": name, "threshold": threshold, "all": s, "kinds": by_kind})
        if progress:
            progress(f"{name} / next-edit: exact {s['exact']:.0%}, no proposal {s['no_proposal']:.0%} "
                     f"({s['ms_p50']:.0f} ms p50 per suggestion)")
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The next-edit table: a row per system, then its exact match and no-proposal rate per kind."""
    kinds = [k for k in KINDS if any(k in r["kinds"] for r in rows)]
    header = ["system", "tasks", "exact", "no proposal (kept / unsure / syntax)", "proposals parse", "proposals right",
              "rounds",
              "ms p50", "ms p95", "decoder tok"] + [f"{k} exact / none" for k in kinds]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        s = row["all"]
        why = f"{_pct(s['none_kept'])} / {_pct(s['none_unsure'])} / {_pct(s['none_syntax'])}"
        cells = [row["name"], str(s["n"]), _pct(s["exact"]), f"{_pct(s['no_proposal'])} ({why})", _pct(s["parses"]),
                 _pct(s["right"]), f"{s['rounds']:.1f}", f"{s['ms_p50']:.0f}", f"{s['ms_p95']:.0f}",
                 f"{s['decoder_tokens']:.0f}"]
        for kind in kinds:
            k = row["kinds"].get(kind)
            cells.append(f"{_pct(k['exact'])} / {_pct(k['no_proposal'])} (n={k['n']})" if k else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
