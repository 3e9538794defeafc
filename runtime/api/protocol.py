"""The daemon's wire protocol: request/response dataclasses and their validation (torch-free).

Shared by the server (which validates every body with ``from_json``) and the clients (which build
requests and read results). Validation is strict on purpose: unknown fields, wrong types and
absurd values are refused with a one-line ``ProtocolError`` so a typo never silently changes a
request's meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from diffgemma.runtime.api.errors import WireError

# Hard upper bounds. They keep one request from holding the worker for hours; the engine has
# its own, tighter, model-dependent checks on top.
MAX_TOKENS_LIMIT = 8192
MAX_STEPS = 1024  # same bound as SamplingSettings.steps
MAX_EXTRA_FILES = 64  # more chunks than this: the most recent ones are kept (never refused)
# Extra context kept per request, in characters: beyond it the oldest chunks are dropped. About
# 12k tokens of code, well inside the model's context next to a prefix, suffix and canvas.
MAX_EXTRA_CHARS = 48_000
MAX_ALTERNATIVES = 4  # OpenAI ``n`` / llama.cpp ``n_cmpl``: candidates denoised as one batch
MAX_TIME_LIMIT_MS = 3_600_000
MAX_KEEP_ALIVE_S = 7 * 24 * 3600.0
MAX_ID_LENGTH = 200
MAX_HOLES = 32  # several holes in one infill request (``holes``)

# Sampling overrides a request may carry in ``options`` (ollama style); names and meaning are
# those of runtime.types.SamplingSettings.
SAMPLING_OPTIONS: dict[str, type] = {
    "entropy_bound": float,
    "t_min": float,
    "t_max": float,
    "stability_threshold": int,
    "confidence_threshold": float,
}

FINISH_REASONS = ("stop", "length", "cancelled", "time")


class ProtocolError(ValueError):
    """A request or response does not match the protocol; the message is one line."""


# --- field checkers --------------------------------------------------------------------------
# Each checker takes (name, value) and returns the value (possibly normalised) or raises.

Checker = Callable[[str, Any], Any]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _string(optional: bool = False, max_length: int | None = None, printable: bool = False) -> Checker:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise ProtocolError(f"{name} must be a string (got {_type_name(value)})")
        if max_length is not None and len(value) > max_length:
            raise ProtocolError(f"{name} is longer than {max_length} characters")
        # Ids travel in headers and log lines: no control characters (a newline would split both).
        if printable and not value.isprintable():
            raise ProtocolError(f"{name} must not contain control characters")
        return value

    return check


def _integer(low: int, high: int, optional: bool = True) -> Checker:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            # 3.0 from a JSON encoder that writes floats is still a whole number: accept it.
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ProtocolError(f"{name} must be an integer (got {_type_name(value)})")
        if not low <= value <= high:
            raise ProtocolError(f"{name} must be between {low} and {high} (got {value})")
        return value

    return check


def _number(low: float, high: float, optional: bool = True, low_open: bool = False) -> Checker:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"{name} must be a number (got {_type_name(value)})")
        value = float(value)
        too_low = value <= low if low_open else value < low
        if math.isnan(value) or too_low or value > high:
            bracket = "(" if low_open else "["
            raise ProtocolError(f"{name} must be in {bracket}{low:g}, {high:g}] (got {value:g})")
        return value

    return check


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false (got {_type_name(value)})")
    return value


def _holes(name: str, value: Any) -> Any:
    """``holes``: one object per hole, ``{"prefix": text before it}`` (since the previous hole;
    the request's ``prefix`` comes before the first one's, its ``suffix`` after the last hole)."""
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_HOLES:
        raise ProtocolError(f"{name} must be a list of 1 to {MAX_HOLES} objects (got {_type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"prefix"}:
            raise ProtocolError(f"{name}[{i}] must be an object with one field, prefix")
        out.append({"prefix": _string()(f"{name}[{i}].prefix", item.get("prefix", ""))})
    return out


def _keep_alive(name: str, value: Any) -> Any:
    # Seconds; 0 unloads right after the request, a negative value keeps the model forever.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ProtocolError(f"{name} must be a number of seconds (got {_type_name(value)})")
    if value > MAX_KEEP_ALIVE_S:
        raise ProtocolError(f"{name} must be at most {MAX_KEEP_ALIVE_S:g} seconds (got {value:g})")
    return float(value)


def _extra(name: str, value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be an array of {{path, text}} objects (got {_type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, ExtraFile):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise ProtocolError(f"{name}[{i}] must be an object with path and text (got {_type_name(item)})")
        unknown = sorted(set(item) - {"path", "text"})
        if unknown:
            raise ProtocolError(f"{name}[{i}] has unknown field {unknown[0]!r} (expected path and text)")
        for key in ("path", "text"):
            if key not in item:
                raise ProtocolError(f"{name}[{i}] is missing {key!r}")
            if not isinstance(item[key], str):
                raise ProtocolError(f"{name}[{i}].{key} must be a string (got {_type_name(item[key])})")
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


def _options(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be an object (got {_type_name(value)})")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        kind = SAMPLING_OPTIONS.get(key)
        if kind is None:
            raise ProtocolError(f"{name} has unknown option {key!r} (known: {', '.join(SAMPLING_OPTIONS)})")
        if kind is int:
            out[key] = _integer(0, 1024, optional=False)(f"{name}.{key}", raw)
        else:
            out[key] = _number(0.0, 1e6, optional=False, low_open=True)(f"{name}.{key}", raw)
    return out


# --- requests --------------------------------------------------------------------------------

_COMMON_CHECKS: dict[str, Checker] = {
    "language": _string(optional=True, max_length=64),
    "path": _string(optional=True, max_length=4096),
    "extra": _extra,
    "max_tokens": _integer(1, MAX_TOKENS_LIMIT),
    "steps": _integer(1, MAX_STEPS),
    "seed": _integer(0, 2**63 - 1),
    "stream": _boolean,
    "client": _string(optional=True, max_length=MAX_ID_LENGTH, printable=True),
    "model": _string(optional=True, max_length=4096, printable=True),
    "id": _string(optional=True, max_length=MAX_ID_LENGTH, printable=True),
    "time_limit_ms": _integer(1, MAX_TIME_LIMIT_MS),
    "keep_alive": _keep_alive,
    "options": _options,
}

R = TypeVar("R", bound="_Request")


@dataclass
class ExtraFile:
    """A snippet from another file, placed in the prompt ahead of the prefix."""

    path: str
    text: str


class _Request:
    """Shared JSON (de)serialisation for InfillRequest and EditRequest."""

    _checks: ClassVar[dict[str, Checker]]
    _required: ClassVar[tuple[str, ...]]
    kind: ClassVar[str]

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if not isinstance(data, dict):
            raise ProtocolError(f"request body must be a JSON object (got {_type_name(data)})")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
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
        for f in fields(self):  # type: ignore[arg-type]
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


@dataclass
class InfillRequest(_Request):
    """Fill the hole between ``prefix`` and ``suffix``."""

    prefix: str
    suffix: str
    language: str | None = None
    path: str | None = None
    extra: list[ExtraFile] = field(default_factory=list)
    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    stream: bool = False
    client: str | None = None  # supersession key: a newer request with the same key cancels this one
    model: str | None = None  # None: the daemon's default model
    id: str | None = None  # None: the daemon assigns one (returned in the result)
    keep_alive: float | None = None  # seconds to keep the model loaded after this request
    options: dict[str, Any] | None = None  # sampling overrides, see SAMPLING_OPTIONS
    # wall-time budget: at its end the best draft so far is the answer (finish_reason "time")
    time_limit_ms: int | None = None
    alternatives: int | None = None  # distinct candidates, 1..MAX_ALTERNATIVES (Result.alternatives)
    # several holes: [{"prefix": text before each}], ``suffix`` after the last (Result.holes)
    holes: list[dict[str, str]] | None = None
    refine: bool | None = None  # syntax-guided repair (default: on where a grammar exists)
    confidence: bool | None = None  # per-token confidences in the result (Result.tokens)

    kind: ClassVar[str] = "infill"
    _required: ClassVar[tuple[str, ...]] = ("prefix", "suffix")
    _checks: ClassVar[dict[str, Checker]] = {
        "prefix": _string(),
        "suffix": _string(),
        "alternatives": _integer(1, MAX_ALTERNATIVES),
        "holes": _holes,
        "refine": _boolean,
        "confidence": _boolean,
        **_COMMON_CHECKS,
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
class EditRequest(_Request):
    """Rewrite ``selection`` (between ``prefix`` and ``suffix``), optionally following ``instruction``."""

    prefix: str
    selection: str
    suffix: str
    instruction: str | None = None
    strength: float | None = None  # 0: keep the selection as is, 1: rewrite freely
    language: str | None = None
    path: str | None = None
    extra: list[ExtraFile] = field(default_factory=list)
    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    stream: bool = False
    client: str | None = None
    model: str | None = None
    id: str | None = None
    keep_alive: float | None = None
    options: dict[str, Any] | None = None
    time_limit_ms: int | None = None

    kind: ClassVar[str] = "edit"
    _required: ClassVar[tuple[str, ...]] = ("prefix", "selection", "suffix")
    _checks: ClassVar[dict[str, Checker]] = {
        "prefix": _string(),
        "selection": _string(),
        "suffix": _string(),
        "instruction": _string(optional=True, max_length=10_000),
        "strength": _number(0.0, 1.0),
        **_COMMON_CHECKS,
    }


@dataclass
class CancelRequest:
    id: str

    @classmethod
    def from_json(cls, data: Any) -> CancelRequest:
        if not isinstance(data, dict):
            raise ProtocolError(f"request body must be a JSON object (got {_type_name(data)})")
        unknown = [key for key in data if key != "id"]
        if unknown:
            raise ProtocolError(f"unknown field {unknown[0]!r} in cancel request")
        if "id" not in data:
            raise ProtocolError("cancel request is missing the required field 'id'")
        return cls(id=_string(max_length=MAX_ID_LENGTH, printable=True)("id", data["id"]))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}


# --- responses -------------------------------------------------------------------------------


@dataclass
class Result:
    """The answer to an infill or edit request (also the ``{"type": "result"}`` stream line)."""

    text: str
    finish_reason: str  # "stop" | "length" | "cancelled" | "time" (the time budget ran out)
    timings: dict[str, Any]
    id: str
    model: str
    # distinct candidates when the request asked for alternatives; the first is ``text``
    alternatives: list[str] = field(default_factory=list)
    # when asked for (``confidence``): ``text`` token by token, [{"text", "confidence"}]
    tokens: list[dict[str, Any]] = field(default_factory=list)
    # several holes: one {"text", "tokens"?} per hole, in order (``text`` is the first one's)
    holes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("alternatives", "tokens", "holes"):
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Any) -> Result:
        # Lenient on extra keys (a newer daemon may add some, and stream lines carry "type").
        if not isinstance(data, dict):
            raise ProtocolError(f"result must be a JSON object (got {_type_name(data)})")
        try:
            text, reason, timings = data["text"], data["finish_reason"], data.get("timings", {})
        except KeyError as exc:
            raise ProtocolError(f"result is missing {exc.args[0]!r}") from None
        if not isinstance(text, str) or not isinstance(reason, str) or not isinstance(timings, dict):
            raise ProtocolError("result has fields of the wrong type")
        alternatives = data.get("alternatives") or []
        if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
            raise ProtocolError("result has fields of the wrong type")
        tokens, holes = data.get("tokens") or [], data.get("holes") or []
        if not isinstance(tokens, list) or not isinstance(holes, list) or not all(
                isinstance(x, dict) for x in [*tokens, *holes]):
            raise ProtocolError("result has fields of the wrong type")
        return cls(text=text, finish_reason=reason, timings=timings, id=str(data.get("id", "")),
                   model=str(data.get("model", "")), alternatives=alternatives, tokens=tokens, holes=holes)


def draft_line(step: int, text: str, request_id: str) -> dict[str, Any]:
    return {"type": "draft", "step": step, "text": text, "id": request_id}


def result_line(result: Result) -> dict[str, Any]:
    return {"type": "result", **result.to_json()}


def error_line(error: WireError, request_id: str | None = None) -> dict[str, Any]:
    """The NDJSON error line: the typed error object, its HTTP status and the request's id."""
    return {"type": "error", **error.body(), "status": error.status, "id": request_id}


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
    raise ProtocolError(f"{name} must be a string or an array of text parts (got {_type_name(value)})")


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


