"""The engine: infill, inline rewrite and chat on DiffusionGemma's canvas.

We own the denoising loop (`runtime.denoise`, built from the pure step functions in `steps`)
instead of calling ``model.generate``, because infill and rewrite need things ``generate`` does
not offer: the suffix head held fixed inside the canvas, several hole lengths denoised as one
batch, scored against that suffix and pruned early, a canvas that starts from the user's code,
drafts after every step, a time budget, cancellation between steps, a streaming head that
never holds a full-vocabulary tensor, and a prefix cache that survives requests. With the
stock sampler and no clamps, `Engine.generate` reproduces ``model.generate``.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import SAMPLERS, Budget, Denoised, Denoiser, Problem, StepCallback
from diffgemma.runtime.engine.holes import infill_holes
from diffgemma.runtime.engine.loading import LoadedModel, load_model
from diffgemma.runtime.engine.prefix_cache import PrefixCache, encode
from diffgemma.runtime.engine.prompt import build_parts, chat_parts, strip_heal
from diffgemma.runtime.engine.repair import repair_fill, repair_language
from diffgemma.runtime.engine.types import (
    Cancelled,
    CancelToken,
    Draft,
    EngineResult,
    SamplingSettings,
    SettingsError,
    Timings,
)

DraftCallback = Callable[[Draft], None]

MAX_TOKENS_LIMIT = 16384


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
        if sampler not in SAMPLERS:
            raise SettingsError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.sampler = sampler
        config = self.model.config
        self.canvas_length: int = int(config.canvas_length)
        self.vocab_size: int = int(config.text_config.vocab_size)
        self.eos_ids = _as_list(self.model.generation_config.eos_token_id or config.text_config.eos_token_id)
        pad = self.model.generation_config.pad_token_id
        self.pad_id: int = int(pad if pad is not None else config.text_config.pad_token_id or 0)
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
        if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise SettingsError(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT} (got {max_tokens})")
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
        """Hole lengths to try in one batch, and how many suffix tokens every row holds.

        Every row holds the same number of leading suffix tokens (scored alike), so the
        longest hole leaves room for them: about a quarter of the canvas, or the whole
        suffix when it is shorter.
        """
        length = self.canvas_length
        hold = min(suffix_len, max(1, length // 4)) if suffix_len else 0
        longest = max(1, min(max_hole, length - hold))
        grid = {max(1, round(length * f)) for f in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4)}
        grid = {n for n in grid if n < longest} | {longest}
        return sorted(grid), hold

    def _infill_problem(self, lengths: list[int], suffix_ids: list[int], hold: int, gen: torch.Generator,
                        keep: int) -> Problem:
        """One row per hole length, the suffix head held right after each hole."""
        batch, length = len(lengths), self.canvas_length
        canvas = self._noise(batch, gen)
        if not suffix_ids:
            return Problem(canvas=canvas, keep=keep)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        tokens = torch.full((batch, length), -1, dtype=torch.long)
        score_mask = torch.zeros(batch, length)
        for row, hole in enumerate(lengths):
            held = suffix_ids[: length - hole]
            mask[row, hole: hole + len(held)] = True
            tokens[row, hole: hole + len(held)] = torch.tensor(held)
            score_mask[row, hole: hole + hold] = 1.0
        device = canvas.device
        mask, tokens = mask.to(device), tokens.to(device)
        # a row is done when its hole has settled: the free positions after the held suffix are
        # never part of the answer
        focus = torch.arange(length, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        return Problem(canvas=torch.where(mask, tokens, canvas), clamp=S.Clamp(mask=mask, tokens=tokens),
                       score_mask=score_mask.to(device), keep=keep, focus=focus)

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
        fill that breaks the window's syntax is repaired (`runtime.repair`).
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
        result's ``holes`` has one entry per hole. See `runtime.holes` for the options."""
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
        if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 1 <= alternatives <= 4:
            raise SettingsError(f"alternatives must be between 1 and 4 (got {alternatives!r})")
        cfg = self.resolve(settings)
        length = self.canvas_length
        budget_tokens = self._max_tokens(max_tokens, default=length)
        gen = self._generator(settings)
        stops = stops if stops is not None else set(self.eos_ids)
        timings = Timings()
        fill = _Fill(self, healed, prefix, on_draft)
        finish = "stop"
        rows_out: list[list[int]] = []
        last: tuple[Any, int, Denoised, int, Problem] | None = None
        while True:
            remaining = budget_tokens - len(fill.tokens)
            use = self._prepare(prompt + fill.tokens, timings, first=fill.canvas == 0)
            prompt_len = len(prompt) + len(fill.tokens)
            if suffix_ids:
                lengths, hold = self.hole_candidates(remaining, len(suffix_ids))
                if not length_search:
                    lengths = lengths[-1:]
            else:
                lengths, hold = [min(remaining, length)], 0
            if len(lengths) < alternatives:  # more rows of the same lengths, each its own noise
                lengths = sorted((lengths * alternatives)[: max(alternatives, len(lengths))])
            problem = self._infill_problem(lengths, suffix_ids, hold, gen, keep=alternatives)
            out = self._denoise(use.cache, prompt_len, problem, cfg, gen, timings, budget,
                                fill.on_step(lengths) if on_draft is not None else None)
            best = int(torch.argmax(out.scores)) if len(lengths) > 1 else 0
            hole = out.argmax[best, : lengths[best]].tolist()
            conf = out.confidence[best, : lengths[best]].tolist()
            self.last_canvas = (out.argmax[best].tolist(),
                                problem.clamp.mask[best].tolist() if problem.clamp is not None else [])
            if out.timed_out:
                fill.add(_until(hole, stops), conf)
                finish = "time"
                break
            end = next((i for i, t in enumerate(hole) if t in stops), None)
            if not suffix_ids and end is not None:
                last = (use.cache, prompt_len, out, best, problem)
                fill.add(hole[:end], conf)
                rows_out = [_until(out.argmax[r, : lengths[r]].tolist(), stops) for r in out.alive]
                break
            longest_won = bool(suffix_ids) and best == len(lengths) - 1 and len(lengths) > 1
            if longest_won and remaining > length and length_search:
                # The hole is longer than this canvas: commit a plain-continuation canvas and
                # search again after it, with the suffix still held.
                plain = self._denoise(use.cache, prompt_len, Problem(canvas=self._noise(1, gen)), cfg, gen, timings,
                                      budget)
                fill.commit(plain.argmax[0].tolist(), plain.confidence[0].tolist())
                if plain.timed_out:
                    finish = "time"
                    break
                continue
            rows_out = [out.argmax[r, : lengths[r]].tolist() for r in out.alive]
            if not suffix_ids and len(fill.tokens) + len(hole) < budget_tokens:
                fill.commit(hole, conf)
                continue
            last = (use.cache, prompt_len, out, best, problem)
            fill.add(hole, conf)
            if len(fill.tokens) >= budget_tokens and (not suffix_ids or best == len(lengths) - 1):
                finish = "length"
            break
        if language is not None and last is not None:
            repair_fill(self, fill, last, suffix, stops, bool(suffix_ids), language, cfg, gen, timings, budget)
        self.last_confidence = fill.conf[fill.committed:]
        text = fill.text(suffix, stops)
        others = [fill.text(suffix, stops, tail=row) for row in rows_out] if alternatives > 1 else []
        self._finish(timings, len(fill.tokens), t0)
        return EngineResult(text=text, finish_reason=finish, timings=timings, hole_tokens=len(fill.tokens),
                            alternatives=_distinct([text, *others]) if alternatives > 1 else [],
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
    ) -> EngineResult:
        """Rewrite ``selection`` in place; the canvas starts from the selection's tokens.

        ``strength`` (0..1) is how much is re-noised: that fraction of the selection's tokens
        starts as noise, and a position the sampler does not accept returns to the original
        token with probability ``1 - strength`` (else to noise). 0 keeps all that the model
        does not confidently change; 1 regenerates the span from scratch. Selections longer
        than one canvas are rewritten a canvas at a time, left to right.
        """
        t0 = time.perf_counter()
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise SettingsError(f"strength must be a number between 0 and 1 (got {strength!r})")
        cfg = self.resolve(settings)
        length = self.canvas_length
        gen = self._generator(settings)
        parts = build_parts(prefix, extra, instruction)
        prompt = self._prompt_ids(parts.header, parts.prefix)
        # The healed indentation belongs to the selection's first line now.
        sel_ids = self.encode_text(parts.healed + selection)
        suffix_ids = self.encode_text(suffix)
        budget_tokens = self._max_tokens(max_tokens, default=max(2 * len(sel_ids) + 16, length))
        budget = Budget(cancel=cancel, deadline=deadline)
        timings = Timings()
        out_ids: list[int] = []
        pos = 0
        canvas_index = 0
        hold_cap = max(1, length // 4)
        finish = "stop"
        while True:
            rest = sel_ids[pos:]
            last = len(rest) <= length - min(hold_cap, len(suffix_ids))
            orig = rest if last else rest[: length - hold_cap]
            following = suffix_ids if last else rest[len(orig):] + suffix_ids
            cands = self._edit_lengths(orig, following, last and length_search, budget_tokens - len(out_ids))
            use = self._prepare(prompt + out_ids, timings, first=canvas_index == 0)
            problem, hold = self._edit_problem(cands, orig, following, strength, gen)

            def on_step(step: int, argmax: torch.Tensor, scores: torch.Tensor, _conf: torch.Tensor,
                        _c: list[int] = cands,
                        _done: tuple[int, ...] = tuple(out_ids), _k: int = canvas_index) -> None:
                best = int(torch.argmax(scores)) if len(_c) > 1 else 0
                if on_draft is not None:
                    text = self.decode([*_done, *argmax[best, : _c[best]].tolist()])
                    on_draft(Draft(step=step, text=strip_heal(text, parts.healed), canvas=_k))

            out = self._denoise(use.cache, len(prompt) + len(out_ids), problem, cfg, gen, timings, budget,
                                on_step if on_draft is not None else None)
            best = int(torch.argmax(out.scores)) if len(cands) > 1 and hold > 0 else 0
            out_ids += out.argmax[best, : cands[best]].tolist()
            pos += len(orig)
            canvas_index += 1
            if out.timed_out:
                finish = "time"
                break
            if last or len(out_ids) >= budget_tokens:
                break
        text = self.decode([t for t in out_ids if t not in self.eos_ids])
        text = strip_heal(text, parts.healed)
        self._finish(timings, len(out_ids), t0)
        if finish != "time":
            finish = "length" if len(out_ids) >= budget_tokens and pos < len(sel_ids) else "stop"
        return EngineResult(text=text, finish_reason=finish, timings=timings, hole_tokens=len(out_ids))

    def _edit_lengths(self, orig: list[int], following: list[int], search: bool, room_left: int) -> list[int]:
        """Rewrite lengths to try: the selection's own length and a few around it (last canvas only)."""
        length = self.canvas_length
        if search:
            n = len(orig)
            room = length - min(max(1, length // 4), len(following)) if following else length
            cands = sorted({max(1, min(room, m)) for m in (n, round(n * 0.75), round(n * 1.25), n - 2, n + 2)})
        else:
            cands = [max(1, len(orig))]
        return [c for c in cands if c <= room_left] or [max(1, min(len(orig), room_left))]

    def _edit_problem(self, cands: list[int], orig: list[int], following: list[int], strength: float,
                      gen: torch.Generator) -> tuple[Problem, int]:
        """Rows seeded with the selection (partly noised), what follows it held after each length."""
        batch, length = len(cands), self.canvas_length
        device = self.model.device
        noise = self._noise(batch, gen)
        anchor = torch.full((batch, length), -1, dtype=torch.long)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        tokens = torch.full((batch, length), -1, dtype=torch.long)
        score_mask = torch.zeros(batch, length)
        hold = min(len(following), length - max(cands)) if following else 0
        for row, m in enumerate(cands):
            seed = orig[:m]
            if seed:
                anchor[row, : len(seed)] = torch.tensor(seed, dtype=torch.long)
            held = following[: length - m]
            if held:
                mask[row, m: m + len(held)] = True
                tokens[row, m: m + len(held)] = torch.tensor(held)
                score_mask[row, m: m + hold] = 1.0
        anchor, mask, tokens, score_mask = (t.to(device) for t in (anchor, mask, tokens, score_mask))
        start_noise = torch.rand(anchor.shape, generator=gen).to(device) < strength
        canvas = torch.where((anchor >= 0) & ~start_noise, anchor, noise)
        canvas = torch.where(mask, tokens, canvas)
        clamp = S.Clamp(mask=mask, tokens=tokens) if bool(mask.any()) else None
        focus = torch.arange(length, device=device)[None, :] < torch.tensor(cands, device=device)[:, None]
        problem = Problem(canvas=canvas, clamp=clamp, score_mask=score_mask if clamp is not None and hold > 0 else None,
                          anchor=anchor, anchor_keep=1.0 - strength, keep=1 if hold > 0 else 0, focus=focus)
        return problem, hold


class _Fill:
    """The tokens of an answer committed so far, and the drafts that show it."""

    def __init__(self, engine: Engine, healed: str, prefix: str, on_draft: DraftCallback | None) -> None:
        self.engine = engine
        self.healed = healed
        self.prefix = prefix
        self.on_draft = on_draft
        self.tokens: list[int] = []
        self.conf: list[float] = []  # each token's confidence
        self.committed = 0  # tokens of the committed canvases
        self.canvas = 0

    def _decode(self, tokens: list[int], stops: set[int] | None = None) -> str:
        kept = [t for t in tokens if stops is None or t not in stops]
        return strip_heal(self.engine.decode(kept), self.healed)

    def on_step(self, lengths: list[int]) -> StepCallback:
        canvas = self.canvas

        def step(n: int, argmax: torch.Tensor, scores: torch.Tensor, confidence: torch.Tensor) -> None:
            best = int(torch.argmax(scores)) if len(lengths) > 1 else 0
            if self.on_draft is not None:
                hole = argmax[best, : lengths[best]].tolist()
                text = self._decode(self.tokens + hole)
                # the draft token by token, so a live view can show how sure each token is
                tokens = pieces(self.engine.decode, self.tokens + hole,
                                self.conf + confidence[best, : lengths[best]].tolist(), text)
                self.on_draft(Draft(step=n, text=text, canvas=canvas, tokens=tokens))

        return step

    def add(self, tokens: list[int], confidence: list[float]) -> None:
        self.tokens += tokens
        self.conf += confidence[: len(tokens)]

    def commit(self, tokens: list[int], confidence: list[float]) -> None:
        """A canvas is final: later canvases only extend it, so a stream can send it now. The
        text is sent up to its last line break (the join clean-up only ever drops whole lines)."""
        self.add(tokens, confidence)
        self.committed = len(self.tokens)
        if self.on_draft is not None:
            text = trim_join(self._decode(self.tokens), self.prefix, "")
            cut = text.rfind("\n") + 1
            self.on_draft(Draft(step=0, text=text[:cut], canvas=self.canvas, final=True))
        self.canvas += 1

    def text(self, suffix: str, stops: set[int], tail: list[int] | None = None) -> str:
        """The answer's text; with ``tail``, an alternative for the last canvas's hole (the
        committed canvases are shared by all alternatives)."""
        tokens = self.tokens if tail is None else self.tokens[: self.committed] + tail
        return trim_join(self._decode(tokens, stops), self.prefix, suffix)


def _until(tokens: list[int], stops: set[int]) -> list[int]:
    end = next((i for i, t in enumerate(tokens) if t in stops), None)
    return tokens if end is None else tokens[:end]


def _distinct(texts: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        seen.setdefault(t, None)
    return list(seen)


def trim_join(text: str, prefix: str, suffix: str) -> str:
    """Conservative clean-up at the joins: drop whole lines the fill repeats from either side.

    The held suffix keeps the canvas from running into the suffix token-wise, but a fill can
    still end with a copy of the suffix's first line(s) placed just before it, or start with a
    copy of the line the cursor is on. Only whole, non-blank lines are dropped.
    """
    if not text:
        return text
    lines = text.splitlines(keepends=True)
    head = [ln for ln in suffix.splitlines(keepends=True) if ln.strip()][:3]
    # trailing duplicate of the suffix's first non-blank line(s)
    for k in range(min(len(head), len(lines)), 0, -1):
        tail = lines[-k:]
        if [t.strip() for t in tail] == [h.strip() for h in head[:k]] and tail[-1].endswith("\n"):
            lines = lines[:-k]
            break
    current = prefix.rsplit("\n", 1)[-1]
    if lines and current.strip() and lines[0].strip() == current.strip() and lines[0].endswith("\n"):
        lines = lines[1:]
    return "".join(lines)


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(value)]
