"""The HTTP edges of one request: its JSON body read and checked, a typed error answered.

A body is refused with a one-line reason for its size, encoding, syntax, lone surrogates or
absurd nesting before any handler sees it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive

from diffgemma.runtime.api.config import MAX_JSON_DEPTH
from diffgemma.runtime.api.errors import ErrorCode, WireError


def error_response(error: WireError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


class ClientGone(Exception):
    """The client went away while sending its body: nobody to answer."""


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


async def _read_body(request: Request, max_body: int) -> bytes:
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
        raise ClientGone() from None
    return b"".join(chunks)


async def read_json(request: Request, max_body: int) -> Any:
    """The request's JSON body, or a WireError with a one-line reason (size, encoding, syntax)."""
    raw = await _read_body(request, max_body)
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


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client has gone (http.disconnect); the body has been read already."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
