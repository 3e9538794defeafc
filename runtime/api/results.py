"""What the daemon answers: the result of an infill or edit, the NDJSON stream lines, and the small
answers of its own API (torch-free).

These types are the answers' schemas in /openapi.json (the daemon renders them with pydantic), so
they are declared with ``typing_extensions.TypedDict``, which it reads on every Python we support.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NotRequired, cast, get_args

from typing_extensions import TypedDict

from diffgemma.runtime.api.checks import ProtocolError, type_name
from diffgemma.runtime.api.errors import ErrorCode, WireError

# Why an answer ended. "time": the request's time budget ran out (in any phase: denoising or
# repair) and the best draft so far is the answer (a diffusion draft is always a whole answer).
# "syntax": the syntax gate cut the answer or left it empty, because as the model wrote it it added
# syntax errors to the code (``Result.reason`` says which; a limit's reason wins when both apply).
# The engine's results use the same type.
FinishReason = Literal["stop", "length", "cancelled", "time", "syntax"]
FINISH_REASONS: tuple[str, ...] = get_args(FinishReason)
HoleState = Literal["final", "refining", "waiting"]
HOLE_STATES: tuple[str, ...] = get_args(HoleState)


class ErrorDetail(TypedDict):
    """What went wrong: one line for people, the OpenAI-style type, and the code decisions look up."""

    message: str
    type: str
    code: ErrorCode


class ErrorBody(TypedDict):
    """Every error answer, on every endpoint (and each error event of a stream)."""

    error: ErrorDetail


class TokenConfidence(TypedDict):
    """One token of an answer: its text as it shows in the answer, and the probability the model gave it."""

    text: str
    confidence: float


class HoleAnswer(TypedDict):
    """One hole of a several-hole answer: its fill, token by token when asked for, and its alternatives
    (index k of every hole's list is set k; set 0 is the answer)."""

    text: str
    tokens: NotRequired[list[TokenConfidence]]
    alternatives: NotRequired[list[str]]


@dataclass
class Result:
    """The answer to an infill or edit request (also the ``{"type": "result"}`` stream line). ``timings``:
    encode_ms, steps, ms_per_step, tokens_per_forward, prompt_tokens, cached_tokens, encoded_tokens,
    generated_tokens, canvases, decoder_tokens, refine_rounds, total_ms, queue_ms, load_ms, daemon_ms.
    ``reason``: one line when the syntax gate changed the answer (finish_reason "syntax", or a limit's)."""

    text: str
    # "time": the time budget ran out (the best draft so far is the answer); "syntax": the syntax gate
    # cut the answer or left it empty (``reason`` says why)
    finish_reason: FinishReason
    timings: dict[str, float]
    id: str
    model: str
    # distinct candidates when the request asked for alternatives; the first is ``text``
    alternatives: list[str] = field(default_factory=list)
    # when asked for (``confidence``): ``text`` token by token; empty when the syntax gate answered with
    # other text than (a head of) what the model wrote
    tokens: list[TokenConfidence] = field(default_factory=list)
    # several holes: one entry per hole, in order (``text`` is the first one's). With alternatives asked
    # for, every hole's ``alternatives`` has the same length and index k of each is set k, one joint set
    # of fills; set 0 is the answer (`alternative_sets`)
    holes: list[HoleAnswer] = field(default_factory=list)
    # one line when the syntax gate changed the answer: the error the model's text added and what was
    # kept instead (None otherwise)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("alternatives", "tokens", "holes", "reason"):
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
        tokens, holes, why = data.get("tokens") or [], data.get("holes") or [], data.get("reason") or None
        if not isinstance(tokens, list) or not isinstance(holes, list) or not all(
                isinstance(x, dict) for x in [*tokens, *holes]) or not isinstance(why, str | None):
            raise ProtocolError("result has fields of the wrong type")
        # a newer daemon may send a finish reason this one does not know: it is kept as sent
        return cls(text=text, finish_reason=cast(FinishReason, reason), timings=timings, id=str(data.get("id", "")),
                   model=str(data.get("model", "")), alternatives=alternatives, tokens=tokens, holes=holes,
                   reason=why)


class DraftHole(TypedDict):
    """One hole in a draft: "final" (filled, will not change), "refining" (being denoised) or "waiting"."""

    text: str
    state: HoleState
    tokens: NotRequired[list[TokenConfidence]]


class DraftLine(TypedDict):
    """An NDJSON stream line: the canvas after one denoising step."""

    type: Literal["draft"]
    step: int
    text: str  # the fill so far (with holes: the first hole's)
    id: str
    canvas: NotRequired[int]
    final: NotRequired[bool]  # this canvas is committed: later text only extends it
    tokens: NotRequired[list[TokenConfidence]]  # with confidence: ``text`` token by token
    holes: NotRequired[list[DraftHole]]  # several holes: every hole in order
    phase: NotRequired[Literal["repairing"]]  # the steps are over: syntax repair round ``round`` runs on ``text``
    round: NotRequired[int]  # with phase: the repair round (1-based)


class ErrorLine(TypedDict):
    """The NDJSON line of a request that failed after its stream began."""

    type: Literal["error"]
    error: ErrorDetail
    status: int
    id: str | None


class CancelAnswer(TypedDict):
    """Whether a queued or running request with that id was found and cancelled."""

    id: str
    cancelled: bool


class Health(TypedDict):
    status: Literal["ok"]


def draft_line(step: int, text: str, request_id: str) -> DraftLine:
    """A ``{"type": "draft"}`` line: the canvas after one denoising step; the optional keys are added
    by the daemon as the draft has them (`DraftLine`)."""
    return {"type": "draft", "step": step, "text": text, "id": request_id}


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


def error_line(error: WireError, request_id: str | None = None) -> ErrorLine:
    """The NDJSON error line: the typed error object, its HTTP status and the request's id."""
    return {"type": "error", "error": error.body()["error"], "status": error.status, "id": request_id}
