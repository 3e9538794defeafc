"""Where the consequences of recent edits lie in a document, and which lines to rewrite (torch-free).

`candidate_places` turns what the recent edits changed (`recent_edits.Changes`) into document
lines: the remaining uses of a renamed name (in the function the rename happened in, for a
parameter or a local; anywhere, for a renamed function, method or class, and for one renamed in
another file) and the calls of a function that gained a parameter that pass too few arguments.
`plan` picks the window a next-edit rewrites: the enclosing function or block of the cursor when a
candidate lies in it, else of the next candidate after the cursor; and the candidate after that
window as the place to go next. With a grammar the names are the tree's identifiers and calls;
without one, whole-word matches on lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffgemma.context.parsing import ParsedDoc, parse
from diffgemma.context.recent_edits import AddedParameter, Changes, Rename

if TYPE_CHECKING:
    from tree_sitter import Node

# Scopes a parameter or a local lives in (function_definition, method_declaration, function_item, ...).
_FUNCTION_LIKE = re.compile(r"(^|_)(function|method|func|fn|lambda|constructor|closure|procedure)(_|$)")
_CALLS = frozenset({"call", "call_expression", "method_invocation", "invocation_expression", "function_call"})
MAX_NODES = 200_000  # a walk over a huge document stops here (the candidates found so far stand)


@dataclass(frozen=True)
class Place:
    """A line (of the text, 0-based) where a recent edit is likely to have a consequence."""

    line: int
    why: str  # e.g. "uses width (renamed to w)"


@dataclass(frozen=True)
class Plan:
    """The lines a next-edit rewrites ([start_line, end_line) of the text), the candidates, and the
    candidate line to go to after this window (None when there is none elsewhere)."""

    start_line: int
    end_line: int
    places: tuple[Place, ...]
    next_line: int | None


def _identifier_leaf(node: Node) -> bool:
    return node.child_count == 0 and ("identifier" in node.type or node.type in ("name", "constant", "word"))


def _walk(root: Node, lo: int, hi: int) -> list[Node]:
    """The nodes overlapping bytes [lo, hi), in document order (at most MAX_NODES)."""
    out: list[Node] = []
    stack = [root]
    while stack and len(out) < MAX_NODES:
        node = stack.pop()
        if node.end_byte <= lo or node.start_byte >= hi:
            continue
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def _node_at_line(doc: ParsedDoc, line: int) -> Node | None:
    lines = doc.text.split("\n")
    if not 0 <= line < len(lines):
        return None
    col = len(lines[line]) - len(lines[line].lstrip())
    start = doc.c2b(sum(len(x) + 1 for x in lines[:line]) + col)
    return doc.root.named_descendant_for_byte_range(start, start)


def _enclosing_function(doc: ParsedDoc, line: int) -> Node | None:
    node = _node_at_line(doc, line)
    while node is not None and not _FUNCTION_LIKE.search(node.type):
        node = node.parent
    return node


def _end_row(node: Node) -> int:
    """The line after the node's last one (exclusive)."""
    row, col = node.end_point
    return row if col == 0 else row + 1


def _rename_places(doc: ParsedDoc | None, text: str, rename: Rename, line: int | None) -> list[Place]:
    """Lines still using ``rename.old``: in the function of ``line`` (a local rename), else anywhere."""
    why = f"uses {rename.old} (renamed to {rename.new})"
    if doc is None:
        pattern = re.compile(rf"(?<![\w$]){re.escape(rename.old)}(?![\w$])")
        return [Place(i, why) for i, row in enumerate(text.split("\n")) if pattern.search(row)]
    scope = _enclosing_function(doc, line) if line is not None and not rename.definition else None
    root = scope if scope is not None else doc.root
    target = rename.old.encode("utf-8")
    rows = {n.start_point[0] for n in _walk(root, root.start_byte, root.end_byte)
            if _identifier_leaf(n) and n.text == target}
    return [Place(row, why) for row in sorted(rows)]


def _callee(node: Node) -> str | None:
    function = node.child_by_field_name("function") or node.child_by_field_name("name")
    if function is None:
        return None
    leaves = [n for n in _walk(function, function.start_byte, function.end_byte) if _identifier_leaf(n)]
    return leaves[-1].text.decode("utf-8", "replace") if leaves and leaves[-1].text is not None else None


def _argument_count(node: Node) -> int:
    arguments = node.child_by_field_name("arguments")
    if arguments is None:
        return 0
    return sum(1 for c in arguments.named_children if "comment" not in c.type)


