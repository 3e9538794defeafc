"""`VllmEngine`: the daemon's engine interface over vLLM servers that serve DiffusionGemma.

It holds the checkpoint's tokenizer, the servers (`servers.ServerPool`) and one asyncio event loop
on a thread of its own, on which every request to vLLM is made. The daemon calls it from several
worker threads at once (vLLM batches the requests of many clients); each call runs its canvases
on that loop (`canvases.CanvasRun`) and blocks its worker until the answer is there. A call's
cancel token and deadline abort its requests in flight by closing their connections.

What vLLM does not offer, and how the engine degrades, is in `capabilities` (and /v1/status).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from diffgemma.runtime.engine.interface import Capabilities, EngineKind
from diffgemma.runtime.engine.layout import check_alternatives, checked_max_tokens
from diffgemma.runtime.engine.prompt import build_parts
from diffgemma.runtime.engine.types import CancelToken, DraftCallback, EngineResult, SamplingSettings, SettingsError
from diffgemma.runtime.engine.vllm.canvases import CanvasRun
from diffgemma.runtime.engine.vllm.connect import check_servers
from diffgemma.runtime.engine.vllm.fill import FillAsk, fill_canvases
from diffgemma.runtime.engine.vllm.holes import HolesAsk, infill_holes
from diffgemma.runtime.engine.vllm.repair import repair_language
from diffgemma.runtime.engine.vllm.rewrite import EditAsk, edit
from diffgemma.runtime.engine.vllm.servers import ServerPool
from diffgemma.runtime.engine.vllm.tokens import Checkpoint, CheckpointTokenizer, read_checkpoint

CAPABILITIES = Capabilities(
    per_step_drafts=False, seed=False, sampling_options=False, rewrite_anchor=False, syntax_repair=True,
    exact_join=False, concurrent_requests=True,
    notes=(
        "drafts: vLLM emits a canvas once, when it has converged, so a stream gets one draft per canvas "
        "(the best scouted candidate, then the finished canvas) instead of one per denoising step",
        "seed: refused (400): vLLM's diffusion sampler takes no per-request seed, so no answer repeats",
        "options entropy_bound, t_min, t_max, stability_threshold, confidence_threshold: refused (400): "
        "vLLM takes them from the checkpoint it serves; steps is sent as diffusion_max_steps",
        "rewrite strength: the seed canvas starts that fraction of the selection as noise, but a token "
        "vLLM does not accept is re-noised, never reverted to the selection's",
        "syntax repair: the span where a fill breaks is re-noised in a canvas seeded with the rest, which is "
        "pinned (infills, rewrites, single holes); holes sharing a canvas are not repaired",
        "held text: vLLM pins a canvas's input only; a candidate whose emitted tokens differ from the "
        "held ones ranks below every candidate that joins exactly, and timings.held_mismatches counts them",
    ),
)
UNSUPPORTED_OPTIONS = ("entropy_bound", "t_min", "t_max", "stability_threshold", "confidence_threshold")


def request_steps(settings: SamplingSettings | None) -> int | None:
    """The steps to send as diffusion_max_steps; SettingsError for what vLLM cannot take."""
    if settings is None:
        return None
    settings.validate()
    if settings.seed is not None:
        raise SettingsError("seed is not available with the vLLM engine: vLLM's diffusion sampler takes no "
                            "per-request seed (leave seed out)")
    named = [name for name in UNSUPPORTED_OPTIONS if getattr(settings, name) is not None]
    if named:
        raise SettingsError(f"option {', '.join(named)} is not available with the vLLM engine: vLLM takes it "
                            f"from the checkpoint it serves")
    return settings.steps


class VllmEngine:
    """The `interface.InferenceEngine` whose canvases vLLM servers denoise. Thread-safe."""

    kind: EngineKind = "vllm"

    def __init__(self, checkpoint: Checkpoint, tokenizer: CheckpointTokenizer, pool: ServerPool) -> None:
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.pool = pool
        self.canvas_length = checkpoint.canvas_length
        self.vocab_size = checkpoint.vocab_size
        self.stops = frozenset(checkpoint.eos_ids)
        end_turn = tokenizer.token_id("<turn|>")
        self.chat_stops = self.stops | ({end_turn} if end_turn is not None else set())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="diffgemma-vllm", daemon=True)
        self._thread.start()

    @classmethod
    def connect(cls, model: str, urls: Sequence[str]) -> VllmEngine:
        """The engine for ``model`` (the checkpoint the servers run) over the servers at ``urls``,
        each checked first (`connect.check_servers`: VllmStartError, ModelLoadError)."""
        checkpoint = read_checkpoint(model)
        tokenizer = CheckpointTokenizer(checkpoint.path)
        return cls(checkpoint, tokenizer, ServerPool(check_servers(list(urls), checkpoint, tokenizer)))

    # ------------------------------------------------------------------ info
    @property
    def default_steps(self) -> int:
        return self.checkpoint.default_steps

    def info(self) -> dict[str, Any]:
        contexts = [s.context_length for s in self.pool.servers if s.context_length]
        return {
            "model": self.checkpoint.name, "path": str(self.checkpoint.path),
            "device": "vLLM at " + ", ".join(s.url for s in self.pool.servers), "dtype": None,
            "canvas_length": self.canvas_length, "context_length": min(contexts or [self.checkpoint.context_length]),
            "vocab_size": self.vocab_size, "parameters": None, "memory_bytes": 0, "sampler": "vllm",
        }

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def health(self) -> dict[str, Any]:
        return {"servers": self.pool.health()}

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    # ------------------------------------------------------------------ calls
    def _run(self, settings: SamplingSettings | None, cancel: CancelToken | None, deadline: float | None,
             client: str | None, make: Callable[[CanvasRun], Coroutine[Any, Any, EngineResult]]) -> EngineResult:
        """``make(run)`` on the engine's loop, for one call with its budget and route."""
        run = CanvasRun(self.pool, client or uuid.uuid4().hex, self.canvas_length, self.vocab_size, cancel=cancel,
                        deadline=deadline, steps=request_steps(settings), default_steps=self.default_steps)
        if cancel is not None:
            cancel.raise_if_cancelled()
        result: EngineResult = asyncio.run_coroutine_threadsafe(make(run), self._loop).result()
        return result

    def infill(self, prefix: str, suffix: str, *, extra: Sequence[tuple[str, str]] = (),
               max_tokens: int | None = None, settings: SamplingSettings | None = None,
               on_draft: DraftCallback | None = None, cancel: CancelToken | None = None,
               deadline: float | None = None, alternatives: int = 1, language: str | None = None,
               refine: bool = True, confidence: bool = False, client: str | None = None) -> EngineResult:
        check_alternatives(alternatives)
        parts = build_parts(prefix, extra)
        ask = FillAsk(prompt=self.tokenizer.prompt_ids(parts.header, parts.prefix),
                      suffix_ids=self.tokenizer.encode_text(suffix), healed=parts.healed, prefix=prefix,
                      suffix=suffix, max_tokens=checked_max_tokens(max_tokens, self.canvas_length),
                      stops=self.stops, alternatives=alternatives,
                      language=repair_language(language) if refine else None)
        return self._run(settings, cancel, deadline, client,
                         lambda run: fill_canvases(run, self.decode, ask, on_draft, confidence))

    def infill_holes(self, pieces: Sequence[str], *, extra: Sequence[tuple[str, str]] = (),
                     max_tokens: int | None = None, settings: SamplingSettings | None = None,
                     on_draft: DraftCallback | None = None, cancel: CancelToken | None = None,
                     deadline: float | None = None, language: str | None = None, refine_syntax: bool = True,
                     alternatives: int = 1, confidence: bool = False, client: str | None = None) -> EngineResult:
        if max_tokens is not None:
            checked_max_tokens(max_tokens, self.canvas_length)
        ask = HolesAsk(pieces=list(pieces), extra=extra, max_tokens=max_tokens, alternatives=alternatives,
                       confidence=confidence, stops=self.stops,
                       language=repair_language(language) if refine_syntax else None)
        return self._run(settings, cancel, deadline, client,
                         lambda run: infill_holes(run, self.tokenizer, ask, on_draft))

    def edit(self, prefix: str, selection: str, suffix: str, *, instruction: str | None = None,
             strength: float = 0.5, extra: Sequence[tuple[str, str]] = (), max_tokens: int | None = None,
             settings: SamplingSettings | None = None, on_draft: DraftCallback | None = None,
             cancel: CancelToken | None = None, deadline: float | None = None, language: str | None = None,
             refine: bool = True, confidence: bool = False, client: str | None = None) -> EngineResult:
        ask = EditAsk(prefix=prefix, selection=selection, suffix=suffix, instruction=instruction, strength=strength,
                      extra=extra, max_tokens=max_tokens, language=repair_language(language) if refine else None)
        return self._run(settings, cancel, deadline, client,
                         lambda run: edit(run, self.tokenizer, ask, self.stops, on_draft, confidence))

    def chat(self, messages: Sequence[dict[str, str]], *, max_tokens: int | None = None,
             settings: SamplingSettings | None = None, on_draft: DraftCallback | None = None,
             cancel: CancelToken | None = None, deadline: float | None = None,
             client: str | None = None) -> EngineResult:
        ask = FillAsk(prompt=self.tokenizer.chat_ids(messages), suffix_ids=[], healed="", prefix="", suffix="",
                      max_tokens=checked_max_tokens(max_tokens, self.canvas_length), stops=self.chat_stops)
        return self._run(settings, cancel, deadline, client,
                         lambda run: fill_canvases(run, self.decode, ask, on_draft, False))

    def close(self) -> None:
        """Close the HTTP client and stop the engine's loop (requests in flight are aborted)."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):  # closing must not fail the daemon's shutdown
            asyncio.run_coroutine_threadsafe(self.pool.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
