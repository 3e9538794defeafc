"""LSP positions <-> offsets into a document's text.

LSP counts columns in the encoding negotiated at initialize; editors nearly always use UTF-16
code units, where one astral character (an emoji) counts 2. The UTF-16 helpers come from
diffgemma.context so the CLI and the server agree on one conversion; other negotiated encodings
go through pygls' own position codec.
"""

from __future__ import annotations

from lsprotocol import types
from pygls.workspace import TextDocument

from diffgemma.context.positions import offset_to_utf16_position, utf16_col_to_offset

from .text_sync import SyncedDocument

UTF16 = (types.PositionEncodingKind.Utf16, "utf-16")


def position_to_offset(doc: TextDocument, text: str, position: types.Position, encoding: object) -> int:
    """Offset (in Python characters) of ``position`` in ``text`` (a snapshot of ``doc``)."""
    if isinstance(doc, SyncedDocument):  # found from the line last edited: no walk over the file
        return doc.offset_of(position, text)
    if encoding in UTF16 or encoding is None:
        return utf16_col_to_offset(text, position.line, position.character)
    return doc.offset_at_position(position)


def offset_to_position(doc: TextDocument, text: str, offset: int, encoding: object) -> types.Position:
    if encoding in UTF16 or encoding is None:
        line, character = offset_to_utf16_position(text, offset)
        return types.Position(line=line, character=character)
    return doc.client_position_at_offset(offset)
