"""Feeding the recent-edit history (edit_history.EditHistory) from the sync notifications.

Called by documents' didOpen/didChange/didClose handlers as each arrives (pygls has applied the
change to the workspace by then, so the new text is the document's; the history keeps the old).
The lines a change touched come from its ranges, so a keystroke costs no pass over the text (the
document sync keeps that cost flat in big files; so does this).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from lsprotocol import types

from .language_server import DiffgemmaServer


def history_path(ls: DiffgemmaServer, uri: str) -> str:
    """The name an edit carries: the path under the workspace root when it is there, else the
    file's path, else the uri (an unsaved buffer)."""
    doc = ls.workspace.text_documents.get(uri)
    path = doc.path if doc is not None else None
    if not path:
        return uri
    root = ls.workspace.root_path
    if root:
        relative = os.path.relpath(path, root)
        if not relative.startswith(os.pardir):
            return relative.replace(os.sep, "/")
    return path


def touched_lines(changes: Sequence[types.TextDocumentContentChangeEvent]) -> tuple[tuple[int, int], int] | None:
    """The lines of the new text the changes touched and how many lines they added (negative:
    removed); None when one replaced the whole text.

    Several changes in one notification (multiple cursors) each count in the text the earlier
    ones left; the union of their lines is close enough to say where the edit is.
    """
    lines: tuple[int, int] | None = None
    shift = 0
    for change in changes:
        if not isinstance(change, types.TextDocumentContentChangePartial):
            return None
        start = change.range.start.line
        added = change.text.count("\n")
        end = start + added
        shift += added - (change.range.end.line - start)
        lines = (start, end) if lines is None else (min(lines[0], start), max(lines[1], end))
    return None if lines is None else (lines, shift)


def note_open(ls: DiffgemmaServer, uri: str) -> None:
    doc = ls.workspace.text_documents.get(uri)
    if doc is not None:
        ls.edit_history.open(uri, history_path(ls, uri), doc.source)


def note_change(ls: DiffgemmaServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    doc = ls.workspace.text_documents.get(uri)
    if doc is not None:
        touched = touched_lines(params.content_changes)
        lines, shift = touched if touched is not None else (None, None)
        ls.edit_history.change(uri, history_path(ls, uri), doc.source, lines, shift)


def note_close(ls: DiffgemmaServer, uri: str) -> None:
    ls.edit_history.close(uri)
    ls.ghost_texts.hidden(uri)
