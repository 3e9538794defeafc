"""The one interface the daemon reaches an engine through (torch-free).

Two engines implement it: the local `engine.Engine` (DiffusionGemma in this process, one request
at a time) and `vllm.engine.VllmEngine` (the same canvases sent to vLLM servers as requests,
many at a time). The daemon's worker turns a request into one of these calls and the typed
`EngineResult` it returns into the wire's answer; it never looks inside an engine.

Every generating call takes the same budget arguments: ``cancel`` (set from any thread: a client
that disconnects, a newer request from the same client) makes the call raise `types.Cancelled`
soon after; past ``deadline`` (time.monotonic()) the best answer so far is returned with finish
reason "time"; ``on_draft`` is called with drafts while the answer forms (`Capabilities` says how
often); ``client`` names who asks (the supersession key, else the file): an engine with several
servers sends one client's requests to the same server, where its prompts are cached. A bad
setting raises `types.SettingsError`; a failure the caller may tell the user about raises
`runtime.api.errors.WireError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from diffgemma.runtime.engine.types import CancelToken, DraftCallback, EngineResult, SamplingSettings

EngineKind = Literal["local", "vllm"]
ENGINE_KINDS: tuple[EngineKind, ...] = ("local", "vllm")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do of what the daemon's API offers; /v1/status shows it. ``notes`` says,
    one line each, how the engine degrades where it cannot."""

    per_step_drafts: bool = True  # a draft after every denoising step (else: one per finished canvas)
    seed: bool = True  # a request's seed makes its answer repeatable (else: a seed is refused)
    sampling_options: bool = True  # per-request entropy_bound, t_min, t_max, ... (else: refused)
    rewrite_anchor: bool = True  # a rewrite's unaccepted tokens fall back to the selection's
    syntax_repair: bool = True  # re-noising the span where a fill breaks the syntax
    # the held text (suffix head, text between holes) is clamped, so every answer joins it exactly
    # (else: checked and preferred, and timings.held_mismatches says how far an answer is off)
    exact_join: bool = True
    concurrent_requests: bool = False  # requests from several clients run at the same time
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


class InferenceEngine(Protocol):
    """What the daemon needs from an engine."""

    kind: EngineKind
    canvas_length: int
    vocab_size: int

    @property
    def default_steps(self) -> int:
        """The most denoising steps per canvas a request gets when it names none."""
        ...

    def info(self) -> dict[str, Any]:
        """What /v1/status shows about the loaded model: model, path, device, dtype, canvas_length,
        context_length, vocab_size, parameters, memory_bytes, sampler (as far as the engine knows)."""
        ...

    def capabilities(self) -> Capabilities: ...

    def health(self) -> dict[str, Any]:
        """Live state for /v1/status beyond ``info`` (the vLLM engine: each server and its health)."""
        ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def infill(self, prefix: str, suffix: str, *, extra: Sequence[tuple[str, str]] = (),
               max_tokens: int | None = None, settings: SamplingSettings | None = None,
               on_draft: DraftCallback | None = None, cancel: CancelToken | None = None,
               deadline: float | None = None, alternatives: int = 1, language: str | None = None,
               refine: bool = True, confidence: bool = False, client: str | None = None) -> EngineResult: ...

    def infill_holes(self, pieces: Sequence[str], *, extra: Sequence[tuple[str, str]] = (),
                     max_tokens: int | None = None, settings: SamplingSettings | None = None,
                     on_draft: DraftCallback | None = None, cancel: CancelToken | None = None,
                     deadline: float | None = None, language: str | None = None, refine_syntax: bool = True,
                     alternatives: int = 1, confidence: bool = False, client: str | None = None) -> EngineResult: ...

    def edit(self, prefix: str, selection: str, suffix: str, *, instruction: str | None = None,
             strength: float = 0.5, extra: Sequence[tuple[str, str]] = (), max_tokens: int | None = None,
             settings: SamplingSettings | None = None, on_draft: DraftCallback | None = None,
             cancel: CancelToken | None = None, deadline: float | None = None, language: str | None = None,
             refine: bool = True, confidence: bool = False, client: str | None = None) -> EngineResult: ...

    def chat(self, messages: Sequence[dict[str, str]], *, max_tokens: int | None = None,
             settings: SamplingSettings | None = None, on_draft: DraftCallback | None = None,
             cancel: CancelToken | None = None, deadline: float | None = None,
             client: str | None = None) -> EngineResult: ...

    def close(self) -> None: ...
