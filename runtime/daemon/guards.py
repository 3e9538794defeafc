"""The ASGI layers around the routes: on TCP the Origin/Host guard, CORS for the origins allowed and
the bearer token, and for every transport a shield that turns whatever escapes into a typed 500."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.team import Team
from diffgemma.runtime.daemon.wire import error_response

log = logging.getLogger("diffgemma.daemon")


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
    do not) or whose Host names another machine, before the token is even looked at.

    Over HTTPS (``any_host``) every Host is accepted: a rebound name fails the browser's certificate
    check before any request is sent, and a team reaches its server by whatever name it is given.
    """

    def __init__(self, app: ASGIApp, host: str, allow_origins: tuple[str, ...], any_host: bool = False) -> None:
        self.app, self.host, self.allow_origins, self.any_host = app, host, allow_origins, any_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if not self.any_host and not host_allowed(host, self.host):
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


def cors(app: ASGIApp, allow_origins: tuple[str, ...]) -> ASGIApp:
    """CORS for the origins ``--allow-origin`` names (Starlette's middleware): a preflight from one is
    answered here, before the token is asked for (a browser sends no credentials with it), and every
    answer to one, errors included, carries ``Access-Control-Allow-Origin``, so the page can read the
    error too. Any request header may be sent (the token's ``Authorization``, SDKs' own headers).
    Other origins never get here: TcpGuard refuses them first."""
    if not allow_origins:
        return app
    return CORSMiddleware(app, allow_origins=list(allow_origins), allow_methods=["GET", "POST"],
                          allow_headers=["*"], expose_headers=["X-Request-Id"], max_age=600)


class TokenAuth:
    """Demand ``Authorization: Bearer <token>`` on every request but /health (TCP mode): the
    daemon's own token, or a developer's from the tokens file (the request then runs as them)."""

    def __init__(self, app: ASGIApp, token: str, team: Team | None = None) -> None:
        self.app = app
        self.token = token.encode()
        self.team = team

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
        # Constant-time comparisons, all of them made: the answer time must not reveal how much of
        # a guess was right, nor whether it was close to the owner's token or a developer's.
        developer = self.team.tokens.identify(given) if self.team is not None else None
        owner = hmac.compare_digest(given, self.token)
        if developer is not None and self.team is not None:
            await self.team.serve_as(developer, self.app, scope, receive, send)
        elif owner:
            await self.app(scope, receive, send)
        else:
            hint = "ask the daemon's operator for yours" if self.team is not None else "see the daemon's token file"
            await _refuse(scope, receive, send, WireError(
                ErrorCode.UNAUTHORIZED, f"missing or wrong bearer token ({hint})"), {"WWW-Authenticate": "Bearer"})


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

