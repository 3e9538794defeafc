"""The daemon's HTTP API (Starlette), served by uvicorn over a Unix socket or loopback TCP.

Endpoints: POST /v1/infill, /v1/edit, /v1/cancel; GET /health, /v1/status, /openapi.json; and the
compatibility adapters: llama.cpp POST /infill, /completion, /tokenize, /detokenize, GET /props;
OpenAI GET /v1/models, POST /v1/completions, /v1/chat/completions; Mistral POST /v1/fim/completions.

Every error, on every endpoint and in every stream, is the typed body of runtime.errors. The event
loop never runs the engine: handlers validate, submit a Job to the Scheduler, and wait for its
outcome while watching the connection. A client that goes away cancels its job, which the engine
notices within one denoising step. Importing this module does not import torch.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.protocol import (
    MAX_ID_LENGTH,
    RESULT_SCHEMA,
    CancelRequest,
    EditRequest,
    InfillRequest,
    ProtocolError,
    TokenizeRequest,
    draft_line,
    error_line,
    json_schema,
    result_line,
)
from diffgemma.runtime.daemon import adapters
from diffgemma.runtime.daemon.scheduler import Job, JobKind, JobRequest, Outcome, Scheduler
from diffgemma.runtime.engine.types import Draft

log = logging.getLogger("diffgemma.daemon")

DEFAULT_MAX_BODY = 4 * 1024 * 1024
API_VERSION = "1"
# No client body nests deeper than a few levels; a deeper one is an attack on the parser.
MAX_JSON_DEPTH = 64


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


def error_response(error: WireError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


class _Gone(Exception):
    """The client went away while sending its body: nobody to answer."""


# --- request bodies ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise WireError(ErrorCode.INVALID_JSON, f"malformed JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireError(ErrorCode.INVALID_JSON, f"malformed JSON: the number {text[:20]} is out of range")
    return value


def check_tree(data: Any) -> None:
    """Refuse what json.loads lets through but nothing downstream can use: lone surrogates in any
    string or key (they cannot be encoded, tokenized or logged) and absurd nesting. Iterative, so a
    deep body costs no recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise WireError(ErrorCode.INVALID_JSON, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(ErrorCode.INVALID_JSON, f"a string holds a lone surrogate (\\u{ord(text[exc.start]):04x}); "
                        "send valid UTF-16 pairs") from None


async def read_json(request: Request, max_body: int) -> Any:
    """The request's JSON body, or a WireError with a one-line reason (size, encoding, syntax)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isascii() or not length.strip().isdigit():
            raise WireError(ErrorCode.INVALID_REQUEST, "Content-Length is not a number")
        if int(length) > max_body:
            raise WireError(ErrorCode.BODY_TOO_LARGE,
                            f"request body is {int(length)} bytes; the limit is {max_body} (--max-body)")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise WireError(ErrorCode.BODY_TOO_LARGE,
                                f"request body is over the limit of {max_body} bytes (--max-body)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Gone() from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise WireError(ErrorCode.INVALID_JSON, "empty request body; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(ErrorCode.INVALID_JSON, f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise WireError(ErrorCode.INVALID_JSON,
                        f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WireError(ErrorCode.INVALID_JSON, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise WireError(ErrorCode.INVALID_JSON, f"malformed JSON: {str(exc).split('; ')[0]}") from None
    check_tree(data)
    return data


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


def _outcome_error(outcome: Outcome) -> WireError:
    return outcome.error or WireError(ErrorCode.INTERNAL, "request failed")


class Api:
    def __init__(self, scheduler: Scheduler, info: ServerInfo) -> None:
        self.scheduler = scheduler
        self.info = info
        self.disconnects = 0

    async def body(self, request: Request) -> Any:
        return await read_json(request, self.info.max_body)

    # Submitting ---------------------------------------------------------------------------------

    def _submit(self, kind: JobKind, req: JobRequest, stream: bool) -> tuple[Job, JobBridge]:
        model = self.scheduler.resolve_model(req.model)
        bridge = JobBridge(asyncio.get_running_loop())
        job = Job(kind=kind, request=req, model=model, on_done=bridge.on_done,
                  on_draft=bridge.on_draft if stream else None)
        if req.id:
            if self.scheduler.has_job(req.id):
                raise WireError(ErrorCode.DUPLICATE_ID, f"a request with id {req.id!r} is already queued or running")
            job.id = req.id
        self.scheduler.submit(job)
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

    async def _run(self, request: Request, kind: JobKind, req: JobRequest) -> Outcome | None:
        job, bridge = self._submit(kind, req, stream=False)
        return await self._await_outcome(request, job, bridge)

    # Native endpoints ---------------------------------------------------------------------------

    async def infill(self, request: Request) -> Response | JobStream:
        req = InfillRequest.from_json(await self.body(request))
        return await self._generate(request, "infill", req)

    async def edit(self, request: Request) -> Response | JobStream:
        req = EditRequest.from_json(await self.body(request))
        return await self._generate(request, "edit", req)

    async def _generate(self, request: Request, kind: JobKind,
                        req: InfillRequest | EditRequest) -> Response | JobStream:
        job, bridge = self._submit(kind, req, stream=req.stream)
        if req.stream:
            return JobStream(self, job, bridge, _ndjson_draft, _ndjson_end, "application/x-ndjson")
        outcome = await self._await_outcome(request, job, bridge)
        if outcome is None:
            return Response(status_code=499)  # nobody is listening any more
        if outcome.result is None:
            return error_response(_outcome_error(outcome))
        return JSONResponse(outcome.result.to_json())

    async def cancel(self, request: Request) -> Response:
        req = CancelRequest.from_json(await self.body(request))
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

    # Compatibility: generation ------------------------------------------------------------------

    async def llama_infill(self, request: Request) -> Response | JobStream:
        return await self._llama(request, adapters.llama_infill_request(await self.body(request)))

    async def llama_completion(self, request: Request) -> Response | JobStream:
        return await self._llama(request, adapters.llama_completion_request(await self.body(request)))

    async def _llama(self, request: Request, call: adapters.LlamaCall) -> Response | JobStream:
        if call.n_predict == 0:
            # A prompt-only request (llama.vim/llama.vscode warm the cache with these while the
            # user moves around): nothing to generate, so answer at once and keep the worker free.
            if call.stream:
                return _sse_now(call.codec.end(None))
            return JSONResponse(call.codec.answer(None))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def openai_completions(self, request: Request) -> Response | JobStream:
        call = adapters.openai_completion_request(await self.body(request))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def fim_completions(self, request: Request) -> Response | JobStream:
        call = adapters.fim_completion_request(await self.body(request))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def chat_completions(self, request: Request) -> Response | JobStream:
        call = adapters.chat_completion_request(await self.body(request))
        if call.kind == "warmup":  # n_predict 0: llama.vim warming the cache while the user types
            result = adapters.empty_result("warmup", self.scheduler.default_model or "")
            return _sse_now(call.codec.end(result)) if call.stream else JSONResponse(call.codec.answer(result))
        return await self._adapted(request, "chat", call.request, call.codec, call.stream)

    async def _adapted(self, request: Request, kind: JobKind, req: JobRequest, codec: adapters.Codec,
                       stream: bool) -> Response | JobStream:
        """Run a compatibility request on the engine and answer in that client's wire shape."""
        job, bridge = self._submit(kind, req, stream=stream)
        codec.model = job.model
        if stream:
            return JobStream(self, job, bridge, lambda j, d: codec.draft(d, j.id),
                             lambda j, o: codec.end(o.result) if o.result is not None
                             else codec.error(_outcome_error(o)), "text/event-stream")
        outcome = await self._await_outcome(request, job, bridge)
        if outcome is None:
            return Response(status_code=499)
        if outcome.result is None:
            return error_response(_outcome_error(outcome))
        return JSONResponse(codec.answer(outcome.result))

    # Compatibility: models, props, tokens -----------------------------------------------------

    async def models(self, request: Request) -> Response:
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "diffgemma"}
                for name in self.scheduler.listed_models()]
        return JSONResponse({"object": "list", "data": data})

    async def props(self, request: Request) -> Response:
        status = self.scheduler.status()
        model = status.get("model") or status.get("default_model") or ""
        n_ctx = int(status.get("context_length") or 8192)
        return JSONResponse({
            "default_generation_settings": {"n_ctx": n_ctx, "n_predict": -1, "model": model,
                                            "params": {"n_predict": -1}},
            "total_slots": 1, "model_path": model, "chat_template": "", "modalities": {"vision": False},
            "build_info": f"diffgemma daemon (api {API_VERSION})", "is_sleeping": status.get("state") != "ready",
        })

    async def tokenize(self, request: Request) -> Response:
        body = _token_body(await self.body(request), "content")
        content = body.get("content")
        if not isinstance(content, str):
            raise WireError(ErrorCode.INVALID_REQUEST, "content must be a string")
        with_pieces = body.get("with_pieces", False)
        if not isinstance(with_pieces, bool):
            raise WireError(ErrorCode.INVALID_REQUEST, "with_pieces must be true or false")
        return await self._tokens(request, "tokenize", TokenizeRequest(content=content, with_pieces=with_pieces))

    async def detokenize(self, request: Request) -> Response:
        tokens = _token_body(await self.body(request), "tokens").get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise WireError(ErrorCode.INVALID_REQUEST, "tokens must be an array of integers")
        return await self._tokens(request, "detokenize", TokenizeRequest(tokens=tokens))

    async def _tokens(self, request: Request, kind: JobKind, req: TokenizeRequest) -> Response:
        outcome = await self._run(request, kind, req)
        if outcome is None:
            return Response(status_code=499)
        if not outcome.ok or outcome.value is None:
            return error_response(_outcome_error(outcome))
        return JSONResponse(outcome.value)


