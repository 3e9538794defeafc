"""Parsed buffers, cached: a tree-sitter tree plus byte/character offset maps.

A full parse of a 10,000-line file takes tens of milliseconds, far more than the few
milliseconds a keystroke may spend on context. So parsed documents are kept in a small LRU
keyed by (language, text); when a buffer is not cached, the most recent tree of the same
document (or, without a document key, of the same language) is edited to match the new text
and reparsed incrementally, which costs about a millisecond for a typical edit.

Tree-sitter speaks UTF-8 byte offsets; the rest of the package speaks Python string indices
(code points). `ParsedDoc` converts between the two, cheaply for ASCII text (identity) and
through a per-line index otherwise.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from itertools import accumulate
from typing import TYPE_CHECKING, AnyStr

from diffgemma.context.languages import get_parser, normalize_language

if TYPE_CHECKING:
    from tree_sitter import Node, Tree

CACHE_SIZE = 16
_CHUNK = 1 << 16
# A buffer with syntax errors still gets syntax windows when at least this share of it lies in
# intact multi-line constructs (see _judge_errors); otherwise line windows.
MIN_INTACT_SHARE = 0.3


def char_len(chunk: bytes) -> int:
    """Characters in a UTF-8 chunk of the buffer (lone surrogates were encoded as they came)."""
    try:
        return len(chunk.decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:  # a node boundary inside a malformed sequence: count what decodes
        return len(chunk.decode("utf-8", "ignore"))


class ParsedDoc:
    """One buffer, parsed: text, its UTF-8 bytes, tree, and offset conversions."""

    __slots__ = ("_b_lines", "_c_lines", "_parsable", "data", "is_ascii", "language", "memo", "text", "tree")

    def __init__(self, text: str, data: bytes, tree: Tree, language: str) -> None:
        self.text = text
        self.data = data
        self.tree = tree
        self.language = language
        self.is_ascii = len(data) == len(text)
        self._b_lines: list[int] | None = None
        self._c_lines: list[int] | None = None
        self._parsable: bool | None = None
        # Per-document results derived from the tree (import spans, outlines), computed once.
        self.memo: dict[str, object] = {}

    @property
    def root(self) -> Node:
        return self.tree.root_node

    def _line_index(self) -> tuple[list[int], list[int]]:
        if self._b_lines is None or self._c_lines is None:
            # Line start offsets in bytes and in characters; `n + 1` counts the newline itself.
            one = (1).__add__
            self._b_lines = list(accumulate(map(one, map(len, self.data.split(b"\n"))), initial=0))
            self._c_lines = list(accumulate(map(one, map(len, self.text.split("\n"))), initial=0))
        return self._b_lines, self._c_lines

    def b2c(self, b: int) -> int:
        """Character offset of byte offset ``b`` (which must sit on a character boundary)."""
        if self.is_ascii:
            return b
        b_lines, c_lines = self._line_index()
        line = bisect_right(b_lines, b) - 1
        return c_lines[line] + char_len(self.data[b_lines[line] : b])

    def c2b(self, c: int) -> int:
        """Byte offset of character offset ``c``."""
        if self.is_ascii:
            return c
        b_lines, c_lines = self._line_index()
        line = bisect_right(c_lines, c) - 1
        return b_lines[line] + len(self.text[c_lines[line] : c].encode("utf-8", "surrogatepass"))

    @property
    def parsable(self) -> bool:
        """False when errors cover so much of the buffer that its syntax tree says little."""
        if self._parsable is None:
            self._parsable = _judge_errors(self)
        return self._parsable


def _judge_errors(doc: ParsedDoc) -> bool:
    """Whether a tree with errors still describes the buffer.

    Code being typed breaks the parse locally, but tree-sitter's recovery keeps the
    definitions around the break as intact subtrees, sometimes all inside one ERROR node.
    Text that is not code in this language leaves only loose tokens. So the measure is the
    share of the buffer covered by intact multi-line constructs.
    """
    root = doc.root
    if not root.has_error:
        return True
    data = doc.data
    intact = 0
    stack = [root]
    visited = 0
    while stack and visited < 50000:
        node = stack.pop()
        visited += 1
        if not node.has_error:
            if node.is_named and node.child_count >= 2 and b"\n" in data[node.start_byte : node.end_byte]:
                intact += node.end_byte - node.start_byte
            continue
        stack.extend(node.children)
    return intact >= MIN_INTACT_SHARE * max(1, len(data))


def common_prefix(a: AnyStr, b: AnyStr) -> int:
    """Length of the common head of two strings (or byte strings), by slice comparisons."""
    n = min(len(a), len(b))
    lo = 0
    while lo < n and a[lo : lo + _CHUNK] == b[lo : lo + _CHUNK]:
        lo += _CHUNK
    lo = min(lo, n)
    hi = min(lo + _CHUNK, n)
    while hi - lo > 64:  # the first difference lies in [lo, hi): halve it
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    return lo


def common_suffix(a: AnyStr, b: AnyStr, limit: int) -> int:
    """Length of the common tail of two strings, at most ``limit``."""
    la, lb = len(a), len(b)
    lo = 0
    while lo + _CHUNK <= limit and a[la - lo - _CHUNK : la - lo] == b[lb - lo - _CHUNK : lb - lo]:
        lo += _CHUNK
    hi = min(lo + _CHUNK, limit)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[la - lo - 1] == b[lb - lo - 1]:
        lo += 1
    return lo


def point(data: bytes, offset: int) -> tuple[int, int]:
    row = data.count(b"\n", 0, offset)
    return row, offset - (data.rfind(b"\n", 0, offset) + 1)


# The cache, one per process, guarded by _lock: (language, text) -> parsed document, least recently
# used first; the latest document parsed under each document key; how many parses were full or
# incremental.
_entries: OrderedDict[tuple[str, str], ParsedDoc] = OrderedDict()
_by_document: dict[str, ParsedDoc] = {}
_parses = {"full_parses": 0, "incremental_parses": 0}
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached tree (benchmarks use it to time cold parses)."""
    with _lock:
        _entries.clear()
        _by_document.clear()


