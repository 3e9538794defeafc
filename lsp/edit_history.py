"""The edits the user just made, kept from didChange as unified diffs for next-edit suggestions.

Keystrokes are not edits: typing ``count`` over ``n`` is a dozen change events and one edit. Each
document holds a *pending* edit (the text when it began and the lines it touched); it becomes a
recorded edit (a unified diff against that starting text) at a pause in typing, when a change
lands away from the lines it touched, or when the cursor is seen elsewhere. Asking for the edits
finishes the pending ones, so the newest edit is always included; typing on where it stopped
(the next change soon after, on the same lines, nothing edited elsewhere meanwhile) takes that
edit up again, so a suggestion asked for in the middle of a word does not split the word's edit.

Bounded twice: a few edits per document, and a few across the workspace, the newest kept (a
rename in one file is often followed by the matching edit in another). Pure: no LSP types, a
clock that tests can set.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PAUSE_S = 3.0  # a pause in typing this long ends an edit
NEAR_LINES = 1  # a change this close to the lines the pending edit touched continues it
CONTEXT_LINES = 2  # unchanged lines around each hunk of a recorded diff
PER_DOCUMENT = 8  # recorded edits kept per document
WORKSPACE = 16  # recorded edits kept across the workspace (the wire keeps at most MAX_NEXT_EDITS)
NO_NEWLINE = "\\ No newline at end of file\n"


@dataclass(frozen=True)
class Edit:
    """One recorded edit: the file it changed and its unified diff."""

    path: str
    diff: str
    uri: str
    seq: int  # order of recording across the workspace

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "diff": self.diff}


@dataclass
class _Document:
    path: str
    text: str  # the text as of the last change seen
    base: str  # the text when the pending edit began
    lines: tuple[int, int] | None = None  # lines the pending edit touched (inclusive), in ``text``
    last: float = 0.0  # when the last change arrived
    recorded: list[Edit] = field(default_factory=list)
    is_open: bool = True
    # the edit finished last and what it began from: (base, lines, seq), to take it up again
    finished: tuple[str, tuple[int, int], int] | None = None


def _common_prefix(a: str, b: str) -> int:
    """Length of the text ``a`` and ``b`` start with, found by halving with slice comparisons
    (memory-speed, where a character loop in Python is not)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length (at most ``limit``) of the text ``a`` and ``b`` end with."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:len(a) - lo] == b[len(b) - mid:len(b) - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _difference(old: str, new: str) -> tuple[int, int]:
    """(prefix, suffix): how much of ``old`` and ``new`` is the same at each end (not overlapping)."""
    prefix = _common_prefix(old, new)
    return prefix, _common_suffix(old, new, min(len(old), len(new)) - prefix)


def changed_lines(old: str, new: str) -> tuple[int, int]:
    """The (first, last) lines of ``new`` that differ from ``old`` (a full-text change event)."""
    prefix, suffix = _difference(old, new)
    first = new.count("\n", 0, prefix)
    return first, max(first, new.count("\n", 0, max(prefix, len(new) - suffix - 1)))


def _region_end(old: str, new: str, suffix: int, context: int) -> tuple[int, int]:
    """Where the changed lines end in ``old`` and ``new``, ``context`` lines on: past the newline
    that ends the last changed line in both. The ``suffix`` both end with is walked once, in
    ``old``: it is the same text in ``new``."""
    tail, new_tail = len(old) - suffix, len(new) - suffix
    at = tail
    if (tail and old[tail - 1] != "\n") or (new_tail and new[new_tail - 1] != "\n"):
        context += 1  # a changed line goes on into the common tail: to its end first
    for _ in range(context):
        if at >= len(old):
            break
        newline = old.find("\n", at)
        at = len(old) if newline < 0 else newline + 1
    return at, new_tail + at - tail


def _split(text: str) -> list[str]:
    """Lines ended by "\n" as git counts them (the last one may have none)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def unified_diff(path: str, old: str, new: str, context: int = CONTEXT_LINES) -> str:
    """``git diff``-style hunks from ``old`` to ``new`` ("" when they are equal).

    Only the changed middle and its context lines are split and compared: the unchanged head and
    tail are found with slice comparisons first, so an edit in a long file costs a few passes at
    memory speed, not a line-by-line match of the whole file.
    """
    if old == new:
        return ""
    prefix, suffix = _difference(old, new)
    start = old.rfind("\n", 0, prefix) + 1  # the first changed line (the same in both)
    for _ in range(context):
        if start:
            start = old.rfind("\n", 0, start - 1) + 1
    old_end, new_end = _region_end(old, new, suffix, context)
    lo = old.count("\n", 0, start)
    a_mid, b_mid = _split(old[start:old_end]), _split(new[start:new_end])
    out = [f"--- a/{path}\n", f"+++ b/{path}\n"]
    for group in difflib.SequenceMatcher(None, a_mid, b_mid, autojunk=False).get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(lo + first[1], last[2] - first[1])} +{_range(lo + first[3], last[4] - first[3])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(_lines(" ", a_mid[i1:i2]))
                continue
            out.extend(_lines("-", a_mid[i1:i2]))
            out.extend(_lines("+", b_mid[j1:j2]))
    return "".join(out)


def _range(start: int, length: int) -> str:
    """A hunk header's range (1-based; an empty range names the line before it)."""
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def _lines(mark: str, lines: Sequence[str]) -> list[str]:
    out = []
    for line in lines:
        out.append(mark + line)
        if not line.endswith("\n"):
            out.append("\n" + NO_NEWLINE)  # as git writes a last line without its newline
    return out


