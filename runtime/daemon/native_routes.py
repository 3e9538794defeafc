"""The daemon's own API: POST /v1/infill, /v1/edit, /v1/next-edit, /v1/cancel; GET /health, /v1/status,
/openapi.json."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from diffgemma.runtime.api.next_edit import NextEditRequest
from diffgemma.runtime.api.request_types import CancelRequest, EditRequest, InfillRequest
from diffgemma.runtime.daemon.dispatch import API_VERSION, Dispatcher, answer, result_json
from diffgemma.runtime.daemon.jobs import JobKind
from diffgemma.runtime.daemon.openapi import openapi_schema
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

    async def infill(self, request: Request) -> Response | JobStream:
        req = InfillRequest.from_json(await self.dispatch.body(request))
        return await self._generate(request, "infill", req)

    async def edit(self, request: Request) -> Response | JobStream:
        req = EditRequest.from_json(await self.dispatch.body(request))
        return await self._generate(request, "edit", req)

    async def next_edit(self, request: Request) -> Response | JobStream:
        req = NextEditRequest.from_json(await self.dispatch.body(request))
        return await self._generate(request, "next-edit", req)

    async def _generate(self, request: Request, kind: JobKind,
                        req: InfillRequest | EditRequest | NextEditRequest) -> Response | JobStream:
        job, bridge = self.dispatch.submit(kind, req, stream=req.stream)
        if req.stream:
            return JobStream(job, bridge, ndjson_draft, ndjson_end, "application/x-ndjson",
                             self.dispatch.client_gone)
        return answer(await self.dispatch.await_outcome(request, job, bridge), result_json)

    async def cancel(self, request: Request) -> Response:
        req = CancelRequest.from_json(await self.dispatch.body(request))
        return JSONResponse({"id": req.id, "cancelled": self.dispatch.scheduler.cancel(req.id)})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def status(self, request: Request) -> Response:
        info = self.dispatch.info
        data = self.dispatch.scheduler.status()
        data.update({"pid": os.getpid(), "socket": info.socket, "url": info.url, "notice": info.notice,
                     "disconnects": self.dispatch.disconnects, "api_version": API_VERSION,
                     "rss_bytes": resident_bytes()})
        data.update(team_status(info.team))  # who asks, and the developers' counters (a tokens file)
        return JSONResponse(data)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema())
