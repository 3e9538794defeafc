"""At most one piece of model work per document: a newer request, an edit of the document or a
client's ``$/cancelRequest`` cancels the older one.

Cancelling the task that awaits the daemon closes its HTTP request, which is what makes the
daemon drop the work (within one denoising step), so cancelled work costs nothing further.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Counters:
    started: int = 0  # work handed to a task
    completed: int = 0  # answers returned to the client
    superseded: int = 0  # cancelled by a newer request or an edit of the document
    cancelled: int = 0  # cancelled by the client ($/cancelRequest)
    stale: int = 0  # finished, but the document had changed: answer dropped
    suppressed: int = 0  # next-edit suggestions not made because ghost text was showing
    daemon_calls: int = 0  # requests sent to the daemon
    daemon_cancelled: int = 0  # daemon requests closed before their answer arrived
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Inflight:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[object]] = {}
        self.counters = Counters()

    def active(self) -> list[str]:
        return [key for key, task in self._tasks.items() if not task.done()]

    async def settled(self, key: str, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the work running for ``key`` to end, whatever
        its outcome; the waiting never cancels it."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    def supersede(self, key: str) -> bool:
        """Cancel the work running for ``key``; True if there was some."""
        task = self._tasks.pop(key, None)
        if task is None or task.done():
            return False
        task.cancel()
        self.counters.superseded += 1
        return True

    async def run(self, key: str, work: Awaitable[T]) -> T | None:
        """Run ``work`` as the one task for ``key``.

        Returns None when a newer request (or an edit) superseded it. Re-raises CancelledError
        when the awaiting request itself was cancelled, so pygls answers RequestCancelled.
        """
        self.supersede(key)
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self._tasks[key] = task
        self.counters.started += 1
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self.counters.cancelled += 1
                raise
            return None  # superseded: answer "nothing" rather than an error
        finally:
            if self._tasks.get(key) is task:
                del self._tasks[key]
