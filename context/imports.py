"""Which top-level statements of a file are imports, per language.

Used twice: the window keeps a file's imports even when the window starts further down, and
cross-file context follows them to other files of the workspace.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node

    from diffgemma.context.parsing import ParsedDoc

# Node types that are imports (or package declarations, which read as part of the same header).
IMPORT_TYPES: dict[str, frozenset[str]] = {
    "python": frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
    "javascript": frozenset({"import_statement"}),
    "typescript": frozenset({"import_statement", "import_alias"}),
    "tsx": frozenset({"import_statement", "import_alias"}),
    "go": frozenset({"package_clause", "import_declaration"}),
    "rust": frozenset({"use_declaration", "extern_crate_declaration"}),
    "java": frozenset({"package_declaration", "import_declaration"}),
    "c": frozenset({"preproc_include"}),
    "cpp": frozenset({"preproc_include", "using_declaration"}),
    "cuda": frozenset({"preproc_include", "using_declaration"}),
    "objc": frozenset({"preproc_include"}),
    "csharp": frozenset({"using_directive", "extern_alias_directive"}),
    "php": frozenset({"namespace_use_declaration"}),
    "kotlin": frozenset({"package_header", "import_list", "import_header"}),
    "swift": frozenset({"import_declaration"}),
    "scala": frozenset({"package_clause", "import_declaration"}),
    "haskell": frozenset({"header", "imports"}),
    "dart": frozenset({"import_or_export", "library_name"}),
    "groovy": frozenset({"import_declaration", "package_declaration"}),
    "julia": frozenset({"import_statement", "using_statement"}),
    "zig": frozenset(),
}

# Languages whose imports are ordinary calls or assignments: node types to look at, and the
# pattern their text must match (checked only on short top-level statements).
REQUIRE_LIKE: dict[str, tuple[frozenset[str], re.Pattern[str]]] = {
    "javascript": (
        frozenset({"lexical_declaration", "variable_declaration", "expression_statement"}),
        re.compile(r"^(?:(?:const|let|var)\s[^=]*=\s*)?require\s*\("),
    ),
    "typescript": (
        frozenset({"lexical_declaration", "variable_declaration"}),
        re.compile(r"^(?:const|let|var)\s[^=]*=\s*require\s*\("),
    ),
    "lua": (
        frozenset({"variable_declaration", "local_variable_declaration", "function_call", "assignment_statement"}),
        re.compile(r"^(?:local\s+)?(?:[\w.,\s]+=\s*)?require\s*[(\"']"),
    ),
    "ruby": (frozenset({"call", "command_call"}), re.compile(r"^(?:require|require_relative|load)\b")),
    "bash": (frozenset({"command"}), re.compile(r"^(?:source|\.)\s")),
    "elixir": (frozenset({"call"}), re.compile(r"^(?:import|alias|require|use)\s")),
    "perl": (frozenset({"use_statement", "require_statement"}), re.compile(r"^(?:use|require)\s")),
    "r": (frozenset({"call"}), re.compile(r"^(?:library|require|source)\s*\(")),
}
REQUIRE_LIKE["tsx"] = REQUIRE_LIKE["typescript"]

# Only this many top-level statements are looked at: imports sit at the top.
SCAN_LIMIT = 200
_MAX_REQUIRE_BYTES = 400


def _is_import(node: Node, language: str, data: bytes) -> bool:
    if node.type in IMPORT_TYPES.get(language, ()):
        return True
    rule = REQUIRE_LIKE.get(language)
    if rule is None or node.type not in rule[0]:
        return False
    if node.end_byte - node.start_byte > _MAX_REQUIRE_BYTES:
        return False
    return bool(rule[1].match(data[node.start_byte : node.end_byte].decode("utf-8", "replace")))


def top_level_imports(doc: ParsedDoc) -> list[Node]:
    """Import statements among the first top-level statements of the document, in order."""
    cached = doc.memo.get("imports")
    if cached is None:
        found: list[Node] = []
        lang = doc.language
        if lang in IMPORT_TYPES or lang in REQUIRE_LIKE:
            node = doc.root.child(0) if doc.root.child_count else None
            seen = 0
            while node is not None and seen < SCAN_LIMIT:
                if _is_import(node, lang, doc.data):
                    found.append(node)
                node = node.next_sibling
                seen += 1
        doc.memo["imports"] = cached = found
    return cached  # type: ignore[return-value]
