"""Clients for the diffgemma daemon: sync and async, over its Unix socket or TCP (torch-free).

    client = ensure_daemon()                       # start the daemon when none answers
    result = client.infill(InfillRequest(prefix="def add(a, b):\\n    return ", suffix="\\n"))

Streaming: a request with ``stream`` set is streamed; pass ``on_draft`` (which streams any request)
and it receives each ``{"type": "draft", ...}`` line as it arrives.
Closing the connection (or cancelling an ``AsyncClient`` call's task) cancels the daemon's work.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from diffgemma.runtime.api import config, errors
from diffgemma.runtime.api.errors import DaemonError, DaemonGone, DaemonUnavailable, ErrorCode, one_line
from diffgemma.runtime.api.next_edit import NextEditRequest, NextEditResult
from diffgemma.runtime.api.protocol import EditRequest, InfillRequest, ProtocolError, Result
from diffgemma.runtime.api.remote import URL_LIKE, Remote, refuse_url_socket, tls_context
from diffgemma.runtime.api.token_file import read_token

DraftCallback = Callable[[dict[str, Any]], None]
AnyResult = TypeVar("AnyResult", bound=Result)  # Result, or NextEditResult for /v1/next-edit

# Host name used in URLs sent over the Unix socket; the socket is the real address.
_UDS_BASE_URL = "http://diffgemma"
# How long a local daemon may take to answer its status before it counts as not answering (a
# stopped one never does; a busy one answers at once: status never waits for the model).
STATUS_TIMEOUT_S = 5.0


__all__ = ["AsyncClient", "Client", "DaemonError", "DaemonGone", "DaemonUnavailable", "DraftCallback",
           "connect_remote", "ensure_daemon"]


class StateDirToken(httpx.Auth):
    """The bearer token of the state directory, read for each request: a TCP daemon writes it on
    its first start, which may come after this client was made (the client that starts it)."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = read_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _error_from_response(response: httpx.Response, body: bytes | None = None) -> DaemonError:
    raw = body if body is not None else response.content
    message, code = "", None
    try:
        data = json.loads(raw)
    except ValueError:
        message = one_line(raw.decode("utf-8", "replace"), default="")
    else:
        if isinstance(data, dict) and "error" in data:
            message, code = errors.parse_error_body(data)
        elif isinstance(data, dict) and data.get("detail"):  # an ASGI layer's own answer
            message = one_line(data["detail"], default="")
    if not message:
        message = response.reason_phrase or "error"
    status = response.status_code
    return DaemonError(f"daemon answered {status}: {one_line(message)}", status=status, code=code)


def _describe(socket: Path | None, base_url: str | None) -> str:
    return base_url if base_url else f"socket {socket}"


def _parse_stream_line(line: str, on_draft: DraftCallback | None,
                       parse: Callable[[Any], AnyResult] = Result.from_json,  # type: ignore[assignment]
                       ) -> AnyResult | None:
    """The result when ``line`` carries it; drafts go to ``on_draft``; other line types are skipped.

    Lines of types this version does not know (and fields it does not know in a draft, such as
    ``final``) are ignored, so a newer daemon can add to the stream without breaking us.
    """
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except ValueError:
        raise DaemonError(f"daemon sent a malformed stream line: {line[:80]!r}") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "draft":
        if on_draft is not None:
            on_draft(data)
        return None
    if kind == "result":
        try:
            return parse(data)
        except ProtocolError as exc:
            raise DaemonError(f"daemon sent a malformed result: {exc}") from None
    if kind == "error":
        message, code = errors.parse_error_body(data)
        status = data.get("status")
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        raise DaemonError(message, status=status, code=code)
    if not isinstance(data, dict):
        raise DaemonError(f"daemon sent a malformed stream line: {line[:80]!r}")
    return None


def _parse_result(response: httpx.Response, parse: Callable[[Any], AnyResult]) -> AnyResult:
    try:
        return parse(response.json())
    except (ValueError, ProtocolError) as exc:
        raise DaemonError(f"daemon sent a malformed result: {one_line(exc)}") from None