def _call_places(doc: ParsedDoc | None, text: str, added: AddedParameter) -> list[Place]:
    """Lines calling ``added.function`` with fewer arguments than it now requires."""
    why = f"calls {added.function} (which gained {', '.join(added.added)})"
    if doc is None:
        call = re.compile(rf"(?<![\w$]){re.escape(added.function)}\s*\(")
        definition = re.compile(rf"\b(def|function|fn|func|fun|sub)\s+{re.escape(added.function)}\b")
        return [Place(i, why) for i, row in enumerate(text.split("\n"))
                if call.search(row) and not definition.search(row)]
    rows = set()
    for node in _walk(doc.root, 0, len(doc.data)):
        if node.type in _CALLS and _callee(node) == added.function and _argument_count(node) < added.required:
            arguments = node.child_by_field_name("arguments")
            rows.add((arguments or node).start_point[0])
    return [Place(row, why) for row in sorted(rows)]


def same_file(edit_path: str, path: str | None) -> bool:
    """Whether a diff's path names the document (git's paths are relative to the repository, an
    editor's may be absolute): one is the other's tail, by whole path components."""
    if path is None:
        return True
    a = [p for p in edit_path.replace("\\", "/").split("/") if p not in ("", ".")]
    b = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if a[:1] in (["a"], ["b"]) and len(a) > 1:
        a = a[1:]
    n = min(len(a), len(b))
    return n > 0 and a[-n:] == b[-n:]


def candidate_places(text: str, language: str | None, changes: Changes, path: str | None = None,
                     first_line: int = 0) -> list[Place]:
    """The lines of ``text`` where ``changes`` likely have consequences, in order (one entry per
    line). ``first_line``: the document line ``text`` starts at (the diffs count document lines)."""
    doc = parse(text, language) if language else None
    if doc is not None and not doc.parsable:
        doc = None
    found: dict[int, Place] = {}
    for rename in changes.renames:
        here = same_file(rename.path, path)
        if not here and not rename.definition:
            continue  # a local renamed in another file changes nothing here
        line = rename.line - first_line if here and rename.line is not None else None
        for place in _rename_places(doc, text, rename, line):
            found.setdefault(place.line, place)
    for added in changes.parameters:
        for place in _call_places(doc, text, added):
            found.setdefault(place.line, place)
    return [found[k] for k in sorted(found)]


def block_around(text: str, language: str | None, line: int, max_lines: int, min_lines: int = 3) -> tuple[int, int]:
    """[start, end) lines to rewrite around ``line``: the largest enclosing construct (a function,
    a class, a block, a statement) of at most ``max_lines`` lines, grown to ``min_lines`` with the
    lines around it; without a grammar, or when nothing fits, lines centred on ``line``."""
    total = len(text.split("\n"))
    doc = parse(text, language) if language else None
    start, end = line, line + 1
    node = _node_at_line(doc, line) if doc is not None and doc.parsable else None
    while node is not None and node.parent is not None:  # the root (the whole file) is never taken
        lo, hi = node.start_point[0], _end_row(node)
        if hi - lo > max_lines:
            break
        if lo <= line < hi:
            start, end = min(start, lo), max(end, hi)
        node = node.parent
    if end - start == 1 and node is None:  # no grammar: a few lines either side
        start, end = line - max_lines // 8, line + max_lines // 8 + 1
    want = min(min_lines, max_lines, total)
    start, end = max(0, start), min(total, end)
    while end - start < want:  # grow a line at a time, alternating sides; at a file's edge, the other
        if end < total and ((end - start) % 2 or start == 0):
            end += 1
        else:
            start -= 1
    return start, end


def plan(text: str, language: str | None, cursor_line: int, places: list[Place], max_lines: int) -> Plan:
    """The window to rewrite and the place to go next: around the cursor when a candidate lies in
    the cursor's block (or there are none), else around the next candidate after the cursor
    (wrapping to the first). ``next_line`` is the first candidate after the window, wrapping."""
    start, end = block_around(text, language, cursor_line, max_lines)
    lines = [p.line for p in places]
    if lines and not any(start <= n < end for n in lines):
        target = next((n for n in lines if n > cursor_line), lines[0])
        start, end = block_around(text, language, target, max_lines)
    outside = [n for n in lines if not start <= n < end]
    after = [n for n in outside if n >= end]
    following = after[0] if after else (outside[0] if outside else None)
    return Plan(start_line=start, end_line=end, places=tuple(places), next_line=following)
