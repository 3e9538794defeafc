"""The vLLM servers behind the daemon: which one a request goes to, and how each is doing.

Routing is client-affine: every server is ranked for a key (the client's supersession key, else
the file's path) by rendezvous hashing, and the request goes to the first server of that ranking
that is up. One developer's requests therefore reach the same server while it answers, so vLLM's
prefix cache there holds their file; when it fails, only its own clients move, each to the next
server of their ranking. A server that fails (no connection, a 5xx, an answer that is not vLLM's)
is skipped for ``RETRY_AFTER_S`` and the request is sent to the next one; a 4xx is the request's
fault and goes back to the caller.

A request is one POST; cancelling the task that awaits it closes its connection, which vLLM takes
as an abort (it stops denoising that request).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line
from diffgemma.runtime.engine.vllm.wire import error_message

RETRY_AFTER_S = 10.0  # a failed server is skipped this long, then tried again
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # one canvas; the request's own budget cuts it sooner (by closing the connection)


@dataclass
class Server:
    """One vLLM server: its URL, the name it serves the checkpoint under, and its record."""

    url: str
    model: str  # the served model name requests must give (/v1/models id)
    context_length: int = 0  # its max_model_len
    requests: int = 0  # completion requests sent
    failures: int = 0  # requests it failed (then sent to another server)
    aborted: int = 0  # requests given up while in flight (superseded, cancelled, out of time, lost races)
    last_error: str | None = None
    down_until: float = 0.0  # time.monotonic(): skipped until then

    def up(self, now: float) -> bool:
        return now >= self.down_until

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "healthy": self.up(now), "requests": self.requests,
                "failures": self.failures, "aborted": self.aborted, "last_error": self.last_error,
                "retry_in_s": round(max(0.0, self.down_until - now), 1)}


class ServerFailed(Exception):
    """The server did not give an answer (the next one may)."""


def ranking(key: str, urls: list[str]) -> list[int]:
    """Indexes of ``urls`` in ``key``'s order (rendezvous hashing: a URL's place depends only on
    the key and that URL, so adding or losing a server moves only the keys it ranks first)."""
    def weight(url: str) -> bytes:
        return hashlib.sha256(f"{key}\0{url}".encode()).digest()

    return sorted(range(len(urls)), key=lambda i: weight(urls[i]), reverse=True)


class ServerPool:
    """The servers, their health, and the one HTTP client (used on the engine's event loop only)."""

    def __init__(self, servers: list[Server]) -> None:
        if not servers:
            raise ValueError("no vLLM server")
        self.servers = servers
        self._lock = threading.Lock()  # the records are read by /v1/status from other threads
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def route(self, key: str) -> list[Server]:
        """The servers in the order ``key``'s requests try them: its own ranking, those that are up
        first (a server that is down is still tried when every one is)."""
        order = [self.servers[i] for i in ranking(key, [s.url for s in self.servers])]
        now = time.monotonic()
        with self._lock:
            return [s for s in order if s.up(now)] + [s for s in order if not s.up(now)]

    def health(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return [s.snapshot(now) for s in self.servers]

    async def complete(self, key: str, body: dict[str, Any]) -> tuple[Server, Any]:
        """POST one completion to ``key``'s server (the next one when it fails); its JSON answer."""
        failed: list[str] = []
        for server in self.route(key):
            with self._lock:
                server.requests += 1
            try:
                data = await self._post(server, body)
            except ServerFailed as exc:
                with self._lock:
                    server.failures += 1
                    server.last_error = one_line(exc)
                    server.down_until = time.monotonic() + RETRY_AFTER_S
                failed.append(one_line(exc))
                continue
            except asyncio.CancelledError:
                with self._lock:
                    server.aborted += 1
                raise
            with self._lock:
                server.down_until = 0.0
            return server, data
        raise WireError(ErrorCode.ENGINE_UNAVAILABLE, f"no vLLM server answered: {failed[-1]}")

    async def _post(self, server: Server, body: dict[str, Any]) -> Any:
        try:
            response = await self.client().post(f"{server.url}/v1/completions", json={**body, "model": server.model})
        except httpx.HTTPError as exc:
            raise ServerFailed(f"{server.url}: {type(exc).__name__}: {one_line(exc, 'no answer')}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        status = response.status_code
        if status == 404 or status >= 500 or data is None:
            # a 404 names no such model here: a server restarted with another checkpoint
            raise ServerFailed(f"{server.url}: HTTP {status}: {error_message(data, 'not a vLLM answer')}")
        if status >= 400:
            raise WireError(ErrorCode.INVALID_REQUEST,
                            f"vLLM refused the request (HTTP {status}): {error_message(data, 'no reason given')}")
        return data
