"""One request to the daemon on behalf of an editor request: counted, timed, shown as status,
and turned into None (with a message) when the daemon cannot answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from lsprotocol import types

from .daemon_link import DaemonUnavailableError
from .language_server import DiffgemmaServer
from .status import Progress, loading_line

LOAD_POLL_S = 0.5  # how often a waiting request looks whether the daemon is loading its model

Kind = Literal["infill", "edit", "next-edit"]


async def ask_daemon(ls: DiffgemmaServer, kind: Kind, request: Any) -> Any:
    """Send one request; None (with a status/message) when the daemon cannot answer."""
    from diffgemma.runtime.api.client import DaemonError, DaemonUnavailable

    try:
        client = await ls.link.client(ls.settings.daemon)
    except DaemonUnavailableError:
        return None
    counters = ls.inflight.counters
    counters.daemon_calls += 1
    started = time.perf_counter()
    watcher = asyncio.ensure_future(_watch_model_load(ls, client))
    try:
        result = await _send(client, kind, request, watcher)
    except asyncio.CancelledError:
        counters.daemon_cancelled += 1
        raise
    except DaemonUnavailable as exc:
        counters.errors += 1
        ls.link.lost(f"the daemon went away: {exc}")
        return None
    except DaemonError as exc:
        counters.errors += 1
        _report_error(ls, str(exc))
        return None
    if result.finish_reason == "cancelled":  # the daemon let a newer request win
        counters.daemon_cancelled += 1
        return None
    ls.last_error = None
    ls.last_latency_ms = round((time.perf_counter() - started) * 1000, 1)
    ls.model_name = result.model or ls.model_name
    ls.send_status("ready", f"{kind} {result.finish_reason}")
    return result


def _report_error(ls: DiffgemmaServer, message: str) -> None:
    ls.send_status("error", message)
    # a model that cannot load fails every keystroke: say it once, until something works
    if message != ls.last_error:
        ls.last_error = message
        ls.show(f"diffgemma: {message}", types.MessageType.Error)


async def _send(client: Any, kind: Kind, request: Any, watcher: asyncio.Future[None]) -> Any:
    try:
        if kind == "next-edit":
            return await client.next_edit(request)
        return await (client.infill(request) if kind == "infill" else client.edit(request))
    finally:
        watcher.cancel()


async def _watch_model_load(ls: DiffgemmaServer, client: Any) -> None:
    """While a request waits for the daemon to (re)load its model, show that as progress."""
    from diffgemma.runtime.api.client import DaemonError

    bar: Progress | None = None
    try:
        await asyncio.sleep(LOAD_POLL_S)  # most requests are answered before the first look
        while True:
            status = await client.status()
            if status.get("state") != "loading":
                return
            line = loading_line(status)
            ls.send_status("loading", line)
            if bar is None:
                bar = Progress(ls, line)
            else:
                bar.report(line)
            await asyncio.sleep(LOAD_POLL_S)
    except DaemonError:
        return  # the request itself reports what went wrong
    finally:
        if bar is not None:
            bar.end("model loaded")
