"""Top-level definitions of a file, whole and as skeletons (function bodies elided).

Cross-file context shows another file's definitions to the model: whole ones when they are
named by the import and small, otherwise skeletons -- the source text with each multi-line
function body replaced by ``...`` (``{ ... }`` for brace languages), so signatures, fields,
class layout and Python docstrings survive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffgemma.context.imports import top_level_imports

if TYPE_CHECKING:
    from tree_sitter import Node

    from diffgemma.context.parsing import ParsedDoc

# Node types whose body is code to elide (function_definition, method_declaration, function_item,
# arrow_function, func_literal, ...); class bodies stay, so fields and method signatures show.
_FUNCTION_LIKE = re.compile(r"(^|_)(function|method|func|fn|lambda|constructor|closure|procedure|subroutine)(_|$)")
_NAME_TYPES = frozenset(
    {
        "identifier", "type_identifier", "field_identifier", "property_identifier", "constant",
        "name", "simple_identifier", "dot_index_expression", "package_identifier", "word",
    }
)
# Containers whose children are the real top-level items (Haskell keeps its declarations in one).
_CONTAINERS = frozenset({"declarations", "declaration_list", "top_level_statements"})
_SKIP = frozenset({"comment", "line_comment", "block_comment", "php_tag", "shebang", "hash_bang_line"})


@dataclass(frozen=True, slots=True)
class Item:
    name: str | None
    start: int  # character offsets in the file
    end: int
    text: str
    skeleton: str


def _name_of(node: Node, depth: int = 0) -> str | None:
    field = node.child_by_field_name("name")
    if field is not None and field.text is not None:
        return field.text.decode("utf-8", "replace")
    # Wrappers (decorated definitions, export statements) name what they wrap.
    for wrapped in ("definition", "declaration"):
        inner = node.child_by_field_name(wrapped)
        if inner is not None:
            return _name_of(inner, depth + 1)
    if depth >= 3:
        return None
    for child in node.named_children:
        if child.type in _NAME_TYPES and child.text is not None:
            return child.text.decode("utf-8", "replace")
    for child in node.named_children:
        if child.type not in _SKIP and child.type != "decorator" and child.child_count:
            found = _name_of(child, depth + 1)
            if found:
                return found
    return None


def _docstring(body: Node) -> Node | None:
    first = body.named_child(0) if body.named_child_count else None
    if first is not None and first.type == "expression_statement" and first.named_child_count:
        inner = first.named_child(0)
        if inner is not None and inner.type == "string":
            return first
    return None


def _elisions(node: Node, data: bytes, out: list[tuple[int, int, bytes]], depth: int = 0) -> None:
    """Byte ranges of multi-line function bodies under ``node``, with their replacement."""
    if depth > 4:
        return
    body = node.child_by_field_name("body")
    if body is not None and _FUNCTION_LIKE.search(node.type) and b"\n" in data[body.start_byte : body.end_byte]:
        text = data[body.start_byte : body.end_byte]
        if text.startswith(b"{"):
            out.append((body.start_byte, body.end_byte, b"{ ... }"))
            return
        doc = _docstring(body) if body.type == "block" else None
        if doc is not None:
            ls = data.rfind(b"\n", 0, body.start_byte) + 1
            indent = data[ls : body.start_byte]
            indent = indent if not indent.strip() else b"    "
            out.append((doc.end_byte, body.end_byte, b"\n" + indent + b"..."))
        else:
            out.append((body.start_byte, body.end_byte, b"..."))
        return
    for child in node.named_children:
        _elisions(child, data, out, depth + 1)


def _skeleton(node: Node, data: bytes) -> bytes:
    cuts: list[tuple[int, int, bytes]] = []
    _elisions(node, data, cuts)
    pieces: list[bytes] = []
    pos = node.start_byte
    for s, e, rep in cuts:
        pieces.append(data[pos:s])
        pieces.append(rep)
        pos = e
    pieces.append(data[pos : node.end_byte])
    return b"".join(pieces)


def _top_items(root: Node) -> list[Node]:
    items: list[Node] = []
    for child in root.named_children:
        if child.type in _CONTAINERS:
            items.extend(child.named_children)
        else:
            items.append(child)
    return items


def outline(doc: ParsedDoc) -> list[Item]:
    """The top-level items of a parsed file (imports and comments left out), in file order."""
    cached = doc.memo.get("outline")
    if cached is not None:
        return cached  # type: ignore[return-value]
    data = doc.data
    imports = {(n.start_byte, n.end_byte) for n in top_level_imports(doc)}
    items: list[Item] = []
    for node in _top_items(doc.root):
        if node.type in _SKIP or node.is_error or (node.start_byte, node.end_byte) in imports:
            continue
        # Whole lines: keep the indentation before the node so the text reads as in the file.
        ls = data.rfind(b"\n", 0, node.start_byte) + 1
        lead = data[ls : node.start_byte] if not data[ls : node.start_byte].strip() else b""
        text = (lead + data[node.start_byte : node.end_byte]).decode("utf-8", "replace")
        skeleton = (lead + _skeleton(node, data)).decode("utf-8", "replace")
        items.append(Item(_name_of(node), doc.b2c(node.start_byte), doc.b2c(node.end_byte), text, skeleton))
    doc.memo["outline"] = items
    return items
