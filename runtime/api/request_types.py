"""The requests the daemon takes, as dataclasses with their validation (torch-free).

The fields several requests share are declared once, with their checkers, in a base class:
``_Request`` (every request: who asks, which model, its id, how long the model stays loaded),
``_Generation`` (requests that generate: length, steps, seed, streaming, sampling, time budget)
and ``_CodeRequest`` (requests about code: language, path, other files). A request class adds
its own text fields; those come first in its constructor, the shared ones are keyword-only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any, ClassVar, TypeVar

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import Checker, ExtraFile, ProtocolError, type_name
from diffgemma.runtime.api.config import (
    MAX_ALTERNATIVES,
    MAX_ID_LENGTH,
    MAX_STEPS,
    MAX_TIME_LIMIT_MS,
    MAX_TOKENS_LIMIT,
    SEED_MAX,
)

R = TypeVar("R", bound="_Request")

_ID = partial(checks.string, optional=True, max_length=MAX_ID_LENGTH, printable=True)


@dataclass(kw_only=True)
class _Request:
    """Every request; and the JSON (de)serialisation they share."""

    client: str | None = None  # supersession key: a newer request with the same key cancels this one
    model: str | None = None  # None: the daemon's default model
    id: str | None = None  # None: the daemon assigns one (returned in the result)
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    kind: ClassVar[str]
    _required: ClassVar[tuple[str, ...]] = ()
    _checks: ClassVar[dict[str, Checker]] = {
        "client": _ID,
        "model": partial(checks.string, optional=True, max_length=4096, printable=True),
        "id": _ID,
        "keep_alive": checks.keep_alive,
    }

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if not isinstance(data, dict):
            raise ProtocolError(f"request body must be a JSON object (got {type_name(data)})")
        names = {f.name for f in fields(cls)}
        unknown = [key for key in data if key not in names]
        if unknown:
            raise ProtocolError(f"unknown field {unknown[0]!r} in {cls.kind} request")
        for key in cls._required:
            if key not in data:
                raise ProtocolError(f"{cls.kind} request is missing the required field {key!r}")
        values = {key: cls._checks[key](key, value) for key, value in data.items()}
        return cls(**values)

    def validate(self: R) -> R:
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
    _required: ClassVar[tuple[str, ...]] = ("prefix", "suffix")
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

    @classmethod
    def from_json(cls, data: Any) -> InfillRequest:
        # with ``holes`` the text before the first hole is its prefix: ``prefix`` may be left out
        if isinstance(data, dict) and "holes" in data and "prefix" not in data:
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


@dataclass
class CancelRequest:
    id: str

    @classmethod
    def from_json(cls, data: Any) -> CancelRequest:
        if not isinstance(data, dict):
            raise ProtocolError(f"request body must be a JSON object (got {type_name(data)})")
        unknown = [key for key in data if key != "id"]
        if unknown:
            raise ProtocolError(f"unknown field {unknown[0]!r} in cancel request")
        if "id" not in data:
            raise ProtocolError("cancel request is missing the required field 'id'")
        return cls(id=checks.string("id", data["id"], max_length=MAX_ID_LENGTH, printable=True))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


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


def chat_messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ProtocolError("messages must be a non-empty array of {role, content} objects")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ProtocolError(f"messages[{i}] must be an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise ProtocolError(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": _content_text(f"messages[{i}].content", message.get("content"))})
    return out


def _token_ids(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise ProtocolError(f"{name} must be an array of integers")
    return value


@dataclass
class ChatRequest(_Generation):
    """Plain generation after the model's chat template (the engine's ``chat``)."""

    messages: list[dict[str, str]]

    kind: ClassVar[str] = "chat"
    _required: ClassVar[tuple[str, ...]] = ("messages",)
    _checks: ClassVar[dict[str, Checker]] = {**_Generation._checks, "messages": lambda _, v: chat_messages(v)}


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
        "tokens": _token_ids,
        "with_pieces": checks.boolean,
    }
