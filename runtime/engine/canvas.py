"""The canvas of an infill or a rewrite: candidate lengths as rows, the text after them held.

Both lay a canvas out alike: one row per candidate length of the span being written (the hole,
or the rewritten selection), the text that follows it (the suffix head, or the rest of the
selection and the suffix) held right after that length, and the first ``hold`` held tokens
scoring the row. The rows are denoised as one batch; the best-scored row wins. Drafts show the
best row's span after what the earlier canvases of the same request wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import Budget, Problem, StepCallback
from diffgemma.runtime.engine.layout import (  # noqa: F401 - shared with the vLLM engine, used here by name
    check_alternatives,
    checked_max_tokens,
    finish_timings,
    hole_candidates,
    rewrite_lengths,
    until,
)
from diffgemma.runtime.engine.prompt import strip_heal
from diffgemma.runtime.engine.types import Draft, DraftCallback, Timings

Decode = Callable[[Sequence[int]], str]


@dataclass
class Run:
    """What every canvas of one request shares."""

    cfg: S.LoopConfig
    gen: torch.Generator
    timings: Timings
    budget: Budget
    # build per-token confidence pieces (results and drafts): two decodes per token, so only
    # when the request asked for them
    confidence: bool = False
    # the time budget cut a phase of this request (a canvas, or the repair after it): its finish
    # reason is "time", whatever the canvases said
    timed_out: bool = False
    # told (round, each hole's text so far) as each syntax repair round starts, so a live view can
    # say what the time goes to (`announce_repairs`)
    on_repair: Callable[[int, list[str]], None] | None = None


def announce_repairs(run: Run, on_draft: DraftCallback | None) -> None:
    """Send a draft with ``phase="repairing"`` as each repair round of ``run`` starts (one hole)."""
    if on_draft is not None:
        run.on_repair = lambda k, texts: on_draft(Draft(step=run.timings.steps, text=texts[0], phase="repairing",
                                                        round=k))


def held_after(lengths: Sequence[int], following: Sequence[int], length: int,
               hold: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, ``following`` held right after that row's length: the held mask and tokens, and
    the score mask over the first ``hold`` held tokens ((rows, length) each, on the CPU)."""
    batch = len(lengths)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    tokens = torch.full((batch, length), -1, dtype=torch.long)
    score_mask = torch.zeros(batch, length)
    for row, n in enumerate(lengths):
        held = list(following[: length - n])
        if held:
            mask[row, n: n + len(held)] = True
            tokens[row, n: n + len(held)] = torch.tensor(held)
            score_mask[row, n: n + hold] = 1.0
    return mask, tokens, score_mask


def span_focus(lengths: Sequence[int], length: int, device: torch.device) -> torch.Tensor:
    """(rows, length) bool: each row's span. A row is done when its span has settled: the free
    positions after the held text are never part of the answer."""
    return torch.arange(length, device=device)[None, :] < torch.tensor(list(lengths), device=device)[:, None]


def best_row(scores: torch.Tensor, rows: int) -> int:
    return int(torch.argmax(scores)) if rows > 1 else 0


def infill_problem(noise: torch.Tensor, lengths: list[int], suffix_ids: list[int], hold: int, keep: int) -> Problem:
    """One row per hole length (``noise``: one row each), the suffix head held right after each hole."""
    if not suffix_ids:
        return Problem(canvas=noise, keep=keep)
    device, length = noise.device, noise.shape[1]
    mask, tokens, score_mask = held_after(lengths, suffix_ids, length, hold)
    mask, tokens = mask.to(device), tokens.to(device)
    return Problem(canvas=torch.where(mask, tokens, noise), clamp=S.Clamp(mask=mask, tokens=tokens),
                   score_mask=score_mask.to(device), keep=keep, focus=span_focus(lengths, length, device))


def rewrite_problem(noise: torch.Tensor, lengths: list[int], orig: list[int], following: list[int],
                    strength: float, gen: torch.Generator) -> tuple[Problem, int]:
    """Rows seeded with the selection (partly noised), what follows it held after each length;
    also how many held tokens score a row."""
    batch, length = noise.shape
    device = noise.device
    anchor = torch.full((batch, length), -1, dtype=torch.long)
    for row, m in enumerate(lengths):
        seed = orig[:m]
        if seed:
            anchor[row, : len(seed)] = torch.tensor(seed, dtype=torch.long)
    hold = min(len(following), length - max(lengths)) if following else 0
    mask, tokens, score_mask = held_after(lengths, following, length, hold)
    anchor, mask, tokens, score_mask = (t.to(device) for t in (anchor, mask, tokens, score_mask))
    start_noise = torch.rand(anchor.shape, generator=gen).to(device) < strength
    canvas = torch.where((anchor >= 0) & ~start_noise, anchor, noise)
    canvas = torch.where(mask, tokens, canvas)
    clamp = S.Clamp(mask=mask, tokens=tokens) if bool(mask.any()) else None
    problem = Problem(canvas=canvas, clamp=clamp, score_mask=score_mask if clamp is not None and hold > 0 else None,
                      anchor=anchor, anchor_keep=1.0 - strength, keep=1 if hold > 0 else 0,
                      focus=span_focus(lengths, length, device))
    return problem, hold


def draft_callback(decode: Decode, on_draft: DraftCallback, healed: str, done: list[int], lengths: list[int],
                   canvas: int, done_conf: list[float] | None = None) -> StepCallback:
    """Drafts of one canvas: its best row's span after the ``done`` tokens of the earlier
    canvases. With ``done_conf`` (their confidences), token by token too, so a live view can
    show how sure each token is."""

    def step(n: int, argmax: torch.Tensor, scores: torch.Tensor, confidence: torch.Tensor) -> None:
        best = best_row(scores, len(lengths))
        tokens = done + argmax[best, : lengths[best]].tolist()
        text = strip_heal(decode(tokens), healed)
        shown = None
        if done_conf is not None:
            shown = pieces(decode, tokens, done_conf + confidence[best, : lengths[best]].tolist(), text)
        on_draft(Draft(step=n, text=text, canvas=canvas, tokens=shown))

    return step
