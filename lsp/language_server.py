"""The one object that holds the language server's state: settings, the daemon connection,
in-flight work per document, what the client supports, and the messages it is sent.

Feature modules (completion, rewrite_action, documents) hold the handlers and take this object
as their first argument; ``diffgemma.lsp.server`` registers them on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from diffgemma import __version__

from .daemon_link import DaemonLink, DaemonUnavailableError
from .edit_history import EditHistory
from .ghost_state import GhostTexts
from .inflight import Inflight
from .jsonrpc import DiffgemmaProtocol
from .settings import SECTION, ParsedSettings, Settings, parse_settings, settings_to_json
from .status import STATUS_NOTIFICATION, ServerLinkEvents


class DiffgemmaServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            name="diffgemma",
            version=__version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=DiffgemmaProtocol,
        )
        self.settings = Settings()
        self.inflight = Inflight()
        self.edit_history = EditHistory()  # recent edits, for next-edit suggestions
        self.ghost_texts = GhostTexts()  # documents whose ghost text may be on screen
        self.link = DaemonLink(ServerLinkEvents(self))
        self.model_name: str | None = None
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None  # the daemon error last shown to the user
        self._pending_problems: tuple[str, ...] = ()
        self._background: set[asyncio.Future[Any]] = set()
        self.context_workspace: Any = None  # diffgemma.context.crossfile.Workspace, once started
        self.configuration_changes = 0  # didChangeConfiguration notifications handled

    # -- settings ----------------------------------------------------------------------------

    def apply_settings(self, raw: Any, *, defer_messages: bool = False) -> ParsedSettings:
        parsed = parse_settings(raw)
        self.settings = parsed.settings
        if defer_messages:
            self._pending_problems = parsed.problems
        else:
            self._show_problems(parsed.problems)
        return parsed

    def flush_setting_problems(self) -> None:
        problems, self._pending_problems = self._pending_problems, ()
        self._show_problems(problems)

    def _show_problems(self, problems: tuple[str, ...]) -> None:
        if problems:
            self.show("diffgemma: invalid settings: " + "; ".join(problems), types.MessageType.Warning)

    async def change_configuration(self, raw: Any) -> None:
        """Apply didChangeConfiguration settings, pulling our section when the client sent none."""
        if _empty(raw):
            # pull model: the client only says "something changed"; ask for our section
            workspace = self.client_capabilities.workspace
            if workspace and workspace.configuration:
                items = [types.ConfigurationItem(section=SECTION)]
                values = await self.workspace_configuration_async(types.ConfigurationParams(items=items))
                raw = values[0] if values else None
        if _empty(raw):
            # Nothing configured on the client's side (eglot sends {} right after connecting and
            # answers [null]): keep what initializationOptions (or a later change) set.
            return
        before = self.settings.daemon
        self.apply_settings(raw)
        if self.settings.daemon != before:
            await self.link.reset()
            self.background(self.warm_up())

    # -- messages to the client and what it supports -------------------------------------------

    def show(self, message: str, kind: types.MessageType) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def send_status(self, state: str, message: str = "") -> None:
        self.protocol.notify(
            STATUS_NOTIFICATION,
            {"state": state, "message": message, "latencyMs": self.last_latency_ms, "model": self.model_name},
        )

    def supports_work_done_progress(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def supports_inline_completion(self) -> bool:
        text_document = self.client_capabilities.text_document
        return bool(text_document and text_document.inline_completion is not None)

    def supports_code_action_literals(self) -> bool:
        text_document = self.client_capabilities.text_document
        code_action = text_document.code_action if text_document else None
        return bool(code_action and code_action.code_action_literal_support)

    def supports_document_changes(self) -> bool:
        workspace = self.client_capabilities.workspace
        edit = workspace.workspace_edit if workspace else None
        return bool(edit and edit.document_changes)

    # -- work of its own -------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Connect (and start the daemon if allowed) before the first keystroke needs it."""
        with contextlib.suppress(DaemonUnavailableError):
            await self.link.client(self.settings.daemon)

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` without awaiting it, keeping a reference so it is not collected mid-way."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stats(self) -> dict[str, Any]:
        return {
            **self.inflight.counters.as_dict(),
            "active": self.inflight.active(),
            "connected": self.link.connected,
            "lastLatencyMs": self.last_latency_ms,
            "model": self.model_name,
            "settings": self.shown_settings(),
            "configurationChanges": self.configuration_changes,
            "ghostText": self.ghost_texts.uris(),
        }


    def shown_settings(self) -> dict[str, Any]:
        """The settings as the client may see them again: a token is never sent back."""
        shown = settings_to_json(self.settings)
        if shown.get("token"):
            shown["token"] = "(set)"
        return shown


def _empty(raw: Any) -> bool:
    """No settings at all: null, {}, or {"diffgemma": null / {}}."""
    if isinstance(raw, dict) and set(raw) <= {SECTION}:
        return _empty(raw.get(SECTION)) if raw else True
    return raw is None
