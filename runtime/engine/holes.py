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

Drafts (`HolesDraft`, after every denoising step) carry every hole: the holes of the groups
already filled as final, the current group's as refining, the later ones as waiting.
Alternatives are joint: in a shared canvas they are more rows of the chosen lengths, each from
its own noise, so set k is row k; a group of one hole asks the single-hole infill for them. The
groups after the first are conditioned on the answer's fills (set 0) before them, and set k
joins every group's k-th alternative.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffgemma.runtime.api import config
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.canvas import (
    Decode,
    DraftCallback,
    Run,
    best_row,
    check_alternatives,
    finish_timings,
    hole_candidates,
)
from diffgemma.runtime.engine.confidence import pieces as token_pieces
from diffgemma.runtime.engine.denoise import Budget, Denoised, Problem, StepCallback
from diffgemma.runtime.engine.fill import infill
from diffgemma.runtime.engine.layout import plan_groups, sets, trim_join
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.repair import Layout, refine, repair_language
from diffgemma.runtime.engine.runner import CanvasRunner, CanvasView, EncodedPrompt
from diffgemma.runtime.engine.types import (
    Draft,
    EngineResult,
    FinishReason,
    HoleDraft,
    HoleFill,
    HolesDraft,
    SamplingSettings,
    SettingsError,
    Timings,
    TokenPiece,
)

SCOUT_STEPS = 2  # steps of the length-scouting run (enough for the held-text scores to separate)


class _Drafts:
    """Drafts of several holes while they are filled: the finished groups' holes final, the current
    group's refining, the rest waiting. Steps count over the whole request, one per denoising step."""

    def __init__(self, on_draft: DraftCallback, count: int, confidence: bool) -> None:
        self.on_draft = on_draft
        self.count = count
        self.confidence = confidence  # the holes token by token too
        self.done: list[HoleFill] = []
        self.steps = 0

    def show(self, current: Sequence[tuple[str, list[TokenPiece] | None]], group: int,
             repair_round: int = 0) -> None:
        """A step's draft; with ``repair_round``, the one that says a syntax repair round starts."""
        if not repair_round:
            self.steps += 1
        holes = [HoleDraft(f.text, "final", list(f.tokens)) for f in self.done]
        holes += [HoleDraft(text, "refining", tokens) for text, tokens in current]
        holes += [HoleDraft("", "waiting") for _ in range(self.count - len(holes))]
        first = holes[0]
        self.on_draft(HolesDraft(step=self.steps, text=first.text, canvas=group, tokens=first.tokens, holes=holes,
                                 phase="repairing" if repair_round else None, round=repair_round))

    def single(self, group: int) -> DraftCallback:
        """The draft callback of a group of one hole (filled by `fill.infill`)."""

        def relay(draft: Draft) -> None:
            if draft.phase:
                self.show([(draft.text, None)], group, repair_round=draft.round)
            elif not draft.final:  # a committed canvas: the next step's draft shows it too
                self.show([(draft.text, list(draft.tokens or []))], group)

        return relay

    def repairs(self, group: int) -> Callable[[int, list[str]], None]:
        """The repair announcer of a shared canvas (`canvas.Run.on_repair`): every hole's text."""
        return lambda k, texts: self.show([(text, None) for text in texts], group, repair_round=k)

    def joint(self, decode: Decode, spans: list[list[tuple[int, int]]], render: Callable[[int, list[int]], str],
              group: int) -> StepCallback:
        """The step callback of a shared canvas; ``spans[row]`` are that row's holes."""

        def step(_n: int, argmax: torch.Tensor, scores: torch.Tensor, confidence: torch.Tensor) -> None:
            best = best_row(scores, len(spans))
            tokens = argmax[best].tolist()
            conf = confidence[best].tolist() if self.confidence else []
            current = []
            for i, (start, n) in enumerate(spans[best]):
                text = render(i, tokens[start: start + n])
                shown = (token_pieces(decode, tokens[start: start + n], conf[start: start + n], text)
                         if self.confidence else [])
                current.append((text, shown))
            self.show(current, group)

        return step


