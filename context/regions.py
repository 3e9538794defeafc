"""Parse only the part of a large buffer that a window can reach.

A window never reaches further than its budget from the cursor, so in a large buffer only the
top-level items within that distance matter. Parsing just those items keeps a keystroke in a
10,000-line file to a small (incremental) parse, whatever the grammar: tree-sitter-python,
for one, spends tens of milliseconds reusing a large tree even for a one-character edit.

The item boundaries come from a per-document "skeleton": the last full parse of the buffer,
kept in step with each edit by `Tree.edit` alone (which moves nodes without reparsing). Items
touched by edits are still good boundaries in practice, and the skeleton is reparsed after
`REFRESH_EDITS` edits so it never drifts far. The region itself is parsed as a document of its
own, incrementally from the previous region of the same buffer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffgemma.context.imports import top_level_imports
from diffgemma.context.languages import get_parser
from diffgemma.context.parsing import ParsedDoc, char_len, common_prefix, common_suffix, parse, point

if TYPE_CHECKING:
    from tree_sitter import Node, Tree

# Buffers smaller than this are parsed whole (a full parse is cheap enough, and cached).
REGION_MIN_CHARS = 64 * 1024
# The skeleton is reparsed (incrementally) after this many edits.
REFRESH_EDITS = 64
# A region that would cover more than this share of the buffer is not worth it.
MAX_REGION_SHARE = 0.5


@dataclass
class _Skeleton:
    data: bytes
    tree: Tree
    edits: int = 0
    # Byte spans of the whole import lines at the top, while no edit has touched them.
    imports: list[tuple[int, int]] | None = None


_lock = threading.RLock()
_skeletons: OrderedDict[tuple[str, str], _Skeleton] = OrderedDict()


@dataclass(frozen=True, slots=True)
class Region:
    doc: ParsedDoc  # the parsed region
    origin: int  # character offset of the region's start in the buffer
    # The buffer's import lines before the region; None when the region starts the buffer
    # (its own imports are then found in it).
    import_spans: tuple[tuple[int, int], ...] | None


def _skeleton(text: str, data: bytes, lang: str, document: str | None) -> _Skeleton | None:
    key = (lang, document or "")
    sk = _skeletons.get(key)
    if sk is not None and sk.data != data:
        start = common_prefix(sk.data, data)
        tail = common_suffix(sk.data, data, min(len(sk.data), len(data)) - start)
        if max(len(sk.data), len(data)) - start - tail > len(data) // 4:
            sk = None  # a different buffer: parse afresh
        else:
            old_end, new_end = len(sk.data) - tail, len(data) - tail
            sk.tree.edit(
                start_byte=start,
                old_end_byte=old_end,
                new_end_byte=new_end,
                start_point=point(data, start),
                old_end_point=point(sk.data, old_end),
                new_end_point=point(data, new_end),
            )
            if sk.imports and start < sk.imports[-1][1]:
                sk.imports = None  # an edit among the imports: find them again
            sk.data = data
            sk.edits += 1
            if sk.edits >= REFRESH_EDITS:
                parser = get_parser(lang)
                if parser is None:
                    return None
                sk.tree = parser.parse(data, sk.tree)
                sk.edits = 0
                sk.imports = None
    if sk is None:
        full = parse(text, lang, document=document)
        if full is None:
            return None
        sk = _Skeleton(data, full.tree.copy())
    _skeletons[key] = sk
    _skeletons.move_to_end(key)
    while len(_skeletons) > 8:
        _skeletons.popitem(last=False)
    return sk


def _child_ending_after(node: Node, offset: int) -> Node | None:
    """The first child of ``node`` that ends after ``offset`` (binary search), or None."""
    lo, hi = 0, node.child_count
    while lo < hi:
        mid = (lo + hi) // 2
        child = node.child(mid)
        if child is not None and child.end_byte <= offset:
            lo = mid + 1
        else:
            hi = mid
    return node.child(lo) if lo < node.child_count else None


def _import_lines(doc: ParsedDoc) -> list[tuple[int, int]]:
    """Byte spans of the top-level imports that stand on whole lines of their own."""
    data = doc.data
    out: list[tuple[int, int]] = []
    for node in top_level_imports(doc):
        s = data.rfind(b"\n", 0, node.start_byte) + 1
        nl = data.find(b"\n", node.end_byte)
        e = len(data) if nl < 0 else nl + 1
        if not data[s : node.start_byte].strip() and not data[node.end_byte : e].strip():
            out.append((s, e))
    return out


def _chars(data: bytes, b: int, ascii_text: bool) -> int:
    return b if ascii_text else char_len(data[:b])


def find_region(
    text: str, a: int, b: int, lang: str, reach_chars: int, document: str | None
) -> Region | None:
    """The parsed region of ``text`` that holds every top-level item within ``reach_chars`` of
    [a, b], or None when the buffer is small or the region would not save much."""
    if len(text) < REGION_MIN_CHARS:
        return None
    with _lock:  # skeletons are edited in place: one request at a time
        return _find_region(text, a, b, lang, reach_chars, document)


def _find_region(text: str, a: int, b: int, lang: str, reach_chars: int, document: str | None) -> Region | None:
    ascii_text = text.isascii()
    data = text.encode("utf-8", "surrogatepass")
    sk = _skeleton(text, data, lang, document)
    if sk is None:
        return None
    if ascii_text:
        ab, bb, reach = a, b, reach_chars
    else:
        ab = len(text[:a].encode("utf-8", "surrogatepass"))
        bb = ab + len(text[a:b].encode("utf-8", "surrogatepass"))
        reach = 4 * reach_chars  # a character is at most four bytes
    root = sk.tree.root_node
    first = _child_ending_after(root, max(0, ab - reach))
    last = _child_ending_after(root, min(len(data), bb + reach))
    start = min(first.start_byte, ab) if first is not None else ab
    end = max(last.end_byte, bb) if last is not None else len(data)
    # Whole lines: a top-level item normally starts one, and the parse then sees its indentation.
    start = data.rfind(b"\n", 0, start) + 1
    nl = data.find(b"\n", end)
    end = len(data) if nl < 0 else nl + 1
    if end - start > MAX_REGION_SHARE * len(data):
        return None
    origin = _chars(data, start, ascii_text)
    end_c = origin + char_len(data[start:end]) if not ascii_text else end
    doc = parse(text[origin:end_c], lang, document=f"{document or ''}#region")
    if doc is None:
        return None
    spans: list[tuple[int, int]] = []
    if start > 0:
        if sk.imports is None:
            sk.imports = _import_lines(ParsedDoc(text, data, sk.tree, lang))
        for s, e in sk.imports:
            if e > start:
                break
            s_c, e_c = _chars(data, s, ascii_text), _chars(data, e, ascii_text)
            if spans and spans[-1][1] >= s_c:
                spans[-1] = (spans[-1][0], e_c)
            else:
                spans.append((s_c, e_c))
    return Region(doc, origin, tuple(spans) if start > 0 else None)


def clear() -> None:
    with _lock:
        _skeletons.clear()
