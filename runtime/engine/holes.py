"""Several holes in one request, filled jointly where they are close.

The request is ``pieces``: the fixed text around N holes (N + 1 pieces). Holes whose fixed text
between them is short share one canvas, ``[hole][between][hole]...[hole][after]``, with the text
between them held, so each fill is denoised seeing the others and both sides of itself. Groups
farther apart are filled left to right, each with the earlier fills in its prompt (which the
prefix cache extends rather than re-encodes).

Hole lengths in a shared canvas are chosen jointly and cheaply: a short scouting run denoises a
few rows in which every hole has the same candidate length, and each hole then takes the length
under which the held text right after it was most probable (its own score, read per position
from the same batch). The chosen lengths are denoised once, in full.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffgemma.runtime.api import config
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.confidence import pieces as token_pieces
from diffgemma.runtime.engine.denoise import Budget, Problem
from diffgemma.runtime.engine.fill import trim_join
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.repair import Layout, refine, repair_language
from diffgemma.runtime.engine.types import (
    EngineResult,
    FinishReason,
    HoleFill,
    SamplingSettings,
    SettingsError,
    Timings,
)

if TYPE_CHECKING:
    from diffgemma.runtime.engine.engine import Engine

SCOUT_STEPS = 2  # steps of the length-scouting run (enough for the held-text scores to separate)


@dataclass
class _Group:
    holes: list[int]  # hole indexes, consecutive


def plan_groups(engine: Engine, fixed_ids: list[list[int]]) -> list[_Group]:
    """Consecutive holes share a canvas while the text between them is at most a quarter canvas
    and every hole in it keeps at least an eighth of the canvas of room."""
    length = engine.canvas_length
    room_min, between_max = max(2, length // 8), max(1, length // 4)
    groups: list[_Group] = [_Group([0])]
    n_holes = len(fixed_ids) - 1
    for hole in range(1, n_holes):
        group = groups[-1]
        between = [len(fixed_ids[h + 1]) for h in group.holes]  # text after each hole so far
        tail = min(len(fixed_ids[hole + 1]), between_max)
        fits = sum(between) + (len(group.holes) + 1) * room_min + tail <= length
        if between[-1] <= between_max and fits:
            group.holes.append(hole)
        else:
            groups.append(_Group([hole]))
    return groups


def infill_holes(engine: Engine, fixed: Sequence[str], *, extra: Sequence[tuple[str, str]] = (),
                 max_tokens: int | None = None, settings: SamplingSettings | None = None, cancel: Any = None,
                 deadline: float | None = None, language: str | None = None, refine_syntax: bool = True,
                 alternatives: int = 1) -> EngineResult:
    """Fill the holes between the ``fixed`` pieces; one `HoleFill` per hole in ``holes``.
    ``max_tokens`` bounds each hole. Alternatives are made for a single hole only."""
    if not 2 <= len(fixed) <= config.MAX_HOLES + 1:
        raise SettingsError(f"between 1 and {config.MAX_HOLES} holes are allowed (got {len(fixed) - 1})")
    t0 = time.perf_counter()
    if len(fixed) == 2:
        r = engine.infill(fixed[0], fixed[1], extra=extra, max_tokens=max_tokens, settings=settings, cancel=cancel,
                          deadline=deadline, language=language, refine=refine_syntax, alternatives=alternatives)
        r.holes = [HoleFill(text=r.text, hole_tokens=r.hole_tokens, tokens=r.tokens)]
        return r
    fixed_ids = [engine.encode_text(p) for p in fixed]
    groups = plan_groups(engine, fixed_ids)
    fills: list[HoleFill] = []
    timings: list[Timings] = []
    finish: FinishReason = "stop"
    for index, group in enumerate(groups):
        first, last = group.holes[0], group.holes[-1]
        before = fixed[0] + "".join(f.text + fixed[h + 1] for h, f in enumerate(fills))
        # each group its own seed (a rerun with the same seed repeats every group)
        group_settings = (settings if settings is None or settings.seed is None
                          else dataclasses.replace(settings, seed=settings.seed + index))
        if len(group.holes) == 1:
            r = engine.infill(before, fixed[first + 1], extra=extra, max_tokens=max_tokens, settings=group_settings,
                              cancel=cancel, deadline=deadline, language=language, refine=refine_syntax)
            fills.append(HoleFill(text=r.text, hole_tokens=r.hole_tokens, tokens=r.tokens))
            timings.append(r.timings)
            if r.finish_reason in ("time", "length") and finish == "stop":
                finish = r.finish_reason
        else:
            out, t, timed_out = _joint(engine, before, list(fixed[first + 1: last + 2]), fixed_ids[first + 1: last + 2],
                                       extra, max_tokens, group_settings, Budget(cancel=cancel, deadline=deadline),
                                       repair_language(language) if refine_syntax else None)
            fills += out
            timings.append(t)
            if timed_out:
                finish = "time"
    total = _sum_timings(timings, t0)
    return EngineResult(text=fills[0].text, finish_reason=finish, timings=total,
                        hole_tokens=sum(f.hole_tokens for f in fills), tokens=fills[0].tokens, holes=fills)


def _sum_timings(parts: list[Timings], t0: float) -> Timings:
    out = Timings()
    for t in parts:
        for f in ("encode_ms", "steps", "encoded_tokens", "generated_tokens", "canvases", "decoder_tokens",
                  "refine_rounds"):
            setattr(out, f, getattr(out, f) + getattr(t, f))
        out.ms_per_step += t.ms_per_step * t.steps
    out.cached_tokens = parts[0].cached_tokens if parts else 0
    out.ms_per_step /= max(out.steps, 1)
    out.tokens_per_forward = out.generated_tokens / max(out.steps, 1)
    out.total_ms = (time.perf_counter() - t0) * 1000
    return out


def _grid(room: int, max_tokens: int | None, length: int) -> list[int]:
    top = max(1, min(room, max_tokens or room))
    grid = {max(1, round(length * f)) for f in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2)}
    return sorted({n for n in grid if n < top} | {top})


def _layout(lengths: Sequence[int], between: Sequence[list[int]], length: int, hold_cap: int
            ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], torch.Tensor, torch.Tensor]:
    """Canvas positions for holes of ``lengths``: hole spans, scored spans (the first held tokens
    after each hole), and the held mask and tokens."""
    mask = torch.zeros(length, dtype=torch.bool)
    tokens = torch.full((length,), -1, dtype=torch.long)
    holes, scored = [], []
    pos = 0
    for n, after in zip(lengths, between, strict=True):
        holes.append((pos, n))
        pos += n
        held = after[: max(0, length - pos)]
        if held:
            mask[pos: pos + len(held)] = True
            tokens[pos: pos + len(held)] = torch.tensor(held)
        scored.append((pos, min(len(held), hold_cap)))
        pos += len(held)
    return holes, scored, mask, tokens


def _problem(engine: Engine, layouts: list[tuple[Any, ...]], gen: torch.Generator, score: bool) -> Problem:
    device = engine.model.device
    mask = torch.stack([lay[2] for lay in layouts])
    tokens = torch.stack([lay[3] for lay in layouts])
    focus = torch.zeros_like(mask)
    score_mask = torch.zeros(mask.shape)
    for row, (holes, scored, _, _) in enumerate(layouts):
        for start, n in holes:
            focus[row, start: start + n] = True
        for start, n in scored:
            score_mask[row, start: start + n] = 1.0
    canvas = torch.where(mask, tokens, engine._noise(len(layouts), gen).cpu())
    return Problem(canvas=canvas.to(device), clamp=S.Clamp(mask=mask.to(device), tokens=tokens.to(device)),
                   score_mask=score_mask.to(device) if score else None, keep=0, focus=focus.to(device))


def _joint(engine: Engine, before: str, after: list[str], after_ids: list[list[int]],
           extra: Sequence[tuple[str, str]], max_tokens: int | None, settings: SamplingSettings | None,
           budget: Budget, language: str | None) -> tuple[list[HoleFill], Timings, bool]:
    """Holes sharing one canvas; ``after[i]`` is the fixed text after hole i (the last one: up to
    the next group)."""
    t0 = time.perf_counter()
    cfg = engine.resolve(settings)
    gen = engine._generator(settings)
    length, k = engine.canvas_length, len(after)
    hold_cap = max(1, length // 4)
    between = [ids for ids in after_ids[:-1]] + [after_ids[-1][:hold_cap]]
    room = (length - sum(len(b) for b in between)) // k
    parts = build_parts(before, extra)
    prompt = engine._prompt_ids(parts.header, parts.prefix)
    timings = Timings()
    use = engine._prepare(prompt, timings, first=True)
    grid = _grid(room, max_tokens, length)
    lengths = [grid[-1]] * k
    if len(grid) > 1:  # scout: every hole at each candidate length, scored per hole
        rows = [_layout([n] * k, between, length, hold_cap) for n in grid]
        scout = engine._denoise(use.cache, len(prompt), _problem(engine, rows, gen, score=True),
                                dataclasses.replace(cfg, steps=min(SCOUT_STEPS, cfg.steps)), gen, timings, budget)
        held = scout.held_logp.detach() if scout.held_logp is not None else torch.zeros(len(grid), length)
        for i in range(k):
            per_row = [float(held[r, s: s + n].sum()) / max(n, 1) for r, (_, scored, _, _) in enumerate(rows)
                       for s, n in [scored[i]]]
            lengths[i] = grid[max(range(len(grid)), key=per_row.__getitem__)]
    chosen = _layout(lengths, between, length, hold_cap)
    out = engine._denoise(use.cache, len(prompt), _problem(engine, [chosen], gen, score=False), cfg, gen, timings,
                          budget)
    layout = Layout(tokens=out.argmax[0].tolist(), held=chosen[2].tolist(), holes=chosen[0],
                    confidence=out.confidence[0].tolist())
    engine.last_canvas = (layout.tokens, layout.held)
    engine.last_holes = list(layout.holes)
    stops = set(engine.eos_ids)
    context = [before, *after]

    def render(lay: Layout) -> list[str]:
        return [_text(engine, lay.hole_tokens(i), stops, parts.healed if i == 0 else "", context[i], context[i + 1])
                for i in range(k)]

    if language is not None and not out.timed_out:
        layout = refine(engine, use.cache, len(prompt), layout, context, render, language, cfg, gen, timings, budget)
    texts = render(layout)
    fills = []
    for i, text in enumerate(texts):
        start, n = layout.holes[i]
        toks = layout.tokens[start: start + n]
        fills.append(HoleFill(text=text, hole_tokens=n,
                              tokens=token_pieces(engine.decode, toks, layout.confidence[start: start + n], text)))
    engine._finish(timings, sum(lengths), t0)
    return fills, timings, out.timed_out


def _text(engine: Engine, tokens: list[int], stops: set[int], healed: str, before: str, after: str) -> str:
    text = strip_heal(engine.decode([t for t in tokens if t not in stops]), healed)
    return trim_join(text, before, after)
