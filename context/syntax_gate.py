"""The syntax gate: an answer never adds syntax errors to the code around it (torch-free).

Every answer that puts text into code (an infill, several holes, a rewrite, a proposed edit) passes
`gate_fills` before anyone sees it: the daemon runs it on every result whatever engine made it,
and the command line runs it again on the whole file before it writes one. The question is always
relative to the code as it was (`syntax.new_issues` with the code that was there as the baseline):
an error the window already had at the same place is not the answer's doing. When the answer adds
one, the gate takes, in order: the first alternative that adds none; the longest head of the fill
that adds none (cut after a line break, else inside its last line at a word boundary); and last
what was there before (nothing for a hole, the selection for a rewrite). An empty answer that says
why beats a broken one. Without a grammar for the language nothing is judged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.context.syntax import SyntaxIssue, new_issues

# Parses spent looking for a head that adds no error (each one parses the window: about a
# millisecond for a few thousand characters).
MAX_HEAD_CHECKS = 64


@dataclass(frozen=True)
class Gated:
    """What the gate lets through: one text per hole, and why it differs from what came in."""

    fills: tuple[str, ...]
    # "" when the answer passed as it came; else one line: what was wrong and what was kept
    reason: str = ""
    # index of the alternative that replaced the answer (None: the answer itself, or cut)
    alternative: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.reason)


def added_errors(fixed: Sequence[str], fills: Sequence[str], language: str | None,
                 baseline: Sequence[str] | None = None) -> list[SyntaxIssue] | None:
    """The syntax errors ``fills`` bring into the text ``fixed`` around them that ``baseline`` (what
    was there before; default: nothing) did not have; None when no grammar judges ``language``."""
    before = list(baseline) if baseline is not None else [""] * len(fills)
    if list(fills) == before:
        return [] if language else None
    return new_issues(fixed, fills, language, before, strict_holes=False)


def gate_fills(fixed: Sequence[str], fills: Sequence[str], language: str | None, *,
               baseline: Sequence[str] | None = None, alternatives: Sequence[Sequence[str]] = (),
               heads: bool = True) -> Gated:
    """``fills`` (one text per hole, between the ``fixed`` pieces) as far as they add no syntax
    error. ``baseline``: what each hole held before (default: nothing; a rewrite passes its
    selection). ``alternatives``: other answers, each one text per hole, tried in order when the
    answer adds an error. ``heads``: a hole may be cut to a head of its fill (not for rewrites,
    where a head would drop the rest of the selection)."""
    fills = tuple(fills)
    before = tuple(baseline) if baseline is not None else ("",) * len(fills)
    issues = added_errors(fixed, fills, language, before)
    if not issues:  # adds none, or no grammar judges it
        return Gated(fills)
    what = _describe(next((i for i in issues if i.message), issues[0]))
    for k, other in enumerate(alternatives):
        if tuple(other) != fills and not added_errors(fixed, other, language, before):
            return Gated(tuple(other), f"the model's answer {what}; an alternative that adds none was returned",
                         alternative=k)
    if heads:
        kept = _heads(fixed, fills, before, language)
        if any(k.strip() for k, b in zip(kept, before, strict=True) if k != b):
            return Gated(kept, f"the model's answer {what}; its longest head that adds none was returned")
    return Gated(before, f"the model's answer {what} and no part of it adds none; the code is left as it was")


def _describe(issue: SyntaxIssue) -> str:
    if issue.message:
        message = re.sub(r"\s*\(detected at line #\)", "", issue.message).rstrip(".")
        return f"adds a syntax error ({message})"
    return "adds a syntax error (" + ("a missing token" if issue.missing else "code the grammar cannot read") + ")"


def _heads(fixed: Sequence[str], fills: tuple[str, ...], before: tuple[str, ...],
           language: str | None) -> tuple[str, ...]:
    """Hole by hole, left to right: the longest head of each fill that adds no error with the holes
    before it as chosen and the ones after it as they were; a hole none of whose heads does keeps
    what it held."""
    chosen = list(before)
    checks = [0]
    for i, fill in enumerate(fills):
        for head in head_cuts(fill):
            if checks[0] >= MAX_HEAD_CHECKS:
                break
            trial = [*chosen[:i], head, *before[i + 1:]]
            checks[0] += 1
            if not added_errors(fixed, trial, language, before):
                chosen[i] = head
                break
    return tuple(chosen)


# a head never ends inside a word or a run of punctuation (a ``"""`` is not cut to ``""``)
_WORD_END = re.compile(r"\w+|[^\w\s]+")


def head_cuts(fill: str) -> list[str]:
    """Heads of ``fill`` to try, longest first: the whole fill, then cut after each line break, then
    inside the first line at the ends of words and of runs of punctuation. Never blank; each one
    once."""
    out: dict[str, None] = {}
    if fill.strip():
        out[fill] = None
    breaks = [i + 1 for i, ch in enumerate(fill) if ch == "\n"]
    for end in reversed(breaks):
        head = fill[:end]
        if head.strip():
            out.setdefault(head, None)
    first_end = breaks[0] if breaks else len(fill)
    line = fill[:first_end]
    for match in reversed(list(_WORD_END.finditer(line))):
        head = line[: match.end()]
        if head.strip():
            out.setdefault(head, None)
    return list(out)
