"""Field checkers for request bodies, and the small values they produce (torch-free).

Each checker takes (name, value) and returns the value (possibly normalised) or raises a one-line
``ProtocolError`` naming the field, so a typo never silently changes a request's meaning. A field's
bounds are keyword arguments, bound with ``functools.partial`` where a request declares the field:
nothing is built when the request classes load, and nothing runs until a body is checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffgemma.runtime.api.config import MAX_EXTRA_CHARS, MAX_EXTRA_FILES, MAX_HOLES, MAX_KEEP_ALIVE_S
from diffgemma.runtime.api.errors import InvalidValue

# Sampling overrides a request may carry in ``options`` (ollama style); names and meaning are
# those of runtime.engine.types.SamplingSettings.
SAMPLING_OPTIONS: dict[str, type] = {
    "entropy_bound": float,
    "t_min": float,
    "t_max": float,
    "stability_threshold": int,
    "confidence_threshold": float,
}


class ProtocolError(InvalidValue):
    """A request or response does not match the protocol; the message is one line."""


Checker = Callable[[str, Any], Any]


@dataclass
class ExtraFile:
    """A snippet from another file, placed in the prompt ahead of the prefix."""

    path: str
    text: str


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def string(name: str, value: Any, *, optional: bool = False, max_length: int | None = None,
           printable: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string (got {type_name(value)})")
    if max_length is not None and len(value) > max_length:
        raise ProtocolError(f"{name} is longer than {max_length} characters")
    # Ids travel in headers and log lines: no control characters (a newline would split both).
    if printable and not value.isprintable():
        raise ProtocolError(f"{name} must not contain control characters")
    return value


def integer(name: str, value: Any, *, low: int, high: int, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        # 3.0 from a JSON encoder that writes floats is still a whole number: accept it.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    if not low <= value <= high:
        raise ProtocolError(f"{name} must be between {low} and {high} (got {value})")
    return value


def number(name: str, value: Any, *, low: float, high: float, optional: bool = True, low_open: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{name} must be a number (got {type_name(value)})")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if math.isnan(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise ProtocolError(f"{name} must be in {bracket}{low:g}, {high:g}] (got {value:g})")
    return value


def boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false (got {type_name(value)})")
    return value


def holes(name: str, value: Any) -> Any:
    """``holes``: one object per hole, ``{"prefix": text before it}`` (since the previous hole;
    the request's ``prefix`` comes before the first one's, its ``suffix`` after the last hole)."""
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_HOLES:
        raise ProtocolError(f"{name} must be a list of 1 to {MAX_HOLES} objects (got {type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"prefix"}:
            raise ProtocolError(f"{name}[{i}] must be an object with one field, prefix")
        out.append({"prefix": string(f"{name}[{i}].prefix", item.get("prefix", ""))})
    return out


def keep_alive(name: str, value: Any) -> Any:
    # Seconds; 0 unloads right after the request, a negative value keeps the model forever.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProtocolError(f"{name} must be a number of seconds (got {type_name(value)})")
    if value > MAX_KEEP_ALIVE_S:
        raise ProtocolError(f"{name} must be at most {MAX_KEEP_ALIVE_S:g} seconds (got {value:g})")
    return float(value)


def extra(name: str, value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be an array of {{path, text}} objects (got {type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, ExtraFile):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise ProtocolError(f"{name}[{i}] must be an object with path and text (got {type_name(item)})")
        unknown = sorted(set(item) - {"path", "text"})
        if unknown:
            raise ProtocolError(f"{name}[{i}] has unknown field {unknown[0]!r} (expected path and text)")
        for key in ("path", "text"):
            if key not in item:
                raise ProtocolError(f"{name}[{i}] is missing {key!r}")
            if not isinstance(item[key], str):
                raise ProtocolError(f"{name}[{i}].{key} must be a string (got {type_name(item[key])})")
        out.append(ExtraFile(path=item["path"], text=item["text"]))
    return keep_recent(out)


def keep_recent(extra: list[ExtraFile]) -> list[ExtraFile]:
    """The most recent chunks (the list's end) within MAX_EXTRA_FILES and MAX_EXTRA_CHARS.

    Ring-buffer clients (llama.vim, llama.vscode) send chunks oldest first and let the user size
    the ring, so too much context is trimmed here, never refused.
    """
    kept: list[ExtraFile] = []
    chars = 0
    for item in reversed(extra):
        size = len(item.text) + len(item.path)
        if len(kept) >= MAX_EXTRA_FILES or chars + size > MAX_EXTRA_CHARS:
            break
        kept.append(item)
        chars += size
    kept.reverse()
    return kept


def options(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object (got {type_name(value)})")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        kind = SAMPLING_OPTIONS.get(key)
        if kind is None:
            raise ProtocolError(f"{name} has unknown option {key!r} (known: {', '.join(SAMPLING_OPTIONS)})")
        if kind is int:
            out[key] = integer(f"{name}.{key}", raw, low=0, high=1024, optional=False)
        else:
            out[key] = number(f"{name}.{key}", raw, low=0.0, high=1e6, optional=False, low_open=True)
    return out
