"""A job's drafts and outcome, carried from the worker thread to the client as a stream.

Native requests stream NDJSON (one draft line per step, then the result or the error); the
compatibility endpoints stream server-sent events in their client's shape (adapters.Codec).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.results import draft_line, error_line, result_line
from diffgemma.runtime.daemon.codec import json_line
from diffgemma.runtime.daemon.jobs import Job, Outcome
from diffgemma.runtime.daemon.next_edit_job import draft_fields
from diffgemma.runtime.daemon.wire import error_response, wait_disconnect
from diffgemma.runtime.engine.types import Draft, HolesDraft

_END = object()


class JobBridge:
    """Carries a job's drafts and outcome from the worker thread onto the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.outcome: asyncio.Future[Outcome] = loop.create_future()

    def on_done(self, outcome: Outcome) -> None:
        self.loop.call_soon_threadsafe(self._finish, outcome)

    def _finish(self, outcome: Outcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)
        self.queue.put_nowait(_END)

    def on_draft(self, draft: Draft) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, draft)


def outcome_error(outcome: Outcome) -> WireError:
    return outcome.error or WireError(ErrorCode.INTERNAL, "request failed")


def sse_now(payload: bytes) -> Response:
    return Response(payload, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def ndjson_draft(job: Job, draft: Draft) -> bytes:
    line = draft_line(draft.step, draft.text, job.id)
    if draft.canvas:
        line["canvas"] = draft.canvas
    if draft.final:
        line["final"] = True  # this canvas is committed: later text only extends it
    phase = getattr(draft, "phase", None)
    if phase:  # e.g. "repairing": the steps are done and a syntax repair round runs on ``text``
        line["phase"], line["round"] = phase, draft.round
    confidence = bool(getattr(job.request, "confidence", None))
    if draft.tokens is not None and confidence:
        line["tokens"] = [t.to_dict() for t in draft.tokens]  # a live view shows how sure each is
    if isinstance(draft, HolesDraft):  # several holes: every hole, in order
        line["holes"] = [h.to_dict(tokens=confidence) for h in draft.holes]
    # a next-edit draft adds its window and the edits so far (NextEditDraftLine)
    return (json_line({**line, **draft_fields(draft)}) + "\n").encode()


def ndjson_end(job: Job, outcome: Outcome) -> bytes:
    line = result_line(outcome.result) if outcome.result is not None else error_line(outcome_error(outcome), job.id)
    return (json_line(line) + "\n").encode()


class JobStream:
    """An ASGI response that streams a job's events, then its outcome, and watches the client.

    Nothing is sent before the first event with content: a job that fails before it (a model that
    does not load, a full queue) is answered with its typed error and HTTP status, not a 200 stream.
    When the client goes away (http.disconnect, or a send that fails) ``on_gone`` cancels the job;
    the engine stops at its next step, so a vanished client costs at most one more step.
    """

    def __init__(self, job: Job, bridge: JobBridge, draft: Callable[[Job, Draft], bytes],
                 end: Callable[[Job, Outcome], bytes], media_type: str, on_gone: Callable[[Job], None]) -> None:
        self.job, self.bridge = job, bridge
        self.draft, self.end, self.media_type = draft, end, media_type
        self.on_gone = on_gone
        self.started = False

    async def _send(self, send: Send, body: bytes, more: bool) -> None:
        if not self.started:
            self.started = True
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-cache"),
                                    (b"x-request-id", self.job.id.encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        try:
            while True:
                getter: asyncio.Future[Any] = asyncio.ensure_future(self.bridge.queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    self.on_gone(self.job)
                    return
                item = getter.result()
                if item is _END:
                    outcome = self.bridge.outcome.result()
                    if not self.started and not outcome.ok:
                        await error_response(outcome_error(outcome))(scope, receive, send)
                        return
                    await self._send(send, self.end(self.job, outcome), more=False)
                    return
                chunk = self.draft(self.job, item)
                if chunk:
                    await self._send(send, chunk, more=True)
        except OSError:  # the send failed: the client is gone
            self.on_gone(self.job)
        finally:
            watcher.cancel()
