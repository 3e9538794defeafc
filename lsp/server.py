"""`diffgemma lsp`: ghost-text infill, "Rewrite selection" and next-edit suggestions over the
Language Server Protocol.

One DiffgemmaServer (language_server.py) holds the state: settings, the daemon connection,
in-flight work per document. The handlers are module-level functions, one module per feature,
registered on it by ``create_server``: completion (ghost text), rewrite_action (the rewrite code
action and its job), next_edit_action (suggestions of the edit that follows the recent ones),
documents (sync notifications, which also feed the recent-edit history), and the lifecycle
handlers here. They are thin and call the pure modules (infill, rewrite, next_edit, edit_history,
settings). The model lives in the daemon: this process never imports torch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lsprotocol import types

from . import completion, documents, next_edit_action, rewrite, rewrite_action, workspace_context
from .language_server import DiffgemmaServer
from .text_sync import use_synced_documents

STATS_REQUEST = "diffgemma/stats"  # client -> server: counters, for status views and tests


# -- lifecycle handlers ------------------------------------------------------------------------


def initialize(ls: DiffgemmaServer, params: types.InitializeParams) -> None:
    # documents whose sync and positions cost the same in a 2 MB file as in a small one
    use_synced_documents(ls.workspace)
    # problems are shown once the client is initialized and can display messages
    ls.apply_settings(params.initialization_options, defer_messages=True)


async def initialized(ls: DiffgemmaServer, params: types.InitializedParams) -> None:
    ls.flush_setting_problems()
    ls.background(ls.warm_up())
    ls.background(asyncio.to_thread(workspace_context.start, ls))


async def did_change_configuration(ls: DiffgemmaServer, params: types.DidChangeConfigurationParams) -> None:
    try:
        await ls.change_configuration(params.settings)
    finally:
        ls.configuration_changes += 1  # handled (pulls answered): stats views and tests see it


def shutdown(ls: DiffgemmaServer, params: Any) -> None:
    workspace_context.stop(ls)


def stats(ls: DiffgemmaServer, params: Any) -> dict[str, Any]:
    return ls.stats()


# (method, handler, options) for every feature the server offers
FEATURES: tuple[tuple[str, Callable[..., Any], Any], ...] = (
    (types.INITIALIZE, initialize, None),
    (types.INITIALIZED, initialized, None),
    (types.WORKSPACE_DID_CHANGE_CONFIGURATION, did_change_configuration, None),
    (types.TEXT_DOCUMENT_DID_OPEN, documents.did_open, None),
    (types.TEXT_DOCUMENT_DID_CHANGE, documents.did_change, None),
    (types.SHUTDOWN, shutdown, None),
    (types.TEXT_DOCUMENT_DID_CLOSE, documents.did_close, None),
    (types.TEXT_DOCUMENT_INLINE_COMPLETION, completion.inline_completion, completion.INLINE_COMPLETION_OPTIONS),
    (types.TEXT_DOCUMENT_COMPLETION, completion.completion, completion.COMPLETION_OPTIONS),
    (types.TEXT_DOCUMENT_CODE_ACTION, rewrite_action.code_action, rewrite_action.CODE_ACTION_OPTIONS),
    (STATS_REQUEST, stats, None),
    (completion.CONTEXT_REQUEST, completion.context, None),
    (next_edit_action.NEXT_EDIT_REQUEST, next_edit_action.suggest, None),
    (next_edit_action.GHOST_TEXT_NOTIFICATION, next_edit_action.ghost_text, None),
    (next_edit_action.RECENT_EDITS_REQUEST, next_edit_action.recent_edits, None),
)
COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = ((rewrite.COMMAND, rewrite_action.rewrite_selection),)


def create_server() -> DiffgemmaServer:
    server = DiffgemmaServer()
    for method, handler, options in FEATURES:
        server.feature(method, options)(handler)
    for name, command in COMMANDS:
        server.command(name)(command)
    return server


def serve(*, tcp: bool = False, host: str = "127.0.0.1", port: int = 2087) -> None:
    server = create_server()
    if tcp:
        server.start_tcp(host, port)
    else:
        server.start_io()
