"""The daemon's HTTP API (Starlette), served by uvicorn over a Unix socket or loopback TCP.

Endpoints: POST /v1/infill, /v1/edit, /v1/cancel; GET /health, /v1/status, /openapi.json; and the
compatibility adapters POST /infill (llama.cpp) and POST /v1/completions (OpenAI legacy).

The event loop never runs the engine: handlers validate, submit a Job to the Scheduler, and wait
for its outcome while watching the connection. A client that goes away cancels its job, which
the engine notices within one denoising step. Importing this module does not import torch.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from diffgemma.runtime import adapters
from diffgemma.runtime.protocol import (
    RESULT_SCHEMA,
    CancelRequest,
    EditRequest,
    InfillRequest,
    ProtocolError,
    draft_line,
    error_line,
    json_schema,
    result_line,
)
from diffgemma.runtime.scheduler import Job, NoModel, Outcome, QueueFull, Scheduler
from diffgemma.runtime.types import Draft

log = logging.getLogger("diffgemma.daemon")

DEFAULT_MAX_BODY = 4 * 1024 * 1024
API_VERSION = "1"


@dataclass
class ServerInfo:
    """What /v1/status reports about the daemon itself."""

    socket: str | None = None
    url: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    token: str | None = None  # required on every request but /health when set (TCP)
    notice: str | None = None  # e.g. the embedded model stands in for the real one


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    line = message.strip().splitlines()[0] if message.strip() else "error"
    return JSONResponse({"error": line}, status_code=status)


# --- request bodies ---------------------------------------------------------------------------


async def read_json(request: Request, max_body: int) -> Any:
    """The request's JSON body, or ApiError with a one-line reason (size, encoding, syntax)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if declared > max_body:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {max_body} (--max-body)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ApiError(413, f"request body is over the limit of {max_body} bytes (--max-body)")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "empty request body; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None