def cache_stats() -> dict[str, int]:
    return {"entries": len(_entries), **_parses}


def parse(
    text: str, language: str | None, *, document: str | None = None, cache: bool = True
) -> ParsedDoc | None:
    """The parsed document for ``text``, from the cache when possible; None without a grammar.

    ``document`` names the buffer (a path or URI): a new version of the same document is
    reparsed incrementally from its last tree. Without it, the most recent tree of the same
    language serves as the base (still correct, just less often a close match). ``cache=False``
    parses without touching the cache (files read once, which should not push out buffers).
    """
    lang = normalize_language(language)
    if lang is None:
        return None
    if not cache:
        parser = get_parser(lang)
        if parser is None:
            return None
        data = text.encode("utf-8", "surrogatepass")
        return ParsedDoc(text, data, parser.parse(data), lang)
    key = (lang, text)
    with _lock:
        doc = _entries.get(key)
        if doc is not None:
            _entries.move_to_end(key)
            if document is not None:
                _by_document[document] = doc
            return doc
        base = _by_document.get(document) if document is not None else None
        if base is None or base.language != lang:
            base = next((d for d in reversed(_entries.values()) if d.language == lang), None)
    parser = get_parser(lang)
    if parser is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    tree = _reparse(parser, base, data) if base is not None else None
    if tree is None:
        tree = parser.parse(data)
        _parses["full_parses"] += 1
    else:
        _parses["incremental_parses"] += 1
    doc = ParsedDoc(text, data, tree, lang)
    with _lock:
        _entries[key] = doc
        _entries.move_to_end(key)
        while len(_entries) > CACHE_SIZE:
            _entries.popitem(last=False)
        if document is not None:
            _by_document[document] = doc
            if len(_by_document) > 4 * CACHE_SIZE:
                _by_document.pop(next(iter(_by_document)))
    return doc


def _reparse(parser: object, base: ParsedDoc, data: bytes) -> Tree | None:
    old = base.data
    start = common_prefix(old, data)
    tail = common_suffix(old, data, min(len(old), len(data)) - start)
    changed = max(len(old), len(data)) - start - tail
    if changed > len(data) // 2 + 1:
        return None  # mostly different text: a fresh parse is as fast and simpler
    old_end, new_end = len(old) - tail, len(data) - tail
    tree = base.tree.copy()
    tree.edit(
        start_byte=start,
        old_end_byte=old_end,
        new_end_byte=new_end,
        start_point=point(data, start),
        old_end_point=point(old, old_end),
        new_end_point=point(data, new_end),
    )
    return parser.parse(data, tree)  # type: ignore[attr-defined]
