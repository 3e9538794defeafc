"""The requests the daemon takes, as dataclasses with their validation (torch-free).

The fields several requests share are declared once, with their checkers, in a base class:
``_Request`` (every request: who asks, which model, its id, how long the model stays loaded),
``_Generation`` (requests that generate: length, steps, seed, streaming, sampling, time budget)
and ``_CodeRequest`` (requests about code: language, path, other files). A request class adds
its own text fields; those come first in its constructor, the shared ones are keyword-only.

A field's checker is also its JSON Schema (runtime.api.checks), and ``_docs`` says what it means:
``json_schema()`` is what /openapi.json publishes for the request, from the same declarations that
``from_json`` validates with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any, ClassVar, TypeVar

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import DESCRIBERS, Checker, ExtraFile, Fields, ProtocolError, Schema, type_name
from diffgemma.runtime.api.config import (
    MAX_ALTERNATIVES,
    MAX_ID_LENGTH,
    MAX_STEPS,
    MAX_TIME_LIMIT_MS,
    MAX_TOKENS_LIMIT,
    SEED_MAX,
)

W = TypeVar("W", bound="WireObject")

_ID = partial(checks.string, optional=True, max_length=MAX_ID_LENGTH, printable=True)


@dataclass(kw_only=True)
class WireObject:
    """A JSON object the daemon reads, declared field by field: ``_checks`` (a checker per field,
    which is also its JSON Schema), ``_required``, ``_docs`` (what each field means)."""

    kind: ClassVar[str]
    _required: ClassVar[tuple[str, ...]] = ()
    _checks: ClassVar[dict[str, Checker]] = {}
    _docs: ClassVar[dict[str, str]] = {}

    @classmethod
    def fields_spec(cls) -> Fields:
        return Fields(name=cls.__name__, kind=cls.kind, checks=cls._checks, required=cls._required,
                      docs=cls._docs, description=(cls.__doc__ or "").strip().split("\n")[0])

    @classmethod
    def from_json(cls: type[W], data: Any) -> W:
        return cls(**cls.fields_spec().read(data))

    @classmethod
    def json_schema(cls) -> Schema:
        return cls.fields_spec().json_schema()

    def validate(self: W) -> W:
        """Check a request built in Python (the clients call this before sending)."""
        return type(self).from_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._required:
                out[f.name] = value
            elif f.name == "extra":
                if value:
                    out["extra"] = [asdict(e) if isinstance(e, ExtraFile) else dict(e) for e in value]
            elif f.name == "stream":
                if value:
                    out["stream"] = True
            elif value is not None:
                out[f.name] = value
        return out


@dataclass(kw_only=True)
class _Request(WireObject):
    """Every request."""

    client: str | None = None  # supersession key: a newer request with the same key cancels this one
    model: str | None = None  # None: the daemon's default model
    id: str | None = None  # None: the daemon assigns one (returned in the result)
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    _checks: ClassVar[dict[str, Checker]] = {
        "client": _ID,
        "model": partial(checks.string, optional=True, max_length=4096, printable=True),
        "id": _ID,
        "keep_alive": checks.keep_alive,
    }
    _docs: ClassVar[dict[str, str]] = {
        "client": "Supersession key: a newer request with the same key cancels this one.",
        "model": "Model name, checkpoint path or /v1/models id; default: the daemon's model.",
        "id": "Request id (for /v1/cancel); assigned when absent.",
        "keep_alive": "Seconds to keep the model loaded after this request; 0 unloads it, a negative "
                      "value keeps it.",
    }


@dataclass(kw_only=True)
class _Generation(_Request):
    """A request that generates text."""

    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    stream: bool = False
    options: dict[str, Any] | None = None  # sampling overrides, see checks.SAMPLING_OPTIONS
    # wall-time budget: at its end the best draft so far is the answer (finish_reason "time")
    time_limit_ms: int | None = None

    _checks: ClassVar[dict[str, Checker]] = {
        **_Request._checks,
        "max_tokens": partial(checks.integer, low=1, high=MAX_TOKENS_LIMIT),
        "steps": partial(checks.integer, low=1, high=MAX_STEPS),
        "seed": partial(checks.integer, low=0, high=SEED_MAX),
        "stream": checks.boolean,
        "options": checks.options,
        "time_limit_ms": partial(checks.integer, low=1, high=MAX_TIME_LIMIT_MS),
    }
    _docs: ClassVar[dict[str, str]] = {
        **_Request._docs,
        "max_tokens": "Largest answer, in tokens (the daemon caps it at its --max-tokens); default: the lengths "
                      "the daemon tries.",
        "steps": "Most denoising steps per canvas (capped at the daemon's --max-steps).",
        "seed": "Seed of the canvas noise: the same request and seed give the same answer.",
        "stream": "NDJSON: one draft line per denoising step, then the result line.",
        "options": "Sampling overrides; the temperature falls from the higher of t_max and t_min to the lower.",
        "time_limit_ms": "Time budget: at its end the best draft so far is the answer (finish_reason \"time\").",
    }


@dataclass(kw_only=True)
class _CodeRequest(_Generation):
    """A request about a file's code."""

    language: str | None = None
    path: str | None = None
    extra: list[ExtraFile] = field(default_factory=list)

    _checks: ClassVar[dict[str, Checker]] = {
        **_Generation._checks,
        "language": partial(checks.string, optional=True, max_length=64),
        "path": partial(checks.string, optional=True, max_length=4096),
        "extra": checks.extra,
    }
    _docs: ClassVar[dict[str, str]] = {
        **_Generation._docs,
        "language": "Language id (python, rust, ...): the grammar the window was cut with.",
        "path": "The file's path, shown to the model.",
        "extra": "Snippets of other files (the most recent ones within the context budget are used).",
    }