class _Base:
    def __init__(self, socket: str | Path | None, base_url: str | None, token: str | None, timeout: float,
                 transport: type[httpx.HTTPTransport] | type[httpx.AsyncHTTPTransport],
                 verify: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.socket = None if self.base_url else Path(socket) if socket else config.default_socket_path()
        if self.socket is not None and URL_LIKE.match(str(self.socket)):
            refuse_url_socket(self.socket, "--socket" if socket else config.ENV_SOCKET)
        self.token = token  # None over TCP: the state directory's, read as each request is sent
        self.timeout = timeout
        if verify is None and self.base_url and self.base_url.startswith("https:"):
            verify = tls_context()  # the system's certificate store
        # What the sync or async httpx client is built with: the address, auth, the certificate
        # check and timeouts (connecting is instant or fails; reading may take as long as a generation).
        self._http_options: dict[str, Any] = {
            "base_url": self.base_url or _UDS_BASE_URL,
            "transport": transport(uds=str(self.socket)) if self.socket else None,
            "headers": {"Authorization": f"Bearer {self.token}"} if self.token else {},
            "auth": StateDirToken() if token is None and self.base_url else None,
            "timeout": httpx.Timeout(timeout, connect=5.0),
            **({"verify": verify} if verify is not None else {}),
        }

    @property
    def address(self) -> str:
        return _describe(self.socket, self.base_url)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """httpx's failures to reach the daemon as DaemonErrors (around sync and awaited calls alike)."""
        try:
            yield
        except httpx.TimeoutException:
            raise DaemonError(f"the daemon on {self.address} did not answer within {self.timeout:g} s") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # Connected and sent: the daemon closed the connection instead of answering.
            raise DaemonGone(f"the daemon on {self.address} stopped while answering ({one_line(exc)})") from None
        except (httpx.TransportError, OSError) as exc:
            reason = one_line(exc)
            if self.base_url is None:
                hint = "start one with `diffgemma daemon start`"
            elif _bad_certificate(exc):
                hint = "give its certificate, or its authority's, with --ca-cert"
            else:
                hint = "is the URL right, and the daemon there running?"
            raise DaemonUnavailable(f"no diffgemma daemon answers on {self.address} ({reason}); {hint}") from None


def _bad_certificate(exc: BaseException) -> bool:
    """Whether a failure to connect was the server's certificate failing the check."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Client(_Base):
    """Synchronous client (httpx). ``verify``: how an HTTPS daemon's certificate is checked
    (runtime/api/remote.py's ``tls_context``; default: the system's certificate store)."""

    def __init__(self, socket: str | Path | None = None, base_url: str | None = None,
                 token: str | None = None, timeout: float = 600.0, verify: ssl.SSLContext | None = None) -> None:
        super().__init__(socket, base_url, token, timeout, httpx.HTTPTransport, verify)
        self._http = httpx.Client(**self._http_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            response = self._http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def health(self) -> bool:
        """True when a daemon answers on the address (False, never an exception, when none does)."""
        try:
            return self._request("GET", "/health", timeout=5.0).status_code == 200
        except DaemonError:
            return False

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/v1/status").json()

    def infill(self, req: InfillRequest, on_draft: DraftCallback | None = None) -> Result:
        return self._generate("/v1/infill", req, on_draft, Result.from_json)

    def edit(self, req: EditRequest, on_draft: DraftCallback | None = None) -> Result:
        return self._generate("/v1/edit", req, on_draft, Result.from_json)

    def next_edit(self, req: NextEditRequest, on_draft: DraftCallback | None = None) -> NextEditResult:
        """The edits proposed after ``req.edits`` (empty, with a reason, when none is confident)."""
        return self._generate("/v1/next-edit", req, on_draft, NextEditResult.from_json)

    def cancel(self, request_id: str) -> bool:
        """True when the daemon knew the request (queued or running) and cancelled it."""
        return bool(self._request("POST", "/v1/cancel", json={"id": request_id}).json().get("cancelled"))

    def _generate(self, url: str, req: InfillRequest | EditRequest | NextEditRequest, on_draft: DraftCallback | None,
                  parse: Callable[[Any], AnyResult]) -> AnyResult:
        body = req.to_json()  # streamed as the request says, or when drafts have a callback
        if on_draft is not None:
            body["stream"] = True
        if not body.get("stream"):
            return _parse_result(self._request("POST", url, json=body), parse)
        with self._reaching(), self._http.stream("POST", url, json=body) as response:
            if response.status_code >= 400:
                raise _error_from_response(response, response.read())
            for line in response.iter_lines():
                result = _parse_stream_line(line, on_draft, parse)
                if result is not None:
                    return result
        raise DaemonGone(f"the daemon on {self.address} closed the stream before sending a result")


class AsyncClient(_Base):
    """Asynchronous client; cancelling the awaiting task closes the connection (and the daemon's work)."""

    def __init__(self, socket: str | Path | None = None, base_url: str | None = None,
                 token: str | None = None, timeout: float = 600.0, verify: ssl.SSLContext | None = None) -> None:
        super().__init__(socket, base_url, token, timeout, httpx.AsyncHTTPTransport, verify)
        self._http = httpx.AsyncClient(**self._http_options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            response = await self._http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    async def health(self) -> bool:
        try:
            return (await self._request("GET", "/health", timeout=5.0)).status_code == 200
        except DaemonError:
            return False

    async def status(self) -> dict[str, Any]:
        return (await self._request("GET", "/v1/status")).json()

    async def infill(self, req: InfillRequest, on_draft: DraftCallback | None = None) -> Result:
        return await self._generate("/v1/infill", req, on_draft, Result.from_json)

    async def edit(self, req: EditRequest, on_draft: DraftCallback | None = None) -> Result:
        return await self._generate("/v1/edit", req, on_draft, Result.from_json)

    async def next_edit(self, req: NextEditRequest, on_draft: DraftCallback | None = None) -> NextEditResult:
        """The edits proposed after ``req.edits`` (empty, with a reason, when none is confident)."""
        return await self._generate("/v1/next-edit", req, on_draft, NextEditResult.from_json)

    async def cancel(self, request_id: str) -> bool:
        response = await self._request("POST", "/v1/cancel", json={"id": request_id})
        return bool(response.json().get("cancelled"))

    async def _generate(self, url: str, req: InfillRequest | EditRequest | NextEditRequest,
                        on_draft: DraftCallback | None,
                        parse: Callable[[Any], AnyResult]) -> AnyResult:
        body = req.to_json()  # streamed as the request says, or when drafts have a callback
        if on_draft is not None:
            body["stream"] = True
        if not body.get("stream"):
            return _parse_result(await self._request("POST", url, json=body), parse)
        with self._reaching():
            async with self._http.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    raise _error_from_response(response, await response.aread())
                async for line in response.aiter_lines():
                    result = _parse_stream_line(line, on_draft, parse)
                    if result is not None:
                        return result
        raise DaemonGone(f"the daemon on {self.address} closed the stream before sending a result")


def ensure_daemon(model: str | None = None, socket: str | Path | None = None,
                  on_progress: Callable[[str], None] | None = None, timeout: float = 300.0) -> Client:
    """A Client to a healthy daemon on ``socket``; starts one in the background when none answers.

    The daemon started is `diffgemma serve` (runtime/api/autostart.py), so it honours the same
    DIFFGEMMA_* variables. Progress ("starting daemon…", "loading model X…") goes to
    ``on_progress``, and so does the daemon's notice (which model stands in for the real one) when
    this call started it. Raises DaemonUnavailable with a one-line reason when no daemon can be
    started, a daemon holds the socket without answering, or the model did not load.
    """
    say = on_progress or (lambda _line: None)
    sock = Path(socket) if socket else config.default_socket_path()
    client = Client(socket=sock)
    try:  # a daemon that answers and is ready is the common case: one round trip
        status: dict[str, Any] | None = client._request("GET", "/v1/status", timeout=STATUS_TIMEOUT_S).json()
    except DaemonError:
        # None answered in time: start_daemon looks at the lock's holder first, and names one
        # that is stopped (SIGSTOP, Ctrl-Z) at once rather than waiting for it.
        status = None
    if status is None or status.get("state") == "loading":
        from diffgemma.runtime.api.autostart import start_daemon  # starts one, or waits while it loads
        from diffgemma.runtime.api.daemon_config import DaemonConfig, DaemonStartError

        try:
            started = start_daemon(client, DaemonConfig(model=model, socket=sock), say, timeout)
        except DaemonStartError as exc:
            client.close()
            raise DaemonUnavailable(str(exc), code=_wire_code(exc.code)) from None
        status = started.status
        if started.started and status and status.get("notice"):
            say(str(status["notice"]))  # once per daemon start (`diffgemma status` shows it too)
    if status and status.get("state") == "loading":
        client.close()
        raise DaemonUnavailable(f"the model did not finish loading within {timeout:g} s")
    return client


def connect_remote(remote: Remote, on_progress: Callable[[str], None] | None = None,
                   timeout: float = 300.0) -> Client:
    """A Client to the daemon at ``remote.url``, which must answer and take our token: a daemon
    elsewhere is never started from here. Waits while it loads its model, reporting progress."""
    say = on_progress or (lambda _line: None)
    client = Client(base_url=remote.url, token=remote.token, verify=remote.verify())
    try:
        status: dict[str, Any] | None = client._request("GET", "/v1/status", timeout=10.0).json()
        if status is not None and status.get("state") == "loading":
            from diffgemma.runtime.api.autostart import wait_for_load

            status = wait_for_load(client, say, time.monotonic() + timeout)
    except DaemonError as exc:
        client.close()
        if exc.code is not ErrorCode.UNAUTHORIZED:
            raise
        given = ("" if remote.token else
                 "; no token was sent: give yours with --token, --token-file or $DIFFGEMMA_TOKEN")
        raise DaemonUnavailable(f"the daemon at {remote.url} refused the token: {exc}{given}",
                                status=exc.status, code=exc.code) from None
    if status and status.get("notice"):
        say(str(status["notice"]))
    return client


def _wire_code(code: object) -> ErrorCode | None:
    """A start failure's code as a wire error code, when it is one (e.g. model_load_failed)."""
    try:
        return ErrorCode(code) if isinstance(code, str) else None
    except ValueError:
        return None
