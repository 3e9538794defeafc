"""From a validated request to its outcome, on the event loop's side: submit a Job to the
scheduler, then wait for the outcome while watching the connection.

A client that goes away cancels its job, which the engine notices within one denoising step.
Shared by the native routes and the compatibility routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from diffgemma.runtime.api.config import DEFAULT_MAX_BODY
from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.jobs import Job, JobKind, JobRequest, Outcome
from diffgemma.runtime.daemon.scheduler import Scheduler
from diffgemma.runtime.daemon.streaming import JobBridge, outcome_error
from diffgemma.runtime.daemon.team import CALLER, Team
from diffgemma.runtime.daemon.wire import error_response, read_json, wait_disconnect

log = logging.getLogger("diffgemma.daemon")

API_VERSION = "1"


@dataclass
class ServerInfo:
    """What /v1/status reports about the daemon itself, and the TCP guards."""

    socket: str | None = None
    url: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    token: str | None = None  # required on every request but /health when set (TCP)
    notice: str | None = None  # e.g. the embedded model stands in for the real one
    host: str | None = None  # the bound TCP host: Host headers must name it or localhost
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    team: Team | None = None  # the developers of --tokens-file, and their counters
    tls: bool = False  # served over HTTPS: a DNS rebinding attack cannot pass the certificate check


class Dispatcher:
    def __init__(self, scheduler: Scheduler, info: ServerInfo) -> None:
        self.scheduler = scheduler
        self.info = info
        self.disconnects = 0

    async def body(self, request: Request) -> Any:
        return await read_json(request, self.info.max_body)

    def submit(self, kind: JobKind, req: JobRequest, stream: bool) -> tuple[Job, JobBridge]:
        model = self.scheduler.resolve_model(req.model)
        bridge = JobBridge(asyncio.get_running_loop())
        job = Job(kind=kind, request=req, model=model, on_done=bridge.on_done,
                  on_draft=bridge.on_draft if stream else None)
        if req.id:
            if self.scheduler.has_job(req.id):
                raise WireError(ErrorCode.DUPLICATE_ID, f"a request with id {req.id!r} is already queued or running")
            job.id = req.id
        caller = CALLER.get()
        if caller is not None and self.info.team is not None:
            self.info.team.submitting(caller, job)  # runs as that developer, counted under the name
        try:
            self.scheduler.submit(job)
        except WireError:
            if caller is not None and self.info.team is not None:
                self.info.team.refused_job(caller.name)
            raise
        return job, bridge

    async def await_outcome(self, request: Request, job: Job, bridge: JobBridge) -> Outcome | None:
        """The job's outcome, or None when the client disconnected first (the job is then cancelled)."""
        watcher: asyncio.Future[Any] = asyncio.ensure_future(wait_disconnect(request.receive))
        waiting: set[asyncio.Future[Any]] = {bridge.outcome, watcher}
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if bridge.outcome in done:
            return bridge.outcome.result()
        self.client_gone(job)
        return None

    def client_gone(self, job: Job) -> None:
        self.disconnects += 1
        if self.scheduler.cancel(job.id):
            log.info("request %s: client disconnected, cancelled", job.id)

    async def run(self, request: Request, kind: JobKind, req: JobRequest) -> Outcome | None:
        job, bridge = self.submit(kind, req, stream=False)
        return await self.await_outcome(request, job, bridge)


def answer(outcome: Outcome | None, render: Callable[[Outcome], Any | None]) -> Response:
    """The JSON answer to a finished job: ``render(outcome)``, or the job's typed error where
    ``render`` gives None (it failed), or nothing (499) when the client has gone."""
    if outcome is None:
        return Response(status_code=499)  # nobody is listening any more
    data = render(outcome)
    if data is None:
        return error_response(outcome_error(outcome))
    return JSONResponse(data)


def result_json(outcome: Outcome) -> dict[str, Any] | None:
    return outcome.result.to_json() if outcome.result is not None else None