@dataclass
class _Ask:
    """What every group of one request shares."""

    extra: Sequence[tuple[str, str]]
    max_tokens: int | None
    budget: Budget
    language: str | None
    refine: bool
    rows: int  # alternatives asked for
    drafts: _Drafts | None
    confidence: bool  # each hole token by token too


GroupOut = tuple[list[HoleFill], Timings, FinishReason, list[tuple[str, ...]]]


def infill_holes(runner: CanvasRunner, fixed: Sequence[str], *, extra: Sequence[tuple[str, str]] = (),
                 max_tokens: int | None = None, settings: SamplingSettings | None = None,
                 on_draft: DraftCallback | None = None, cancel: Any = None, deadline: float | None = None,
                 language: str | None = None, refine_syntax: bool = True, alternatives: int = 1,
                 confidence: bool = False) -> EngineResult:
    """Fill the holes between the ``fixed`` pieces; one `HoleFill` per hole in ``holes``.
    ``max_tokens`` bounds each hole; ``on_draft`` gets a `HolesDraft` after every denoising step.
    With ``alternatives`` (n), each answer lists its hole's fill in up to n distinct sets (`sets`);
    with ``confidence``, each fill and draft is given token by token too."""
    if not 2 <= len(fixed) <= config.MAX_HOLES + 1:
        raise SettingsError(f"between 1 and {config.MAX_HOLES} holes are allowed (got {len(fixed) - 1})")
    check_alternatives(alternatives)
    t0 = time.perf_counter()
    drafts = _Drafts(on_draft, len(fixed) - 1, confidence) if on_draft is not None else None
    ask = _Ask(extra=extra, max_tokens=max_tokens, budget=Budget(cancel=cancel, deadline=deadline), language=language,
               refine=refine_syntax, rows=alternatives, drafts=drafts, confidence=confidence)
    if len(fixed) == 2:
        (fill,), timings_1, reason, rows = _single(runner, fixed[0], fixed[1], settings, ask, 0)
        return EngineResult(text=fill.text, finish_reason=reason, timings=timings_1, hole_tokens=fill.hole_tokens,
                            alternatives=[row[0] for row in rows] if alternatives > 1 else [], tokens=fill.tokens,
                            holes=_answers([fill], [rows], alternatives))
    fixed_ids = [runner.encode_text(p) for p in fixed]
    fills: list[HoleFill] = []
    group_sets: list[list[tuple[str, ...]]] = []
    timings: list[Timings] = []
    finish: FinishReason = "stop"
    for index, group in enumerate(plan_groups(runner.canvas_length, fixed_ids)):
        first, last = group.holes[0], group.holes[-1]
        before = fixed[0] + "".join(f.text + fixed[h + 1] for h, f in enumerate(fills))
        # each group its own seed (a rerun with the same seed repeats every group), within the seeds a
        # request may name: past the largest it wraps to 0
        group_settings = (settings if settings is None or settings.seed is None
                          else dataclasses.replace(settings, seed=(settings.seed + index) % (config.SEED_MAX + 1)))
        if len(group.holes) == 1:
            out = _single(runner, before, fixed[first + 1], group_settings, ask, index)
        else:
            out = _joint(runner, before, list(fixed[first + 1: last + 2]), fixed_ids[first + 1: last + 2],
                         group_settings, ask, index)
        fills += out[0]
        timings.append(out[1])
        group_sets.append(out[3])
        if drafts is not None:
            drafts.done = list(fills)
        if out[2] == "time" or (out[2] == "length" and finish == "stop"):
            finish = out[2]
    total = _sum_timings(timings, t0)
    return EngineResult(text=fills[0].text, finish_reason=finish, timings=total,
                        hole_tokens=sum(f.hole_tokens for f in fills), tokens=fills[0].tokens,
                        holes=_answers(fills, group_sets, alternatives))


