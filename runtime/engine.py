"""The engine: infill and inline rewrite on DiffusionGemma's canvas.

We own the denoising loop (built from the pure step functions in `steps`) instead of
calling ``model.generate``, because infill and rewrite need things ``generate`` does not
offer: the suffix head held fixed inside the canvas, several hole lengths denoised as one
batch and scored against that suffix, a canvas that starts from the user's code, drafts
after every step, cancellation between steps, and a prefix cache that survives requests.
With the stock sampler and no clamps, `Engine.generate` reproduces ``model.generate``.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffgemma.runtime import steps as S
from diffgemma.runtime.loading import LoadedModel, load_model
from diffgemma.runtime.prefix_cache import PrefixCache, decoder_view, encode
from diffgemma.runtime.prompt import build_parts, strip_heal
from diffgemma.runtime.types import (
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


@dataclass
class _Denoised:
    argmax: torch.Tensor  # (B, C) final canvas per row
    steps: int
    scores: torch.Tensor  # (B,) mean log-prob of the held suffix tokens (0 when none)
    forwards: torch.Tensor  # (B,) decoder passes while the row was still denoising


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

    def __init__(self, loaded: LoadedModel, sampler: str = "stock", prefix_cache: bool = True) -> None:
        if sampler not in ("stock", "fused"):
            raise SettingsError(f"unknown sampler {sampler!r}; use 'stock' or 'fused'")
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
    def _sample(self, processed: torch.Tensor, generator: torch.Generator) -> S.Sampled:
        if self.sampler == "fused":
            from diffgemma.kernels.sampler import fused_sample

            stats = fused_sample(processed, 1.0, generator=generator)
            return S.Sampled(tokens=stats.tokens, argmax=stats.argmax, entropy=stats.entropy)
        return S.stock_sample(processed, generator)

    def _denoise(
        self,
        cache: Any,
        prompt_len: int,
        canvas: torch.Tensor,
        cfg: S.LoopConfig,
        generator: torch.Generator,
        clamp: S.Clamp | None = None,
        score_mask: torch.Tensor | None = None,
        anchor: torch.Tensor | None = None,
        anchor_keep: float = 0.0,
        cancel: CancelToken | None = None,
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        timings: Timings | None = None,
    ) -> _Denoised:
        """Denoise a batch of canvases that share one encoded prompt.

        ``score_mask`` marks the held suffix positions used to score each row: the mean
        log-probability the model gives the held tokens (before clamping) at each row's last
        denoising step.
        """
        started = time.perf_counter()
        model = self.model
        batch, length = canvas.shape
        device = model.device
        view = decoder_view(cache, batch)
        positions = torch.arange(prompt_len, prompt_len + length, dtype=torch.int32, device=device).unsqueeze(0)
        embed_dtype = model.model.decoder.embed_tokens.weight.dtype
        stopper = S.StableAndConfident(cfg)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        forwards = torch.zeros(batch, dtype=torch.int32, device=device)
        scores = torch.zeros(batch, dtype=torch.float32, device=device)
        self_cond: torch.Tensor | None = None
        argmax = canvas
        done_steps = 0
        for cur_step in reversed(range(1, cfg.steps + 1)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            forwards += (~finished).to(torch.int32)
            raw = model(
                decoder_input_ids=canvas,
                self_conditioning_logits=self_cond,
                past_key_values=view,
                decoder_position_ids=positions,
            ).logits
            processed = raw / S.temperature(cur_step, cfg)
            if clamp is not None:
                if score_mask is not None:
                    scores = torch.where(finished, scores, self._row_scores(raw, clamp, score_mask))
                processed = S.apply_clamp(processed, clamp)
            sampled = self._sample(processed, generator)
            mask = S.accept_mask(sampled.entropy, cfg.entropy_bound)
            accepted = torch.where(mask, sampled.tokens, canvas)
            new_canvas = S.renoise(accepted, mask, self.vocab_size, generator, anchor, anchor_keep)
            new_argmax = sampled.argmax
            if finished.any():
                new_argmax = torch.where(finished[:, None], argmax, new_argmax)
                new_canvas = torch.where(finished[:, None], canvas, new_canvas)
                processed = torch.where(finished[:, None, None], self_cond, processed)
            finished |= stopper(new_argmax, processed)
            self_cond = processed.to(embed_dtype)
            canvas, argmax = new_canvas, new_argmax
            done_steps += 1
            if on_step is not None:
                on_step(done_steps, argmax, scores)
            if bool(finished.all()):
                break
        if cancel is not None:
            cancel.raise_if_cancelled()
        if timings is not None:
            # ms_per_step holds the summed decode time until `_finish` divides it by the steps.
            timings.ms_per_step += (time.perf_counter() - started) * 1000
            timings.steps += done_steps
            timings.canvases += 1
        return _Denoised(argmax=argmax, steps=done_steps, scores=scores, forwards=forwards)

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

    @staticmethod
    def _row_scores(raw: torch.Tensor, clamp: S.Clamp, score_mask: torch.Tensor) -> torch.Tensor:
        """Each row's hole-length score: mean log-probability of its held suffix tokens (the
        same number of them in every row, so rows compare alike)."""
        logp = torch.log_softmax(raw.float(), dim=-1)
        held = logp.gather(-1, clamp.tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (held * score_mask).sum(-1) / score_mask.sum(-1).clamp(min=1)

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

        With the same seed (``settings.seed``, or the global seed when ``None`` is passed as
        the generator's seed) this reproduces ``model.generate(input_ids, max_new_tokens=...)``
        token for token, including ``<pad>`` after the first ``<eos>``.
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
        device = self.model.device
        for _ in range(-(-max_new_tokens // length)):
            t_enc = time.perf_counter()
            encode(self.model, cache, pending, start_pos=len(ids) - len(pending))
            timings.encode_ms += (time.perf_counter() - t_enc) * 1000
            timings.encoded_tokens += len(pending)
            canvas = S.random_canvas(1, length, self.vocab_size, device, gen)
            out = self._denoise(cache, len(ids), canvas, cfg, gen, cancel=cancel, timings=timings)
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
    ) -> EngineResult:
        """Fill the hole between ``prefix`` and ``suffix``.

        The suffix head is held fixed in the canvas right after the hole, so the hole is
        denoised between fixed text on both sides. The hole length is chosen by denoising
        several lengths as one batch and keeping the one after which the model finds the held
        suffix most probable. A hole that needs more than one canvas (the longest candidate
        wins) continues on the next canvas: the first canvas is committed as plain
        continuation and the search repeats after it.
        """
        t0 = time.perf_counter()
        cfg = self.resolve(settings)
        length = self.canvas_length
        budget = self._max_tokens(max_tokens, default=length)
        gen = self._generator(settings)
        parts = build_parts(prefix, extra)
        prompt = self._prompt_ids(parts.header, parts.prefix)
        suffix_ids = self.encode_text(suffix)
        timings = Timings()
        filled: list[int] = []
        finish = "stop"
        canvas_index = 0

        def draft_cb(best_tokens: list[int], step: int) -> None:
            if on_draft is not None:
                text = strip_heal(self.decode(filled + best_tokens), parts.healed)
                on_draft(Draft(step=step, text=text, canvas=canvas_index))

        while True:
            remaining = budget - len(filled)
            use = self._prepare(prompt + filled, timings, first=canvas_index == 0)
            prompt_len = len(prompt) + len(filled)
            has_suffix = bool(suffix_ids) and clamp_suffix
            if has_suffix:
                lengths, hold = self.hole_candidates(remaining, len(suffix_ids))
                if not length_search:
                    lengths = lengths[-1:]
            else:
                lengths, hold = [min(remaining, length)], 0
            batch = len(lengths)
            canvas = S.random_canvas(batch, length, self.vocab_size, self.model.device, gen)
            clamp = score_mask = None
            if has_suffix:
                mask = torch.zeros(batch, length, dtype=torch.bool)
                tokens = torch.full((batch, length), -1, dtype=torch.long)
                score_mask = torch.zeros(batch, length)
                for row, hole in enumerate(lengths):
                    held = suffix_ids[: length - hole]
                    mask[row, hole: hole + len(held)] = True
                    tokens[row, hole: hole + len(held)] = torch.tensor(held)
                    score_mask[row, hole: hole + hold] = 1.0
                mask, tokens = mask.to(canvas.device), tokens.to(canvas.device)
                canvas = torch.where(mask, tokens, canvas)
                clamp = S.Clamp(mask=mask, tokens=tokens)
                score_mask = score_mask.to(canvas.device)

            def on_step(step: int, argmax: torch.Tensor, scores: torch.Tensor, _lengths=lengths) -> None:
                best = int(torch.argmax(scores)) if len(_lengths) > 1 else 0
                draft_cb(argmax[best, : _lengths[best]].tolist(), step)

            out = self._denoise(
                use.cache, prompt_len, canvas, cfg, gen, clamp=clamp, score_mask=score_mask,
                cancel=cancel, on_step=on_step if on_draft is not None else None, timings=timings,
            )
            best = int(torch.argmax(out.scores)) if batch > 1 else 0
            hole = out.argmax[best, : lengths[best]].tolist()
            self.last_canvas = (out.argmax[best].tolist(), clamp.mask[best].tolist() if clamp is not None else [])
            eos = next((i for i, t in enumerate(hole) if t in self.eos_ids), None)
            if not has_suffix and eos is not None:
                filled += hole[:eos]
                break
            longest_won = has_suffix and best == batch - 1 and batch > 1
            if longest_won and remaining > length and length_search:
                # The hole is longer than this canvas: commit a plain-continuation canvas and
                # search again after it, with the suffix still held.
                cont = S.random_canvas(1, length, self.vocab_size, self.model.device, gen)
                plain = self._denoise(use.cache, prompt_len, cont, cfg, gen, cancel=cancel, timings=timings)
                filled += plain.argmax[0].tolist()
                canvas_index += 1
                continue
            filled += hole
            if not has_suffix and len(filled) < budget:
                canvas_index += 1
                continue
            if len(filled) >= budget and (not has_suffix or best == batch - 1):
                finish = "length"
            break

        text = self.decode([t for t in filled if t not in self.eos_ids])
        text = strip_heal(text, parts.healed)
        text = trim_join(text, prefix, suffix)
        self._finish(timings, len(filled), t0)
        return EngineResult(text=text, finish_reason=finish, timings=timings, hole_tokens=len(filled))

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
        budget = self._max_tokens(max_tokens, default=max(2 * len(sel_ids) + 16, length))
        timings = Timings()
        out_ids: list[int] = []
        pos = 0
        canvas_index = 0
        hold_cap = max(1, length // 4)
        while True:
            rest = sel_ids[pos:]
            last = len(rest) <= length - min(hold_cap, len(suffix_ids))
            orig = rest if last else rest[: length - hold_cap]
            following = suffix_ids if last else rest[len(orig):] + suffix_ids
            if last and length_search:
                n = len(orig)
                room = length - min(hold_cap, len(following)) if following else length
                cands = sorted({max(1, min(room, m)) for m in (n, round(n * 0.75), round(n * 1.25), n - 2, n + 2)})
            else:
                cands = [max(1, len(orig))]
            cands = [c for c in cands if c <= budget - len(out_ids)] or [max(1, min(len(orig), budget - len(out_ids)))]
            use = self._prepare(prompt + out_ids, timings, first=canvas_index == 0)
            batch = len(cands)
            device = self.model.device
            noise = S.random_canvas(batch, length, self.vocab_size, device, gen)
            anchor = torch.full((batch, length), -1, dtype=torch.long)
            mask = torch.zeros(batch, length, dtype=torch.bool)
            tokens = torch.full((batch, length), -1, dtype=torch.long)
            score_mask = torch.zeros(batch, length)
            hold = min(len(following), length - max(cands)) if following else 0
            for row, m in enumerate(cands):
                seed = orig[:m]
                anchor[row, : len(seed)] = torch.tensor(seed, dtype=torch.long) if seed else anchor[row, :0]
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

            def on_step(
                step: int, argmax: torch.Tensor, scores: torch.Tensor, _c=cands, _done=tuple(out_ids), _k=canvas_index
            ) -> None:
                best = int(torch.argmax(scores)) if len(_c) > 1 else 0
                if on_draft is not None:
                    text = self.decode([*_done, *argmax[best, : _c[best]].tolist()])
                    on_draft(Draft(step=step, text=strip_heal(text, parts.healed), canvas=_k))

            out = self._denoise(
                use.cache, len(prompt) + len(out_ids), canvas, cfg, gen, clamp=clamp,
                score_mask=score_mask if clamp is not None and hold > 0 else None,
                anchor=anchor, anchor_keep=1.0 - strength, cancel=cancel,
                on_step=on_step if on_draft is not None else None, timings=timings,
            )
            best = int(torch.argmax(out.scores)) if batch > 1 and hold > 0 else 0
            out_ids += out.argmax[best, : cands[best]].tolist()
            pos += len(orig)
            canvas_index += 1
            if last or len(out_ids) >= budget:
                break
        text = self.decode([t for t in out_ids if t not in self.eos_ids])
        text = strip_heal(text, parts.healed)
        self._finish(timings, len(out_ids), t0)
        finish = "length" if len(out_ids) >= budget and pos < len(sel_ids) else "stop"
        return EngineResult(text=text, finish_reason=finish, timings=timings, hole_tokens=len(out_ids))


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
