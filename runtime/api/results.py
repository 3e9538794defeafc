"""What the daemon answers: the result of an infill or edit, and the NDJSON stream lines (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from diffgemma.runtime.api.checks import ProtocolError, type_name
from diffgemma.runtime.api.errors import WireError

# Why an answer ended. "time": the request's time budget ran out and the best draft so far is the
# answer (a diffusion draft is always a whole answer). The engine's results use the same type.
FinishReason = Literal["stop", "length", "cancelled", "time"]
FINISH_REASONS: tuple[str, ...] = get_args(FinishReason)


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
    # several holes: one {"text", "tokens"?, "alternatives"?} per hole, in order (``text`` is the
    # first one's). With alternatives asked for, every hole's ``alternatives`` has the same length
    # and index k of each is set k, one joint set of fills; set 0 is the answer (`alternative_sets`)
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
    """A ``{"type": "draft"}`` line: the canvas after one denoising step. Optional keys: ``canvas``,
    ``final`` (one hole), ``phase`` and ``round`` ("repairing": syntax repair round ``round`` runs on
    ``text``), ``tokens`` (with ``confidence``), and for several holes ``holes``: one
    ``{"text", "state", "tokens"?}`` per hole in order, ``state`` one of `HOLE_STATES` ("final":
    filled and will not change, "refining": being denoised, "waiting": not started); ``text`` is
    then the first hole's."""
    return {"type": "draft", "step": step, "text": text, "id": request_id}


HOLE_STATES = ("final", "refining", "waiting")


def draft_holes(draft: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
    """A draft line's ``holes`` when they are ``count`` well-formed entries, else None."""
    holes = draft.get("holes")
    if not isinstance(holes, list) or len(holes) != count:
        return None
    for hole in holes:
        if not (isinstance(hole, dict) and isinstance(hole.get("text"), str) and hole.get("state") in HOLE_STATES):
            return None
    return holes


def alternative_sets(result: Result) -> list[list[str]]:
    """Several holes with alternatives: the distinct sets of fills, set k holding every hole's
    ``alternatives[k]`` (set 0 the answer); [] when the result has none. A result whose holes
    disagree on how many sets there are is a protocol error."""
    lists = [h.get("alternatives") for h in result.holes]
    if not lists or all(a is None for a in lists):
        return []
    if not all(isinstance(a, list) and all(isinstance(t, str) for t in a) for a in lists):
        raise ProtocolError("result holes have alternatives of the wrong type")
    sizes = {len(a) for a in lists if a is not None}
    if len(sizes) != 1:
        raise ProtocolError("result holes have alternatives of different lengths")
    return [list(s) for s in zip(*[a for a in lists if a is not None], strict=True)]


def result_line(result: Result) -> dict[str, Any]:
    return {"type": "result", **result.to_json()}


def error_line(error: WireError, request_id: str | None = None) -> dict[str, Any]:
    """The NDJSON error line: the typed error object, its HTTP status and the request's id."""
    return {"type": "error", **error.body(), "status": error.status, "id": request_id}
