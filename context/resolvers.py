"""Imports -> files of the workspace, per language (best effort, always inside the root).

- Python: ``import a.b`` / ``from a.b import c`` / relative ``from .x import y``, looked up
  under the root, ``root/src`` and the buffer's directory (``a/b.py``, ``a/b/__init__.py``,
  and ``a/b/c.py`` for a submodule).
- JavaScript/TypeScript: relative specifiers (``./x``, ``../y``) in ``import``/``export
  ... from``/``require()``, with the usual extensions and ``index`` files.
- Go: import paths under the module named in ``root/go.mod`` (every non-test file of the
  package directory).
- Rust: ``use crate::a::b`` / ``super::`` / ``self::`` and ``mod x;``.
- C/C++: ``#include "x.h"``; Lua ``require``; Ruby ``require_relative``; Bash ``source``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from diffgemma.context.imports import ImportRef

MAX_FILES_PER_IMPORT = 8  # a Go package directory can hold many files
_JS_EXTS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")


def _inside(root: Path, path: Path) -> Path | None:
    try:
        resolved = path.resolve()
    except OSError:
        return None
    if resolved.is_file() and resolved.is_relative_to(root):
        return resolved
    return None


def _first(root: Path, candidates: Iterable[Path]) -> list[Path]:
    for cand in candidates:
        found = _inside(root, cand)
        if found is not None:
            return [found]
    return []


def _resolve_python(root: Path, here: Path, ref: ImportRef) -> list[Path]:
    spec = ref.spec
    dots = len(spec) - len(spec.lstrip("."))
    parts = [p for p in spec[dots:].split(".") if p]
    if dots:
        base = here.parent
        for _ in range(dots - 1):
            base = base.parent
        bases = [base]
    else:
        bases = [root, root / "src", here.parent]
    found: list[Path] = []
    for base in bases:
        mod = base.joinpath(*parts)
        found = _first(root, [mod.with_suffix(".py") if parts else mod / "__init__.py", mod / "__init__.py"])
        if ref.submodules:
            # `from pkg import a, b`: a and b may be modules of pkg rather than names in it.
            for name in ref.names:
                found += _first(root, [mod / f"{name}.py", mod / name / "__init__.py"])
        if found:
            break
    return found


def _resolve_js(root: Path, here: Path, ref: ImportRef, typescript: bool) -> list[Path]:
    spec = ref.spec
    if not spec.startswith((".", "/")):
        return []  # a package from node_modules: not workspace code
    base = (root / spec.lstrip("/")) if spec.startswith("/") else (here.parent / spec)
    cands = [base]
    stem = str(base)
    if stem.endswith((".js", ".jsx", ".mjs", ".cjs")):
        # TypeScript's ESM style imports "./x.js" for the source file "./x.ts": a TypeScript
        # buffer means the source, a JavaScript one the file as named.
        sources = [Path(stem.rsplit(".", 1)[0] + ext) for ext in (".ts", ".tsx", ".mts", ".cts")]
        cands = [*sources, base] if typescript else [base, *sources]
    cands += [Path(stem + ext) for ext in _JS_EXTS]
    cands += [base / f"index{ext}" for ext in _JS_EXTS]
    return _first(root, cands)


def _go_module(root: Path) -> str | None:
    try:
        for line in (root / "go.mod").read_text(encoding="utf-8").splitlines():
            if line.startswith("module "):
                return line.split()[1].strip('"')
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return None


def _resolve_go(root: Path, here: Path, ref: ImportRef) -> list[Path]:
    module = _go_module(root)
    if module is None or not (ref.spec == module or ref.spec.startswith(module + "/")):
        return []
    pkg = root / ref.spec[len(module) :].lstrip("/")
    try:
        files = sorted(p for p in pkg.iterdir() if p.suffix == ".go" and not p.name.endswith("_test.go"))
    except OSError:
        return []
    here_r = here.resolve()
    return [p for p in (_inside(root, f) for f in files) if p is not None and p != here_r][:MAX_FILES_PER_IMPORT]


def _rust_src_root(root: Path, here: Path) -> Path:
    for d in here.parents:
        if (d / "Cargo.toml").is_file():
            return d / "src"
        if d == root:
            break
    return root / "src"


def _resolve_rust(root: Path, here: Path, ref: ImportRef) -> list[Path]:
    if ref.spec.startswith("mod:"):
        name = ref.spec[4:]
        owner = here.parent if here.stem in ("mod", "lib", "main") else here.parent / here.stem
        return _first(root, [owner / f"{name}.rs", owner / name / "mod.rs", here.parent / f"{name}.rs"])
    parts = ref.spec.split("::")
    head, rest = parts[0], parts[1:]
    if head == "crate":
        base = _rust_src_root(root, here)
    else:
        base = here.parent if here.stem in ("mod", "lib", "main") else here.parent / here.stem
        if head == "super":
            base = base.parent
    # The longest module path that exists: `crate::a::b::Item` may live in a/b.rs or in a.rs.
    for n in range(len(rest), 0, -1):
        mod = base.joinpath(*rest[:n])
        found = _first(root, [mod.with_suffix(".rs"), mod / "mod.rs"])
        if found:
            return found
    return []


def _resolve_simple(root: Path, here: Path, ref: ImportRef, lang: str) -> list[Path]:
    spec = ref.spec
    if lang in ("c", "cpp", "cuda", "objc"):
        return _first(root, [here.parent / spec, root / spec, root / "include" / spec, root / "src" / spec])
    if lang in ("lua", "luau"):
        rel = spec.replace(".", "/")
        return _first(
            root,
            [root / f"{rel}.lua", root / rel / "init.lua", here.parent / f"{rel}.lua", root / "lua" / f"{rel}.lua"],
        )
    if lang == "ruby":
        if spec.startswith("./"):
            p = here.parent / spec[2:]
            return _first(root, [p.with_suffix(".rb") if p.suffix != ".rb" else p])
        return _first(root, [root / "lib" / f"{spec}.rb", root / f"{spec}.rb"])
    if lang == "bash":
        return _first(root, [here.parent / spec, root / spec])
    return []


def resolve_import(root: Path, here: Path, ref: ImportRef, language: str) -> list[Path]:
    """Files inside ``root`` that an import of the buffer at ``here`` refers to."""
    if language == "python":
        return _resolve_python(root, here, ref)
    if language in ("javascript", "typescript", "tsx"):
        return _resolve_js(root, here, ref, typescript=language != "javascript")
    if language == "go":
        return _resolve_go(root, here, ref)
    if language == "rust":
        return _resolve_rust(root, here, ref)
    return _resolve_simple(root, here, ref, language)
