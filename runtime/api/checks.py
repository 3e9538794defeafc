"""Field checkers for request bodies, the JSON Schema each one accepts, and the small values they produce
(torch-free).

Each checker takes (name, value) and returns the value (possibly normalised) or raises a one-line
``ProtocolError`` naming the field, so a typo never silently changes a request's meaning. A field's
bounds are keyword arguments, bound with ``functools.partial`` where a request declares the field:
nothing is built when the request classes load, and nothing runs until a body is checked.

Every checker is registered with a describer (``DESCRIBERS``) that takes the same keywords and
returns the JSON Schema of exactly the values the checker accepts, so /openapi.json is generated from
the code that validates (``schema_of``), never kept beside it. ``Fields`` is a JSON object's fields as
checkers: it reads a body and describes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from diffgemma.runtime.api.config import (
    MAX_EXTRA_CHARS,
    MAX_EXTRA_FILES,
    MAX_HOLES,
    MAX_KEEP_ALIVE_S,
    MAX_OPTION_VALUE,
    MAX_STABILITY_THRESHOLD,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
)
from diffgemma.runtime.api.errors import InvalidValue

Schema = dict[str, Any]
Checker = Callable[[str, Any], Any]


class ProtocolError(InvalidValue):
    """A request or response does not match the protocol; the message is one line."""


@dataclass
class ExtraFile:
    """A snippet from another file, placed in the prompt ahead of the prefix."""

    path: str
    text: str


# --- checkers and what they accept --------------------------------------------------------------

# Each checker's describer: called with the keywords a request binds to the checker, it gives the
# JSON Schema of exactly the values the checker accepts. A checker is registered right after its
# definition (``DESCRIBERS[checker] = describer``), not by a decorator, so importing the
# checkers runs none of the package's functions.
DESCRIBERS: dict[Callable[..., Any], Callable[..., Schema]] = {}


def schema_of(checker: Checker) -> Schema:
    """The JSON Schema of the values ``checker`` accepts (a registered checker, maybe partially bound)."""
    fn, keywords = (checker.func, checker.keywords) if isinstance(checker, partial) else (checker, {})
    describe = DESCRIBERS.get(fn)
    if describe is None:
        raise LookupError(f"the checker {getattr(fn, '__name__', fn)!r} has no JSON Schema (register it in DESCRIBERS)")
    return describe(**keywords)


def registered_checkers() -> dict[Callable[..., Any], Callable[..., Schema]]:
    """Every checker with its describer (the tests compare their keywords)."""
    return dict(DESCRIBERS)


def nullable(schema: Schema, optional: bool = True) -> Schema:
    """``schema``, also accepting null when ``optional`` (null means: not given)."""
    if not optional:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


# Ids travel in headers and log lines: no control characters (a newline would split both), nor the
# line and paragraph separators some log readers break lines at. Anything else (private use,
# unassigned code points, spaces of every kind) is a character like any other.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
_CONTROL_RE = re.compile(f"[{_CONTROL}]")
NO_CONTROL_PATTERN = f"^[^{_CONTROL}]*$"


def _string_schema(*, optional: bool = False, max_length: int | None = None, printable: bool = False) -> Schema:
    schema: Schema = {"type": "string"}
    if max_length is not None:
        schema["maxLength"] = max_length
    if printable:
        schema["pattern"] = NO_CONTROL_PATTERN
    return nullable(schema, optional)


def string(name: str, value: Any, *, optional: bool = False, max_length: int | None = None,
           printable: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string (got {type_name(value)})")
    if max_length is not None and len(value) > max_length:
        raise ProtocolError(f"{name} is longer than {max_length} characters")
    if printable and _CONTROL_RE.search(value):
        raise ProtocolError(f"{name} must not contain control characters")
    return value

DESCRIBERS[string] = _string_schema


def whole_number(value: Any) -> int | None:
    """An integer given as a JSON number: 3, or 3.0 from an encoder that writes floats (JSON Schema's
    "integer" is any number without a fraction); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _integer_schema(*, low: int, high: int, optional: bool = True) -> Schema:
    return nullable({"type": "integer", "minimum": low, "maximum": high}, optional)


