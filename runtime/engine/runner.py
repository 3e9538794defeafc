"""The seam between the canvas helpers and a model that denoises canvases.

`fill`, `holes`, `rewrite` and `repair` lay canvases out and read the answers back; all they need
from a model is a `CanvasRunner`: text to tokens and back, a request's shared state (`start`), the
prompt encoded (`prepare`), fresh noise and a denoised `Problem`. `ModelRunner` is the one over a
loaded DiffusionGemma in this process, built by the engine; a runner that sends canvases elsewhere
implements the same few members.

An `Observer` (tests, debugging) sees the chosen row of every canvas a request settles on; without
one nothing is copied off the device for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.canvas import Run
from diffgemma.runtime.engine.denoise import Budget, Denoised, Denoiser, Problem, StepCallback
from diffgemma.runtime.engine.prefix_cache import PrefixCache
from diffgemma.runtime.engine.types import SamplingSettings, Timings


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt ready for its canvases: its ids, and the runner's handle on their encoding (here,
    the prefix cache's KV cache)."""

    ids: list[int]
    cache: Any

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CanvasView:
    """The chosen row of a canvas: its tokens, the positions held fixed in it, the spans being
    written (``(start, length)``: the hole, the holes, the rewritten span) and each token's
    confidence."""

    tokens: list[int]
    held: list[bool]
    spans: list[tuple[int, int]]
    confidence: list[float]


Observer = Callable[[CanvasView], None]


class CanvasRunner(Protocol):
    """What the canvas helpers need from a model."""

    @property
    def canvas_length(self) -> int: ...

    @property
    def eos_ids(self) -> list[int]: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def observer(self) -> Observer | None: ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def prompt_ids(self, header: str, prefix: str) -> list[int]: ...

    def start(self, settings: SamplingSettings | None, budget: Budget, *, confidence: bool = False) -> Run: ...

    def prepare(self, ids: list[int], timings: Timings, first: bool) -> EncodedPrompt: ...

    def noise(self, batch: int, gen: torch.Generator) -> torch.Tensor: ...

    def denoise(self, prompt: EncodedPrompt, problem: Problem, run: Run,
                on_step: StepCallback | None = None) -> Denoised: ...


