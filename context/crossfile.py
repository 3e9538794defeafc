"""Cross-file context: definitions from imported files and chunks of recently changed files.

`crossfile_snippets` is the one-shot form (the CLI): it follows the buffer's imports to files
inside the workspace root and returns ``(relative path, text)`` snippets within a character
budget, most relevant first. `Workspace` is the long-lived form (the language server, `watch`):
a watchfiles watcher on a background thread records which files change, without rescanning
the tree, and `Workspace.extra_for` adds those changes after the imports.

Resolution, per language (best effort, always inside the root):
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

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgemma.context.imports import top_level_imports
from diffgemma.context.languages import detect_language, normalize_language
from diffgemma.context.outline import Item, outline
from diffgemma.context.parsing import ParsedDoc, common_prefix, common_suffix, parse

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

Snippet = tuple[str, str]

MAX_FILE_BYTES = 1 << 20  # larger files are not read for context
WHOLE_ITEM_CHARS = 1500  # a named definition up to this size is shown whole, else as a skeleton
MIN_SNIPPET_CHARS = 40  # smaller leftovers are not worth a snippet
MAX_FILES_PER_IMPORT = 8  # a Go package directory can hold many files
HEAD_CHARS = 32 * 1024  # how much of a large buffer is searched for imports


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


def _node_text(doc: ParsedDoc, node: object) -> str:
    return doc.data[node.start_byte : node.end_byte].decode("utf-8", "replace")  # type: ignore[attr-defined]


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
                names = _split_names(m.group(2)) if m.group(2) else (m.group(1).rsplit("::", 1)[-1],)
                refs.append(ImportRef(m.group(1), names))
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


# -- resolving them to files -----------------------------------------------------------------

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


# -- reading other files -----------------------------------------------------------------------


def read_source(path: Path) -> str | None:
    """A workspace file's text, or None when it is missing, too big, or not UTF-8 text."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _OutlineCache:
    """Outlines of workspace files keyed by (path, mtime, size): parsed once per version."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[tuple[int, int], str, list[Item]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path) -> tuple[str, list[Item]] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        key = str(path)
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None and hit[0] == stamp:
                self.entries.move_to_end(key)
                return hit[1], hit[2]
        text = read_source(path)
        lang = detect_language(str(path), content=text)
        if text is None:
            return None
        doc = parse(text, lang, cache=False) if lang else None
        items = outline(doc) if doc is not None else []
        with self.lock:
            self.entries[key] = (stamp, text, items)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return text, items

    def forget(self, path: str) -> None:
        with self.lock:
            self.entries.pop(path, None)

    def text_of(self, path: str) -> str | None:
        with self.lock:
            hit = self.entries.get(path)
        return hit[1] if hit is not None else None


_outlines = _OutlineCache()


def _render(items: list[Item], wanted: set[str], budget: int) -> str:
    """Items named in ``wanted`` first (whole when small), then the rest as skeletons."""
    chosen: list[tuple[int, str]] = []
    used = 0
    first = [it for it in items if it.name in wanted]
    rest = [it for it in items if it.name not in wanted]
    for it in first + rest:
        whole = it.name in wanted and len(it.text) <= WHOLE_ITEM_CHARS
        piece = it.text if whole else it.skeleton
        if len(piece) > WHOLE_ITEM_CHARS * 2:
            piece = piece[: piece.find("\n") + 1 or len(piece)].rstrip() + " ..."
        if used + len(piece) + 2 > budget:
            if it.name in wanted:
                continue  # a smaller wanted item may still fit
            break
        chosen.append((it.start, piece))
        used += len(piece) + 2
    chosen.sort()  # file order reads best
    return "\n\n".join(p for _, p in chosen)


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass
class RecentChange:
    path: Path
    when: float
    span: tuple[int, int] | None = None  # changed character range in the new text, when known
    text: str | None = field(default=None, repr=False)
    items: list[Item] | None = field(default=None, repr=False)  # the outline of ``text``, once parsed


def _changed_chunk(change: RecentChange, budget: int) -> str:
    """The definitions a change touched (whole when small), or the lines around it."""
    text, items = change.text, None
    if text is None:
        loaded = _outlines.get(change.path)
        if loaded is None:
            return ""
        text, items = loaded
    if items is None:
        items = change.items
    if items is None:
        lang = detect_language(str(change.path), content=text)
        doc = parse(text, lang, cache=False) if lang else None
        items = change.items = outline(doc) if doc is not None else []
    if change.span is None:
        return _render(items, set(), budget)
    s, e = change.span
    touched = [it for it in items if it.start <= e and it.end >= s]
    if touched:
        return _render(touched, {it.name or "" for it in touched}, budget)
    # A change outside any definition: the lines around it.
    lo = text.rfind("\n", 0, max(s - budget // 2, 0)) + 1
    hi = text.find("\n", min(e + budget // 2, len(text)))
    return text[lo : len(text) if hi < 0 else hi][:budget]


def crossfile_snippets(
    root: str | os.PathLike[str],
    path: str | os.PathLike[str] | None,
    text: str,
    budget_chars: int,
    *,
    language: str | None = None,
    recent: Iterable[RecentChange] = (),
) -> list[Snippet]:
    """Snippets from the files the buffer imports, then from recent changes, within budget.

    Each snippet costs len(path) + len(text) of the budget. Imports come first, ranked by how
    often the names they bind appear in the buffer; then recent changes, newest first. The
    buffer's own file is never included.
    """
    root_p = Path(root).resolve()
    here = Path(path).resolve() if path is not None else root_p / "__buffer__"
    lang = normalize_language(language) or detect_language(str(here), content=text)
    out: list[Snippet] = []
    seen: set[Path] = {here}
    left = budget_chars

    def add(rel: str, body: str) -> None:
        nonlocal left
        body = body.strip("\n")
        if len(body) >= MIN_SNIPPET_CHARS or (body and len(body) + len(rel) <= left):
            out.append((rel, body))
            left -= len(rel) + len(body)

    # Imports sit at the top: a large buffer is parsed only that far (a head that rarely
    # changes while typing further down, so its tree stays cached).
    head = text if len(text) <= HEAD_CHARS else text[: text.rfind("\n", 0, HEAD_CHARS) + 1]
    doc = parse(head, lang, document=f"{here}#head") if lang else None
    if doc is not None:
        targets: list[tuple[int, int, Path, set[str]]] = []
        for order, ref in enumerate(find_imports(doc)):
            uses = sum(text.count(n) for n in ref.names) if ref.names else 0
            for target in resolve_import(root_p, here, ref, doc.language):
                if target not in seen:
                    seen.add(target)
                    targets.append((-uses, order, target, set(ref.names)))
        targets.sort(key=lambda t: (t[0], t[1]))
        for _, _, target, names in targets:
            if left < MIN_SNIPPET_CHARS:
                break
            loaded = _outlines.get(target)
            if loaded is None:
                continue
            rel = _rel(root_p, target)
            add(rel, _render(loaded[1], names, left - len(rel)))
    for change in sorted(recent, key=lambda c: -c.when):
        if left < MIN_SNIPPET_CHARS:
            break
        target = change.path
        if target in seen:
            continue
        seen.add(target)
        rel = _rel(root_p, target)
        add(rel, _changed_chunk(change, left - len(rel)))
    return [(rel, body) for rel, body in out if body]


# -- the workspace and its watcher ---------------------------------------------------------------


def changed_span(old: str, new: str) -> tuple[int, int]:
    """[start, end) in ``new`` of the text that differs from ``old`` (empty for a pure deletion)."""
    start = common_prefix(old, new)
    tail = common_suffix(old, new, min(len(old), len(new)) - start)
    return start, len(new) - tail


class Workspace:
    """A workspace root whose recently changed files are tracked by a watchfiles watcher.

    ``start()`` runs the watcher on a daemon thread and returns once it is watching;
    ``stop()`` ends it. Changed files are read once when their change is seen (at most
    ``max_recent`` kept, newest first), so no tree scan is ever needed. Front ends that know
    about unsaved changes call ``note_change(path, text)`` themselves.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_recent: int = 16,
        debounce_ms: int = 50,
        force_polling: bool | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.max_recent = max_recent
        self.debounce_ms = debounce_ms
        self.force_polling = force_polling
        self._recent: OrderedDict[Path, RecentChange] = OrderedDict()
        self._snapshots: OrderedDict[Path, str] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._default_filter: Any = None
        self.error: BaseException | None = None

    # lifecycle
    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="diffgemma-workspace-watch", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"watcher for {self.root} did not start within {timeout:.0f}s")
        if self.error is not None:
            raise RuntimeError(f"cannot watch {self.root}: {self.error}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Workspace:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _filter(self, change: object, path: str) -> bool:
        if self._default_filter is None:
            from watchfiles import DefaultFilter

            self._default_filter = DefaultFilter()  # skips .git, node_modules, caches, editor swaps
        if not self._default_filter(change, path):  # type: ignore[arg-type]
            return False
        return detect_language(path) is not None

    def _run(self) -> None:
        try:
            from watchfiles import Change, watch

            # yield_on_timeout: the first (empty) yield tells us the watcher is installed.
            for changes in watch(
                self.root,
                watch_filter=self._filter,
                debounce=self.debounce_ms,
                step=20,
                rust_timeout=200,
                yield_on_timeout=True,
                stop_event=self._stop,
                force_polling=self.force_polling,
                raise_interrupt=False,
            ):
                self._ready.set()
                for change, raw in changes:
                    p = Path(raw)
                    if change == Change.deleted:
                        self.forget(p)
                    else:
                        self._record(p)
        except BaseException as exc:  # reported by start(); the editor keeps working without it
            self.error = exc
            log.warning("workspace watcher stopped: %s", exc)
        finally:
            self._ready.set()

    # recording
    def _record(self, path: Path, text: str | None = None) -> None:
        path = path.resolve()
        if not path.is_relative_to(self.root):
            return
        if text is None:
            text = read_source(path)
            if text is None:
                return
        with self._lock:
            old = self._snapshots.get(path)
        if old is None:
            old = _outlines.text_of(str(path))  # the version last read for an outline
        span = changed_span(old, text) if old is not None else None
        if old is not None and old == text:
            return  # touched, not changed
        with self._lock:
            self._snapshots[path] = text
            self._snapshots.move_to_end(path)
            while len(self._snapshots) > 4 * self.max_recent:
                self._snapshots.popitem(last=False)
            self._recent[path] = RecentChange(path, time.time(), span, text)
            self._recent.move_to_end(path)
            while len(self._recent) > self.max_recent:
                self._recent.popitem(last=False)
        _outlines.forget(str(path))

    def note_change(self, path: str | os.PathLike[str], text: str | None = None) -> None:
        """Record a change the watcher cannot see (an unsaved buffer) or that it saw late."""
        self._record(Path(path), text)

    def remember(self, path: str | os.PathLike[str], text: str) -> None:
        """Keep ``text`` as the known version of ``path`` so its next change can be located."""
        p = Path(path).resolve()
        with self._lock:
            self._snapshots[p] = text
            self._snapshots.move_to_end(p)

    def forget(self, path: Path) -> None:
        path = path.resolve() if path.exists() else path
        with self._lock:
            self._recent.pop(path, None)
            self._snapshots.pop(path, None)
        _outlines.forget(str(path))

    def recent(self) -> list[RecentChange]:
        """Recent changes, newest first."""
        with self._lock:
            return list(reversed(self._recent.values()))

    def recent_paths(self) -> list[str]:
        return [str(c.path) for c in self.recent()]

    def extra_for(
        self, path: str | os.PathLike[str] | None, text: str, budget_chars: int, *, language: str | None = None
    ) -> list[Snippet]:
        """Cross-file snippets for the buffer ``text`` at ``path``: imports, then recent changes."""
        return crossfile_snippets(
            self.root, path, text, budget_chars, language=language, recent=self.recent()
        )