class EditHistory:
    """Recent edits per document and across the workspace."""

    def __init__(self, *, pause_s: float = PAUSE_S, per_document: int = PER_DOCUMENT, workspace: int = WORKSPACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pause_s = pause_s
        self.per_document = per_document
        self.workspace = workspace
        self._clock = clock
        self._documents: dict[str, _Document] = {}
        self._seq = 0

    def open(self, uri: str, path: str, text: str) -> None:
        """Start following a document (its text as opened is no edit)."""
        doc = self._documents.get(uri)
        if doc is None:
            self._documents[uri] = _Document(path=path, text=text, base=text)
        else:  # reopened: what changed on disk meanwhile is not the user's edit here
            self._finish(uri, doc)
            doc.path, doc.text, doc.base, doc.lines, doc.is_open = path, text, text, None, True

    def change(self, uri: str, path: str, text: str, lines: tuple[int, int] | None = None,
               shift: int | None = None) -> None:
        """The document is now ``text``; ``lines`` are the lines of it the change touched and
        ``shift`` the lines it added (negative: removed). None: worked out from the texts, which
        costs a pass over them; the change events say it for nothing."""
        doc = self._documents.get(uri)
        if doc is None:
            self.open(uri, path, text)
            return
        now = self._clock()
        touched = lines if lines is not None else changed_lines(doc.text, text)
        if shift is None:
            shift = text.count("\n") - doc.text.count("\n")
        if doc.lines is not None and (now - doc.last > self.pause_s or not _near(doc.lines, touched)):
            self._finish(uri, doc)
        elif doc.lines is None and (taken := self._continued(doc, touched, now)) is not None:
            doc.base, doc.lines, seq = taken
            doc.recorded = [e for e in doc.recorded if e.seq != seq]
        doc.finished = None
        if doc.lines is None:
            doc.lines = touched
        else:
            moved = shift if touched[0] <= doc.lines[1] else 0
            doc.lines = (min(doc.lines[0], touched[0]), max(doc.lines[1] + moved, touched[1]))
        doc.path, doc.text, doc.last = path, text, now

    def cursor(self, uri: str, line: int) -> None:
        """The cursor is at ``line``: away from the pending edit's lines, that edit is done."""
        doc = self._documents.get(uri)
        if doc is not None and doc.lines is not None and not _near(doc.lines, (line, line)):
            self._finish(uri, doc)

    def close(self, uri: str) -> None:
        """The document closed: its pending edit is done; its recorded edits stay in the history."""
        doc = self._documents.get(uri)
        if doc is None:
            return
        self._finish(uri, doc)
        if doc.recorded:
            doc.text = doc.base = ""
            doc.is_open = False
        else:
            del self._documents[uri]

    def edits(self) -> list[Edit]:
        """The recorded edits across the workspace, newest last (pending edits finished first)."""
        for uri, doc in list(self._documents.items()):
            self._finish(uri, doc, resumable=True)
        every = [edit for doc in self._documents.values() for edit in doc.recorded]
        return sorted(every, key=lambda e: e.seq)[-self.workspace:]

    def _continued(self, doc: _Document, touched: tuple[int, int],
                   now: float) -> tuple[str, tuple[int, int], int] | None:
        """The edit a change takes up: the one finished last (by a request, not by the user) when
        the change follows soon after, on its lines, with nothing edited elsewhere meanwhile."""
        finished = doc.finished
        if finished is None or now - doc.last > self.pause_s or not _near(finished[1], touched):
            return None
        seq = finished[2]
        return finished if seq == self._seq and any(e.seq == seq for e in doc.recorded) else None

    def _finish(self, uri: str, doc: _Document, *, resumable: bool = False) -> None:
        if doc.lines is None:
            return
        base, lines = doc.base, doc.lines
        diff = unified_diff(doc.path, base, doc.text)
        doc.base, doc.lines = doc.text, None
        if not diff:
            return  # typed and undone: no edit
        self._seq += 1
        doc.finished = (base, lines, self._seq) if resumable else None
        doc.recorded.append(Edit(path=doc.path, diff=diff, uri=uri, seq=self._seq))
        del doc.recorded[:-self.per_document]
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        every = sorted((e.seq, uri) for uri, d in self._documents.items() for e in d.recorded)
        for seq, uri in every[:max(0, len(every) - self.workspace)]:
            doc = self._documents[uri]
            doc.recorded = [e for e in doc.recorded if e.seq != seq]
        for uri in [u for u, d in self._documents.items() if not d.recorded and not d.is_open]:
            del self._documents[uri]  # closed and nothing left to remember


def _near(lines: tuple[int, int], touched: tuple[int, int]) -> bool:
    return touched[0] <= lines[1] + NEAR_LINES and touched[1] >= lines[0] - NEAR_LINES