def _single(runner: CanvasRunner, before: str, after: str, settings: SamplingSettings | None, ask: _Ask,
            index: int) -> GroupOut:
    """A group of one hole: the single-hole infill, its alternatives as one-hole sets."""
    r = infill(runner, before, after, extra=ask.extra, max_tokens=ask.max_tokens, settings=settings,
               on_draft=ask.drafts.single(index) if ask.drafts is not None else None, budget=ask.budget,
               language=ask.language, refine=ask.refine, alternatives=ask.rows, confidence=ask.confidence)
    fill = HoleFill(text=r.text, hole_tokens=r.hole_tokens, tokens=r.tokens)
    return [fill], r.timings, r.finish_reason, [(t,) for t in (r.alternatives or [r.text])]


def _answers(fills: list[HoleFill], group_sets: list[list[tuple[str, ...]]], n: int) -> list[HoleFill]:
    chosen = sets(group_sets, n) if n > 1 else []
    return [dataclasses.replace(f, alternatives=[s[i] for s in chosen]) for i, f in enumerate(fills)]


def _sum_timings(parts: list[Timings], t0: float) -> Timings:
    out = Timings()
    for t in parts:
        for f in ("encode_ms", "steps", "encoded_tokens", "generated_tokens", "canvases", "decoder_tokens",
                  "refine_rounds"):
            setattr(out, f, getattr(out, f) + getattr(t, f))
        out.ms_per_step += t.ms_per_step * t.steps
    out.cached_tokens = parts[0].cached_tokens if parts else 0
    out.prompt_tokens = parts[0].prompt_tokens if parts else 0  # later groups' prompts hold earlier fills
    out.ms_per_step /= max(out.steps, 1)
    out.tokens_per_forward = out.generated_tokens / max(out.steps, 1)
    out.total_ms = (time.perf_counter() - t0) * 1000
    return out


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


def _problem(runner: CanvasRunner, layouts: list[tuple[Any, ...]], gen: torch.Generator, score: bool) -> Problem:
    device = runner.device
    mask = torch.stack([lay[2] for lay in layouts])
    tokens = torch.stack([lay[3] for lay in layouts])
    focus = torch.zeros_like(mask)
    score_mask = torch.zeros(mask.shape)
    for row, (holes, scored, _, _) in enumerate(layouts):
        for start, n in holes:
            focus[row, start: start + n] = True
        for start, n in scored:
            score_mask[row, start: start + n] = 1.0
    canvas = torch.where(mask, tokens, runner.noise(len(layouts), gen).cpu())
    return Problem(canvas=canvas.to(device), clamp=S.Clamp(mask=mask.to(device), tokens=tokens.to(device)),
                   score_mask=score_mask.to(device) if score else None, keep=0, focus=focus.to(device))


@dataclass
class _Canvas:
    """One shared canvas of a group: the prompt it is denoised after and what its runs share."""

    runner: CanvasRunner
    prompt: EncodedPrompt
    run: Run
    ask: _Ask
    group: int
    render: Callable[[int, list[int]], str]  # (hole index, its tokens) -> its text

    def denoise(self, rows: list[tuple[Any, ...]], cfg: S.LoopConfig, score: bool) -> Denoised:
        drafts = self.ask.drafts
        on_step = (drafts.joint(self.runner.decode, [lay[0] for lay in rows], self.render, self.group)
                   if drafts is not None else None)
        problem = _problem(self.runner, rows, self.run.gen, score=score)
        run = dataclasses.replace(self.run, cfg=cfg)  # the same timings and generator, other steps
        out = self.runner.denoise(self.prompt, problem, run, on_step)
        self.run.timed_out = self.run.timed_out or run.timed_out
        return out


