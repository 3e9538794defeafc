"""What the server tells the client about its own state: the ``diffgemma/status`` notification,
work-done progress bars, and the daemon connection's start-up turned into both."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types

if TYPE_CHECKING:
    from .language_server import DiffgemmaServer

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "diffgemma/status"  # server -> client: {state, message, latencyMs, model}


class Progress:
    """One work-done progress bar in the client, when the client supports them.

    Creating the token is a request to the client; reports that arrive before it is answered
    are skipped (the status notification carries them too), and ending before then cancels it.
    """

    def __init__(self, server: DiffgemmaServer, message: str, on_cancel: Callable[[], object] | None = None) -> None:
        self.server = server
        self.token: str | None = None
        self.on_cancel = on_cancel  # given: the bar is cancellable, and this stops the work
        if server.supports_work_done_progress():
            self.token = f"diffgemma-{uuid.uuid4().hex[:12]}"
            server.background(self._begin(self.token, message))

    async def _begin(self, token: str, message: str) -> None:
        progress = self.server.work_done_progress
        try:
            await progress.create_async(token)
        except Exception:  # a client refusing progress must not stop the work
            log.debug("client refused work-done progress", exc_info=True)
            return
        if self.token != token:
            return
        cancellable = self.on_cancel is not None
        progress.begin(token, types.WorkDoneProgressBegin(title="diffgemma", message=message, cancellable=cancellable))
        future = progress.tokens.get(token)
        if cancellable and future is not None:
            # pygls cancels the token's future on window/workDoneProgress/cancel
            future.add_done_callback(self._cancelled)

    def _cancelled(self, future: Any) -> None:
        if future.cancelled() and self.token is not None and self.on_cancel is not None:
            self.on_cancel()

    def _ready_token(self) -> str | None:
        """The token once the client has accepted it, else None."""
        token = self.token
        return token if token is not None and token in self.server.work_done_progress.tokens else None

    def report(self, message: str) -> None:
        if (token := self._ready_token()) is not None:
            self.server.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))

    def end(self, message: str) -> None:
        if (token := self._ready_token()) is not None:
            self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        self.token = None


def loading_line(status: dict[str, Any]) -> str:
    line = f"loading model {status.get('loading_model') or status.get('model') or ''}…"
    progress = status.get("load_progress")
    return f"{line} {progress}" if progress else line


class ServerLinkEvents:
    """Turns daemon start-up into work-done progress, status notifications and messages."""

    def __init__(self, server: DiffgemmaServer) -> None:
        self.server = server
        self.bar: Progress | None = None

    def connecting(self) -> None:
        self.server.send_status("starting", "connecting to the diffgemma daemon")
        self.bar = Progress(self.server, "connecting to the daemon")

    def progress(self, line: str) -> None:
        self.server.send_status("loading", line)
        if self.bar is not None:
            self.bar.report(line)

    def _end(self, message: str) -> None:
        if self.bar is not None:
            self.bar.end(message)
        self.bar = None

    def connected(self, status: dict[str, Any]) -> None:
        model = status.get("model")
        self.server.model_name = model if isinstance(model, str) else None
        state = status.get("state")
        self._end("ready")
        self.server.send_status("ready" if state in (None, "ready", "unloaded") else str(state), "daemon ready")

    def failed(self, reason: str, first: bool) -> None:
        self._end(f"failed: {reason}")
        self.server.send_status("error", reason)
        if first:
            self.server.show(f"diffgemma: {reason}", types.MessageType.Error)
