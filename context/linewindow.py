"""Line-based window growth: whole lines around a cursor, within a character budget.

The window of a buffer without a usable tree (an unknown language, a missing grammar, text
that is not code in that language), and of a cursor inside one token too big for the budget
(a huge string or comment). context/window.py grows syntactic windows and falls back to it.
"""

from __future__ import annotations

# Without an explicit suffix budget, the suffix gets at most this share while the prefix grows.
SUFFIX_SHARE = 1 / 3


class Limits:
    """The budget of one window: prefix + suffix + header, and the suffix's own caps."""

    __slots__ = ("budget", "hard_cap", "soft_cap")

    def __init__(self, budget: int, suffix_cap: int | None) -> None:
        self.budget = budget
        self.hard_cap = suffix_cap
        self.soft_cap = int(budget * SUFFIX_SHARE) if suffix_cap is None else None

    def ok(self, pre: int, suf: int, header: int, *, suffix_step: bool = False, prefix_open: bool = False) -> bool:
        if pre + suf + header > self.budget:
            return False
        if self.hard_cap is not None and suf > self.hard_cap:
            return False
        # The soft cap only holds the suffix back while the prefix can still use the room.
        return not (suffix_step and prefix_open and self.soft_cap is not None and suf > self.soft_cap)


def _line_start(text: str, i: int) -> int:
    return text.rfind("\n", 0, i) + 1


def _line_end(text: str, i: int) -> int:
    """Offset just past the newline ending the line that holds ``i`` (or the buffer end)."""
    nl = text.find("\n", i)
    return len(text) if nl < 0 else nl + 1


def _cut_after_space(text: str, lo: int, hi: int) -> int:
    """Smallest offset in [lo, hi] that follows whitespace (or ``hi``): a cut between words."""
    for i in range(lo, hi):
        if i == 0 or text[i - 1].isspace():
            return i
    return hi


def _cut_before_space(text: str, lo: int, hi: int) -> int:
    """Largest offset in [lo, hi] that precedes whitespace (or ``lo``)."""
    for i in range(hi, lo, -1):
        if i == len(text) or text[i].isspace():
            return i
    return lo


def grow_lines(
    text: str,
    a: int,
    b: int,
    lo: int,
    hi: int,
    floor: int,
    ceil: int,
    limits: Limits,
    header: int,
    grow_prefix: bool,
    grow_suffix: bool,
) -> tuple[int, int]:
    """Widen [lo, hi] by whole lines (within [floor, ceil]), alternating, prefix first.

    A first step that does not fit (one very long line) is cut between words instead.
    """
    first_pre = first_suf = True
    while grow_prefix or grow_suffix:
        if grow_prefix:
            at_line_start = lo == 0 or text[lo - 1] == "\n"
            new_lo = max(_line_start(text, lo - 1) if at_line_start and lo > 0 else _line_start(text, lo), floor)
            if new_lo >= lo:
                grow_prefix = False
            elif limits.ok(a - new_lo, hi - b, header):
                lo = new_lo
            else:
                if first_pre:
                    room = max(limits.budget - header - (hi - b), 0)
                    lo = _cut_after_space(text, max(new_lo, a - room), lo)
                grow_prefix = False
            first_pre = False
        if grow_suffix:
            new_hi = min(_line_end(text, hi), ceil)
            if new_hi <= hi:
                grow_suffix = False
            elif limits.ok(a - lo, new_hi - b, header, suffix_step=True, prefix_open=grow_prefix):
                hi = new_hi
                first_suf = False
            elif not grow_prefix:
                if first_suf:
                    room = max(limits.budget - header - (a - lo), 0)
                    if limits.hard_cap is not None:
                        room = min(room, limits.hard_cap)
                    hi = _cut_before_space(text, hi, min(new_hi, b + room))
                grow_suffix = False
            # else: the soft cap holds the suffix back until the prefix stops growing
    return lo, hi
