"""Document sync whose cost per keystroke does not grow with the file.

pygls applies an incremental change by splitting the whole document into lines and writing them
all out again, and maps an LSP position to an offset by walking every line before it: in a 2 MB
file that is tens of milliseconds of Python per keystroke, twice. Here a change is spliced into
the text with two slices (a copy at memory speed), and a position is found from a `LineAnchor`:
the start of the line last edited or asked about, carried from one version of the text to the
next. Typing happens on the same few lines, so finding a position costs a find or two, whatever
the file's size.
"""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from diffgemma.context.positions import utf16_col_to_offset

# Line breaks pygls (like str.splitlines) counts besides "\n" and "\r\n": a document holding one
# is left to pygls' own line handling, so both keep agreeing on where its lines are.
OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class LineAnchor:
    """A line and the offset where it starts, in the text it was last used on."""

    def __init__(self) -> None:
        self.line = 0
        self.offset = 0

    def start_of(self, text: str, line: int) -> int | None:
        """Where ``line`` (0-based) starts in ``text``, moving from the anchor line by line; None
        past the end. The anchor stays on the line found."""
        start, at = self.offset, self.line
        if line < at // 2:  # nearer the top than the anchor: count from there
            start, at = 0, 0
        while at < line:
            newline = text.find("\n", start)
            if newline < 0:
                return None
            start, at = newline + 1, at + 1
        while at > line:
            start, at = text.rfind("\n", 0, start - 1) + 1, at - 1
        self.line, self.offset = line, start
        return start


class SyncedDocument(TextDocument):
    """A pygls TextDocument that applies incremental changes and maps positions in time
    independent of the file's size (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.anchor = LineAnchor()
        self.plain_lines = OTHER_BREAKS.search(self._source or "") is None

    def offset_of(self, position: types.Position, text: str | None = None) -> int:
        """The offset (in code points) of an LSP position in ``text`` (default: the current
        source): a column past the line's end is its end, a line past the buffer its end."""
        text = self.source if text is None else text
        if not self.plain_lines:
            return int(self.offset_at_position(position)) if text is self._source else _walk(
                text, position, self._position_codec)
        if text is not self._source:  # an older snapshot: the anchor belongs to the current text
            return _walk(text, position, self._position_codec)
        start = self.anchor.start_of(text, position.line)
        if start is None:
            return len(text)
        return start + _column(text, start, position, self._position_codec)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        if not self.plain_lines:
            super()._apply_incremental_change(change)
            return
        text = self.source
        first = change.range.start.line
        start = self.offset_of(change.range.start)
        # the start line's own start: the edit leaves it where it is, so the anchor stays valid
        anchored, line_start = self.anchor.line == first, self.anchor.offset
        end = self.offset_of(change.range.end)
        self._source = text[:start] + change.text + text[end:]
        if OTHER_BREAKS.search(self._source, max(0, start - 1), start + len(change.text) + 1):
            self.plain_lines = False  # from now on, pygls' lines
        if anchored:
            self.anchor.line, self.anchor.offset = first, line_start
        else:  # the edit began past the end of the text
            self.anchor = LineAnchor()

    def _apply_full_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        super()._apply_full_change(change)
        self.anchor = LineAnchor()
        self.plain_lines = OTHER_BREAKS.search(self._source or "") is None


def _column(text: str, start: int, position: types.Position, codec: Any) -> int:
    """Code points from the line's start to the position's column (clamped to the line)."""
    newline = text.find("\n", start)
    line = text[start: len(text) if newline < 0 else newline]
    if line.isascii():
        return min(position.character, len(line))
    if codec.encoding in (types.PositionEncodingKind.Utf16, "utf-16"):
        # as context.positions does: a column inside a surrogate pair moves back to its character
        return utf16_col_to_offset(line, 0, position.character)
    server = codec.position_from_client_units([line], types.Position(line=0, character=position.character))
    return min(server.character, len(line))


def _walk(text: str, position: types.Position, codec: Any) -> int:
    start = LineAnchor().start_of(text, position.line)
    return len(text) if start is None else start + _column(text, start, position, codec)


class SyncedWorkspace(Workspace):
    """pygls' Workspace, holding SyncedDocuments."""

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return SyncedDocument(doc_uri, source=source, version=version, language_id=language_id,
                              sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_synced_documents(workspace: Workspace) -> None:
    """Make the workspace pygls built at initialize hold SyncedDocuments from now on (no document
    is open yet). SyncedWorkspace adds no state, so the object only changes class."""
    workspace.__class__ = SyncedWorkspace
