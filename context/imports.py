"""Which top-level statements of a file are imports, per language, and what they import.

Used twice: the window keeps a file's imports even when the window starts further down
(``import_line_spans``), and cross-file context follows them to other files of the workspace
(``find_imports``; context/resolvers.py finds the files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


def import_line_spans(doc: ParsedDoc) -> list[tuple[int, int]]:
    """Whole-line character spans of the top-level imports; touching spans merged."""
    cached = doc.memo.get("import_spans")
    if cached is None:
        data = doc.data
        merged: list[tuple[int, int]] = []
        for node in top_level_imports(doc):
            s = data.rfind(b"\n", 0, node.start_byte) + 1
            if data[s : node.start_byte].strip():
                continue  # shares its line with other code: not a clean header line
            nl = data.find(b"\n", node.end_byte)
            e = len(data) if nl < 0 else nl + 1
            if data[node.end_byte : e].strip():
                continue
            if merged and merged[-1][1] >= s:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        cached = [(doc.b2c(s), doc.b2c(e)) for s, e in merged]
        doc.memo["import_spans"] = cached
    return cached  # type: ignore[return-value]


# -- what the imports name ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRef:
    spec: str  # the module specifier as written
    names: tuple[str, ...] = ()  # names it brings into scope (used to rank and to pick items)
    submodules: bool = False  # Python `from pkg import a`: `a` may be a module file


# -- reading the buffer's imports ------------------------------------------------------------

_PY_FROM = re.compile(r"^from\s+(\.*[\w.]*)\s+import\s+(.+)$", re.S)
_PY_IMPORT = re.compile(r"^import\s+(.+)$", re.S)
_JS_SPEC = re.compile(r"""(?:from\s*|import\s*|require\s*\(\s*)(['"`])([^'"`]+)\1""")
_JS_NAMED = re.compile(r"\{([^}]*)\}")
_JS_DEFAULT = re.compile(r"^import\s+(?:type\s+)?([A-Za-z_$][\w$]*)")
_JS_NS = re.compile(r"\*\s+as\s+([A-Za-z_$][\w$]*)")
_JS_REQ_BIND = re.compile(r"^(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=")
_QUOTED = re.compile(r"""(['"])([^'"]+)\1""")
_RUST_USE = re.compile(r"^(?:pub(?:\([^)]*\))?\s+)?use\s+((?:crate|super|self)(?:::\w+)*)(?:::\{([^}]*)\})?")
_C_INCLUDE = re.compile(r'#\s*include\s+"([^"]+)"')
_LUA_REQ = re.compile(r"""require\s*\(?\s*(['"])([^'"]+)\1""")
_RUBY_REQ = re.compile(r"""^(require_relative|require|load)\s*\(?\s*(['"])([^'"]+)\2""")
_BASH_SRC = re.compile(r"""^(?:source|\.)\s+(['"]?)([^\s'"]+)\1""")


def _split_names(raw: str) -> tuple[str, ...]:
    names = []
    for part in raw.replace("(", " ").replace(")", " ").replace("\n", " ").split(","):
        words = part.split()
        if words and words[0] not in ("type", "*"):
            names.append(words[0])
        elif len(words) > 1 and words[0] == "type":
            names.append(words[1])
    return tuple(n for n in names if n.isidentifier())


def _node_text(doc: ParsedDoc, node: Node) -> str:
    return doc.data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def find_imports(doc: ParsedDoc) -> list[ImportRef]:
    """What the buffer imports (top-level statements), as written, in order."""
    lang = doc.language
    refs: list[ImportRef] = []
    for node in top_level_imports(doc):
        text = _node_text(doc, node).strip()
        if lang == "python":
            if m := _PY_FROM.match(text):
                refs.append(ImportRef(m.group(1), _split_names(m.group(2)), submodules=True))
            elif m := _PY_IMPORT.match(text):
                for part in m.group(1).split(","):
                    words = part.split()
                    if words:
                        alias = words[-1] if len(words) == 3 and words[1] == "as" else words[0].split(".")[0]
                        refs.append(ImportRef(words[0], (alias,)))
        elif lang in ("javascript", "typescript", "tsx"):
            for m in _JS_SPEC.finditer(text):
                names: list[str] = []
                if named := _JS_NAMED.search(text):
                    names.extend(_split_names(named.group(1)))
                for rx in (_JS_DEFAULT, _JS_NS, _JS_REQ_BIND):
                    if (bound := rx.search(text)) and bound.group(1) not in ("type", "from"):
                        names.append(bound.group(1))
                refs.append(ImportRef(m.group(2), tuple(names)))
        elif lang == "go":
            refs.extend(ImportRef(m.group(2), (m.group(2).rsplit("/", 1)[-1],)) for m in _QUOTED.finditer(text))
        elif lang == "rust":
            if m := _RUST_USE.match(text):
                used = _split_names(m.group(2)) if m.group(2) else (m.group(1).rsplit("::", 1)[-1],)
                refs.append(ImportRef(m.group(1), used))
        elif lang in ("c", "cpp", "cuda", "objc"):
            refs.extend(ImportRef(m.group(1)) for m in _C_INCLUDE.finditer(text))
        elif lang in ("lua", "luau"):
            refs.extend(ImportRef(m.group(2)) for m in _LUA_REQ.finditer(text))
        elif lang == "ruby":
            if m := _RUBY_REQ.match(text):
                refs.append(ImportRef(("./" if m.group(1) == "require_relative" else "") + m.group(3)))
        elif lang == "bash" and (m := _BASH_SRC.match(text)):
            refs.append(ImportRef(m.group(2)))
    if lang == "rust":
        # `mod x;` declares a module file next to this one.
        for node in doc.root.named_children:
            if node.type == "mod_item" and node.child_by_field_name("body") is None:
                name = node.child_by_field_name("name")
                if name is not None and name.text:
                    refs.append(ImportRef("mod:" + name.text.decode()))
    return refs