@dataclass
class InfillRequest(_CodeRequest):
    """Fill the hole between ``prefix`` and ``suffix``."""

    prefix: str
    suffix: str
    alternatives: int | None = None  # distinct candidates, 1..MAX_ALTERNATIVES (Result.alternatives)
    # several holes: [{"prefix": text before each}], ``suffix`` after the last (Result.holes)
    holes: list[dict[str, str]] | None = None
    refine: bool | None = None  # syntax-guided repair (default: on where a grammar exists)
    confidence: bool | None = None  # per-token confidences in the result (Result.tokens)
    allow_broken: bool | None = None  # skip the syntax gate (default: an answer never adds syntax errors)

    kind: ClassVar[str] = "infill"
    _required: ClassVar[tuple[str, ...]] = ("suffix",)
    _checks: ClassVar[dict[str, Checker]] = {
        **_CodeRequest._checks,
        "prefix": checks.string,
        "suffix": checks.string,
        "alternatives": partial(checks.integer, low=1, high=MAX_ALTERNATIVES),
        "holes": checks.holes,
        "refine": checks.boolean,
        "confidence": checks.boolean,
        "allow_broken": checks.boolean,
    }
    _docs: ClassVar[dict[str, str]] = {
        **_CodeRequest._docs,
        "prefix": "Text before the hole (with holes: before the first one's own prefix); default empty, the "
                  "start of a file.",
        "suffix": "Text after the hole (with holes: after the last one).",
        "alternatives": "Distinct candidates denoised as one batch (Result.alternatives); with holes, distinct "
                        "sets of fills (Result.holes[i].alternatives).",
        "holes": "Several holes: the text before each (since the previous hole); the answer has one entry per "
                 "hole (Result.holes).",
        "refine": "Syntax-guided repair (default: on where a grammar exists).",
        "confidence": "Per-token confidences in the result (Result.tokens) and the drafts.",
        "allow_broken": "Skip the syntax gate: the answer may add syntax errors (by default it never does; "
                        "finish_reason \"syntax\" and Result.reason say when it was cut or left empty).",
    }

    @classmethod
    def from_json(cls, data: Any) -> InfillRequest:
        # no prefix: the hole is at the start of the text (with ``holes``, the first hole's own prefix)
        if isinstance(data, dict) and "prefix" not in data:
            data = {**data, "prefix": ""}
        return super().from_json(data)

    def pieces(self) -> list[str]:
        """The fixed text around the holes (one more piece than holes)."""
        if not self.holes:
            return [self.prefix, self.suffix]
        heads = [h["prefix"] for h in self.holes]
        return [self.prefix + heads[0], *heads[1:], self.suffix]


