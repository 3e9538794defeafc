"""The server's connection to the daemon: found or started once, shared by every request.

Starting the daemon and loading a model take seconds to minutes and block (subprocess + polling),
so they run in a worker thread; requests that arrive meanwhile wait on the same start-up instead
of starting their own. A failed start is remembered for a short while so a user typing into a
broken setup gets one message, not one per keystroke.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from diffgemma.runtime.api import config
from diffgemma.runtime.api.errors import DiffgemmaError, InvalidValue

from .settings import DaemonSettings

if TYPE_CHECKING:
    from diffgemma.runtime.api.remote import Remote

RETRY_AFTER_S = 15.0


class LinkEvents(Protocol):
    """What the server shows while connecting (work-done progress, status, messages)."""

    def connecting(self) -> None: ...
    def progress(self, line: str) -> None: ...
    def connected(self, status: dict[str, Any]) -> None: ...
    def failed(self, reason: str, first: bool) -> None: ...


@dataclass
class _Failure:
    reason: str
    at: float


class DaemonUnavailableError(DiffgemmaError):
    """One-line reason why no daemon can be used right now."""


class DaemonLink:
    def __init__(self, events: LinkEvents, clock: Callable[[], float] = time.monotonic) -> None:
        self._events = events
        self._clock = clock
        self._client: Any = None  # diffgemma.runtime.api.client.AsyncClient
        self._settings: DaemonSettings | None = None  # what the connection is (being) made for
        self._connecting: asyncio.Task[Any] | None = None
        self._failure: _Failure | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def client(self, settings: DaemonSettings) -> Any:
        """An AsyncClient to a healthy daemon; raises DaemonUnavailableError with the reason."""
        if self._settings != settings:
            await self.reset()
            self._settings = settings
        if self._client is not None:
            return self._client
        failure = self._failure
        if failure and self._clock() - failure.at < RETRY_AFTER_S:
            raise DaemonUnavailableError(failure.reason)
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect(settings))
        # shield: a cancelled keystroke must not abort a model load other requests wait for
        return await asyncio.shield(self._connecting)

    async def reset(self) -> None:
        """Forget the connection (settings changed, or the daemon went away)."""
        client, self._client = self._client, None
        self._settings = None
        self._failure = None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._connecting = None
        if client is not None:
            # closing a dead connection must not fail a reset
            with contextlib.suppress(Exception):
                await client.close()

    def lost(self, reason: str) -> None:
        """A request found the daemon gone: drop the client so the next request reconnects."""
        self._client = None
        self._connecting = None
        self._failure = None
        self._events.failed(reason, first=True)

    async def _connect(self, settings: DaemonSettings) -> Any:
        from diffgemma.runtime.api.client import AsyncClient, Client, DaemonError, connect_remote, ensure_daemon

        loop = asyncio.get_running_loop()
        first = self._failure is None
        self._events.connecting()

        def on_progress(line: str) -> None:  # called from the worker thread
            loop.call_soon_threadsafe(self._events.progress, line)

        def find_or_start() -> dict[str, Any]:
            if remote is not None:  # a daemon elsewhere: it must answer, it is never started from here
                sync = connect_remote(remote, on_progress=on_progress)
            elif settings.auto_start:
                sync = ensure_daemon(model=settings.model, socket=settings.socket, on_progress=on_progress)
            else:
                sync = Client(socket=settings.socket, timeout=10.0)
                if not sync.health():
                    sync.close()
                    where = settings.socket or "the default socket"
                    raise DaemonError(
                        f"no diffgemma daemon answers on {where}; start one with `diffgemma daemon start` "
                        "or set autoStart"
                    )
            try:
                return sync.status()
            finally:
                sync.close()

        try:
            remote = _remote(settings)
            status = await asyncio.to_thread(find_or_start)
        except (DaemonError, InvalidValue) as exc:
            reason = str(exc) or type(exc).__name__
            self._failure = _Failure(reason, self._clock())
            self._events.failed(reason, first)
            raise DaemonUnavailableError(reason) from None
        if remote is not None:
            self._client = AsyncClient(base_url=remote.url, token=remote.token, verify=remote.verify())
        else:
            self._client = AsyncClient(socket=settings.socket)
        self._failure = None
        self._events.connected(status)
        return self._client


def _remote(settings: DaemonSettings) -> Remote | None:
    """The daemon elsewhere the settings name (``url``, else $DIFFGEMMA_URL), or None for the local one."""
    from diffgemma.runtime.api.remote import Remote

    url = settings.url or config.env(config.ENV_URL)
    if url is None:
        return None
    return Remote.resolve(url, settings.token, settings.token_file, settings.ca_cert)
