"""The daemon's HTTP API (Starlette), served by uvicorn over a Unix socket or TCP.

The routes are the rows of runtime.daemon.endpoints (the daemon's own API in
runtime.daemon.native_routes, the llama.cpp, OpenAI and Mistral shapes in
runtime.daemon.compat_routes); /openapi.json is generated from the same rows.

Every error, on every endpoint and in every stream, is the typed body of runtime.api.errors. The
event loop never runs the engine: a route's body is read and checked, then its handler submits a Job
to the Scheduler and waits for its outcome while watching the connection (runtime.daemon.dispatch).
Importing this module does not import torch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from diffgemma.runtime.daemon.endpoints import ENDPOINTS, Endpoint, Handler
from diffgemma.runtime.daemon.guards import Shield, TcpGuard, TokenAuth, cors, host_allowed
from diffgemma.runtime.daemon.native_routes import NativeRoutes
from diffgemma.runtime.daemon.scheduler import Scheduler
from diffgemma.runtime.daemon.streaming import JobStream
from diffgemma.runtime.daemon.wire import ClientGone, error_response

__all__ = ["API_VERSION", "ServerInfo", "create_app", "host_allowed"]

log = logging.getLogger("diffgemma.daemon")

Asgi = Callable[[Request], Awaitable["Response | JobStream"]]


def _handle(fn: Handler, row: Endpoint, dispatch: Dispatcher) -> Asgi:
    """The route's handler, called with its checked body (when it takes one); every failure inside
    becomes the typed JSON error with a one-line reason."""
    body = row.body

    async def endpoint(request: Request) -> Response | JobStream:
        try:
            if body is None:
                return await fn(request)
            return await fn(request, body.from_json(await dispatch.body(request)))
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
    response = error_response(WireError(code, f"{exc.detail}: {request.method} {path}"))
    for key, value in (exc.headers or {}).items():  # a 405 says which methods the path takes (Allow)
        if key.lower() == "allow":  # Starlette joins a set: the same answer every time, in one order
            value = ", ".join(sorted(m.strip() for m in value.split(",")))
        response.headers[key] = value
    return response


def _bind(fn: Handler, owners: tuple[Any, ...]) -> Handler:
    """The method ``fn`` (a routes class's function) of whichever of ``owners`` defines it."""
    for owner in owners:
        if getattr(type(owner), fn.__name__, None) is fn:
            bound: Handler = getattr(owner, fn.__name__)
            return bound
    raise LookupError(f"no routes object defines {fn.__qualname__}")


def routes(dispatch: Dispatcher, rows: tuple[Endpoint, ...] = ENDPOINTS) -> list[Route]:
    """The Starlette routes of ``rows`` (every path of each), their handlers bound to the route objects."""
    owners = (NativeRoutes(dispatch), CompatRoutes(dispatch))
    return [Route(path, _handle(_bind(row.handler, owners), row, dispatch), methods=[row.method])
            for row in rows for path in row.paths]


def create_app(scheduler: Scheduler, info: ServerInfo) -> ASGIApp:
    dispatch = Dispatcher(scheduler, info)
    app: ASGIApp = Starlette(routes=routes(dispatch), exception_handlers={HTTPException: _http_exception})
    if info.token:
        app = TokenAuth(app, info.token, info.team)
        # Browsers on an allowed origin: the preflight is answered before the token is asked for, and
        # every answer, errors included, says that origin may read it.
        app = cors(app, info.allow_origins)
        app = TcpGuard(app, info.host or "127.0.0.1", info.allow_origins, any_host=info.tls)
    return Shield(app)
