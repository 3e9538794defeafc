"""Typed errors on the wire, one shape for every endpoint (torch-free).

Every error the daemon sends is ``{"error": {"message": str, "type": str, "code": str}}`` with
the HTTP status of its code: the OpenAI / llama.cpp shape, which the openai SDK, llama.vscode
and llama.cpp's own clients read (``error.message``, ``error.type``, ``error.code``). Decisions
on the other side (the CLI's exit code, the language server's message) look up ``code``; no
decision anywhere depends on the wording of ``message``.

Stream lines carry the same object: ``{"type": "error", "error": {...}, "status": N}``.

Here too is what every part of diffgemma shares about its own errors: ``DiffgemmaError``, the base
of every error the project raises on purpose (``InvalidValue`` for a value the caller gave that is
malformed or out of range), the client's ``DaemonError``, and ``one_line``, the one way an error
becomes its first line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the answer types live with the other answers (runtime.api.results)
    from diffgemma.runtime.api.results import ErrorBody


class ErrorCode(StrEnum):
    """What went wrong, as a stable identifier (the ``code`` field)."""

    INVALID_REQUEST = "invalid_request"  # a field is missing, of the wrong type, or out of range
    INVALID_JSON = "invalid_json"  # the body is not JSON (or not UTF-8, or nested too deeply)
    BODY_TOO_LARGE = "body_too_large"
    UNAUTHORIZED = "unauthorized"  # missing or wrong bearer token
    FORBIDDEN = "forbidden"  # Origin or Host not allowed
    NOT_FOUND = "not_found"  # no such endpoint
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"  # the request names a model this daemon may not serve
    MODEL_LOCKED = "model_locked"  # --fixed-model: no loading or unloading by request
    NO_MODEL = "no_model"  # the request names no model and the daemon has none
    DUPLICATE_ID = "duplicate_id"
    QUEUE_FULL = "queue_full"
    MODEL_LOAD_FAILED = "model_load_failed"
    ENGINE_UNAVAILABLE = "engine_unavailable"  # no server behind the daemon's engine answers (vLLM)
    CANCELLED = "cancelled"
    INTERNAL = "internal_error"


# code -> (HTTP status, OpenAI-style ``type``)
_SPEC: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorCode.INVALID_JSON: (400, "invalid_request_error"),
    ErrorCode.BODY_TOO_LARGE: (413, "invalid_request_error"),
    ErrorCode.UNAUTHORIZED: (401, "authentication_error"),
    ErrorCode.FORBIDDEN: (403, "permission_error"),
    ErrorCode.NOT_FOUND: (404, "not_found_error"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "invalid_request_error"),
    ErrorCode.MODEL_NOT_FOUND: (404, "invalid_request_error"),
    ErrorCode.MODEL_LOCKED: (403, "permission_error"),
    ErrorCode.NO_MODEL: (400, "invalid_request_error"),
    ErrorCode.DUPLICATE_ID: (409, "invalid_request_error"),
    ErrorCode.QUEUE_FULL: (503, "server_busy"),
    ErrorCode.MODEL_LOAD_FAILED: (500, "model_error"),
    ErrorCode.ENGINE_UNAVAILABLE: (502, "server_error"),
    ErrorCode.CANCELLED: (499, "cancelled"),
    ErrorCode.INTERNAL: (500, "server_error"),
}


def status_of(code: ErrorCode) -> int:
    return _SPEC[code][0]


def type_of(code: ErrorCode) -> str:
    return _SPEC[code][1]


def one_line(text: object, default: str | None = None) -> str:
    """The first non-blank line of a message or an exception, stripped (errors are shown and sent as
    one line). When there is none: ``default`` if given, else an exception's type name, else "error"."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    if default is not None:
        return default
    return type(text).__name__ if isinstance(text, BaseException) else "error"


class DiffgemmaError(Exception):
    """The base of the errors diffgemma raises on purpose: each one's message is one line for people,
    and what code does about it depends on its class (and ``code``, where it has one), never on the
    wording."""


class InvalidValue(DiffgemmaError, ValueError):
    """A value the caller gave is malformed or out of range: a request field, a setting, a config key."""


class DaemonError(DiffgemmaError):
    """The daemon answered with an error, or its answer made no sense. The message is one line.

    ``code`` is the wire error's code (None for an answer without one: an older daemon, a proxy,
    a broken stream) and ``status`` its HTTP status; decisions look at these, never at the text.
    """

    def __init__(self, message: str, status: int | None = None, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DaemonUnavailable(DaemonError):
    """No daemon is listening (or it cannot be reached)."""


class DaemonGone(DaemonUnavailable):
    """The daemon took the request and then went away without answering (it crashed or was
    killed while working on it): a new daemon may well answer the same request."""


@dataclass
class WireError(DiffgemmaError):
    """An error with its code; raise it anywhere in the daemon, it becomes the typed body."""

    code: ErrorCode
    message: str

    def __post_init__(self) -> None:
        super().__init__(self.message)
        self.message = one_line(self.message)

    @property
    def status(self) -> int:
        return status_of(self.code)

    def body(self) -> ErrorBody:
        return error_body(self.code, self.message)


def error_body(code: ErrorCode, message: str) -> ErrorBody:
    return {"error": {"message": one_line(message), "type": type_of(code), "code": code}}


def parse_error_body(data: Any) -> tuple[str, ErrorCode | None]:
    """(message, code) from an error body; tolerant of the old ``{"error": "text"}`` shape and of
    codes this version does not know (they come back as None)."""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = one_line(err.get("message") or "error")
        raw = err.get("code")
        try:
            return message, ErrorCode(raw) if isinstance(raw, str) else None
        except ValueError:
            return message, None
    if isinstance(err, str):
        return one_line(err), None
    return "error", None
