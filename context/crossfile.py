"""Cross-file context: definitions from imported files and chunks of recently changed files.

`crossfile_snippets` is the one-shot form (the CLI): it follows the buffer's imports to files
inside the workspace root and returns ``(relative path, text)`` snippets within a character
budget, most relevant first. `Workspace` is the long-lived form (the language server, `watch`):
a watchfiles watcher on a background thread records which files change, without rescanning
the tree, and `Workspace.extra_for` adds those changes after the imports.

Imports are read by context/imports.py (``find_imports``) and followed to files, per language,
by context/resolvers.py (``resolve_import``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffgemma.context.imports import ImportRef, find_imports
from diffgemma.context.languages import detect_language, normalize_language
from diffgemma.context.outline import Item, outline
from diffgemma.context.parsing import ParsedDoc, common_prefix, common_suffix, parse
from diffgemma.context.resolvers import resolve_import

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["ImportRef", "RecentChange", "Workspace", "changed_span", "crossfile_snippets", "find_imports",
           "read_source", "resolve_import"]

log = logging.getLogger(__name__)

Snippet = tuple[str, str]

MAX_FILE_BYTES = 1 << 20  # larger files are not read for context
WHOLE_ITEM_CHARS = 1500  # a named definition up to this size is shown whole, else as a skeleton
MIN_SNIPPET_CHARS = 40  # smaller leftovers are not worth a snippet
HEAD_CHARS = 32 * 1024  # how much of a large buffer is searched for imports
CHANGE_WINDOW_CHARS = 8 * 1024  # a large changed file is outlined this far around its change


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


def _outline_near(path: Path, text: str, span: tuple[int, int] | None) -> list[Item]:
    """The outline of ``text``, or in a large text of the part around ``span`` only: an unsaved
    buffer changes on every keystroke, and parsing and outlining megabytes each time would make
    typing in one file cost more the bigger another is. Offsets stay the whole text's."""
    lang = detect_language(str(path), content=text)
    if lang is None:
        return []
    base, piece = 0, text
    if span is not None and len(text) > 4 * CHANGE_WINDOW_CHARS:
        base = text.rfind("\n", 0, max(0, span[0] - CHANGE_WINDOW_CHARS)) + 1
        stop = text.find("\n", min(len(text), span[1] + CHANGE_WINDOW_CHARS))
        piece = text[base: len(text) if stop < 0 else stop + 1]
    doc = parse(piece, lang, cache=False)
    items = outline(doc) if doc is not None else []
    return [dataclasses.replace(it, start=it.start + base, end=it.end + base) for it in items] if base else items


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
        items = change.items = _outline_near(change.path, text, change.span)
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
        uses_of = _name_uses(doc, text)
        for order, ref in enumerate(find_imports(doc)):
            uses = sum(uses_of(n) for n in ref.names)
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


def _name_uses(head: ParsedDoc, text: str) -> Callable[[str], int]:
    """How often a name occurs in the buffer, to rank its imports. In a buffer longer than its head
    the counts are kept with the head's parse (reused until the head changes): a keystroke further
    down barely moves them, and counting every imported name over megabytes each time would make
    typing cost grow with the file."""
    if len(text) <= HEAD_CHARS:
        return text.count
    counts = head.memo.setdefault("name_uses", {})
    assert isinstance(counts, dict)

    def uses(name: str) -> int:
        if name not in counts:
            counts[name] = text.count(name)
        return int(counts[name])

    return uses


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
        if not self._default_filter(change, path):
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
