"""The canvas of an infill or a rewrite: candidate lengths as rows, the text after them held.

Both lay a canvas out alike: one row per candidate length of the span being written (the hole,
or the rewritten selection), the text that follows it (the suffix head, or the rest of the
selection and the suffix) held right after that length, and the first ``hold`` held tokens
scoring the row. The rows are denoised as one batch; the best-scored row wins. Drafts show the
best row's span after what the earlier canvases of the same request wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffgemma.runtime.api import config
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import Budget, Problem, StepCallback
from diffgemma.runtime.engine.prompt import strip_heal
from diffgemma.runtime.engine.types import Draft, SettingsError, Timings

DraftCallback = Callable[[Draft], None]
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


def checked_max_tokens(max_tokens: int | None, default: int) -> int:
    if max_tokens is None:
        return default
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise SettingsError("max_tokens must be an integer")
    if not 1 <= max_tokens <= config.MAX_TOKENS_LIMIT:
        raise SettingsError(f"max_tokens must be between 1 and {config.MAX_TOKENS_LIMIT} (got {max_tokens})")
    return max_tokens


def check_alternatives(alternatives: int) -> None:
    if (isinstance(alternatives, bool) or not isinstance(alternatives, int)
            or not 1 <= alternatives <= config.MAX_ALTERNATIVES):
        raise SettingsError(f"alternatives must be between 1 and {config.MAX_ALTERNATIVES} (got {alternatives!r})")


def finish_timings(timings: Timings, generated: int, t0: float) -> Timings:
    """A request's timings once its canvases are done (``t0``: its start, time.perf_counter())."""
    timings.ms_per_step = timings.ms_per_step / max(timings.steps, 1)
    timings.generated_tokens = generated
    timings.tokens_per_forward = generated / max(timings.steps, 1)
    timings.total_ms = (time.perf_counter() - t0) * 1000
    return timings


def hole_candidates(length: int, max_hole: int, suffix_len: int) -> tuple[list[int], int]:
    """Hole lengths to try in one batch on a canvas of ``length``, and how many suffix tokens
    every row holds.

    Every row holds the same number of leading suffix tokens (scored alike), so the longest
    hole leaves room for them: about a quarter of the canvas, or the whole suffix when it is
    shorter.
    """
    hold = min(suffix_len, max(1, length // 4)) if suffix_len else 0
    longest = max(1, min(max_hole, length - hold))
    grid = {max(1, round(length * f)) for f in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4)}
    grid = {n for n in grid if n < longest} | {longest}
    return sorted(grid), hold


def rewrite_lengths(length: int, orig: list[int], following: list[int], search: bool, room_left: int) -> list[int]:
    """Rewrite lengths to try: the selection's own length and a few around it (last canvas only)."""
    if search:
        n = len(orig)
        room = length - min(max(1, length // 4), len(following)) if following else length
        cands = sorted({max(1, min(room, m)) for m in (n, round(n * 0.75), round(n * 1.25), n - 2, n + 2)})
    else:
        cands = [max(1, len(orig))]
    return [c for c in cands if c <= room_left] or [max(1, min(len(orig), room_left))]


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


def until(tokens: list[int], stops: set[int]) -> list[int]:
    """``tokens`` up to the first stop token."""
    end = next((i for i, t in enumerate(tokens) if t in stops), None)
    return tokens if end is None else tokens[:end]
