"""Whether infill ghost text is showing in a document, so that a next-edit suggestion never
competes with it.

The server sees ghost text appear (it answers textDocument/inlineCompletion with items) but not
go: LSP has no "dismissed" message. It counts as showing for the document version it was
answered for, until the document changes or the editor says it is gone with the
``diffgemma/ghostText`` notification ``{textDocument: {uri}, visible: false}`` (Escape, a cursor
move). An editor that never says so still gets the right answer after its next keystroke.
"""

from __future__ import annotations


class GhostTexts:
    def __init__(self) -> None:
        self._shown: dict[str, int | None] = {}  # uri -> the document version it was answered for

    def shown(self, uri: str, version: int | None) -> None:
        self._shown[uri] = version

    def hidden(self, uri: str) -> None:
        self._shown.pop(uri, None)

    def showing(self, uri: str, version: int | None) -> bool:
        """True while ghost text answered for this ``version`` of the document may be on screen."""
        return uri in self._shown and self._shown[uri] == version

    def uris(self) -> list[str]:
        return sorted(self._shown)