def integer(name: str, value: Any, *, low: int, high: int, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    number = whole_number(value)
    if number is None:
        raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    if not low <= number <= high:
        raise ProtocolError(f"{name} must be between {low} and {high} (got {number})")
    return number

DESCRIBERS[integer] = _integer_schema


def _number_schema(*, low: float, high: float, optional: bool = True, low_open: bool = False) -> Schema:
    schema: Schema = {"type": "number", "exclusiveMinimum" if low_open else "minimum": low, "maximum": high}
    return nullable(schema, optional)


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

DESCRIBERS[number] = _number_schema


def _boolean_schema(*, optional: bool = False) -> Schema:
    return nullable({"type": "boolean"}, optional)


def boolean(name: str, value: Any, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false (got {type_name(value)})")
    return value

DESCRIBERS[boolean] = _boolean_schema


def _holes_schema() -> Schema:
    hole = {"type": "object", "additionalProperties": False, "properties": {"prefix": {"type": "string"}}}
    return nullable({"type": "array", "minItems": 1, "maxItems": MAX_HOLES, "items": hole})


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

DESCRIBERS[holes] = _holes_schema


def _keep_alive_schema() -> Schema:
    return nullable({"type": "number", "maximum": MAX_KEEP_ALIVE_S})


def keep_alive(name: str, value: Any) -> Any:
    # Seconds; 0 unloads right after the request, a negative value keeps the model forever.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProtocolError(f"{name} must be a number of seconds (got {type_name(value)})")
    if value > MAX_KEEP_ALIVE_S:
        raise ProtocolError(f"{name} must be at most {MAX_KEEP_ALIVE_S:g} seconds (got {value:g})")
    return float(value)

DESCRIBERS[keep_alive] = _keep_alive_schema


def _extra_schema() -> Schema:
    item = {"type": "object", "additionalProperties": False, "required": ["path", "text"],
            "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}
    return nullable({"type": "array", "items": item})


def fields(name: str, value: Any, keys: tuple[str, ...], *, strings: bool = False) -> dict[str, Any]:
    """``value`` as an object with exactly ``keys`` (each a string when ``strings``); a one-line
    error names the first thing wrong."""
    listed = " and ".join(keys)
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object with {listed} (got {type_name(value)})")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ProtocolError(f"{name} has unknown field {unknown[0]!r} (expected {listed})")
    for key in keys:
        if key not in value:
            raise ProtocolError(f"{name} is missing {key!r}")
        if strings and not isinstance(value[key], str):
            raise ProtocolError(f"{name}.{key} must be a string (got {type_name(value[key])})")
    return value


def extra(name: str, value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be an array of {{path, text}} objects (got {type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, ExtraFile):
            item = ExtraFile(**fields(f"{name}[{i}]", item, ("path", "text"), strings=True))
        out.append(item)
    return keep_recent(out)

DESCRIBERS[extra] = _extra_schema


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


# Sampling overrides a request may carry in ``options`` (ollama style), with the range of each; names
# and meaning are those of runtime.engine.types.SamplingSettings, whose checks use the same limits.
SAMPLING_OPTIONS: dict[str, Checker] = {
    "entropy_bound": partial(number, low=0.0, high=MAX_OPTION_VALUE, optional=False, low_open=True),
    "t_min": partial(number, low=MIN_TEMPERATURE, high=MAX_TEMPERATURE, optional=False),
    "t_max": partial(number, low=MIN_TEMPERATURE, high=MAX_TEMPERATURE, optional=False),
    "stability_threshold": partial(integer, low=0, high=MAX_STABILITY_THRESHOLD, optional=False),
    "confidence_threshold": partial(number, low=0.0, high=MAX_OPTION_VALUE, optional=False, low_open=True),
}


def _options_schema() -> Schema:
    properties = {key: schema_of(check) for key, check in SAMPLING_OPTIONS.items()}
    return nullable({"type": "object", "additionalProperties": False, "properties": properties})


def options(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object (got {type_name(value)})")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        check = SAMPLING_OPTIONS.get(key)
        if check is None:
            raise ProtocolError(f"{name} has unknown option {key!r} (known: {', '.join(SAMPLING_OPTIONS)})")
        out[key] = check(f"{name}.{key}", raw)
    return out

DESCRIBERS[options] = _options_schema


# --- a JSON object's fields -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fields:
    """The fields of a JSON object body: a checker per field (which also gives its JSON Schema), the
    required ones, a description per field. ``strict`` objects refuse unknown fields (the daemon's own
    requests: a typo must not change a request's meaning); the others ignore them (other clients'
    wire shapes, whose servers accept fields we have no use for)."""

    name: str  # the body's schema name in /openapi.json
    kind: str  # how messages name it: "{kind} request is missing ..."
    checks: Mapping[str, Checker]
    required: tuple[str, ...] = ()
    docs: Mapping[str, str] = field(default_factory=dict)
    strict: bool = True
    description: str = ""

    def read(self, data: Any) -> dict[str, Any]:
        """The checked values of the known fields ``data`` holds, or a one-line ProtocolError."""
        if not isinstance(data, dict):
            raise ProtocolError(f"request body must be a JSON object (got {type_name(data)})")
        if self.strict:
            unknown = [key for key in data if key not in self.checks]
            if unknown:
                raise ProtocolError(f"unknown field {unknown[0]!r} in {self.kind} request")
        for key in self.required:
            if key not in data:
                raise ProtocolError(f"{self.kind} request is missing the required field {key!r}")
        return {key: self.checks[key](key, value) for key, value in data.items() if key in self.checks}

    def json_schema(self) -> Schema:
        properties = {}
        for key, check in self.checks.items():
            schema = schema_of(check)
            doc = self.docs.get(key)
            properties[key] = {**schema, "description": doc} if doc else schema
        out: Schema = {"type": "object", "properties": properties}
        if self.required:
            out["required"] = list(self.required)
        if self.strict:
            out["additionalProperties"] = False
        if self.description:
            out["description"] = self.description
        return out
