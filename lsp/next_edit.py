"""Pure pieces of next-edit suggestions: the daemon request for a cursor and the recent edits, and
the LSP answer for the daemon's line-range edits.

The answer of ``diffgemma/nextEdit`` is ``{edits: [{range, newText, confidence}], next, reason,
threshold}``: each edit replaces whole lines (its range runs from a line's start to another
line's start, or to the end of the document), ``next`` is where the edit after it is likely to
be (the first non-blank character of that line), ``reason`` says in one line why nothing is
proposed when ``edits`` is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lsprotocol import types

from diffgemma.runtime.api import config
from diffgemma.runtime.api.next_edit import Cursor, NextEditRequest, NextEditResult, RecentEdit, keep_recent_edits

from .settings import Settings

# The most document text one request carries: a longer document is sent as a window of whole
# lines around the cursor (``first_line`` says where it starts).
MAX_TEXT_CHARS = config.LSP_CONTEXT_CHARS_LIMIT


def next_edit_key(uri: str) -> str:
    """A document's next-edit key, in flight here and as the daemon's supersession key: a
    suggestion and the ghost text of the same document do not cancel each other."""
    return f"{uri}#next-edit"


def text_window(text: str, line: int, limit: int = MAX_TEXT_CHARS) -> tuple[str, int]:
    """(text, first_line): the whole document when it fits in ``limit`` characters, else whole
    lines around ``line`` that do, half before it and half after (more on one side when the
    other runs out)."""
    if len(text) <= limit:
        return text, 0
    lines = text.split("\n")
    line = min(line, len(lines) - 1)
    first, last, size = line, line + 1, len(lines[line]) + 1
    while True:
        grew = False
        for side in (0, 1):
            at = first - 1 if side == 0 else last
            if not 0 <= at < len(lines) or size + len(lines[at]) + 1 > limit:
                continue
            size += len(lines[at]) + 1
            first, last = (at, last) if side == 0 else (first, at + 1)
            grew = True
        if not grew:
            return "\n".join(lines[first:last]), first


def next_edit_request(
    text: str,
    line: int,
    col: int,
    *,
    language: str | None,
    path: str | None,
    uri: str,
    edits: Sequence[dict[str, str]],
    settings: Settings,
) -> NextEditRequest:
    """The daemon request for the cursor at document ``line``, ``col`` (characters).

    ``client`` is the document's next-edit key, so a newer suggestion for it supersedes an older
    one in the daemon's queue without touching its ghost text.
    """
    window, first_line = text_window(text, line)
    recent = keep_recent_edits([RecentEdit(path=e["path"], diff=e["diff"]) for e in edits])
    request = NextEditRequest(
        text=window,
        cursor=Cursor(line=line, col=col),
        first_line=first_line,
        edits=recent,
        threshold=settings.next_edit.threshold,
        language=language,
        path=path,
        steps=settings.completion.steps,
        model=settings.daemon.model,
        client=next_edit_key(uri),
    )
    return request.validate()


def line_starts(text: str) -> list[int]:
    """The offset of every line's start in ``text`` (lines split at "\\n")."""
    starts = [0]
    at = text.find("\n")
    while at != -1:
        starts.append(at + 1)
        at = text.find("\n", at + 1)
    return starts


def lsp_answer(result: NextEditResult, text: str, position_at: Callable[[int], types.Position]) -> dict[str, Any]:
    """The ``diffgemma/nextEdit`` answer for the daemon's ``result`` on the document ``text``.

    ``position_at`` turns an offset into ``text`` into an LSP position in the negotiated encoding.
    Edits that fall outside the document or change nothing are left out.
    """
    starts = line_starts(text)
    edits = []
    for edit in result.edits:
        if not 0 <= edit.start_line <= edit.end_line <= len(starts):
            continue
        start = starts[edit.start_line] if edit.start_line < len(starts) else len(text)
        end = starts[edit.end_line] if edit.end_line < len(starts) else len(text)
        new_text = edit.text
        if end == len(text) and not text.endswith("\n") and new_text.endswith("\n"):
            new_text = new_text[:-1]  # the document's last line has no newline: keep it so
        if text[start:end] == new_text:
            continue
        span = types.Range(start=position_at(start), end=position_at(end))
        edits.append({"range": _json(span), "newText": new_text, "confidence": round(edit.confidence, 4)})
    next_position = None
    if result.next_line is not None and 0 <= result.next_line < len(starts):
        line_start = starts[result.next_line]
        line_end = starts[result.next_line + 1] - 1 if result.next_line + 1 < len(starts) else len(text)
        line = text[line_start:line_end]
        next_position = _json(position_at(line_start + len(line) - len(line.lstrip())))
    reason = result.reason if not edits else None
    if not edits and reason is None:
        reason = "no change proposed"
    return {"edits": edits, "next": next_position, "reason": reason, "threshold": result.threshold}


def empty_answer(reason: str) -> dict[str, Any]:
    """An answer that proposes nothing, and says why."""
    return {"edits": [], "next": None, "reason": reason, "threshold": None}


def _json(value: types.Range | types.Position) -> dict[str, Any]:
    if isinstance(value, types.Position):
        return {"line": value.line, "character": value.character}
    return {"start": _json(value.start), "end": _json(value.end)}
