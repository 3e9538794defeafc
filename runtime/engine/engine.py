"""The engine: infill, inline rewrite and chat on DiffusionGemma's canvas.

We own the denoising loop (`denoise`, built from the pure step functions in `steps`)
instead of calling ``model.generate``, because infill and rewrite need things ``generate`` does
not offer: the suffix head held fixed inside the canvas, several hole lengths denoised as one
batch, scored against that suffix and pruned early, a canvas that starts from the user's code,
drafts after every step, a time budget, cancellation between steps, a streaming head that
never holds a full-vocabulary tensor, and a prefix cache that survives requests. With the
stock sampler and no clamps, `Engine.generate` reproduces ``model.generate``.

Infill and rewrite lay out their canvases alike (`canvas`); their canvas-by-canvas loops are
`fill` and `rewrite`, several holes at once `holes`, syntax repair `repair`.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffgemma.runtime.api import config
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.canvas import DraftCallback, Run, hole_candidates
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import Budget, Denoised, Denoiser, Problem, StepCallback
from diffgemma.runtime.engine.fill import Fill, FillRun, distinct
from diffgemma.runtime.engine.holes import infill_holes
from diffgemma.runtime.engine.loading import LoadedModel, load_model
from diffgemma.runtime.engine.prefix_cache import PrefixCache, encode
from diffgemma.runtime.engine.prompt import build_parts, chat_parts, strip_heal
from diffgemma.runtime.engine.repair import repair_fill, repair_language, repair_rewrite
from diffgemma.runtime.engine.rewrite import rewrite
from diffgemma.runtime.engine.types import (
    Cancelled,
    CancelToken,
    EngineResult,
    SamplingSettings,
    SettingsError,
    Timings,
)


def _frees_on_cancel(method: Callable[..., EngineResult]) -> Callable[..., EngineResult]:
    """A cancelled request must not keep its canvases alive through the traceback's frames
    (a caller may hold on to the exception): clear those frames' locals before re-raising."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> EngineResult:
        try:
            return method(*args, **kwargs)
        except Cancelled as exc:
            traceback.clear_frames(exc.__traceback__)
            raise

    return wrapper


