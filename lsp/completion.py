"""Ghost text: textDocument/inlineCompletion, the textDocument/completion fallback, and the
``diffgemma/context`` request that shows the window the model would see at a position."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types

from . import infill, workspace_context
from .daemon_calls import ask_daemon
from .documents import Snapshot, editor_text, is_current, is_open, language_of, offset_of, snapshot, word_before
from .language_server import DiffgemmaServer
from .next_edit import next_edit_key
from .params import text_document_position
from .settings import Settings

# client -> server {textDocument: {uri}, position}: the window the model would see there
CONTEXT_REQUEST = "diffgemma/context"

INLINE_COMPLETION_OPTIONS = types.InlineCompletionOptions()
COMPLETION_OPTIONS = types.CompletionOptions(trigger_characters=[])


def build_infill(ls: DiffgemmaServer, snap: Snapshot, offset: int, language: str | None, settings: Settings) -> Any:
    """The daemon request for the cursor at ``offset`` (CPU work: call it in a worker thread)."""
    return infill.infill_request(
        snap.text,
        offset,
        language=language,
        path=snap.path,
        uri=snap.uri,
        settings=settings,
        extra=workspace_context.extra_files(ls, snap, language),
    )


async def infill_at(ls: DiffgemmaServer, uri: str, position: types.Position) -> str | None:
    """The infill at ``position``, or None when disabled, superseded, stale or unavailable."""
    texts = await infill_texts_at(ls, uri, position)
    return None if texts is None else (texts[0] if texts else "")


async def infill_texts_at(ls: DiffgemmaServer, uri: str, position: types.Position) -> list[str] | None:
    """The answer and its alternatives (``alternatives`` setting) at ``position``; None as above."""
    if not is_open(ls, uri):
        return None  # only open documents: their text is what the user sees
    snap = snapshot(ls, uri)
    if not ls.settings.completion.enabled_for(snap.language_id):
        return None
    # ghost text goes first: a suggestion being computed for this document would be held back
    # while it shows anyway, and must not keep the daemon from it
    ls.inflight.supersede(next_edit_key(uri))
    return await ls.inflight.run(uri, _infill_work(ls, snap, position))


async def _infill_work(ls: DiffgemmaServer, snap: Snapshot, position: types.Position) -> list[str] | None:
    settings = ls.settings
    if settings.completion.debounce_ms:
        await asyncio.sleep(settings.completion.debounce_ms / 1000)
    if not is_current(ls, snap):
        ls.inflight.counters.stale += 1
        return None
    offset = offset_of(ls, snap, position)
    language = language_of(snap)
    # tree-sitter parsing and the file scan are CPU work: keep them off the event loop
    request = await asyncio.to_thread(build_infill, ls, snap, offset, language, settings)
    result = await ask_daemon(ls, "infill", request)
    if result is None:
        return None
    if not is_current(ls, snap):
        ls.inflight.counters.stale += 1
        return None
    ls.inflight.counters.completed += 1
    return [editor_text(t) for t in infill.answer_texts(result, settings.completion.confident_prefix, request)]


# -- handlers ------------------------------------------------------------------------------------


async def inline_completion(
    ls: DiffgemmaServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList | None:
    uri = params.text_document.uri
    texts = await infill_texts_at(ls, uri, params.position)
    if texts is None:
        return None
    items = infill.inline_items(texts, params.position)
    if items and is_open(ls, uri):
        # on screen now, until the document changes or the editor says it is gone
        ls.ghost_texts.shown(uri, ls.workspace.get_text_document(uri).version)
    ls.edit_history.cursor(uri, params.position.line)
    return types.InlineCompletionList(items=items)


async def completion(ls: DiffgemmaServer, params: types.CompletionParams) -> types.CompletionList | None:
    if ls.supports_inline_completion():
        # the client shows ghost text already; a second model run per keystroke would only
        # compete with it for the daemon
        return types.CompletionList(is_incomplete=True, items=[])
    text = await infill_at(ls, params.text_document.uri, params.position)
    if text is None:
        return None
    start, word = word_before(ls, params.text_document.uri, params.position)
    return infill.completion_list(text, params.position, start, word)


async def context(ls: DiffgemmaServer, params: Any) -> dict[str, Any] | None:
    uri, position = text_document_position(params, CONTEXT_REQUEST)
    if not is_open(ls, uri):
        return None
    snap = snapshot(ls, uri)
    offset = offset_of(ls, snap, position)
    request = await asyncio.to_thread(build_infill, ls, snap, offset, language_of(snap), ls.settings)
    return {
        "version": snap.version,
        "offset": offset,
        "prefix": request.prefix,
        "suffix": request.suffix,
        "language": request.language,
        "extra": [extra.path for extra in request.extra],
    }
