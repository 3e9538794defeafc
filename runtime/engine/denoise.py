"""The denoising loop over a batch of canvases that share one encoded prompt.

One step: decoder forward -> head (logits statistics, sample, self-conditioning) -> accept the
lowest-entropy tokens -> re-noise the rest -> stop rows that are stable and confident. Two heads:

- ``stream`` (the default): the decoder's hidden states go through `kernels.stream_head`, which
  walks the vocabulary in chunks; no (rows, canvas, vocab) tensor exists. The self-conditioning
  embeddings are handed to the decoder's self-conditioning block through a forward pre-hook.
- ``stock`` / ``fused``: the model's own forward returns full logits, fed back as
  ``self_conditioning_logits``; the reference, which with the stock sampler reproduces
  ``model.generate`` token for token.

Rows leave the batch when they finish, and candidate rows (hole lengths) are pruned by successive
halving on their held-suffix score, so the decoder is only ever run on rows still in contention.
Every step's decoder rows are counted in ``decoder_tokens``. Which rows stay is decided on the host
from one device-to-host transfer per step (each ``bool()``/``float()`` of a CUDA tensor would wait
for the device).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diffgemma.runtime.api import config
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.prefix_cache import decoder_view
from diffgemma.runtime.engine.types import CancelToken, SettingsError

# The heads `serve --sampler` offers, and the old fused sampler (the CPU reference of a GPU kernel,
# run by the kernel tests only).
SAMPLERS = (*config.SAMPLERS, "fused")
# Steps after which the candidate rows still in contention are halved (on their held-suffix score),
# down to the rows the problem keeps: 8 candidates cost 8 + 4 + 2 rows over the first three steps,
# then one; 9 (a whole canvas of room) cost 9 + 5 + 3 + 2, then one.
PRUNE_STEPS = (1, 2, 3, 4)

# (step, argmax, row scores, per-position confidence)
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class Problem:
    """What to denoise: the canvases and what is held, scored and anchored in them."""

    canvas: torch.Tensor  # (B, C) starting tokens
    clamp: S.Clamp | None = None  # held positions (the suffix head)
    score_mask: torch.Tensor | None = None  # (B, C) held positions that score a row
    anchor: torch.Tensor | None = None  # (B, C) rewrite: original tokens (-1 elsewhere)
    anchor_keep: float = 0.0
    keep: int = 1  # prune the candidate rows down to this many (0: never prune)
    focus: torch.Tensor | None = None  # (B, C) bool: the positions whose settling stops a row


@dataclass
class Denoised:
    argmax: torch.Tensor  # (B, C) final canvas per row
    steps: int
    scores: torch.Tensor  # (B,) mean held-suffix log-prob at each row's last step; -inf when pruned
    confidence: torch.Tensor  # (B, C) probability of each final token at its last step
    # (B, C) log-probability of each scored held token at its row's last step (0 elsewhere): what
    # several holes in one canvas are scored by, each on the held text after it
    held_logp: torch.Tensor | None = None
    timed_out: bool = False
    alive: list[int] = field(default_factory=list)  # rows that were not pruned


@dataclass
class Budget:
    cancel: CancelToken | None = None
    deadline: float | None = None  # time.monotonic(): past it, the best draft so far is the answer

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class _SelfConditioningHook:
    """Feeds precomputed self-conditioning embeddings to the decoder's self-conditioning block.

    With ``self_conditioning_logits=None`` the decoder passes zeros to that block (its first
    step); the hook swaps them for the streaming head's embeddings, the same input the stock
    forward builds from full logits."""

    def __init__(self, model: Any) -> None:
        self.embeddings: torch.Tensor | None = None
        block = model.model.decoder.self_conditioning
        self._handle = block.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.embeddings is None:
            return None
        inputs_embeds = args[0]
        return (inputs_embeds, self.embeddings.to(inputs_embeds.dtype), *args[2:])

    def remove(self) -> None:
        self._handle.remove()


@dataclass
class _Step:
    sampled: S.Sampled
    scores: torch.Tensor | None  # (n,) row scores this step
    held: torch.Tensor | None  # (n, C) per-position held log-probs (scored positions only)
    confidence: torch.Tensor  # (n, C)
    self_cond: torch.Tensor  # next step's self-conditioning (logits or embeddings)


class Denoiser:
    """Runs `Problem`s on one model with one head; owns no state between calls."""

    def __init__(self, model: Any, vocab_size: int, sampler: str = "stream", chunk: int | None = None) -> None:
        if sampler not in SAMPLERS:
            raise SettingsError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        self.model = model
        self.vocab_size = vocab_size
        self.sampler = sampler
        self.chunk = chunk
        text = model.config.get_text_config()
        self.softcap = getattr(text, "final_logit_softcapping", None)
        embed = model.model.decoder.embed_tokens
        self.embed_dtype = embed.weight.dtype
        self.embed_scale = float(getattr(embed, "scalar_embed_scale", float(embed.embed_scale)))

    # ---------------------------------------------------------------- one step, per head
    def _stock_step(self, canvas: torch.Tensor, sc: torch.Tensor | None, view: Any, positions: torch.Tensor,
                    temp: float, clamp: S.Clamp | None, score: torch.Tensor | None,
                    gen: torch.Generator) -> _Step:
        raw = self.model(decoder_input_ids=canvas, self_conditioning_logits=sc, past_key_values=view,
                         decoder_position_ids=positions).logits
        processed = raw / temp
        scores = held = None
        if clamp is not None and score is not None:
            held = _held_logp(raw, clamp, score)
            scores = held.sum(-1) / score.sum(-1).clamp(min=1)
        processed = S.apply_clamp(processed, clamp)
        if self.sampler == "fused":
            from diffgemma.kernels.sampler import fused_sample

            stats = fused_sample(processed, 1.0, generator=gen)
            sampled = S.Sampled(tokens=stats.tokens, argmax=stats.argmax, entropy=stats.entropy)
            confidence = torch.exp(processed.gather(-1, stats.argmax.unsqueeze(-1)).squeeze(-1) - stats.lse)
        else:
            sampled = S.stock_sample(processed, gen)
            confidence = torch.softmax(processed, -1).gather(-1, sampled.argmax.unsqueeze(-1)).squeeze(-1)
        return _Step(sampled, scores, held, confidence, processed.to(self.embed_dtype))

    def _stream_step(self, canvas: torch.Tensor, sc: torch.Tensor | None, view: Any, positions: torch.Tensor,
                     temp: float, clamp: S.Clamp | None, score: torch.Tensor | None, gen: torch.Generator,
                     hook: _SelfConditioningHook) -> _Step:
        from diffgemma.kernels.stream_head import DEFAULT_CHUNK, HeadInputs, stream_head

        hook.embeddings = sc
        hidden = self.model.model(decoder_input_ids=canvas, self_conditioning_logits=None, past_key_values=view,
                                  decoder_position_ids=positions).last_hidden_state
        inp = HeadInputs(hidden=hidden, weight=self.model.lm_head.weight, softcap=self.softcap, temperature=temp,
                         embed_scale=self.embed_scale,
                         held_mask=clamp.mask if clamp is not None else None,
                         held_tokens=clamp.tokens if clamp is not None else None,
                         score_mask=score.bool() if score is not None and clamp is not None else None)
        stats = stream_head(inp, gen, chunk=self.chunk or DEFAULT_CHUNK)
        scores = None
        if stats.held_logp is not None and score is not None:
            scores = (stats.held_logp * score).sum(-1) / score.sum(-1).clamp(min=1)
        sampled = S.Sampled(tokens=stats.tokens, argmax=stats.argmax, entropy=stats.entropy)
        assert stats.self_cond is not None
        held = stats.held_logp * score if stats.held_logp is not None and score is not None else None
        return _Step(sampled, scores, held, stats.confidence, stats.self_cond)

    # ---------------------------------------------------------------- the loop
    def run(self, cache: Any, prompt_len: int, problem: Problem, cfg: S.LoopConfig, gen: torch.Generator,
            budget: Budget | None = None, on_step: StepCallback | None = None,
            counters: dict[str, int] | None = None) -> Denoised:
        """Denoise ``problem`` over ``cache``; ``counters`` gains ``decoder_tokens``."""
        budget = budget or Budget()
        length = problem.canvas.shape[1]
        device = problem.canvas.device
        positions = torch.arange(prompt_len, prompt_len + length, dtype=torch.int32, device=device).unsqueeze(0)
        state = _RowState(problem, self.vocab_size)
        hook = _SelfConditioningHook(self.model) if self.sampler == "stream" else None
        stopper = S.StableAndConfident(cfg)
        sc: torch.Tensor | None = None
        done = 0
        timed_out = False
        view, view_rows = None, -1
        try:
            for cur_step in reversed(range(1, cfg.steps + 1)):
                if budget.cancel is not None:
                    budget.cancel.raise_if_cancelled()
                if done and budget.expired():
                    timed_out = True
                    break
                active = state.active
                if view_rows != len(active):
                    view, view_rows = decoder_view(cache, len(active)), len(active)
                clamp, score = state.clamp(), state.score()
                temp = S.temperature(cur_step, cfg)
                if hook is not None:
                    step = self._stream_step(state.canvas, sc, view, positions, temp, clamp, score, gen, hook)
                else:
                    step = self._stock_step(state.canvas, sc, view, positions, temp, clamp, score, gen)
                if counters is not None:
                    counters["decoder_tokens"] = counters.get("decoder_tokens", 0) + len(active) * length
                sampled = step.sampled
                mask = S.accept_mask(sampled.entropy, cfg.entropy_bound)
                accepted = torch.where(mask, sampled.tokens, state.canvas)
                anchor = state.anchor()
                new_canvas = S.renoise(accepted, mask, self.vocab_size, gen, anchor, problem.anchor_keep)
                finished = stopper(sampled.argmax, sampled.entropy, state.focus())
                state.record(sampled.argmax, step.scores, step.confidence, step.held)
                done += 1
                keep_rows = state.settle(finished, done)
                sc = step.self_cond
                if keep_rows is not None:
                    stopper.keep(keep_rows)
                    new_canvas, sc = new_canvas[keep_rows], sc[keep_rows]
                state.canvas = new_canvas
                if on_step is not None:
                    on_step(done, state.argmax, state.final_scores(), state.confidence)
                if not state.active:
                    break
        finally:
            if hook is not None:
                hook.remove()
        if budget.cancel is not None:
            budget.cancel.raise_if_cancelled()
        return Denoised(argmax=state.argmax, steps=done, scores=state.final_scores(), confidence=state.confidence,
                        held_logp=state.held, timed_out=timed_out, alive=state.alive())


class _RowState:
    """Which rows are still denoised, and the latest canvas, score and confidence of every row.

    The tensors stay on the model's device; which rows are pruned is kept on the host, so that
    settling a step costs one transfer (`settle`)."""

    def __init__(self, problem: Problem, vocab: int) -> None:
        self.problem = problem
        batch, length = problem.canvas.shape
        device = problem.canvas.device
        self.canvas = problem.canvas  # (n, C) the active rows only
        self.active: list[int] = list(range(batch))  # row ids of ``canvas``'s rows
        self.argmax = problem.canvas.clone()
        self.confidence = torch.zeros(batch, length, dtype=torch.float32, device=device)
        self.scores = torch.zeros(batch, dtype=torch.float32, device=device)
        self.pruned: list[bool] = [False] * batch
        self._pruned_mask = torch.zeros(batch, dtype=torch.bool, device=device)  # ``pruned``, on the device
        self.held: torch.Tensor | None = None
        self._index: torch.Tensor | None = None

    def _rows(self) -> torch.Tensor:
        if self._index is None:
            self._index = torch.tensor(self.active, dtype=torch.long, device=self.canvas.device)
        return self._index

    def _take(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or len(self.active) == t.shape[0]:
            return t
        return t[self._rows()]

    def clamp(self) -> S.Clamp | None:
        c = self.problem.clamp
        if c is None:
            return None
        mask, tokens = self._take(c.mask), self._take(c.tokens)
        assert mask is not None and tokens is not None
        return S.Clamp(mask=mask, tokens=tokens)

    def score(self) -> torch.Tensor | None:
        return self._take(self.problem.score_mask)

    def anchor(self) -> torch.Tensor | None:
        return self._take(self.problem.anchor)

    def focus(self) -> torch.Tensor | None:
        return self._take(self.problem.focus)

    def record(self, argmax: torch.Tensor, scores: torch.Tensor | None, confidence: torch.Tensor,
               held: torch.Tensor | None = None) -> None:
        rows = self._rows()
        self.argmax[rows] = argmax
        self.confidence[rows] = confidence
        if scores is not None:
            self.scores[rows] = scores
        if held is not None:
            if self.held is None:
                self.held = torch.zeros_like(self.confidence)
            self.held[rows] = held.float()

    def final_scores(self) -> torch.Tensor:
        return torch.where(self._pruned_mask, torch.full_like(self.scores, float("-inf")), self.scores)

    def alive(self) -> list[int]:
        return [i for i, pruned in enumerate(self.pruned) if not pruned]

    def settle(self, finished: torch.Tensor, done: int) -> torch.Tensor | None:
        """Drop finished rows and prune candidates; the positions (in the current batch) to keep,
        or None when every row stays. One device-to-host transfer: the finished flags, with every
        row's score on a step that prunes."""
        target = self.problem.keep
        contenders = self.alive()
        if target and done in PRUNE_STEPS and len(contenders) > target:
            host = torch.cat([finished.to(self.scores.dtype), self.scores]).tolist()
            flags, scores = host[: len(self.active)], host[len(self.active):]
            # successive halving: keep the better half (at least ``target``) of the rows in contention,
            # finished ones included; a pruned row can no longer win
            n = max(target, -(-len(contenders) // 2))
            dropped = sorted(contenders, key=lambda i: scores[i], reverse=True)[n:]
            for i in dropped:
                self.pruned[i] = True
            self._pruned_mask[torch.tensor(dropped, dtype=torch.long, device=self.scores.device)] = True
        else:
            flags = finished.tolist()
        keep = [not f and not self.pruned[row] for f, row in zip(flags, self.active, strict=True)]
        if all(keep):
            return None
        positions = [p for p, k in enumerate(keep) if k]
        self.active = [self.active[p] for p in positions]
        self._index = None
        return torch.tensor(positions, dtype=torch.long, device=self.canvas.device)


def _held_logp(raw: torch.Tensor, clamp: S.Clamp, score_mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each scored held token (0 elsewhere). Its mean over a row is the row's
    hole-length score (the same number of scored tokens in every row, so rows compare alike)."""
    logp = torch.log_softmax(raw.float(), dim=-1)
    held = logp.gather(-1, clamp.tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return held * score_mask