@dataclass
class EditRequest(_CodeRequest):
    """Rewrite ``selection`` (between ``prefix`` and ``suffix``), optionally following ``instruction``."""

    prefix: str
    selection: str
    suffix: str
    instruction: str | None = None
    strength: float | None = None  # 0: keep the selection as is, 1: rewrite freely
    refine: bool | None = None  # syntax-guided repair (default: on where a grammar exists)
    confidence: bool | None = None  # per-token confidences in the result (Result.tokens)
    allow_broken: bool | None = None  # skip the syntax gate (default: a rewrite never adds syntax errors)

    kind: ClassVar[str] = "edit"
    _required: ClassVar[tuple[str, ...]] = ("prefix", "selection", "suffix")
    _checks: ClassVar[dict[str, Checker]] = {
        **_CodeRequest._checks,
        "prefix": checks.string,
        "selection": checks.string,
        "suffix": checks.string,
        "instruction": partial(checks.string, optional=True, max_length=10_000),
        "strength": partial(checks.number, low=0.0, high=1.0),
        "refine": checks.boolean,
        "confidence": checks.boolean,
        "allow_broken": checks.boolean,
    }
    _docs: ClassVar[dict[str, str]] = {
        **_CodeRequest._docs,
        "prefix": "Text before the selection.",
        "selection": "The text to rewrite.",
        "suffix": "Text after the selection.",
        "instruction": "What to change (optional).",
        "strength": "0 keeps the selection as is, 1 rewrites freely.",
        "refine": "Syntax-guided repair (default: on where a grammar exists).",
        "confidence": "Per-token confidences in the result (Result.tokens) and the drafts.",
        "allow_broken": "Skip the syntax gate: the answer may add syntax errors (by default it never does; "
                        "finish_reason \"syntax\" and Result.reason say when it was cut or left empty).",
    }


@dataclass
class CancelRequest(WireObject):
    """Cancel a queued or running request by its id."""

    id: str

    kind: ClassVar[str] = "cancel"
    _required: ClassVar[tuple[str, ...]] = ("id",)
    _checks: ClassVar[dict[str, Checker]] = {"id": partial(checks.string, max_length=MAX_ID_LENGTH, printable=True)}
    _docs: ClassVar[dict[str, str]] = {"id": "The id the request was sent with (or the one its answer gave)."}


# --- chat and tokens (the OpenAI / llama.cpp compatibility endpoints) ---------------------------

CHAT_ROLES = ("system", "user", "assistant", "developer", "tool")


def _content_text(name: str, value: Any) -> str:
    """A message's content: a string, or OpenAI's array of parts of which the text ones count."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ProtocolError(f"{name}[{i}] must be a text part {{type: text, text}}")
            texts.append(part["text"])
        return "".join(texts)
    raise ProtocolError(f"{name} must be a string or an array of text parts (got {type_name(value)})")


def _messages_schema() -> Schema:
    part = {"type": "object", "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
    content = {"anyOf": [{"type": "string"}, {"type": "array", "items": part}, {"type": "null"}]}
    message = {"type": "object", "required": ["role"],
               "properties": {"role": {"enum": list(CHAT_ROLES)}, "content": content}}
    return {"type": "array", "minItems": 1, "items": message}


def check_messages(name: str, value: Any) -> list[dict[str, str]]:
    """Chat messages ``[{role, content}]``: a content is a string, OpenAI's text parts, or null (empty);
    other keys of a message (name, tool calls) are ignored."""
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"{name} must be a non-empty array of {{role, content}} objects")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ProtocolError(f"{name}[{i}] must be an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise ProtocolError(f"{name}[{i}].role must be one of {', '.join(CHAT_ROLES)}")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": _content_text(f"{name}[{i}].content", message.get("content"))})
    return out

DESCRIBERS[check_messages] = _messages_schema


def chat_messages(value: Any) -> list[dict[str, str]]:
    return check_messages("messages", value)


def _token_ids_schema(*, optional: bool = True) -> Schema:
    return checks.nullable({"type": "array", "items": {"type": "integer", "minimum": 0}}, optional)


def token_ids(name: str, value: Any, *, optional: bool = True) -> Any:
    """Token ids (the model's vocabulary decides which exist: the worker checks that)."""
    if value is None and optional:
        return None
    ids = [checks.whole_number(t) for t in value] if isinstance(value, list) else None
    if ids is None or any(t is None or t < 0 for t in ids):
        raise ProtocolError(f"{name} must be an array of non-negative integers")
    return ids

DESCRIBERS[token_ids] = _token_ids_schema


@dataclass
class ChatRequest(_Generation):
    """Plain generation after the model's chat template (the engine's ``chat``)."""

    messages: list[dict[str, str]]

    kind: ClassVar[str] = "chat"
    _required: ClassVar[tuple[str, ...]] = ("messages",)
    _checks: ClassVar[dict[str, Checker]] = {**_Generation._checks, "messages": check_messages}


@dataclass
class TokenizeRequest(_Request):
    """``/tokenize`` (content -> ids) or ``/detokenize`` (tokens -> content)."""

    content: str | None = None
    tokens: list[int] | None = None
    with_pieces: bool = False

    kind: ClassVar[str] = "tokenize"
    _checks: ClassVar[dict[str, Checker]] = {
        **_Request._checks,
        "content": partial(checks.string, optional=True),
        "tokens": token_ids,
        "with_pieces": checks.boolean,
    }