@dataclass
class ChatRequest:
    """Plain generation after the model's chat template (the engine's ``chat``)."""

    messages: list[dict[str, str]]
    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    stream: bool = False
    client: str | None = None
    model: str | None = None
    id: str | None = None
    keep_alive: float | None = None
    options: dict[str, Any] | None = None
    time_limit_ms: int | None = None
    kind: ClassVar[str] = "chat"


@dataclass
class TokenizeRequest:
    """``/tokenize`` (content -> ids) or ``/detokenize`` (tokens -> content)."""

    content: str | None = None
    tokens: list[int] | None = None
    with_pieces: bool = False
    client: str | None = None
    id: str | None = None
    model: str | None = None
    keep_alive: float | None = None
    kind: ClassVar[str] = "tokenize"


# --- JSON schema (for /openapi.json), generated from the dataclasses and their checkers ----------

_SCHEMA_HINTS: dict[str, dict[str, Any]] = {
    "prefix": {"type": "string", "description": "Text before the hole."},
    "suffix": {"type": "string", "description": "Text after the hole."},
    "selection": {"type": "string", "description": "The text to rewrite."},
    "instruction": {"type": "string", "description": "What to change (optional)."},
    "strength": {"type": "number", "minimum": 0, "maximum": 1,
                 "description": "0 keeps the selection, 1 rewrites freely."},
    "language": {"type": "string", "description": "Language id (python, rust, ...)."},
    "path": {"type": "string", "description": "The file's path, shown to the model."},
    "extra": {"type": "array", "description": "Snippets of other files (the most recent ones within the "
                                              "context budget are used).",
              "items": {"type": "object", "additionalProperties": False, "required": ["path", "text"],
                        "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
    "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS,
              "description": "Maximum denoising steps per canvas."},
    "seed": {"type": "integer", "minimum": 0},
    "stream": {"type": "boolean", "description": "NDJSON: one draft line per step, then the result."},
    "client": {"type": "string", "description": "Supersession key: a newer request cancels older ones."},
    "model": {"type": "string", "description": "Model name or path; default: the daemon's model."},
    "id": {"type": "string", "description": "Request id (for /v1/cancel); assigned when absent."},
    "time_limit_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIME_LIMIT_MS,
                      "description": "Time budget: at its end the best draft so far is the answer "
                                     "(finish_reason \"time\")."},
    "alternatives": {"type": "integer", "minimum": 1, "maximum": MAX_ALTERNATIVES,
                     "description": "Distinct candidates denoised as one batch (Result.alternatives)."},
    "keep_alive": {"type": "number", "description": "Seconds to keep the model loaded; 0 unloads now."},
    "options": {"type": "object", "additionalProperties": False, "description": "Sampling overrides.",
                "properties": {k: {"type": "integer" if t is int else "number"}
                               for k, t in SAMPLING_OPTIONS.items()}},
}


def json_schema(cls: type) -> dict[str, Any]:
    """A JSON schema for a request dataclass: its fields, required ones, no additional properties."""
    props = {f.name: _SCHEMA_HINTS.get(f.name, {}) for f in fields(cls)}
    required = list(getattr(cls, "_required", ()))
    if cls is CancelRequest:
        props, required = {"id": {"type": "string"}}, ["id"]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text", "finish_reason", "timings", "id", "model"],
    "properties": {
        "text": {"type": "string"},
        "finish_reason": {"type": "string", "enum": list(FINISH_REASONS)},
        "timings": {"type": "object", "description": "encode_ms, steps, ms_per_step, tokens_per_forward, "
                                                     "cached_tokens, encoded_tokens, generated_tokens, "
                                                     "canvases, total_ms, queue_ms"},
        "id": {"type": "string"},
        "model": {"type": "string"},
        "alternatives": {"type": "array", "items": {"type": "string"}},
    },
}
