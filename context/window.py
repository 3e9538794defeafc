"""The prefix/suffix window around a cursor or a selection, cut on syntactic boundaries.

How a window grows (with a tree-sitter tree):

1. Enclosing scopes first. Starting from the smallest named node around the cursor (or the
   selection), each enclosing node -- expression, statement, block, function, class, module --
   is taken whole while it fits the budget.
2. Then siblings. Inside the first enclosing node that does not fit, whole children next to
   the window are added outward, alternating before/after with the prefix first; a side that
   takes every child of a node goes on among its parent's children. By default the suffix
   takes at most a third of the budget while the prefix can still grow. When the next
   sibling on a side is too big to take whole, the window takes its trailing (prefix side)
   or leading (suffix side) children whole instead, recursively -- the last methods of a long
   class above the cursor, the signature and first statements of a long function below it --
   preferring boundaries at line starts/ends. Strings and comments are never entered.
3. Imports. The file's top-level imports (and package lines) that lie before the window are
   kept in ``header`` when they fit (at most half of what the enclosing scopes left over).

Boundaries therefore always fall on node boundaries (never inside a token or a string),
widened to whole lines when only indentation or trailing blanks separate them from one; a
definition is cut only when it is too big for the budget. If the cursor sits inside a single
token larger than the budget (a huge string or comment), the window uses whole lines inside
it. An unknown language, a missing grammar, or a buffer that is not code in that language
gives a line-based window (``method == "lines"``).

Invariants (offsets are Python string indices):
    window.prefix == window.header + text[window.prefix_start:window.start]
    window.suffix == text[window.end:window.suffix_end]
so the prefix ends exactly at the cursor (or selection start) and the suffix starts exactly
at the cursor (or selection end). ``header`` is empty or made of whole lines of ``text``
(``header_spans`` says which), plus one blank line when it does not touch the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diffgemma.context.imports import import_line_spans
from diffgemma.context.languages import normalize_language
from diffgemma.context.linewindow import Limits, grow_lines
from diffgemma.context.parsing import ParsedDoc, clear_cache, parse
from diffgemma.context.positions import PositionError
from diffgemma.context.regions import clear as _clear_regions
from diffgemma.context.regions import find_region

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["ContextWindow", "clear_caches", "cursor_window", "selection_window"]

DEFAULT_BUDGET = 8000
# The import header may take at most this share of what the enclosing scopes left over.
HEADER_SHARE = 1 / 2


# Nodes a window never enters from outside: cutting one would split a string or a comment.
_ATOMIC = re.compile(r"string|comment|heredoc|regex|char_literal|template_literal")


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """Text around a cursor or selection, with where it came from in the buffer."""

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


def clear_caches() -> None:
    """Forget every cached tree and region skeleton (benchmarks use it to time cold starts)."""
    clear_cache()
    _clear_regions()


def cursor_window(
    text: str,
    offset: int,
    language: str | None,
    budget_chars: int = DEFAULT_BUDGET,
    suffix_budget_chars: int | None = None,
    *,
    document: str | None = None,
    region: bool = True,
) -> ContextWindow:
    """The window around a cursor at ``offset``: prefix ends and suffix starts at the cursor.

    ``budget_chars`` bounds len(prefix) + len(suffix) (header included). ``suffix_budget_chars``
    caps the suffix; without it the suffix gets up to a third while the prefix can still grow,
    and whatever the prefix cannot use. ``document`` (path or URI) lets a new version of the
    same buffer be reparsed incrementally. With ``region`` (the default), a large buffer is
    parsed only around the cursor, as far as a window can reach (see regions.py); the window
    is the same either way unless syntax errors make the part parse differently from the whole.
    """
    return _window(text, offset, offset, language, budget_chars, suffix_budget_chars, document, region)


def selection_window(
    text: str,
    start: int,
    end: int,
    language: str | None,
    budget_chars: int = DEFAULT_BUDGET,
    suffix_budget_chars: int | None = None,
    *,
    document: str | None = None,
    region: bool = True,
) -> ContextWindow:
    """The window around the selection [start, end): prefix before it, suffix after it.

    The selected text itself is not counted in the budget.
    """
    return _window(text, start, end, language, budget_chars, suffix_budget_chars, document, region)


def _window(
    text: str,
    a: int,
    b: int,
    language: str | None,
    budget: int,
    suffix_cap: int | None,
    document: str | None,
    region: bool,
) -> ContextWindow:
    if not 0 <= a <= b <= len(text):
        raise PositionError(f"range {a}..{b} is outside the buffer (0..{len(text)})")
    if budget < 0 or (suffix_cap is not None and suffix_cap < 0):
        raise ValueError("budgets must not be negative")
    lang = normalize_language(language)
    limits = Limits(budget, suffix_cap)
    doc: ParsedDoc | None = None
    origin, spans = 0, None
    if lang:
        found = find_region(text, a, b, lang, budget, document) if region else None
        if found is not None:
            doc, origin, spans = found.doc, found.origin, found.import_spans
        else:
            doc = parse(text, lang, document=document)
    if doc is None or not doc.parsable:
        lo, hi = grow_lines(text, a, b, a, b, 0, len(text), limits, 0, True, True)
        return _make(text, a, b, lo, hi, lang, "lines", ())
    return _SyntaxWindow(doc, a - origin, b - origin, limits, origin=origin, import_spans=spans, text=text).build()


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


class _SyntaxWindow:
    """The growth of one window over a parsed document, in bytes, with costs in characters."""

    def __init__(
        self,
        doc: ParsedDoc,
        a: int,
        b: int,
        limits: Limits,
        *,
        origin: int = 0,
        import_spans: tuple[tuple[int, int], ...] | None = None,
        text: str | None = None,
    ) -> None:
        # ``doc`` may be a region of the buffer starting at character ``origin``: offsets here
        # are relative to it, and ``import_spans`` (buffer offsets) then come from outside it.
        self.origin = origin
        self.import_spans = import_spans
        self.text = doc.text if text is None else text
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
        if ls < lo and not self.data[ls:lo].strip(b" \t") and self._cuts_nothing_new(lo, ls):
            return ls
        return lo

    def ext_hi(self, hi: int) -> int:
        """Past the newline ending hi's line when only blanks follow hi on it."""
        nl = self.data.find(b"\n", hi)
        end = len(self.data) if nl < 0 else nl + 1
        if hi < end and not self.data[hi:end].strip(b" \t\r\n") and self._cuts_nothing_new(hi, end):
            return end
        return hi

    def _cuts_nothing_new(self, old: int, new: int) -> bool:
        """Whether moving a boundary over blanks from ``old`` to ``new`` cuts no further node
        (a heredoc body, say, can start on the blanks after a line's last token)."""
        root = self.doc.root
        node = root.descendant_for_byte_range(min(new, old), max(new, old))
        while node is not None and not node.start_byte < new < node.end_byte:
            node = node.parent
        if node is None:
            return True
        already_cut = node.start_byte < old < node.end_byte
        holds_cursor = node.start_byte <= self.ab and self.bb <= node.end_byte
        return already_cut or holds_cursor

    def cost(self, lo: int, hi: int) -> tuple[int, int]:
        doc = self.doc
        return self.a - doc.b2c(self.ext_lo(lo)), doc.b2c(self.ext_hi(hi)) - self.b

    def fits(
        self, lo: int, hi: int, *, suffix_step: bool = False, prefix_open: bool = False, reserve: int = 0
    ) -> bool:
        pre, suf = self.cost(lo, hi)
        return self.limits.ok(pre, suf, self.header + reserve, suffix_step=suffix_step, prefix_open=prefix_open)

    # -- growth ----------------------------------------------------------------------------
    def build(self) -> ContextWindow:
        doc, o = self.doc, self.origin
        candidates = self.import_spans if self.import_spans is not None else tuple(import_line_spans(doc))
        # Import lines reserved for the header but then taken into the window itself waste
        # their reservation: grow again with only the ones still above the window.
        for _ in range(3):
            lo_c, hi_c, method, spans = self.grow(candidates)
            kept = tuple((s, e) for s, e in spans if e <= lo_c + o)
            if kept == spans:
                break
            candidates = kept
        return _make(self.text, self.a + o, self.b + o, lo_c + o, hi_c + o, doc.language, method, kept)

    def grow(
        self, import_spans: tuple[tuple[int, int], ...]
    ) -> tuple[int, int, Literal["syntax", "lines"], tuple[tuple[int, int], ...]]:
        """One growth of the window: (start, end, method, reserved import spans)."""
        doc = self.doc
        self.header = 0
        lo, hi = self.ab, self.bb
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
        spans = self.reserve_header(lo, hi, import_spans)
        # 2. whole siblings, from the first scope that did not fit outward
        if stuck is not None:
            lo, hi = self.grow_siblings(stuck, lo, hi)
        lo_c, hi_c = self.settle(lo, hi)
        method: Literal["syntax", "lines"] = "syntax"
        if stuck is not None and stuck.child_count == 0 and (lo_c == self.a or hi_c == self.b):
            # The cursor sits in one token too big for the budget (a huge string or comment):
            # whole lines inside it.
            floor, ceil = doc.b2c(stuck.start_byte), doc.b2c(stuck.end_byte)
            grow_pre, grow_suf = lo_c == self.a and floor < self.a, hi_c == self.b and ceil > self.b
            if grow_pre or grow_suf:
                new_lo, new_hi = grow_lines(
                    doc.text, self.a, self.b, lo_c, hi_c, floor, ceil, self.limits, self.header,
                    grow_pre, grow_suf,
                )
                if (new_lo, new_hi) != (lo_c, hi_c):
                    lo_c, hi_c, method = new_lo, new_hi, "lines"
        return lo_c, hi_c, method, spans

    def settle(self, lo: int, hi: int) -> tuple[int, int]:
        """Character bounds of [lo, hi] widened to whole lines where the budget allows (every
        grown state was checked widened; the untouched cursor side may not fit, say at 0)."""
        doc = self.doc
        for lo_x, hi_x in ((self.ext_lo(lo), self.ext_hi(hi)), (self.ext_lo(lo), hi), (lo, self.ext_hi(hi))):
            pre, suf = self.a - doc.b2c(lo_x), doc.b2c(hi_x) - self.b
            if self.limits.ok(pre, suf, self.header):
                return doc.b2c(lo_x), doc.b2c(hi_x)
        return doc.b2c(lo), doc.b2c(hi)

    def _suffix_target(self) -> int | None:
        return self.limits.soft_cap if self.limits.soft_cap is not None else self.limits.hard_cap

    def grow_siblings(self, stuck: Node, lo: int, hi: int) -> tuple[int, int]:
        """Add whole children of ``stuck`` around [lo, hi], alternating, prefix first; a side
        that takes every child of a node goes on among the children of its parent.

        When the next child on the prefix side is too big to take whole, the prefix descends
        into it and takes its trailing children whole instead (recursively: the tail of a long
        class before the cursor). The suffix, once it stops, finishes last, after the prefix
        is done: remaining whole siblings, then the leading children of a too-big one (the
        head of a long function after the cursor).
        """
        node: Node | None = stuck
        pre_open = suf_open = True
        los, his = [lo], [hi]  # every boundary taken, to settle on a line boundary at the end
        pending: list[Node] = []  # suffix candidates left for the end, in order
        while node is not None and (pre_open or suf_open):
            before = [c for c in node.children if c.start_byte < lo] if pre_open else []
            after = [c for c in node.children if c.end_byte > hi] if suf_open else []
            before.reverse()
            i = j = 0
            pre_blocked = False
            while i < len(before) or (suf_open and j < len(after)):
                if i < len(before):
                    if self.fits(before[i].start_byte, hi):
                        lo = before[i].start_byte
                        los.append(lo)
                        i += 1
                    else:
                        # Keep the suffix's share free while the prefix dips into a big node.
                        reserve = 0
                        target = self._suffix_target()
                        if (j < len(after) or pending) and target is not None:
                            reserve = max(0, target - self.cost(lo, hi)[1])
                        lo = self._dip_before(before[i], lo, hi, reserve)
                        los.append(lo)
                        pre_blocked = True
                        i = len(before)  # the window must stay contiguous: this side is done
                if suf_open and j < len(after):
                    prefix_open = not pre_blocked and (i < len(before) or node.parent is not None)
                    if self.fits(lo, after[j].end_byte, suffix_step=True, prefix_open=prefix_open):
                        hi = after[j].end_byte
                        his.append(hi)
                        j += 1
                    else:
                        pending = after[j:]
                        suf_open = False
            if pre_open and (pre_blocked or lo > node.start_byte):
                pre_open = False
            if suf_open and hi < node.end_byte:
                suf_open = False
            node = node.parent
        for k, cand in enumerate(pending):
            if self.fits(lo, cand.end_byte, suffix_step=True):
                hi = cand.end_byte
                his.append(hi)
                continue
            if k == 0 or not self.at_line_end(hi):
                hi = self._dip_after(cand, lo, hi)
                his.append(hi)
            break
        # Siblings sharing a line (`};`, `export`) can leave a boundary mid-line: fall back to
        # the widest boundary taken that sits on a line boundary, if there is one.
        if not self.at_line_start(lo):
            lo = next((x for x in sorted(los) if x < self.ab and self.at_line_start(x)), lo)
        if not self.at_line_end(hi):
            hi = next((x for x in sorted(his, reverse=True) if x > self.bb and self.at_line_end(x)), hi)
        return lo, hi

    def _dip_before(self, node: Node, lo: int, hi: int, reserve: int) -> int:
        line_lo, any_lo = self.take_tail(node, lo, hi, reserve)
        if line_lo is not None:
            return line_lo
        return lo if self.at_line_start(lo) else any_lo  # no line start to be had: a node boundary

    def _dip_after(self, node: Node, lo: int, hi: int) -> int:
        line_hi, any_hi = self.take_head(node, lo, hi)
        if line_hi is not None:
            return line_hi
        return hi if self.at_line_end(hi) else any_hi

    def at_line_start(self, b: int) -> bool:
        return b == 0 or self.data[b - 1 : b] == b"\n" or self.ext_lo(b) != b

    def at_line_end(self, b: int) -> bool:
        return b == len(self.data) or self.data[b : b + 1] in (b"\n", b"\r") or self.ext_hi(b) != b

    def take_tail(self, node: Node, bound: int, hi: int, reserve: int, depth: int = 0) -> tuple[int | None, int]:
        """Start offsets reachable by taking trailing children of ``node`` (too big to take
        whole), descending into the first one that does not fit: (best line start or None,
        earliest node boundary)."""
        line_lo: int | None = None
        any_lo = bound
        for child in reversed(node.children):
            if child.start_byte >= any_lo:
                continue
            if self.fits(child.start_byte, hi, reserve=reserve):
                any_lo = child.start_byte
                if self.at_line_start(any_lo):
                    line_lo = any_lo
                continue
            if depth < 16 and not _ATOMIC.search(child.type):
                inner_line, inner_any = self.take_tail(child, any_lo, hi, reserve, depth + 1)
                line_lo = inner_line if inner_line is not None else line_lo
                any_lo = min(any_lo, inner_any)
            break
        return line_lo, any_lo

    def take_head(self, node: Node, lo: int, bound: int, depth: int = 0) -> tuple[int | None, int]:
        """The mirror of take_tail for the suffix: (best line end or None, furthest boundary)."""
        line_hi: int | None = None
        any_hi = bound
        for child in node.children:
            if child.end_byte <= any_hi:
                continue
            if self.fits(lo, child.end_byte, suffix_step=True):
                any_hi = child.end_byte
                if self.at_line_end(any_hi):
                    line_hi = any_hi
                continue
            if depth < 16 and not _ATOMIC.search(child.type):
                inner_line, inner_any = self.take_head(child, lo, any_hi, depth + 1)
                line_hi = inner_line if inner_line is not None else line_hi
                any_hi = max(any_hi, inner_any)
            break
        return line_hi, any_hi

    def reserve_header(
        self, lo: int, hi: int, spans: tuple[tuple[int, int], ...]
    ) -> tuple[tuple[int, int], ...]:
        """Import spans (buffer character offsets, whole lines) above the window that fit."""
        if not spans:
            return ()
        pre, suf = self.cost(lo, hi)
        room = int((self.limits.budget - pre - suf) * HEADER_SHARE)
        lo_c = self.doc.b2c(self.ext_lo(lo)) + self.origin
        chosen: list[tuple[int, int]] = []
        used = 0
        for s, e in spans:
            if e > lo_c or used + (e - s) + 2 > room:
                break
            chosen.append((s, e))
            used += e - s
        self.header = used + 2 if chosen else 0  # + the blank line that may separate it
        return tuple(chosen)
