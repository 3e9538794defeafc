"""Checked parameters of our own requests and commands: anything malformed is InvalidParams,
never a crash. pygls hands custom-request params over as namedtuples; tests send dicts."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from .jsonrpc import UINTEGER_MAX, invalid_params


def field(value: Any, name: str) -> Any:
    """A field of custom-request params, from a dict or a namedtuple alike."""
    return value[name] if isinstance(value, dict) else getattr(value, name)


def uinteger(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINTEGER_MAX:
        raise invalid_params(f"{what} must be an integer from 0 to {UINTEGER_MAX} (got {value!r})")
    return value


def position_from(value: Any, what: str = "position") -> types.Position:
    try:
        line, character = field(value, "line"), field(value, "character")
    except (KeyError, AttributeError, TypeError):
        raise invalid_params(f"{what} must be {{line, character}}") from None
    return types.Position(line=uinteger(line, f"{what}.line"), character=uinteger(character, f"{what}.character"))


def range_from(value: Any) -> types.Range:
    try:
        start, end = field(value, "start"), field(value, "end")
    except (KeyError, AttributeError, TypeError):
        raise invalid_params("range must be {start, end}") from None
    return types.Range(start=position_from(start, "range.start"), end=position_from(end, "range.end"))


def text_document_position(value: Any, method: str) -> tuple[str, types.Position]:
    """(uri, position) of ``{textDocument: {uri}, position}`` params."""
    try:
        uri = field(field(value, "textDocument"), "uri")
        where = field(value, "position")
    except (KeyError, AttributeError, TypeError):
        raise invalid_params(f"{method} takes {{textDocument: {{uri}}, position}}") from None
    if not isinstance(uri, str):
        raise invalid_params("textDocument.uri must be a string")
    return uri, position_from(where)
