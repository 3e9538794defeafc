"""The server's JSON-RPC protocol: every request gets an answer, whatever its params.

pygls structures each message into its lsprotocol type before any handler sees it. When that
fails (``params: 5``, no params, a negative or non-integer position, one of 2^31 or more) it
logs the error and drops the message, so the client waits forever for an answer. Here such a
request is answered at once with InvalidParams (-32602), and the errors our own handlers raise
on purpose (JsonRpcException) are answered without a traceback in the log.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol

from diffgemma.runtime.api.errors import one_line

log = logging.getLogger(__name__)

# LSP integers and uintegers are 32-bit: what lsprotocol accepts for a position.
UINTEGER_MAX = 2**31 - 1


class _Dropped:
    """Stands for a message already answered while it was being structured."""

    jsonrpc = None


DROPPED = _Dropped()


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_uinteger(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINTEGER_MAX


def bad_position(value: Any, depth: int = 0) -> str | None:
    """What is wrong with the first malformed ``{line, character}`` object in ``value``, if any.

    lsprotocol's converter is lenient where LSP is not: it turns 1.5, "3" and true into
    integers. A position is two uintegers; anything else is refused before it is structured.
    """
    if depth > 16:
        return None
    if isinstance(value, dict):
        if "line" in value and "character" in value and len(value) == 2:
            for key in ("line", "character"):
                if not _is_uinteger(value[key]):
                    return f"{key} must be an integer from 0 to {UINTEGER_MAX} (got {value[key]!r})"
            return None
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        if (problem := bad_position(child, depth + 1)) is not None:
            return problem
    return None


class DiffgemmaProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]) -> Any:
        is_request = "jsonrpc" in data and "method" in data and "id" in data
        if is_request and (problem := bad_position(data.get("params"))) is not None:
            return self._refuse(data, problem)
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not is_request:
                # a notification (nobody waits for an answer) or a response we cannot place
                log.warning("dropped a malformed %s message", data.get("method") or "response")
                return DROPPED
            cause = exc.__cause__
            return self._refuse(data, one_line(cause) if cause else "malformed params")

    def _refuse(self, data: dict[str, Any], problem: str) -> _Dropped:
        msg_id = data["id"] if _valid_id(data["id"]) else None
        error = JsonRpcInvalidParams(f"invalid params for {data['method']}: {problem}")
        self._send_response(msg_id, error=error.to_response_error())  # type: ignore[arg-type]
        return DROPPED

    def handle_message(self, message: Any) -> None:
        if message is DROPPED:
            return
        super().handle_message(message)

    def _send_handler_result(self, future: Future[Any], *, msg_id: Any) -> None:
        # An error a handler raises on purpose (bad params) is an answer, not a crash to log.
        if not future.cancelled() and isinstance(future.exception(), JsonRpcException):
            self._request_futures.pop(msg_id, None)
            error = future.exception()
            assert isinstance(error, JsonRpcException)
            log.info("request %s: %s", msg_id, error.message)
            self._send_response(msg_id, error=error.to_response_error())
            return
        super()._send_handler_result(future, msg_id=msg_id)


def invalid_params(message: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(message)