def _joint(runner: CanvasRunner, before: str, after: list[str], after_ids: list[list[int]],
           settings: SamplingSettings | None, ask: _Ask, group: int) -> GroupOut:
    """Holes sharing one canvas; ``after[i]`` is the fixed text after hole i (the last one: up to
    the next group). Alternatives are more rows of the chosen lengths, each from its own noise:
    row k is set k (row 0, the answer, is the one repaired)."""
    t0 = time.perf_counter()
    length, k = runner.canvas_length, len(after)
    hold_cap = max(1, length // 4)
    between = [ids for ids in after_ids[:-1]] + [after_ids[-1][:hold_cap]]
    room = (length - sum(len(b) for b in between)) // k
    parts = build_parts(before, extra=ask.extra)
    prompt = runner.prompt_ids(parts.header, parts.prefix)
    run = runner.start(settings, ask.budget, confidence=ask.confidence)
    if ask.drafts is not None:
        run.on_repair = ask.drafts.repairs(group)
    encoded = runner.prepare(prompt, run.timings, first=True)
    stops = set(runner.eos_ids)
    context = [before, *after]

    def hole_text(i: int, tokens: list[int]) -> str:
        return _text(runner.decode, tokens, stops, parts.healed if i == 0 else "", context[i], context[i + 1])

    canvas = _Canvas(runner, encoded, run, ask, group, hole_text)
    # the single-hole grid, up to each hole's share of the canvas (nothing held: the scouting rows
    # hold the text between the holes themselves)
    grid, _ = hole_candidates(length, max(1, min(room, ask.max_tokens or room)), 0)
    lengths = _scout(canvas, grid, between, hold_cap, k)
    chosen = _layout(lengths, between, length, hold_cap)
    out = canvas.denoise([chosen] * ask.rows, run.cfg, score=False)
    layouts = [Layout(tokens=out.argmax[r].tolist(), held=chosen[2].tolist(), holes=chosen[0],
                      confidence=out.confidence[r].tolist()) for r in range(ask.rows)]
    layout = layouts[0]
    if runner.observer is not None:
        runner.observer(CanvasView(tokens=layout.tokens, held=layout.held, spans=list(layout.holes),
                                   confidence=layout.confidence))

    def render(lay: Layout) -> list[str]:
        return [hole_text(i, lay.hole_tokens(i)) for i in range(k)]

    language = repair_language(ask.language) if ask.refine else None
    if language is not None and not out.timed_out:
        layout = refine(runner, encoded, layout, context, render, language, run)
    texts = render(layout)
    fills = []
    for i, text in enumerate(texts):
        start, n = layout.holes[i]
        toks = layout.tokens[start: start + n]
        shown = token_pieces(runner.decode, toks, layout.confidence[start: start + n], text) if ask.confidence else []
        fills.append(HoleFill(text=text, hole_tokens=n, tokens=shown))
    finish_timings(run.timings, sum(lengths), t0)
    rows = [tuple(texts)] + [tuple(render(lay)) for lay in layouts[1:]]
    return fills, run.timings, "time" if run.timed_out else "stop", rows


def _scout(canvas: _Canvas, grid: list[int], between: list[list[int]], hold_cap: int, k: int) -> list[int]:
    """Each hole's length: every hole at each candidate length in one short run, each hole then
    taking the length under which the held text right after it scored best."""
    lengths = [grid[-1]] * k
    if len(grid) == 1:
        return lengths
    length = canvas.runner.canvas_length
    rows = [_layout([n] * k, between, length, hold_cap) for n in grid]
    cfg = canvas.run.cfg
    scout = canvas.denoise(rows, dataclasses.replace(cfg, steps=min(SCOUT_STEPS, cfg.steps)), score=True)
    held = scout.held_logp.detach() if scout.held_logp is not None else torch.zeros(len(grid), length)
    for i in range(k):
        per_row = [float(held[r, s: s + n].sum()) / max(n, 1) for r, (_, scored, _, _) in enumerate(rows)
                   for s, n in [scored[i]]]
        lengths[i] = grid[max(range(len(grid)), key=per_row.__getitem__)]
    return lengths


def _text(decode: Decode, tokens: list[int], stops: set[int], healed: str, before: str, after: str) -> str:
    text = strip_heal(decode([t for t in tokens if t not in stops]), healed)
    return trim_join(text, before, after)