class Engine:
    """Infill/rewrite over one loaded DiffusionGemma. Not thread-safe: callers serialize."""

    def __init__(self, loaded: LoadedModel, sampler: str = "stream", prefix_cache: bool = True) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.sampler = sampler
        text_config = self.model.config.text_config
        self.canvas_length: int = int(self.model.config.canvas_length)
        self.vocab_size: int = int(text_config.vocab_size)
        self.eos_ids = _as_list(self.model.generation_config.eos_token_id or text_config.eos_token_id)
        pad = self.model.generation_config.pad_token_id
        self.pad_id: int = int(pad if pad is not None else text_config.pad_token_id or 0)
        self.bos_id = self.tokenizer.bos_token_id
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.prefix_cache = PrefixCache(self.model, enabled=prefix_cache)
        self.defaults = self._defaults()
        # The last infill's chosen canvas and its held-suffix mask, for inspecting the joins.
        self.last_canvas: tuple[list[int], list[bool]] = ([], [])
        self.last_confidence: list[float] = []
        self.last_holes: list[tuple[int, int]] = []  # several holes: their (start, length) in last_canvas
        self.denoiser = Denoiser(self.model, self.vocab_size, sampler)

    # ------------------------------------------------------------------ loading / info
    @classmethod
    def load(cls, name: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None,
             **kwargs: Any) -> Engine:
        return cls(load_model(name, device=device, dtype=dtype, quantize=quantize), **kwargs)

    def info(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        memory = sum(p.numel() * p.element_size() for p in self.model.parameters())
        memory += sum(b.numel() * b.element_size() for b in self.model.buffers())
        if self.loaded.device.startswith("cuda"):
            memory = int(torch.cuda.memory_allocated())
        return {
            "model": self.loaded.name,
            "path": str(self.loaded.path),
            "device": self.loaded.device,
            "dtype": self.loaded.dtype,
            "canvas_length": self.canvas_length,
            "context_length": int(getattr(self.model.config.get_text_config(), "max_position_embeddings", 0) or 0),
            "vocab_size": self.vocab_size,
            "parameters": int(params),
            "memory_bytes": int(memory),
            "sampler": self.sampler,
        }

    def close(self) -> None:
        self.prefix_cache.clear()
        self.model = None
        self.loaded.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ settings
    def _defaults(self) -> S.LoopConfig:
        gen = self.model.generation_config
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
            raise SettingsError(f"t_max ({cfg.t_max}) must be >= t_min ({cfg.t_min})")
        return cfg

    def _max_tokens(self, max_tokens: int | None, default: int) -> int:
        if max_tokens is None:
            return default
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise SettingsError("max_tokens must be an integer")
        if not 1 <= max_tokens <= config.MAX_TOKENS_LIMIT:
            raise SettingsError(f"max_tokens must be between 1 and {config.MAX_TOKENS_LIMIT} (got {max_tokens})")
        return max_tokens

    @staticmethod
    def _generator(settings: SamplingSettings | None) -> torch.Generator:
        gen = torch.Generator()
        seed = settings.seed if settings is not None and settings.seed is not None else None
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        return gen

    # ------------------------------------------------------------------ tokens
    def encode_text(self, text: str) -> list[int]:
        """User text: never parse it for special-token names."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def _encode_header(self, text: str) -> list[int]:
        """Our own prompt scaffolding: special-token names (turn markers) are meant."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if int(i) not in self.special_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _prompt_ids(self, header: str, prefix: str) -> list[int]:
        ids = [self.bos_id] if self.bos_id is not None else []
        return ids + self._encode_header(header) + self.encode_text(prefix)

    # ------------------------------------------------------------------ the loop
    def _denoise(self, cache: Any, prompt_len: int, problem: Problem, cfg: S.LoopConfig, gen: torch.Generator,
                 timings: Timings, budget: Budget, on_step: StepCallback | None = None) -> Denoised:
        started = time.perf_counter()
        counters = {"decoder_tokens": 0}
        out = self.denoiser.run(cache, prompt_len, problem, cfg, gen, budget, on_step, counters)
        # ms_per_step holds the summed decode time until `_finish` divides it by the steps.
        timings.ms_per_step += (time.perf_counter() - started) * 1000
        timings.steps += out.steps
        timings.canvases += 1
        timings.decoder_tokens += counters["decoder_tokens"]
        return out

    def _prepare(self, ids: list[int], timings: Timings, first: bool) -> Any:
        """The prefix cache over ``ids``, with what it encoded and reused added to ``timings``."""
        use = self.prefix_cache.prepare(ids)
        timings.encode_ms += use.encode_ms
        timings.encoded_tokens += use.encoded_tokens
        if first:
            timings.cached_tokens = use.cached_tokens
        return use

    @staticmethod
    def _finish(timings: Timings, generated: int, t0: float) -> Timings:
        timings.ms_per_step = timings.ms_per_step / max(timings.steps, 1)
        timings.generated_tokens = generated
        timings.tokens_per_forward = generated / max(timings.steps, 1)
        timings.total_ms = (time.perf_counter() - t0) * 1000
        return timings

    def _noise(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        return S.random_canvas(batch, self.canvas_length, self.vocab_size, self.model.device, gen)

    # ------------------------------------------------------------------ generate (parity)
    @torch.no_grad()
    def generate(
        self,
        input_ids: list[int],
        max_new_tokens: int = 256,
        settings: SamplingSettings | None = None,
        cancel: CancelToken | None = None,
    ) -> tuple[list[int], Timings]:
        """Plain block-autoregressive generation, the same algorithm as ``model.generate``.

        With the stock sampler and the same seed (``settings.seed``) this reproduces
        ``model.generate(input_ids, max_new_tokens=...)`` token for token, including ``<pad>``
        after the first ``<eos>``.
        """
        cfg = self.resolve(settings)
        gen = self._generator(settings)
        t0 = time.perf_counter()
        timings = Timings()
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        ids = list(input_ids)
        pending = list(input_ids)
        length = self.canvas_length
        budget = Budget(cancel=cancel)
        for _ in range(-(-max_new_tokens // length)):
            t_enc = time.perf_counter()
            encode(self.model, cache, pending, start_pos=len(ids) - len(pending))
            timings.encode_ms += (time.perf_counter() - t_enc) * 1000
            timings.encoded_tokens += len(pending)
            out = self._denoise(cache, len(ids), Problem(canvas=self._noise(1, gen)), cfg, gen, timings, budget)
            block = out.argmax[0].tolist()
            ids += block
            pending = block
            eos = [i for i, t in enumerate(block) if t in self.eos_ids]
            if eos:
                cut = len(ids) - length + eos[0] + 1
                ids[cut:] = [self.pad_id] * (len(ids) - cut)
                break
        new = [t for t in ids[len(input_ids):] if t != self.pad_id]
        self._finish(timings, len(new), t0)
        return ids, timings

    # ------------------------------------------------------------------ infill
    def hole_candidates(self, max_hole: int, suffix_len: int) -> tuple[list[int], int]:
        """Hole lengths to try in one batch, and how many suffix tokens every row holds
        (`canvas.hole_candidates`)."""
        return hole_candidates(self.canvas_length, max_hole, suffix_len)

    @_frees_on_cancel
    @torch.no_grad()
    def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        extra: Sequence[tuple[str, str]] = (),
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        length_search: bool = True,
        clamp_suffix: bool = True,
        deadline: float | None = None,
        alternatives: int = 1,
        language: str | None = None,
        refine: bool = True,
    ) -> EngineResult:
        """Fill the hole between ``prefix`` and ``suffix``.

        The suffix head is held fixed in the canvas right after the hole, so the hole is
        denoised between fixed text on both sides. The hole length is chosen by denoising
        several lengths as one batch and halving them on how probable the model finds the held
        suffix after each of the first steps, until one (or ``alternatives``) remain. A hole that
        needs more than one canvas (the longest candidate wins) continues on the next canvas:
        the first canvas is committed as plain continuation and the search repeats after it.
        ``deadline`` (time.monotonic()): past it the best draft so far is the answer
        (finish reason "time"). With ``language`` (a tree-sitter grammar name) and ``refine``, a
        fill that breaks the window's syntax is repaired (`repair`).
        """
        parts = build_parts(prefix, extra)
        prompt = self._prompt_ids(parts.header, parts.prefix)
        suffix_ids = self.encode_text(suffix) if clamp_suffix else []
        return self._fill(prompt, suffix_ids, parts.healed, prefix, suffix, max_tokens=max_tokens, settings=settings,
                          on_draft=on_draft, budget=Budget(cancel=cancel, deadline=deadline),
                          length_search=length_search, alternatives=alternatives,
                          language=repair_language(language) if refine else None)

    @_frees_on_cancel
    @torch.no_grad()
    def infill_holes(self, pieces: Sequence[str], **options: Any) -> EngineResult:
        """Several holes: ``pieces`` is the fixed text around them (one more than holes); the
        result's ``holes`` has one entry per hole. See `holes` for the options."""
        return infill_holes(self, pieces, **options)

    @_frees_on_cancel
    @torch.no_grad()
    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        deadline: float | None = None,
    ) -> EngineResult:
        """A chat answer in Gemma's turn format, then plain generation, canvas after canvas, until
        end of turn or ``max_tokens``. The turn markers are encoded as special tokens; what the
        messages say is encoded as plain text (a ``<turn|>`` typed in a message stays text)."""
        ids = self.chat_ids(messages)
        stops = set(self.eos_ids)
        end_turn = self.tokenizer.convert_tokens_to_ids("<turn|>")
        if isinstance(end_turn, int) and end_turn != getattr(self.tokenizer, "unk_token_id", None):
            stops.add(end_turn)
        return self._fill(ids, [], "", "", "", max_tokens=max_tokens, settings=settings, on_draft=on_draft,
                          budget=Budget(cancel=cancel, deadline=deadline), stops=stops)

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt of a chat: turn markers as special tokens, the messages as plain text."""
        ids = [self.bos_id] if self.bos_id is not None else []
        for text, markup in chat_parts(messages):
            ids += self._encode_header(text) if markup else self.encode_text(text)
        return ids

    def _fill(self, prompt: list[int], suffix_ids: list[int], healed: str, prefix: str, suffix: str, *,
              max_tokens: int | None, settings: SamplingSettings | None, on_draft: DraftCallback | None,
              budget: Budget, length_search: bool = True, alternatives: int = 1,
              stops: set[int] | None = None, language: str | None = None) -> EngineResult:
        """``language``: repair the fill's syntax with that grammar (None: no repair)."""
        t0 = time.perf_counter()
        if (isinstance(alternatives, bool) or not isinstance(alternatives, int)
                or not 1 <= alternatives <= config.MAX_ALTERNATIVES):
            raise SettingsError(f"alternatives must be between 1 and {config.MAX_ALTERNATIVES} (got {alternatives!r})")
        cfg = self.resolve(settings)
        budget_tokens = self._max_tokens(max_tokens, default=self.canvas_length)
        run = Run(cfg=cfg, gen=self._generator(settings), timings=Timings(), budget=budget)
        stops = stops if stops is not None else set(self.eos_ids)
        fill = Fill(self.decode, healed, prefix, on_draft)
        loop = FillRun(self, prompt, suffix_ids, fill, run, max_tokens=budget_tokens, stops=stops,
                       length_search=length_search, alternatives=alternatives)
        loop.run()
        if language is not None and loop.last is not None:
            repair_fill(self, fill, loop.last, suffix, stops, bool(suffix_ids), language, cfg, run.gen, run.timings,
                        budget)
        self.last_confidence = fill.conf[fill.committed:]
        text = fill.text(suffix, stops)
        others = [fill.text(suffix, stops, tail=row) for row in loop.rows_out] if alternatives > 1 else []
        self._finish(run.timings, len(fill.tokens), t0)
        return EngineResult(text=text, finish_reason=loop.finish, timings=run.timings, hole_tokens=len(fill.tokens),
                            alternatives=distinct([text, *others]) if alternatives > 1 else [],
                            tokens=pieces(self.decode, fill.tokens, fill.conf, text))

    # ------------------------------------------------------------------ rewrite
    @_frees_on_cancel
    @torch.no_grad()
    def edit(
        self,
        prefix: str,
        selection: str,
        suffix: str,
        *,
        instruction: str | None = None,
        strength: float = 0.5,
        extra: Sequence[tuple[str, str]] = (),
        max_tokens: int | None = None,
        settings: SamplingSettings | None = None,
        on_draft: DraftCallback | None = None,
        cancel: CancelToken | None = None,
        length_search: bool = True,
        deadline: float | None = None,
        language: str | None = None,
        refine: bool = True,
    ) -> EngineResult:
        """Rewrite ``selection`` in place; the canvas starts from the selection's tokens.

        ``strength`` (0..1) is how much is re-noised: that fraction of the selection's tokens
        starts as noise, and a position the sampler does not accept returns to the original
        token with probability ``1 - strength`` (else to noise). 0 keeps all that the model
        does not confidently change; 1 regenerates the span from scratch. Selections longer
        than one canvas are rewritten a canvas at a time, left to right. With ``language`` (a
        tree-sitter grammar name) and ``refine``, a rewrite that brings syntax errors into the
        window that the selection did not have is repaired (`repair.repair_rewrite`).
        """
        t0 = time.perf_counter()
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise SettingsError(f"strength must be a number between 0 and 1 (got {strength!r})")
        cfg = self.resolve(settings)
        gen = self._generator(settings)
        parts = build_parts(prefix, extra, instruction)
        prompt = self._prompt_ids(parts.header, parts.prefix)
        # The healed indentation belongs to the selection's first line now.
        sel_ids = self.encode_text(parts.healed + selection)
        suffix_ids = self.encode_text(suffix)
        budget_tokens = self._max_tokens(max_tokens, default=max(2 * len(sel_ids) + 16, self.canvas_length))
        run = Run(cfg=cfg, gen=gen, timings=Timings(), budget=Budget(cancel=cancel, deadline=deadline))
        done = rewrite(self, prompt, sel_ids, suffix_ids, parts.healed, strength, run,
                       max_tokens=budget_tokens, length_search=length_search, on_draft=on_draft)
        grammar = repair_language(language) if refine else None
        if grammar is not None and done.finish != "time":
            repair_rewrite(self, done, prefix, selection, suffix, parts.healed, grammar, cfg, gen, run.timings,
                           run.budget)
        text = strip_heal(self.decode([t for t in done.tokens if t not in self.eos_ids]), parts.healed)
        self._finish(run.timings, len(done.tokens), t0)
        return EngineResult(text=text, finish_reason=done.finish, timings=run.timings, hole_tokens=len(done.tokens),
                            tokens=pieces(self.decode, done.tokens, done.confidence, text))


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(value)]
