"""A rewritten window as line-range edits, each with the confidence of the tokens it changes
(torch-free).

The model rewrites a window of whole lines; what it changed is found with difflib over lines, and
within each changed group of lines over characters, so that an edit's confidence is the weakest
probability among the tokens that actually differ (a renamed identifier, not the whole line it
sits on). `keep_parsing` drops the edits that would bring syntax errors into the text around them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from diffgemma.context.recent_edits import tokens
from diffgemma.context.syntax_gate import added_errors


@dataclass(frozen=True)
class LineChange:
    """Lines [start_line, end_line) replaced by ``text`` (whole lines with their newlines)."""

    start_line: int
    end_line: int
    text: str
    confidence: float  # the weakest changed token's probability
    mean_confidence: float  # the changed tokens' mean probability

    def to_json(self) -> dict[str, object]:
        return {"start_line": self.start_line, "end_line": self.end_line, "text": self.text,
                "confidence": round(self.confidence, 4)}


def split_lines(text: str) -> list[str]:
    """Lines split at "\\n" only, each keeping its "\\n" (the last may have none)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def char_confidences(text: str, pieces: Sequence[tuple[str, float]] | None) -> list[float] | None:
    """Per character of ``text``, the probability of the token it belongs to; None without pieces.

    The pieces may run past ``text`` (a rewrite cut back to its last whole line) or stop short of
    it (characters the model did not write, such as the window's held newline, count as certain).
    Pieces that are not ``text``'s own say nothing about it: every character counts as unsure (0)."""
    if not pieces:
        return None
    joined = "".join(p for p, _ in pieces)
    if not (joined.startswith(text) or text.startswith(joined)):
        return [0.0] * len(text)
    out: list[float] = []
    for piece, confidence in pieces:
        out.extend([confidence] * len(piece))
    return out[: len(text)] + [1.0] * (len(text) - len(out))


def _changed_positions(old: str, new: str) -> list[int]:
    """Offsets in ``new`` of the words (identifiers, other characters) that differ from ``old``; a
    pure deletion names the characters on both sides of where it happened."""
    old_words, new_words = tokens(old), tokens(new)
    starts = [0]
    for word in new_words:
        starts.append(starts[-1] + len(word))
    positions: list[int] = []
    for tag, _a1, _a2, b1, b2 in SequenceMatcher(None, old_words, new_words, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        a, b = starts[b1], starts[b2]
        positions.extend(range(a, b) if b > a else (a - 1, a))
    return positions


def line_changes(old: str, new: str, pieces: Sequence[tuple[str, float]] | None, first_line: int = 0,
                 partial: bool = False) -> list[LineChange]:
    """The line edits that turn ``old`` (whole lines) into ``new``, numbered from ``first_line``.

    ``pieces`` (text, probability) join to the head of ``new``: each edit's confidence comes from
    the ones covering the characters it changes (1.0 without pieces: nothing is known). With
    ``partial`` (a draft that has not reached the window's end), lines of ``old`` after the end of
    ``new`` count as not rewritten yet rather than deleted."""
    old_lines, new_lines = split_lines(old), split_lines(new)
    starts = [0]
    for line in new_lines:
        starts.append(starts[-1] + len(line))
    conf = char_confidences(new, pieces)
    opcodes = [op for op in SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes()
               if op[0] != "equal"]
    if partial and opcodes and opcodes[-1][3] == len(new_lines):
        tag, i1, i2, j1, j2 = opcodes[-1]
        opcodes = opcodes[:-1] if tag == "delete" else [*opcodes[:-1], (tag, i1, min(i2, i1 + j2 - j1), j1, j2)]
    out: list[LineChange] = []
    for _tag, i1, i2, j1, j2 in opcodes:
        before, after = "".join(old_lines[i1:i2]), "".join(new_lines[j1:j2])
        at = [starts[j1] + p for p in _changed_positions(before, after)]
        scores = [conf[p] for p in at if 0 <= p < len(conf)] if conf is not None else []
        low = min(scores) if scores else (1.0 if conf is None else 0.0)
        mean = sum(scores) / len(scores) if scores else low
        out.append(LineChange(first_line + i1, first_line + i2, after, low, mean))
    return out


def apply_changes(text: str, changes: Sequence[LineChange], first_line: int = 0) -> str:
    """``text`` (whole lines, starting at document line ``first_line``) with ``changes`` made."""
    lines = split_lines(text)
    for change in sorted(changes, key=lambda c: c.start_line, reverse=True):
        a, b = change.start_line - first_line, change.end_line - first_line
        lines[a:b] = [change.text]
    return "".join(lines)


def keep_parsing(changes: Sequence[LineChange], window: str, first_line: int, prefix: str, suffix: str,
                 language: str | None, strip_newline: bool,
                 issues: Callable[..., object] = added_errors) -> tuple[list[LineChange], bool]:
    """The changes that bring no syntax error into ``prefix + window + suffix`` that the text does
    not have already (the syntax gate every answer passes, `syntax_gate.added_errors`), taken in
    order, each kept when it parses together with those before it; and
    whether any was dropped. ``strip_newline``: the window's last newline belongs to ``suffix``.
    Without a grammar every change is kept."""
    kept: list[LineChange] = []
    dropped = False

    def body(text: str) -> str:
        return text[:-1] if strip_newline and text.endswith("\n") else text

    baseline = body(window)
    for change in changes:
        trial = body(apply_changes(window, [*kept, change], first_line))
        found = issues([prefix, suffix], [trial], language, [baseline])
        if found:
            dropped = True
            continue
        kept.append(change)
    return kept, dropped
