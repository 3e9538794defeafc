"""The prefix/suffix window around a cursor or a selection, cut on syntactic boundaries.

How a window grows (with a tree-sitter tree):

1. Enclosing scopes first. Starting from the smallest named node around the cursor (or the
   selection), each enclosing node -- expression, statement, block, function, class, module --
   is taken whole while it fits the budget.
2. Then siblings. Inside the first enclosing node that does not fit, whole children next to
   the window are added outward, alternating before/after with the prefix first; by default
   the suffix takes at most a third of the budget while the prefix can still grow.
3. Imports. The file's top-level imports (and package lines) that lie before the window are
   kept in ``header`` when they fit (at most half of what the enclosing scopes left over).

Boundaries therefore always fall on node boundaries (never inside a token or a string),
widened to whole lines when only indentation or trailing blanks separate them from one. If
the cursor sits inside a single node larger than the budget (a huge string, say), that side
falls back to whole lines inside the node. An unknown language, a missing grammar, or a
buffer whose tree is mostly errors gives a line-based window (``method == "lines"``).

Invariants (offsets are Python string indices):
    window.prefix == window.header + text[window.prefix_start:window.start]
    window.suffix == text[window.end:window.suffix_end]
so the prefix ends exactly at the cursor (or selection start) and the suffix starts exactly
at the cursor (or selection end). ``header`` is empty or made of whole lines of ``text``
(``header_spans`` says which), plus one blank line when it does not touch the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diffgemma.context.imports import top_level_imports
from diffgemma.context.languages import normalize_language
from diffgemma.context.parsing import ParsedDoc, parse
from diffgemma.context.positions import (
    PositionError,
    offset_to_position,
    offset_to_utf16_position,
    position_to_offset,
    utf16_col_to_offset,
)

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = [
    "ContextWindow",
    "PositionError",
    "cursor_window",
    "offset_to_position",
    "offset_to_utf16_position",
    "position_to_offset",
    "selection_window",
    "utf16_col_to_offset",
]

DEFAULT_BUDGET = 8000
# Without an explicit suffix budget, the suffix gets at most this share while the prefix grows.
SUFFIX_SHARE = 1 / 3
# The import header may take at most this share of what the enclosing scopes left over.
HEADER_SHARE = 1 / 2


@dataclass(frozen=True, slots=True)
class ContextWindow:
    prefix: str
    suffix: str
    prefix_start: int  # offset of the first window character before the cursor (after the header)
    suffix_end: int  # offset just past the last suffix character
    language: str | None
    method: Literal["syntax", "lines"]
    header: str = ""  # imports from above the window, prepended to ``prefix``
    header_spans: tuple[tuple[int, int], ...] = ()  # [start, end) offsets of the header's pieces
    start: int = 0  # cursor, or selection start
    end: int = 0  # cursor, or selection end

    @property
    def body_prefix(self) -> str:
        """The prefix without the header: exactly ``text[prefix_start:start]``."""
        return self.prefix[len(self.header) :]


def cursor_window(
    text: str,
    offset: int,
    language: str | None,
    budget_chars: int = DEFAULT_BUDGET,
    suffix_budget_chars: int | None = None,
    *,
    document: str | None = None,
) -> ContextWindow:
    """The window around a cursor at ``offset``: prefix ends and suffix starts at the cursor.

    ``budget_chars`` bounds len(prefix) + len(suffix) (header included). ``suffix_budget_chars``
    caps the suffix; without it the suffix gets up to a third while the prefix can still grow,
    and whatever the prefix cannot use. ``document`` (path or URI) lets a new version of the
    same buffer be reparsed incrementally.
    """
    return _window(text, offset, offset, language, budget_chars, suffix_budget_chars, document)


def selection_window(
    text: str,
    start: int,
    end: int,
    language: str | None,
    budget_chars: int = DEFAULT_BUDGET,
    suffix_budget_chars: int | None = None,
    *,
    document: str | None = None,
) -> ContextWindow:
    """The window around the selection [start, end): prefix before it, suffix after it.

    The selected text itself is not counted in the budget.
    """
    return _window(text, start, end, language, budget_chars, suffix_budget_chars, document)


def _window(
    text: str, a: int, b: int, language: str | None, budget: int, suffix_cap: int | None, document: str | None
) -> ContextWindow:
    if not 0 <= a <= b <= len(text):
        raise PositionError(f"range {a}..{b} is outside the buffer (0..{len(text)})")
    if budget < 0 or (suffix_cap is not None and suffix_cap < 0):
        raise ValueError("budgets must not be negative")
    lang = normalize_language(language)
    limits = _Limits(budget, suffix_cap)
    doc = parse(text, lang, document=document) if lang else None
    if doc is None or not doc.parsable:
        lo, hi = _grow_lines(text, a, b, a, b, 0, len(text), limits, 0, True, True)
        return _make(text, a, b, lo, hi, lang, "lines", ())
    return _SyntaxWindow(doc, a, b, limits).build()


class _Limits:
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


def _make(
    text: str,
    a: int,
    b: int,
    lo: int,
    hi: int,
    lang: str | None,
    method: Literal["syntax", "lines"],
    spans: tuple[tuple[int, int], ...],
) -> ContextWindow:
    header = "".join(text[s:e] for s, e in spans)
    if header and spans[-1][1] != lo:
        header += "\n" if header.endswith("\n") else "\n\n"
    return ContextWindow(
        prefix=header + text[lo:a],
        suffix=text[b:hi],
        prefix_start=lo,
        suffix_end=hi,
        language=lang,
        method=method,
        header=header,
        header_spans=spans,
        start=a,
        end=b,
    )


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


def _grow_lines(
    text: str,
    a: int,
    b: int,
    lo: int,
    hi: int,
    floor: int,
    ceil: int,
    limits: _Limits,
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


class _SyntaxWindow:
    """The growth of one window over a parsed document, in bytes, with costs in characters."""

    def __init__(self, doc: ParsedDoc, a: int, b: int, limits: _Limits) -> None:
        self.doc = doc
        self.data = doc.data
        self.a, self.b = a, b
        self.ab, self.bb = doc.c2b(a), doc.c2b(b)
        self.limits = limits
        self.header = 0

    # -- boundaries ------------------------------------------------------------------------
    def ext_lo(self, lo: int) -> int:
        """Start of lo's line when only indentation precedes lo on it."""
        ls = self.data.rfind(b"\n", 0, lo) + 1
        return ls if not self.data[ls:lo].strip(b" \t") else lo

    def ext_hi(self, hi: int) -> int:
        """Past the newline ending hi's line when only blanks follow hi on it."""
        nl = self.data.find(b"\n", hi)
        end = len(self.data) if nl < 0 else nl + 1
        return end if not self.data[hi:end].strip(b" \t\r\n") else hi

    def cost(self, lo: int, hi: int) -> tuple[int, int]:
        doc = self.doc
        return self.a - doc.b2c(self.ext_lo(lo)), doc.b2c(self.ext_hi(hi)) - self.b

    def fits(self, lo: int, hi: int, *, suffix_step: bool = False, prefix_open: bool = False) -> bool:
        pre, suf = self.cost(lo, hi)
        return self.limits.ok(pre, suf, self.header, suffix_step=suffix_step, prefix_open=prefix_open)

    # -- growth ----------------------------------------------------------------------------
    def build(self) -> ContextWindow:
        doc = self.doc
        lo, hi = min(self.ab, self.ext_lo(self.ab)), self.bb
        node: Node | None = doc.root.named_descendant_for_byte_range(self.ab, self.bb)
        stuck: Node | None = None
        # 1. enclosing scopes, whole
        while node is not None:
            s, e = min(node.start_byte, lo), max(node.end_byte, hi)
            if self.fits(s, e):
                lo, hi = s, e
                node = node.parent
                continue
            stuck = node
            break
        # 3 (reserved before 2, so siblings leave it room). imports above the window
        spans = self.reserve_header(lo, hi)
        # 2. whole siblings inside the first scope that did not fit
        if stuck is not None:
            lo, hi = self.grow_children(stuck, lo, hi)
        lo_c, hi_c = doc.b2c(self.ext_lo(lo)), doc.b2c(self.ext_hi(hi))
        method: Literal["syntax", "lines"] = "syntax"
        if stuck is not None and (lo_c == self.a or hi_c == self.b):
            # The cursor sits in one node too big for the budget: whole lines inside it.
            floor, ceil = doc.b2c(stuck.start_byte), doc.b2c(stuck.end_byte)
            grow_pre, grow_suf = lo_c == self.a and floor < self.a, hi_c == self.b and ceil > self.b
            if grow_pre or grow_suf:
                lo_c, hi_c = _grow_lines(
                    doc.text, self.a, self.b, lo_c, hi_c, floor, ceil, self.limits, self.header,
                    grow_pre, grow_suf,
                )
                method = "lines"
        kept = tuple((s, e) for s, e in spans if e <= lo_c)
        return _make(doc.text, self.a, self.b, lo_c, hi_c, doc.language, method, kept)

    def grow_children(self, node: Node, lo: int, hi: int) -> tuple[int, int]:
        before: list[Node] = []
        after: list[Node] = []
        for child in node.children:
            if child.start_byte < lo:
                before.append(child)
            if child.end_byte > hi:
                after.append(child)
        before.reverse()
        i = j = 0
        while i < len(before) or j < len(after):
            if i < len(before):
                if self.fits(before[i].start_byte, hi):
                    lo = before[i].start_byte
                    i += 1
                else:
                    i = len(before)  # the window must stay contiguous: this side is done
            if j < len(after):
                open_ = i < len(before)
                if self.fits(lo, after[j].end_byte, suffix_step=True, prefix_open=open_):
                    hi = after[j].end_byte
                    j += 1
                elif not open_:
                    j = len(after)
        return lo, hi

    def reserve_header(self, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
        """Import spans (character offsets, whole lines) above the window that fit, in order."""
        spans = _import_spans(self.doc, self)
        if not spans:
            return ()
        pre, suf = self.cost(lo, hi)
        room = int((self.limits.budget - pre - suf) * HEADER_SHARE)
        lo_c = self.doc.b2c(self.ext_lo(lo))
        chosen: list[tuple[int, int]] = []
        used = 0
        for s, e in spans:
            if e > lo_c or used + (e - s) + 2 > room:
                break
            chosen.append((s, e))
            used += e - s
        self.header = used + 2 if chosen else 0  # + the blank line that may separate it
        return tuple(chosen)


def _import_spans(doc: ParsedDoc, win: _SyntaxWindow) -> list[tuple[int, int]]:
    """Whole-line character spans of the top-level imports; touching spans merged."""
    cached = doc.memo.get("import_spans")
    if cached is None:
        merged: list[tuple[int, int]] = []
        for node in top_level_imports(doc):
            s, e = win.ext_lo(node.start_byte), win.ext_hi(node.end_byte)
            if merged and merged[-1][1] >= s:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        cached = [(doc.b2c(s), doc.b2c(e)) for s, e in merged]
        doc.memo["import_spans"] = cached
    return cached  # type: ignore[return-value]
