"""Engine-facing value types, shared by the engine, the daemon and the clients (torch-free)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from diffgemma.runtime.api import config
from diffgemma.runtime.api.errors import InvalidValue
from diffgemma.runtime.api.results import (  # one definition each, the wire's; engine modules import them here
    DraftHole,
    FinishReason,
    HoleState,  # where a hole stands in a draft: filled (will not change), being denoised, not started yet
    TokenConfidence,
)


class SettingsError(InvalidValue):
    """A sampling setting or request option is out of range; the message is one line for the user."""


class Cancelled(Exception):
    """The request was cancelled (by the client, a disconnect, or a newer request)."""


class CancelToken:
    """Checked by the engine once per denoising step; ``cancel()`` from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("request cancelled")


@dataclass(frozen=True)
class SamplingSettings:
    """Per-request sampling overrides. ``None`` means: the checkpoint's generation config."""

    steps: int | None = None  # maximum denoising steps per canvas
    entropy_bound: float | None = None
    t_min: float | None = None
    t_max: float | None = None
    seed: int | None = None
    stability_threshold: int | None = None
    confidence_threshold: float | None = None

    def validate(self) -> SamplingSettings:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise SettingsError(message)

        if self.steps is not None:
            check(isinstance(self.steps, int) and not isinstance(self.steps, bool), "steps must be an integer")
            check(1 <= self.steps <= config.MAX_STEPS,
                  f"steps must be between 1 and {config.MAX_STEPS} (got {self.steps})")
        if self.entropy_bound is not None:
            check(self.entropy_bound > 0, f"entropy_bound must be > 0 (got {self.entropy_bound})")
        for name in ("t_min", "t_max"):  # the schedule's two ends, in either order (runner.resolve)
            value = getattr(self, name)
            if value is not None:
                check(config.MIN_TEMPERATURE <= value <= config.MAX_TEMPERATURE,
                      f"{name} must be in [{config.MIN_TEMPERATURE:g}, {config.MAX_TEMPERATURE:g}] (got {value})")
        if self.seed is not None:
            check(
                isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= config.SEED_MAX,
                f"seed must be a non-negative integer (got {self.seed})",
            )
        if self.stability_threshold is not None:
            check(
                isinstance(self.stability_threshold, int)
                and 0 <= self.stability_threshold <= config.MAX_STABILITY_THRESHOLD,
                f"stability_threshold must be an integer in [0, {config.MAX_STABILITY_THRESHOLD}] "
                f"(got {self.stability_threshold})",
            )
        if self.confidence_threshold is not None:
            check(
                self.confidence_threshold > 0,
                f"confidence_threshold must be > 0 (got {self.confidence_threshold})",
            )
        return self


@dataclass
class Timings:
    """Self-reported speed, on every result (llama.cpp style)."""

    encode_ms: float = 0.0
    steps: int = 0
    ms_per_step: float = 0.0
    tokens_per_forward: float = 0.0
    prompt_tokens: int = 0  # the request's prompt as the model saw it (header, extra files, prefix)
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    # tokens run through the encoder for this request: the prompt's uncached tail, and each finished
    # canvas of a longer answer (the model's own output, encoded before the next canvas)
    encoded_tokens: int = 0
    generated_tokens: int = 0
    canvases: int = 0
    # canvas positions passed through the decoder over the whole request (rows x canvas x steps,
    # summed): what the hole-length search and alternatives really cost
    decoder_tokens: int = 0
    # syntax-guided repair rounds run (0: the fill parsed, repair was off, or no grammar)
    refine_rounds: int = 0
    # held positions (the suffix head, the text between holes) where the answer's canvas holds a
    # token other than the held one: 0 is an exact join. The local engine clamps them (always 0);
    # vLLM pins only a canvas's input, so its answer may differ there
    held_mismatches: int = 0
    total_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Draft:
    """The decoded canvas after one denoising step (for live views)."""

    step: int
    text: str
    canvas: int = 0
    # True once for each canvas when it is committed: ``text`` is then the whole answer so far
    # and will only be extended (streams send the new part at once)
    final: bool = False
    tokens: list[TokenPiece] | None = None  # ``text`` token by token, with confidences (infill drafts)
    # "repairing": syntax repair round ``round`` (1-based) starts on ``text``, the answer so far,
    # which does not parse; None: a denoising step's draft
    phase: str | None = None
    round: int = 0


DraftCallback = Callable[[Draft], None]


@dataclass
class TokenPiece:
    """One token of an answer: its text as it shows in the answer and the probability the model
    gave it at the last step that saw it. An answer's pieces join to its text."""

    text: str
    confidence: float

    def to_dict(self) -> TokenConfidence:
        return {"text": self.text, "confidence": round(self.confidence, 4)}


@dataclass
class HoleFill:
    """One hole's answer when several holes are filled at once. With alternatives,
    ``alternatives[k]`` is this hole's fill in set k, the same k for every hole of the request;
    set 0 is the answer itself."""

    text: str
    hole_tokens: int = 0
    tokens: list[TokenPiece] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)


@dataclass
class EngineResult:
    text: str
    finish_reason: FinishReason
    timings: Timings = field(default_factory=Timings)
    hole_tokens: int = 0  # length of the chosen hole, in tokens
    # distinct texts when alternatives were asked for; the first is ``text``
    alternatives: list[str] = field(default_factory=list)
    tokens: list[TokenPiece] = field(default_factory=list)  # ``text``, token by token
    # several holes: one entry per hole, in order (``text`` is then the first hole's)
    holes: list[HoleFill] = field(default_factory=list)


@dataclass
class HoleDraft:
    """One hole in a draft of several: its text so far and where it stands."""

    text: str
    state: HoleState
    # ``text`` token by token; None in a repair round's draft, whose text was not denoised as such
    tokens: list[TokenPiece] | None = field(default_factory=list)

    def to_dict(self, tokens: bool) -> DraftHole:
        out: DraftHole = {"text": self.text, "state": self.state}
        if tokens and self.tokens is not None:
            out["tokens"] = [t.to_dict() for t in self.tokens]
        return out


@dataclass
class HolesDraft(Draft):
    """A draft of several holes: ``holes`` has every hole in order; ``text`` and ``tokens`` are the
    first hole's (as in the result), ``canvas`` the group being denoised."""

    holes: list[HoleDraft] = field(default_factory=list)