async def _wait_disconnect(receive: Receive) -> None:
    """Return when the client has gone (http.disconnect); the body has been read already."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


# --- jobs on the event loop's side --------------------------------------------------------------

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


class Api:
    def __init__(self, scheduler: Scheduler, info: ServerInfo) -> None:
        self.scheduler = scheduler
        self.info = info
        self.disconnects = 0

    # Submitting ---------------------------------------------------------------------------------

    def _submit(self, kind: str, req: InfillRequest | EditRequest, stream: bool) -> tuple[Job, JobBridge]:
        try:
            model = self.scheduler.resolve_model(req.model)
        except NoModel as exc:
            raise ApiError(400, str(exc)) from None
        bridge = JobBridge(asyncio.get_running_loop())
        job = Job(kind=kind, request=req, model=model, on_done=bridge.on_done,  # type: ignore[arg-type]
                  on_draft=bridge.on_draft if stream else None)
        if req.id:
            if self.scheduler.has_job(req.id):
                raise ApiError(409, f"a request with id {req.id!r} is already queued or running")
            job.id = req.id
        try:
            self.scheduler.submit(job)
        except QueueFull as exc:
            raise ApiError(503, str(exc)) from None
        return job, bridge

    async def _await_outcome(self, request: Request, job: Job, bridge: JobBridge) -> Outcome | None:
        """The job's outcome, or None when the client disconnected first (the job is then cancelled)."""
        watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            done, _ = await asyncio.wait({bridge.outcome, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if bridge.outcome in done:
            return bridge.outcome.result()
        self._client_gone(job)
        return None

    def _client_gone(self, job: Job) -> None:
        self.disconnects += 1
        if self.scheduler.cancel(job.id):
            log.info("request %s: client disconnected, cancelled", job.id)

    # Native endpoints ---------------------------------------------------------------------------

    async def infill(self, request: Request) -> Response | JobStream:
        req = InfillRequest.from_json(await read_json(request, self.info.max_body))
        return await self._generate(request, "infill", req)

    async def edit(self, request: Request) -> Response | JobStream:
        req = EditRequest.from_json(await read_json(request, self.info.max_body))
        return await self._generate(request, "edit", req)

    async def _generate(self, request: Request, kind: str,
                        req: InfillRequest | EditRequest) -> Response | JobStream:
        job, bridge = self._submit(kind, req, stream=req.stream)
        if req.stream:
            return JobStream(self, job, bridge, _ndjson_draft, _ndjson_end, "application/x-ndjson")
        outcome = await self._await_outcome(request, job, bridge)
        if outcome is None:
            return Response(status_code=499)  # nobody is listening any more
        return _outcome_response(outcome)

    async def cancel(self, request: Request) -> Response:
        req = CancelRequest.from_json(await read_json(request, self.info.max_body))
        return JSONResponse({"id": req.id, "cancelled": self.scheduler.cancel(req.id)})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def status(self, request: Request) -> Response:
        data = self.scheduler.status()
        data.update({"pid": os.getpid(), "socket": self.info.socket, "url": self.info.url,
                     "notice": self.info.notice,
                     "disconnects": self.disconnects, "api_version": API_VERSION})
        return JSONResponse(data)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema())

    # Adapters -------------------------------------------------------------------------------------

    async def llama_infill(self, request: Request) -> Response:
        call = adapters.llama_infill_request(await read_json(request, self.info.max_body))
        if call.n_predict == 0:
            # A prompt-only request (llama.vim/llama.vscode warm the cache with these while the
            # user moves around): nothing to generate, so answer at once and keep the worker free.
            data = adapters.llama_infill_response(call, None)
            return _sse_response(adapters.llama_stream_chunks(call, None)) if call.stream else JSONResponse(data)
        return await self._adapted(request, call, adapters.llama_stream_chunks, adapters.llama_infill_response)

    async def openai_completions(self, request: Request) -> Response:
        call = adapters.openai_completion_request(await read_json(request, self.info.max_body))
        return await self._adapted(request, call, adapters.openai_stream_chunks, adapters.openai_completion_response)

    async def _adapted(self, request: Request, call: Any, chunks: Callable[..., Any],
                       answer: Callable[..., dict[str, Any]]) -> Response:
        """Run a compatibility request on the engine and answer in that client's wire shape."""
        job, bridge = self._submit("infill", call.request, stream=False)
        outcome = await self._await_outcome(request, job, bridge)
        if outcome is None:
            return Response(status_code=499)
        if outcome.result is None:
            return error_response(outcome.status, outcome.error or "request failed")
        if call.stream:
            return _sse_response(chunks(call, outcome.result))
        return JSONResponse(answer(call, outcome.result))


def _outcome_response(outcome: Outcome) -> Response:
    if outcome.result is None:
        return error_response(outcome.status, outcome.error or "request failed")
    return JSONResponse(outcome.result.to_json())


def _sse_response(events: list[bytes]) -> Response:
    return Response(b"".join(events), media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"})


def _ndjson_draft(job: Job, draft: Draft) -> bytes:
    line = draft_line(draft.step, draft.text, job.id)
    if draft.canvas:
        line["canvas"] = draft.canvas
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def _ndjson_end(job: Job, outcome: Outcome) -> bytes:
    if outcome.result is not None:
        line = result_line(outcome.result)
    else:
        line = {**error_line(outcome.error or "request failed"), "status": outcome.status, "id": job.id}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


class JobStream:
    """An ASGI response that streams a job's drafts, then its outcome, and watches the client.

    When the client goes away (http.disconnect, or a send that fails) the job is cancelled; the
    engine stops at its next step, so a vanished client costs at most one more step.
    """

    def __init__(self, api: Api, job: Job, bridge: JobBridge, draft: Callable[[Job, Draft], bytes],
                 end: Callable[[Job, Outcome], bytes], media_type: str) -> None:
        self.api, self.job, self.bridge = api, job, bridge
        self.draft, self.end, self.media_type = draft, end, media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-cache"),
                                    (b"x-request-id", self.job.id.encode())]})
            while True:
                getter = asyncio.ensure_future(self.bridge.queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    self.api._client_gone(self.job)
                    return
                item = getter.result()
                if item is _END:
                    chunk = self.end(self.job, self.bridge.outcome.result())
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    return
                await send({"type": "http.response.body", "body": self.draft(self.job, item), "more_body": True})
        except OSError:  # the send failed: the client is gone
            self.api._client_gone(self.job)
        finally:
            watcher.cancel()


# --- middleware: auth and one-line errors -----------------------------------------------------


class TokenAuth:
    """Demand ``Authorization: Bearer <token>`` on every request but /health (TCP mode)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/health":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credential.strip()
        # Constant-time comparison: the answer time must not reveal how much of a guess was right.
        if not hmac.compare_digest(given, self.token):
            response = error_response(401, "missing or wrong bearer token (see the daemon's token file)")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable["Response | JobStream"]]


def _handle(fn: Endpoint) -> Endpoint:
    """Turn every failure inside a handler into a JSON answer with a one-line reason."""

    async def endpoint(request: Request) -> Response | JobStream:
        try:
            return await fn(request)
        except ProtocolError as exc:
            return error_response(400, str(exc))
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except Exception as exc:  # a bug in one request must not stop the daemon
            log.exception("request to %s failed", request.url.path)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    endpoint.__name__ = fn.__name__
    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


def create_app(scheduler: Scheduler, info: ServerInfo) -> ASGIApp:
    api = Api(scheduler, info)
    routes = [
        Route("/v1/infill", _handle(api.infill), methods=["POST"]),
        Route("/v1/edit", _handle(api.edit), methods=["POST"]),
        Route("/v1/cancel", _handle(api.cancel), methods=["POST"]),
        Route("/v1/status", _handle(api.status), methods=["GET"]),
        Route("/health", _handle(api.health), methods=["GET"]),
        Route("/openapi.json", _handle(api.openapi), methods=["GET"]),
        Route("/infill", _handle(api.llama_infill), methods=["POST"]),
        Route("/v1/completions", _handle(api.openai_completions), methods=["POST"]),
    ]
    app: ASGIApp = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    if info.token:
        app = TokenAuth(app, info.token)
    return app


# --- OpenAPI ------------------------------------------------------------------------------------


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(schema: dict[str, Any], stream: str | None = None, extra: dict[str, str] | None = None) -> dict:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if stream:
        content[stream] = {"schema": {"type": "string", "description": "one event per line"}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for code, text in {"400": "bad request (one-line reason)", **(extra or {})}.items():
        responses[code] = {"description": text, **error}
    return responses


def openapi_schema() -> dict[str, Any]:
    """The API described from the protocol dataclasses (request schemas come from their checkers)."""
    gen_errors = {"413": "body over --max-body", "409": "duplicate request id",
                  "503": "queue full", "500": "the request failed inside the daemon"}
    llama_req = {"type": "object", "properties": {
        "input_prefix": {"type": "string"}, "input_suffix": {"type": "string"}, "prompt": {"type": "string"},
        "input_extra": {"type": "array", "items": {"type": "object", "required": ["text"],
                                                   "properties": {"filename": {"type": "string"},
                                                                  "text": {"type": "string"}}}},
        "n_predict": {"type": "integer"}, "stream": {"type": "boolean"}, "cache_prompt": {"type": "boolean"},
        "t_max_predict_ms": {"type": "number"}, "stop": {"type": "array", "items": {"type": "string"}},
        "response_fields": {"type": "array", "items": {"type": "string"}}, "seed": {"type": "integer"}},
        "description": "llama.cpp /infill; sampler fields are accepted and ignored"}
    openai_req = {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string"}, "suffix": {"type": "string"}, "max_tokens": {"type": "integer"},
        "temperature": {"type": "number"}, "stop": {"oneOf": [{"type": "string"},
                                                              {"type": "array", "items": {"type": "string"}}]},
        "stream": {"type": "boolean"}, "model": {"type": "string"}, "echo": {"type": "boolean"},
        "n": {"type": "integer", "enum": [1]}, "seed": {"type": "integer"}},
        "description": "OpenAI legacy completions with suffix (fill in the middle)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "diffgemma daemon", "version": API_VERSION,
                 "description": "Code infilling and rewrites with DiffusionGemma. Over TCP every request but "
                                "/health needs `Authorization: Bearer <token>`."},
        "components": {
            "schemas": {
                "InfillRequest": json_schema(InfillRequest),
                "EditRequest": json_schema(EditRequest),
                "CancelRequest": json_schema(CancelRequest),
                "Result": RESULT_SCHEMA,
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/infill": {"post": {
                "summary": "Fill the hole between prefix and suffix",
                "description": "With stream=true: NDJSON, one {type: draft, step, text, id} line per denoising "
                               "step, then {type: result, ...} (or {type: error, error}).",
                "requestBody": _json_body({"$ref": "#/components/schemas/InfillRequest"}),
                "responses": _answers({"$ref": "#/components/schemas/Result"}, "application/x-ndjson",
                                      gen_errors)}},
            "/v1/edit": {"post": {
                "summary": "Rewrite the selection between prefix and suffix",
                "requestBody": _json_body({"$ref": "#/components/schemas/EditRequest"}),
                "responses": _answers({"$ref": "#/components/schemas/Result"}, "application/x-ndjson",
                                      gen_errors)}},
            "/v1/cancel": {"post": {
                "summary": "Cancel a queued or running request by id",
                "requestBody": _json_body({"$ref": "#/components/schemas/CancelRequest"}),
                "responses": _answers({"type": "object", "properties": {"id": {"type": "string"},
                                                                        "cancelled": {"type": "boolean"}}})}},
            "/v1/status": {"get": {
                "summary": "Model, device, memory, load state, queue, counters, mean latency",
                "responses": _answers({"type": "object"})}},
            "/health": {"get": {"summary": "Liveness (no token needed)", "security": [],
                                "responses": _answers({"type": "object",
                                                       "properties": {"status": {"type": "string"}}})}},
            "/openapi.json": {"get": {"summary": "This document", "responses": _answers({"type": "object"})}},
            "/infill": {"post": {
                "summary": "llama.cpp-compatible infill (llama.vim, llama.vscode)",
                "requestBody": _json_body(llama_req),
                "responses": _answers({"type": "object", "properties": {
                    "content": {"type": "string"}, "stop": {"type": "boolean"},
                    "tokens_cached": {"type": "integer"}, "timings": {"type": "object"}}},
                    "text/event-stream", gen_errors)}},
            "/v1/completions": {"post": {
                "summary": "OpenAI legacy completions with suffix (Continue, Tabby)",
                "requestBody": _json_body(openai_req),
                "responses": _answers({"type": "object", "properties": {
                    "id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                    "model": {"type": "string"}, "choices": {"type": "array"}, "usage": {"type": "object"}}},
                    "text/event-stream", gen_errors)}},
        },
        "security": [{"bearer": []}],
    }

