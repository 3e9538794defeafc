"""The fields of the compatibility request bodies (llama.cpp, OpenAI, Mistral), as checkers that are also
their JSON Schemas, and ``Body``: a body's fields plus what it becomes (torch-free).

Lenient the way the servers they imitate are: fields we have no use for are accepted and ignored, and
null means "not given", but a field we do use must have the right type; a wrong one is a one-line
ProtocolError. Every checker here accepts exactly what its schema (runtime.api.checks.DESCRIBERS)
says, so /openapi.json describes these bodies from the code that reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import DESCRIBERS, ExtraFile, Fields, ProtocolError, Schema, nullable, type_name
from diffgemma.runtime.api.config import MAX_TIME_LIMIT_MS, MAX_TOKENS_LIMIT, SEED_MAX

T = TypeVar("T")

# Far beyond any useful answer, but still a number: larger values are refused, smaller ones capped.
MAX_TOKENS_ACCEPTED = 2**31 - 1

text = partial(checks.string, optional=True)
flag = partial(checks.boolean, optional=True)


@dataclass(frozen=True)
class Body(Generic[T]):
    """A compatibility body: its fields, and ``build``, which turns their checked values into what the
    route runs (a daemon request and the codec that answers in the client's shape)."""

    fields: Fields
    build: Callable[[dict[str, Any]], T]

    def fields_spec(self) -> Fields:
        return self.fields

    def from_json(self, data: Any) -> T:
        return self.build(self.fields.read(data))

    def json_schema(self) -> Schema:
        return self.fields.json_schema()


def _token_limit_schema() -> Schema:
    return nullable({"type": "integer", "minimum": -1, "maximum": MAX_TOKENS_ACCEPTED})


def token_limit(name: str, value: Any) -> int | None:
    """llama.cpp ``n_predict`` / OpenAI ``max_tokens``: -1 or null is "until done" (the server's
    default); a large value is capped (Continue sends 4096), the scheduler caps it again to the
    daemon's limit; 0 asks for nothing (an empty answer at once)."""
    if value is None:
        return None
    number = checks.whole_number(value)
    if number is None:
        raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    if number == -1:
        return None
    if not 0 <= number <= MAX_TOKENS_ACCEPTED:
        raise ProtocolError(f"{name} must be -1 (no limit) or between 0 and {MAX_TOKENS_ACCEPTED} (got {number})")
    return min(number, MAX_TOKENS_LIMIT)

DESCRIBERS[token_limit] = _token_limit_schema


def _seed_schema() -> Schema:
    return nullable({"type": "integer"})


def seed(name: str, value: Any) -> int | None:
    """Any integer; outside 0..SEED_MAX (llama.cpp's -1) it means "random"."""
    if value is None:
        return None
    number = checks.whole_number(value)
    if number is None:
        raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    return number if 0 <= number <= SEED_MAX else None

DESCRIBERS[seed] = _seed_schema


def _count_schema(*, high: int) -> Schema:
    return nullable({"type": "integer", "minimum": 1, "maximum": high})


def count(name: str, value: Any, *, high: int) -> int:
    """OpenAI ``n`` / llama.cpp ``n_cmpl``: how many candidates, 1..high (null: 1)."""
    if value is None:
        return 1
    number = checks.whole_number(value)
    if number is None:
        raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    if not 1 <= number <= high:
        if high == 1:
            raise ProtocolError(f"{name} must be 1: several candidates are for completions, not chat (got {number})")
        # llama.vscode recognises llama.cpp's own wording for n_cmpl and adds its setting's name.
        raise ProtocolError(f"Field '{name}': Value must be between 1 <= value <= {high}, but got {number}")
    return number

DESCRIBERS[count] = _count_schema


def _stops_schema() -> Schema:
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]}


def stops(name: str, value: Any) -> list[str]:
    """Stop strings: one string or an array of them (empty ones are dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return [s for s in value if s]
    raise ProtocolError(f"{name} must be a string or an array of strings")

DESCRIBERS[stops] = _stops_schema


def _strings_schema() -> Schema:
    return nullable({"type": "array", "items": {"type": "string"}})


def strings(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
        raise ProtocolError(f"{name} must be an array of strings")
    return value

DESCRIBERS[strings] = _strings_schema


def _any_number_schema() -> Schema:
    return nullable({"type": "number"})


def any_number(name: str, value: Any) -> float | None:
    """A number we accept and ignore (sampler settings a diffusion canvas has no use for)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{name} must be a number (got {type_name(value)})")
    return float(value)

DESCRIBERS[any_number] = _any_number_schema


def time_limit(name: str, value: Any) -> int | None:
    """llama.cpp's ``t_max_predict_ms`` (also read on the OpenAI endpoints): a budget in milliseconds;
    <= 0 means none, more than the daemon's ceiling is capped."""
    number = any_number(name, value)
    if number is None or not math.isfinite(number) or number <= 0:
        return None
    return int(min(max(1.0, number), MAX_TIME_LIMIT_MS))

DESCRIBERS[time_limit] = _any_number_schema


def _integer_schema() -> Schema:
    return nullable({"type": "integer"})


def any_integer(name: str, value: Any) -> int | None:
    """An integer we accept and ignore."""
    if value is None:
        return None
    number = checks.whole_number(value)
    if number is None:
        raise ProtocolError(f"{name} must be an integer (got {type_name(value)})")
    return number

DESCRIBERS[any_integer] = _integer_schema


def _input_extra_schema() -> Schema:
    chunk = {"type": "object", "required": ["text"],
             "properties": {"filename": {"type": "string"}, "text": {"type": "string"}}}
    return nullable({"type": "array", "items": chunk})


def input_extra(name: str, value: Any) -> list[ExtraFile]:
    """llama.cpp's ``input_extra``: ``[{filename?, text}]`` (other keys ignored), the newest kept."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be an array of {{filename, text}} objects")
    extra = []
    for i, chunk in enumerate(value):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise ProtocolError(f"{name}[{i}] must be an object with a string text")
        filename = chunk.get("filename", "")
        if not isinstance(filename, str):
            raise ProtocolError(f"{name}[{i}].filename must be a string")
        extra.append(ExtraFile(path=filename, text=chunk["text"]))
    return checks.keep_recent(extra)  # llama.vim's ring may hold more than we use: the newest win

DESCRIBERS[input_extra] = _input_extra_schema


def _prompt_schema() -> Schema:
    one = {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}}
    return {"anyOf": [{"type": "string"}, one, {"type": "null"}]}


def prompt(name: str, value: Any) -> str:
    """A completion prompt: a string, or an array holding one (the APIs allow a batch; one prompt is
    all we take). Null is the empty prompt."""
    if value is None:
        return ""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string (or an array holding one string)")
    return value

DESCRIBERS[prompt] = _prompt_schema


SAMPLER_NUMBERS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                   "repeat_penalty", "n_indent", "t_max_prompt_ms", "typical_p", "mirostat")
IGNORED_SAMPLERS = {key: any_number for key in SAMPLER_NUMBERS}
