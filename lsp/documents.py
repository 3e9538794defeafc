"""Open documents: snapshots taken when a request arrives, positions in them, and the sync
notifications (didOpen, didChange, didClose) that make running work stale."""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types
from pygls.workspace import TextDocument

from . import edit_tracking, workspace_context
from .language_server import DiffgemmaServer
from .next_edit import next_edit_key
from .positions import offset_to_position, position_to_offset
from .rewrite import rewrite_key


@dataclass
class Snapshot:
    """The document as it was when a request arrived; answers for another version are dropped."""

    uri: str
    version: int | None
    text: str
    language_id: str | None
    path: str | None


def is_open(ls: DiffgemmaServer, uri: str) -> bool:
    return uri in ls.workspace.text_documents


def snapshot(ls: DiffgemmaServer, uri: str) -> Snapshot:
    doc: TextDocument = ls.workspace.get_text_document(uri)
    return Snapshot(uri=uri, version=doc.version, text=doc.source, language_id=doc.language_id, path=doc.path)


def is_current(ls: DiffgemmaServer, snap: Snapshot) -> bool:
    doc = ls.workspace.text_documents.get(snap.uri)
    return doc is not None and doc.version == snap.version and doc.source == snap.text


def offset_of(ls: DiffgemmaServer, snap: Snapshot, position: types.Position) -> int:
    doc = ls.workspace.get_text_document(snap.uri)
    return position_to_offset(doc, snap.text, position, ls.workspace.position_encoding)


def word_before(ls: DiffgemmaServer, uri: str, position: types.Position) -> tuple[types.Position, str]:
    """(start, text) of the identifier that ends at ``position`` in the current document."""
    snap = snapshot(ls, uri)
    offset = offset_of(ls, snap, position)
    start = word_start(snap.text, offset)
    doc = ls.workspace.get_text_document(uri)
    return offset_to_position(doc, snap.text, start, ls.workspace.position_encoding), snap.text[start:offset]


def word_start(text: str, offset: int) -> int:
    """Where the identifier that ends at ``offset`` starts (``offset`` itself when none does)."""
    start = offset
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return start


def language_of(snap: Snapshot) -> str | None:
    from diffgemma.context.languages import detect_language

    # an editor's id we do not know (e.g. "plaintext") must not hide what the file name says
    return detect_language(None, snap.language_id) or detect_language(snap.path, None, content=snap.text, guess=True)


def editor_text(text: str) -> str:
    """Model output as an editor can take it: without NUL characters.

    A NUL is never part of source code, and some clients reject the whole message that carries
    one (Emacs's JSON parser refuses "\u0000"), which would lose the answer and leave the
    request waiting until it times out.
    """
    return text.replace("\x00", "")


# -- sync notifications --------------------------------------------------------------------------
# Plain functions, not coroutines: pygls runs them as the message arrives, so work for the old
# text is cancelled before any later request is looked at.


def did_open(ls: DiffgemmaServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.inflight.supersede(params.text_document.uri)
    edit_tracking.note_open(ls, params.text_document.uri)
    workspace_context.note_document(ls, params.text_document.uri, opened=True)


def did_change(ls: DiffgemmaServer, params: types.DidChangeTextDocumentParams) -> None:
    # whatever was being computed is for a text that no longer exists
    ls.inflight.supersede(params.text_document.uri)
    ls.inflight.supersede(next_edit_key(params.text_document.uri))
    edit_tracking.note_change(ls, params)
    workspace_context.note_document(ls, params.text_document.uri, opened=False)


def did_close(ls: DiffgemmaServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.inflight.supersede(params.text_document.uri)
    ls.inflight.supersede(rewrite_key(params.text_document.uri))
    ls.inflight.supersede(next_edit_key(params.text_document.uri))
    edit_tracking.note_close(ls, params.text_document.uri)