class ModelRunner:
    """The `CanvasRunner` over one loaded DiffusionGemma: its tokenizer, its prefix cache, its
    denoising loop and the checkpoint's sampling defaults."""

    def __init__(self, model: Any, tokenizer: Any, sampler: str = "stream", prefix_cache: bool = True,
                 observer: Observer | None = None) -> None:
        text_config = model.config.text_config
        gen = model.generation_config
        self.model = model
        self.tokenizer = tokenizer
        self.canvas_length: int = int(model.config.canvas_length)
        self.vocab_size: int = int(text_config.vocab_size)
        self.eos_ids: list[int] = _as_list(gen.eos_token_id or text_config.eos_token_id)
        self.pad_id: int = int(gen.pad_token_id if gen.pad_token_id is not None else text_config.pad_token_id or 0)
        self.bos_id: int | None = tokenizer.bos_token_id
        self.special_ids = set(tokenizer.all_special_ids)
        self.prefix_cache = PrefixCache(model, enabled=prefix_cache)
        self.denoiser = Denoiser(model, self.vocab_size, sampler)
        self.defaults = _defaults(gen)
        self.observer: Observer | None = observer
        # prompt tokens the model's positions hold with the first canvas after them (None: no limit known)
        positions = int(getattr(text_config, "max_position_embeddings", 0) or 0)
        self.prompt_room: int | None = positions - self.canvas_length if positions > self.canvas_length else None

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    # ------------------------------------------------------------------ tokens
    def encode_text(self, text: str) -> list[int]:
        """User text: never parse it for special-token names."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def encode_header(self, text: str) -> list[int]:
        """Our own prompt scaffolding: special-token names (turn markers) are meant."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if int(i) not in self.special_ids]
        return str(self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def prompt_ids(self, header: str, prefix: str) -> list[int]:
        ids = [self.bos_id] if self.bos_id is not None else []
        return self.fit(ids + self.encode_header(header), self.encode_text(prefix))

    def fit(self, head: list[int], body: list[int]) -> list[int]:
        """``head + body``, cut to the model's context (with room for the first canvas) when longer:
        the end of ``body`` (the text next to the hole) is kept first, at least half the room, then
        the end of ``head`` after its first token (<bos>). Encoding past the positions the model
        knows would only cost time (minutes on a CPU) and mean nothing."""
        room = self.prompt_room
        if room is None or len(head) + len(body) <= room:
            return head + body
        body = body[len(body) - min(len(body), max(room // 2, room - len(head))):]
        rest = room - len(body)
        head = head[:1] + head[len(head) - (rest - 1):] if rest > 1 else head[:rest]
        return head + body

    # ------------------------------------------------------------------ a request
    def resolve(self, settings: SamplingSettings | None) -> S.LoopConfig:
        """Checkpoint defaults overridden by the request's settings (validated)."""
        s = (settings or SamplingSettings()).validate()
        d = self.defaults
        cfg = S.LoopConfig(
            steps=s.steps if s.steps is not None else d.steps,
            entropy_bound=s.entropy_bound if s.entropy_bound is not None else d.entropy_bound,
            t_min=s.t_min if s.t_min is not None else d.t_min,
            t_max=s.t_max if s.t_max is not None else d.t_max,
            stability_threshold=s.stability_threshold if s.stability_threshold is not None
            else d.stability_threshold,
            confidence_threshold=s.confidence_threshold if s.confidence_threshold is not None
            else d.confidence_threshold,
        )
        if cfg.t_max < cfg.t_min:
            # The temperature falls from the higher end to the lower, whichever the request named
            # which: a lone t_max under the checkpoint's t_min asks for a colder run, not an error.
            cfg = dataclasses.replace(cfg, t_min=cfg.t_max, t_max=cfg.t_min)
        return cfg

    def start(self, settings: SamplingSettings | None, budget: Budget, *, confidence: bool = False) -> Run:
        """What the canvases of one request share: its loop settings, its random generator (the
        request's seed, else a fresh one), its timings and budget."""
        cfg = self.resolve(settings)
        gen = torch.Generator()
        if settings is not None and settings.seed is not None:
            gen.manual_seed(settings.seed)
        else:
            gen.seed()
        return Run(cfg=cfg, gen=gen, timings=Timings(), budget=budget, confidence=confidence)

    def prepare(self, ids: list[int], timings: Timings, first: bool) -> EncodedPrompt:
        """The prefix cache over ``ids``, with what it encoded and reused added to ``timings``."""
        use = self.prefix_cache.prepare(ids)
        timings.encode_ms += use.encode_ms
        timings.encoded_tokens += use.encoded_tokens
        if first:
            timings.prompt_tokens = len(ids)
            timings.cached_tokens = use.cached_tokens
        return EncodedPrompt(ids=list(ids), cache=use.cache)

    def noise(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        return S.random_canvas(batch, self.canvas_length, self.vocab_size, self.model.device, gen)

    def denoise(self, prompt: EncodedPrompt, problem: Problem, run: Run,
                on_step: StepCallback | None = None) -> Denoised:
        started = time.perf_counter()
        counters = {"decoder_tokens": 0}
        out = self.denoiser.run(prompt.cache, prompt.length, problem, run.cfg, run.gen, run.budget, on_step, counters)
        timings = run.timings
        # ms_per_step holds the summed decode time until `canvas.finish_timings` divides it by the steps.
        timings.ms_per_step += (time.perf_counter() - started) * 1000
        timings.steps += out.steps
        timings.canvases += 1
        timings.decoder_tokens += counters["decoder_tokens"]
        run.timed_out = run.timed_out or out.timed_out
        return out

    def close(self) -> None:
        self.prefix_cache.clear()


def chosen_view(out: Denoised, best: int, problem: Problem, spans: list[tuple[int, int]]) -> CanvasView:
    """Row ``best`` of a denoised canvas, for an observer."""
    tokens = out.argmax[best].tolist()
    held = problem.clamp.mask[best].tolist() if problem.clamp is not None else [False] * len(tokens)
    return CanvasView(tokens=tokens, held=held, spans=spans, confidence=out.confidence[best].tolist())


def _defaults(gen: Any) -> S.LoopConfig:
    """The checkpoint's generation config as loop settings (the reference's own fallbacks)."""
    sampler_cfg = getattr(gen, "sampler_config", None)
    bound = getattr(sampler_cfg, "entropy_bound", None) if sampler_cfg is not None else None
    return S.LoopConfig(
        steps=int(gen.max_denoising_steps or 48),
        entropy_bound=float(bound or 0.1),
        t_min=float(gen.t_min if gen.t_min is not None else 0.4),
        t_max=float(gen.t_max if gen.t_max is not None else 0.8),
        stability_threshold=int(gen.stability_threshold if gen.stability_threshold is not None else 1),
        confidence_threshold=float(gen.confidence_threshold or 0.005),
    )


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(value)]
