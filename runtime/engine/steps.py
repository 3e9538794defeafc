"""The denoising loop's pieces as small pure functions over tensors.

Each function mirrors one part of transformers' `DiffusionGemmaGenerationMixin` (the
reference): the linear temperature schedule, the entropy-bound acceptance, re-noising, and
the stable-and-confident stopping rule. They draw random numbers in the same order as the
reference so that, with the stock sampler and the same seed, our loop reproduces
``model.generate`` token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LoopConfig:
    """Resolved sampling settings for one request."""

    steps: int
    entropy_bound: float
    t_min: float
    t_max: float
    stability_threshold: int
    confidence_threshold: float


@dataclass
class Clamp:
    """Canvas positions held fixed (the suffix head): ``mask`` (B, C) bool, ``tokens`` (B, C) long."""

    mask: torch.Tensor
    tokens: torch.Tensor


@dataclass
class Sampled:
    """What one step's sampler produces from the processed logits."""

    tokens: torch.Tensor  # (B, C) a sample per position
    argmax: torch.Tensor  # (B, C)
    entropy: torch.Tensor  # (B, C) float32


def temperature(cur_step: int, cfg: LoopConfig) -> float:
    """Linear schedule: t_max at the first step (cur_step == steps), t_min towards the end."""
    return cfg.t_min + (cfg.t_max - cfg.t_min) * (cur_step / cfg.steps)


def random_canvas(batch: int, canvas: int, vocab: int, device: Any, generator: torch.Generator | None = None):
    return torch.randint(0, vocab, (batch, canvas), device=device, generator=generator)


def stock_sample(processed: torch.Tensor, generator: torch.Generator | None = None) -> Sampled:
    """The reference sampler: full-vocabulary float32 softmax, multinomial, Categorical entropy."""
    batch, canvas, vocab = processed.shape
    probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
    tokens = torch.multinomial(probs.view(-1, vocab), num_samples=1, generator=generator).view(batch, canvas)
    argmax = torch.argmax(processed, dim=-1)
    entropy = torch.distributions.Categorical(logits=processed).entropy()
    return Sampled(tokens=tokens, argmax=argmax, entropy=entropy)


# Held positions get this logit gap instead of -inf, so every entropy formula (stock or fused)
# sees exactly zero probability elsewhere without 0 * inf = nan.
CLAMP_GAP = 1.0e4


def apply_clamp(processed: torch.Tensor, clamp: Clamp | None) -> torch.Tensor:
    """Force a one-hot at held positions: zero entropy, so they are always accepted."""
    if clamp is None:
        return processed
    forced = torch.full_like(processed, -CLAMP_GAP)
    forced.scatter_(-1, clamp.tokens.clamp(min=0).unsqueeze(-1), 0.0)
    return torch.where(clamp.mask.unsqueeze(-1), forced, processed)


def accept_mask(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """Accept the k lowest-entropy positions with sum(entropy) - max(entropy) <= bound."""
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)
    selected = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= bound
    return torch.scatter(torch.zeros_like(selected), dim=-1, index=order, src=selected)


def renoise(
    accepted: torch.Tensor,
    mask: torch.Tensor,
    vocab: int,
    generator: torch.Generator | None = None,
    anchor: torch.Tensor | None = None,
    anchor_keep: float = 0.0,
) -> torch.Tensor:
    """Replace the positions that were not accepted with fresh noise.

    For rewrites, ``anchor`` holds the original selection: a position that is not accepted
    goes back to its original token with probability ``anchor_keep`` instead of to noise, so
    the canvas keeps gravitating to what the user wrote unless the model is sure otherwise.
    """
    noise = random_canvas(accepted.shape[0], accepted.shape[1], vocab, accepted.device, generator)
    if anchor is not None and anchor_keep > 0:
        keep = torch.rand(accepted.shape, device=accepted.device, generator=generator) < anchor_keep
        noise = torch.where(keep & (anchor >= 0), anchor.clamp(min=0), noise)
    return torch.where(mask, accepted, noise)


class StableAndConfident:
    """Stop a row once its argmax canvas repeats for ``stability_threshold`` steps and its mean
    entropy falls under ``confidence_threshold`` (the reference's adaptive stopping)."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.history: torch.Tensor | None = None

    def __call__(self, argmax: torch.Tensor, entropy: torch.Tensor, focus: torch.Tensor | None = None) -> torch.Tensor:
        """``entropy`` (B, C): each position's entropy of the distribution the step sampled from.
        ``focus`` (B, C) bool: the positions that make the answer (an infill's hole); the others
        (noise after the held suffix) never settle and must not keep a row running."""
        n = self.cfg.stability_threshold
        if n == 0:
            stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        else:
            if self.history is None:
                self.history = torch.full((n, *argmax.shape), -1, dtype=argmax.dtype, device=argmax.device)
            same = self.history == argmax[None]
            if focus is not None:
                same = same | ~focus[None]
            stable = same.all(dim=-1).all(dim=0)
            self.history = torch.roll(self.history, shifts=-1, dims=0)
            self.history[-1] = argmax
        if focus is None:
            mean = entropy.mean(dim=-1)
        else:
            weight = focus.to(entropy.dtype)
            mean = (entropy * weight).sum(-1) / weight.sum(-1).clamp(min=1)
        confident = mean < self.cfg.confidence_threshold
        return stable & confident

    def keep(self, rows: torch.Tensor) -> None:
        """Rows left the batch: keep the history of the others (``rows`` index the current batch)."""
        if self.history is not None:
            self.history = self.history[:, rows]