def _token_body(body: Any, required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    if required not in body:
        raise WireError(ErrorCode.INVALID_REQUEST, f"the request is missing the required field {required!r}")
    return body


def _sse_now(payload: bytes) -> Response:
    return Response(payload, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _ndjson_draft(job: Job, draft: Draft) -> bytes:
    line = draft_line(draft.step, draft.text, job.id)
    if draft.canvas:
        line["canvas"] = draft.canvas
    if draft.final:
        line["final"] = True  # this canvas is committed: later text only extends it
    if draft.tokens is not None and getattr(job.request, "confidence", None):
        line["tokens"] = [t.to_dict() for t in draft.tokens]  # a live view shows how sure each is
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def _ndjson_end(job: Job, outcome: Outcome) -> bytes:
    line = result_line(outcome.result) if outcome.result is not None else error_line(_outcome_error(outcome), job.id)
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


class JobStream:
    """An ASGI response that streams a job's events, then its outcome, and watches the client.

    Nothing is sent before the first event with content: a job that fails before it (a model that
    does not load, a full queue) is answered with its typed error and HTTP status, not a 200 stream.
    When the client goes away (http.disconnect, or a send that fails) the job is cancelled; the
    engine stops at its next step, so a vanished client costs at most one more step.
    """

    def __init__(self, api: Api, job: Job, bridge: JobBridge, draft: Callable[[Job, Draft], bytes],
                 end: Callable[[Job, Outcome], bytes], media_type: str) -> None:
        self.api, self.job, self.bridge = api, job, bridge
        self.draft, self.end, self.media_type = draft, end, media_type
        self.started = False

    async def _send(self, send: Send, body: bytes, more: bool) -> None:
        if not self.started:
            self.started = True
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-cache"),
                                    (b"x-request-id", self.job.id.encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            while True:
                getter = asyncio.ensure_future(self.bridge.queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    self.api._client_gone(self.job)
                    return
                item = getter.result()
                if item is _END:
                    outcome = self.bridge.outcome.result()
                    if not self.started and not outcome.ok:
                        await error_response(_outcome_error(outcome))(scope, receive, send)
                        return
                    await self._send(send, self.end(self.job, outcome), more=False)
                    return
                chunk = self.draft(self.job, item)
                if chunk:
                    await self._send(send, chunk, more=True)
        except OSError:  # the send failed: the client is gone
            self.api._client_gone(self.job)
        finally:
            watcher.cancel()


# --- middleware: the TCP guards, auth, and typed errors for everything -------------------------


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, error: WireError,
                  headers: dict[str, str] | None = None) -> None:
    response = error_response(error)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    await response(scope, receive, send)


def _host_name(host: str) -> str:
    """The name part of a Host header: ``[::1]:8012`` -> ``::1``, ``localhost:8012`` -> ``localhost``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_allowed(header: str, bound: str) -> bool:
    """DNS rebinding guard (as ollama does): a browser tricked into calling us sends the
    attacker's host name. Accept the bound address, localhost and loopback addresses; when bound
    to every interface, any literal IP address (a rebinding attack needs a DNS name)."""
    name = _host_name(header.strip()).lower().rstrip(".")
    if not name:
        return False
    if name in ("localhost", bound.lower()) or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or bound in ("0.0.0.0", "::")


class TcpGuard:
    """TCP only: refuse a request whose Origin is not allowed (browsers send one; editors and SDKs
    do not) or whose Host names another machine, before the token is even looked at."""

    def __init__(self, app: ASGIApp, host: str, allow_origins: tuple[str, ...]) -> None:
        self.app, self.host, self.allow_origins = app, host, allow_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if not host_allowed(host, self.host):
            await _refuse(scope, receive, send, WireError(
                ErrorCode.FORBIDDEN, "the Host header does not name this daemon (start it with the address you use)"))
            return
        origin = _header(scope, b"origin")
        if origin is not None:
            text = origin.decode("latin-1").strip()
            if "*" not in self.allow_origins and text not in self.allow_origins:
                await _refuse(scope, receive, send, WireError(
                    ErrorCode.FORBIDDEN, "requests from web pages are refused; allow an origin with --allow-origin"))
                return
        await self.app(scope, receive, send)


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
        value = _header(scope, b"authorization")
        if value is not None:
            scheme, _, credential = value.partition(b" ")
            if scheme.lower() == b"bearer":
                given = credential.strip()
        # Constant-time comparison: the answer time must not reveal how much of a guess was right.
        if not hmac.compare_digest(given, self.token):
            await _refuse(scope, receive, send, WireError(
                ErrorCode.UNAUTHORIZED, "missing or wrong bearer token (see the daemon's token file)"),
                {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class Shield:
    """The outermost layer: whatever escapes below becomes a typed 500 (or nothing, when the answer
    had begun), never the ASGI server's plain-text error page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log.error("request to %s failed: %s: %s", scope.get("path"), type(exc).__name__, exc)
            if not started:
                with _quiet():
                    await _refuse(scope, receive, send, WireError(ErrorCode.INTERNAL, "internal error"))


class _quiet:
    """Ignore a send that fails because the client is gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError | RuntimeError)


Endpoint = Callable[[Request], Awaitable["Response | JobStream"]]


def _handle(fn: Endpoint) -> Endpoint:
    """Turn every failure inside a handler into the typed JSON error with a one-line reason."""

    async def endpoint(request: Request) -> Response | JobStream:
        try:
            return await fn(request)
        except _Gone:
            return Response(status_code=499)  # the body never arrived; nobody to tell
        except ProtocolError as exc:
            return error_response(WireError(ErrorCode.INVALID_REQUEST, str(exc)))
        except WireError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug in one request must not stop the daemon
            log.exception("request to %s failed", request.url.path)
            return error_response(WireError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"))

    endpoint.__name__ = fn.__name__
    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    path = request.url.path[:MAX_ID_LENGTH].encode("utf-8", "replace").decode("utf-8")
    return error_response(WireError(code, f"{exc.detail}: {request.method} {path}"))


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
        Route("/completion", _handle(api.llama_completion), methods=["POST"]),
        Route("/completions", _handle(api.llama_completion), methods=["POST"]),
        Route("/props", _handle(api.props), methods=["GET"]),
        Route("/v1/props", _handle(api.props), methods=["GET"]),
        Route("/tokenize", _handle(api.tokenize), methods=["POST"]),
        Route("/detokenize", _handle(api.detokenize), methods=["POST"]),
        Route("/v1/models", _handle(api.models), methods=["GET"]),
        Route("/models", _handle(api.models), methods=["GET"]),
        Route("/v1/completions", _handle(api.openai_completions), methods=["POST"]),
        Route("/v1/chat/completions", _handle(api.chat_completions), methods=["POST"]),
        Route("/chat/completions", _handle(api.chat_completions), methods=["POST"]),
        Route("/v1/fim/completions", _handle(api.fim_completions), methods=["POST"]),
    ]
    app: ASGIApp = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    if info.token:
        app = TokenAuth(app, info.token)
        app = TcpGuard(app, info.host or "127.0.0.1", info.allow_origins)
    return Shield(app)


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
        "n": {"type": "integer", "minimum": 1, "maximum": 4}, "seed": {"type": "integer"}},
        "description": "OpenAI legacy completions with suffix (fill in the middle)"}
    doc: dict[str, Any] = {
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
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["message", "type", "code"],
                    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                   "code": {"type": "string", "enum": [c.value for c in ErrorCode]}}}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/infill": {"post": {
                "summary": "Fill the hole between prefix and suffix",
                "description": "With stream=true: NDJSON, one {type: draft, step, text, id} line per denoising "
                               "step (and one with final: true per committed canvas), then {type: result, ...} "
                               "(or {type: error, error: {message, type, code}, status, id}).",
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
    _add_compat_paths(doc["paths"], gen_errors)
    return doc


def _add_compat_paths(paths: dict[str, Any], errors: dict[str, str]) -> None:
    for path, summary in _COMPAT_PATHS.items():
        method = "get" if path in ("/props", "/v1/models") else "post"
        paths[path] = {method: {"summary": summary, "responses": _answers({"type": "object"}, "text/event-stream",
                                                                           errors)}}


_COMPAT_PATHS = {
    "/completion": "llama.cpp completion (a prompt, maybe a FIM template); n_cmpl, t_max_predict_ms, stream",
    "/props": "llama.cpp server properties (default_generation_settings.n_ctx)",
    "/tokenize": "llama.cpp: {content} -> {tokens}",
    "/detokenize": "llama.cpp: {tokens} -> {content}",
    "/v1/models": "OpenAI model list: the default, loaded and allowed models",
    "/v1/chat/completions": "OpenAI chat: the model's chat template, plain generation; stream supported",
    "/v1/fim/completions": "Mistral FIM: prompt + suffix, chat-shaped answer; stream supported",
}

