"""The daemon's own API: POST /v1/infill, /v1/edit, /v1/next-edit, /v1/cancel; GET /health, /v1/status,
/openapi.json. The server has read and checked a body (its request type's ``from_json``) before a
handler runs."""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from diffgemma.runtime.api.next_edit import NextEditRequest
from diffgemma.runtime.api.request_types import CancelRequest, EditRequest, InfillRequest
from diffgemma.runtime.api.results import CancelAnswer, Health
from diffgemma.runtime.daemon.dispatch import API_VERSION, Dispatcher, answer, result_json
from diffgemma.runtime.daemon.jobs import JobKind
from diffgemma.runtime.daemon.streaming import JobStream, ndjson_draft, ndjson_end
from diffgemma.runtime.daemon.team import team_status


def resident_bytes() -> int | None:
    """The daemon process's resident memory now (model, torch, buffers: what it costs the machine;
    ``memory_bytes`` counts the model's weights only). Linux reads /proc; elsewhere the peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


class NativeRoutes:
    def __init__(self, dispatch: Dispatcher) -> None:
        self.dispatch = dispatch

    async def infill(self, request: Request, req: InfillRequest) -> Response | JobStream:
        return await self._generate(request, "infill", req)

    async def edit(self, request: Request, req: EditRequest) -> Response | JobStream:
        return await self._generate(request, "edit", req)

    async def next_edit(self, request: Request, req: NextEditRequest) -> Response | JobStream:
        return await self._generate(request, "next-edit", req)

    async def _generate(self, request: Request, kind: JobKind,
                        req: InfillRequest | EditRequest | NextEditRequest) -> Response | JobStream:
        job, bridge = self.dispatch.submit(kind, req, stream=req.stream)
        if req.stream:
            return JobStream(job, bridge, ndjson_draft, ndjson_end, "application/x-ndjson",
                             self.dispatch.client_gone)
        return answer(await self.dispatch.await_outcome(request, job, bridge), result_json)

    async def cancel(self, request: Request, req: CancelRequest) -> Response:
        cancelled: CancelAnswer = {"id": req.id, "cancelled": self.dispatch.scheduler.cancel(req.id)}
        return JSONResponse(cancelled)

    async def health(self, request: Request) -> Response:
        health: Health = {"status": "ok"}
        return JSONResponse(health)

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.status_data())

    def status_data(self) -> dict[str, Any]:
        info = self.dispatch.info
        data = self.dispatch.scheduler.status()
        data.update({"pid": os.getpid(), "socket": info.socket, "url": info.url, "notice": info.notice,
                     "disconnects": self.dispatch.disconnects, "api_version": API_VERSION,
                     "rss_bytes": resident_bytes()})
        data.update(team_status(info.team))  # who asks, and the developers' counters (a tokens file)
        return data

    async def openapi(self, request: Request) -> Response:
        # the document is built from the route table on demand (pydantic renders the answer types):
        # imported here, so a daemon that is never asked for it never loads either
        from diffgemma.runtime.daemon.openapi import openapi_document

        return JSONResponse(openapi_document(self.dispatch.info, self.status_data()))
