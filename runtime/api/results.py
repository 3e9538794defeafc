"""What the daemon answers: the result of an infill or edit, and the NDJSON stream lines (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diffgemma.runtime.api.checks import ProtocolError, type_name
from diffgemma.runtime.api.errors import WireError

FINISH_REASONS = ("stop", "length", "cancelled", "time")


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
            raise ProtocolError(f"result must be a JSON object (got {type_name(data)})")
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
