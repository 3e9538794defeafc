"""Next-edit suggestions: the ``diffgemma/nextEdit`` request, the ``diffgemma/ghostText``
notification that tells the server ghost text is gone, and ``diffgemma/recentEdits``.

An editor asks ``diffgemma/nextEdit {textDocument: {uri}, position}`` after the user edits; the
server waits ``nextEdit.debounceMs`` (a keystroke meanwhile cancels the request), lets a ghost-text
request for the same document finish, and answers null when the feature is off or ghost text is
showing. Otherwise it sends the document, the cursor and the recent edits (edit_history) to the
daemon and answers with next_edit.lsp_answer's shape, or null when the document changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types

from . import next_edit
from .daemon_calls import ask_daemon
from .documents import Snapshot, editor_text, is_current, is_open, language_of, offset_of, snapshot
from .jsonrpc import invalid_params
from .language_server import DiffgemmaServer
from .params import field, text_document_position
from .positions import offset_to_position

NEXT_EDIT_REQUEST = "diffgemma/nextEdit"  # client -> server: {textDocument: {uri}, position}
GHOST_TEXT_NOTIFICATION = "diffgemma/ghostText"  # client -> server: {textDocument: {uri}, visible}
RECENT_EDITS_REQUEST = "diffgemma/recentEdits"  # client -> server: {} -> {edits: [{path, diff}]}

log = logging.getLogger(__name__)

GHOST_TEXT_WAIT_S = 30.0  # how long a suggestion waits for the same document's ghost text to settle


async def suggest(ls: DiffgemmaServer, params: Any) -> dict[str, Any] | None:
    uri, position = text_document_position(params, NEXT_EDIT_REQUEST)
    if not ls.settings.next_edit.enable or not is_open(ls, uri):
        return None
    snap = snapshot(ls, uri)
    return await ls.inflight.run(next_edit.next_edit_key(uri), _suggest_work(ls, snap, position))


async def _suggest_work(ls: DiffgemmaServer, snap: Snapshot, position: types.Position) -> dict[str, Any] | None:
    settings = ls.settings
    if settings.next_edit.debounce_ms:
        await asyncio.sleep(settings.next_edit.debounce_ms / 1000)
    # ghost text being computed for this document may be about to show: it goes first
    await ls.inflight.settled(snap.uri, GHOST_TEXT_WAIT_S)
    if not is_current(ls, snap):
        ls.inflight.counters.stale += 1
        return None
    if ls.ghost_texts.showing(snap.uri, snap.version):
        ls.inflight.counters.suppressed += 1
        log.debug("next edit in %s: none while ghost text is showing", snap.uri)
        return None
    ls.edit_history.cursor(snap.uri, position.line)
    edits = [edit.as_json() for edit in ls.edit_history.edits()]
    if not edits:
        return next_edit.empty_answer("no recent edits")
    offset = offset_of(ls, snap, position)
    col = offset - (snap.text.rfind("\n", 0, offset) + 1)
    request = await asyncio.to_thread(
        lambda: next_edit.next_edit_request(
            snap.text, position.line, col, language=language_of(snap), path=snap.path, uri=snap.uri,
            edits=edits, settings=settings,
        )
    )
    result = await ask_daemon(ls, "next-edit", request)
    if result is None:
        return None
    if not is_current(ls, snap):
        ls.inflight.counters.stale += 1
        return None
    if ls.ghost_texts.showing(snap.uri, snap.version):
        ls.inflight.counters.suppressed += 1  # ghost text arrived while the daemon worked
        return None
    ls.inflight.counters.completed += 1
    doc = ls.workspace.get_text_document(snap.uri)
    encoding = ls.workspace.position_encoding
    answer = next_edit.lsp_answer(result, snap.text, lambda at: offset_to_position(doc, snap.text, at, encoding))
    for edit in answer["edits"]:
        edit["newText"] = editor_text(edit["newText"])
    log.debug("next edit in %s at line %d after %d recent edits: %d proposed, next %s, reason %s", snap.uri,
              position.line, len(edits), len(answer["edits"]), answer["next"], answer["reason"])
    return answer


def ghost_text(ls: DiffgemmaServer, params: Any) -> None:
    """The editor shows or no longer shows ghost text in a document (malformed params: ignored,
    as a notification has nobody to answer)."""
    try:
        uri = field(field(params, "textDocument"), "uri")
        visible = field(params, "visible")
    except (KeyError, AttributeError, TypeError):
        return
    if not isinstance(uri, str) or not isinstance(visible, bool):
        return
    doc = ls.workspace.text_documents.get(uri)
    if visible and doc is not None:
        ls.ghost_texts.shown(uri, doc.version)
    else:
        ls.ghost_texts.hidden(uri)


def recent_edits(ls: DiffgemmaServer, params: Any) -> dict[str, Any]:
    """The recent edits a suggestion would send now, newest last (pending edits finished)."""
    if params is not None and not isinstance(params, dict) and not hasattr(params, "_asdict"):
        raise invalid_params(f"{RECENT_EDITS_REQUEST} takes an object (or no params)")
    return {"edits": [edit.as_json() for edit in ls.edit_history.edits()]}
