"""The daemon's HTTP API (Starlette), served by uvicorn over a Unix socket or loopback TCP.

Endpoints: POST /v1/infill, /v1/edit, /v1/cancel; GET /health, /v1/status, /openapi.json
(runtime.daemon.native_routes); and the compatibility adapters (runtime.daemon.compat_routes):
llama.cpp POST /infill, /completion, /tokenize, /detokenize, GET /props; OpenAI GET /v1/models,
POST /v1/completions, /v1/chat/completions; Mistral POST /v1/fim/completions.

Every error, on every endpoint and in every stream, is the typed body of runtime.api.errors. The
event loop never runs the engine: handlers validate, submit a Job to the Scheduler, and wait for
its outcome while watching the connection (runtime.daemon.dispatch). Importing this module does
not import torch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from diffgemma.runtime.api.checks import ProtocolError
from diffgemma.runtime.api.config import MAX_ID_LENGTH
from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.compat_routes import CompatRoutes
from diffgemma.runtime.daemon.dispatch import API_VERSION, Dispatcher, ServerInfo
from diffgemma.runtime.daemon.guards import Shield, TcpGuard, TokenAuth, host_allowed
from diffgemma.runtime.daemon.native_routes import NativeRoutes
from diffgemma.runtime.daemon.scheduler import Scheduler
from diffgemma.runtime.daemon.streaming import JobStream
from diffgemma.runtime.daemon.wire import ClientGone, error_response

__all__ = ["API_VERSION", "ServerInfo", "create_app", "host_allowed"]

log = logging.getLogger("diffgemma.daemon")

Endpoint = Callable[[Request], Awaitable["Response | JobStream"]]


def _handle(fn: Endpoint) -> Endpoint:
    """Turn every failure inside a handler into the typed JSON error with a one-line reason."""

    async def endpoint(request: Request) -> Response | JobStream:
        try:
            return await fn(request)
        except ClientGone:
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


def _routes(native: NativeRoutes, compat: CompatRoutes) -> list[Route]:
    table: list[tuple[str, Endpoint, str]] = [
        ("/v1/infill", native.infill, "POST"),
        ("/v1/edit", native.edit, "POST"),
        ("/v1/next-edit", native.next_edit, "POST"),
        ("/v1/cancel", native.cancel, "POST"),
        ("/v1/status", native.status, "GET"),
        ("/health", native.health, "GET"),
        ("/openapi.json", native.openapi, "GET"),
        ("/infill", compat.llama_infill, "POST"),
        ("/completion", compat.llama_completion, "POST"),
        ("/completions", compat.llama_completion, "POST"),
        ("/props", compat.props, "GET"),
        ("/v1/props", compat.props, "GET"),
        ("/tokenize", compat.tokenize, "POST"),
        ("/detokenize", compat.detokenize, "POST"),
        ("/v1/models", compat.models, "GET"),
        ("/models", compat.models, "GET"),
        ("/v1/completions", compat.openai_completions, "POST"),
        ("/v1/chat/completions", compat.chat_completions, "POST"),
        ("/chat/completions", compat.chat_completions, "POST"),
        ("/v1/fim/completions", compat.fim_completions, "POST"),
    ]
    return [Route(path, _handle(fn), methods=[method]) for path, fn, method in table]


def create_app(scheduler: Scheduler, info: ServerInfo) -> ASGIApp:
    dispatch = Dispatcher(scheduler, info)
    routes = _routes(NativeRoutes(dispatch), CompatRoutes(dispatch))
    app: ASGIApp = Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})
    if info.token:
        app = TokenAuth(app, info.token, info.team)
        app = TcpGuard(app, info.host or "127.0.0.1", info.allow_origins, any_host=info.tls)
    return Shield(app)
