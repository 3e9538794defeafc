"""An infill (or a chat answer) canvas after canvas, and the text of what it wrote.

Each canvas denoises the candidate hole lengths as one batch (`canvas.infill_problem`). A hole
longer than one canvas (the longest candidate wins) commits that canvas as plain continuation
and searches again after it, with the suffix still held; without a suffix, canvases follow one
another until a stop token or the token budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.runtime.engine.answer import AnswerTokens
from diffgemma.runtime.engine.canvas import (
    DraftCallback,
    Run,
    announce_repairs,
    best_row,
    check_alternatives,
    checked_max_tokens,
    draft_callback,
    finish_timings,
    hole_candidates,
    infill_problem,
    until,
)
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import Budget, Denoised, Problem, StepCallback
from diffgemma.runtime.engine.layout import distinct
from diffgemma.runtime.engine.prompt import build_parts
from diffgemma.runtime.engine.repair import repair_fill, repair_language
from diffgemma.runtime.engine.runner import CanvasRunner, EncodedPrompt, chosen_view
from diffgemma.runtime.engine.types import EngineResult, FinishReason, SamplingSettings


@dataclass
class LastCanvas:
    """A request's last canvas, for repairing its span: the prompt it followed, its denoised rows,
    the chosen row and what was held in it."""

    prompt: EncodedPrompt
    out: Denoised
    best: int
    problem: Problem


def infill(runner: CanvasRunner, prefix: str, suffix: str, *, settings: SamplingSettings | None, budget: Budget,
           extra: Sequence[tuple[str, str]] = (), max_tokens: int | None = None,
           on_draft: DraftCallback | None = None, length_search: bool = True, clamp_suffix: bool = True,
           alternatives: int = 1, language: str | None = None, refine: bool = True,
           confidence: bool = False) -> EngineResult:
    """The hole between ``prefix`` and ``suffix`` filled (`Engine.infill` says how)."""
    parts = build_parts(prefix, extra)
    prompt = runner.prompt_ids(parts.header, parts.prefix)
    suffix_ids = runner.encode_text(suffix) if clamp_suffix else []
    return fill_canvases(runner, prompt, suffix_ids, parts.healed, prefix, suffix, max_tokens=max_tokens,
                         settings=settings, on_draft=on_draft, budget=budget, length_search=length_search,
                         alternatives=alternatives, language=repair_language(language) if refine else None,
                         confidence=confidence)


def fill_canvases(runner: CanvasRunner, prompt: list[int], suffix_ids: list[int], healed: str, prefix: str,
                  suffix: str, *, max_tokens: int | None, settings: SamplingSettings | None,
                  on_draft: DraftCallback | None, budget: Budget, length_search: bool = True, alternatives: int = 1,
                  stops: set[int] | None = None, language: str | None = None,
                  confidence: bool = False) -> EngineResult:
    """A fill (or a chat answer) after ``prompt``, canvas after canvas; ``language``: repair the
    fill's syntax with that grammar (None: no repair)."""
    t0 = time.perf_counter()
    check_alternatives(alternatives)
    run = runner.start(settings, budget, confidence=confidence)
    announce_repairs(run, on_draft)
    budget_tokens = checked_max_tokens(max_tokens, default=runner.canvas_length)
    stops = stops if stops is not None else set(runner.eos_ids)
    fill = Fill(runner.decode, healed, prefix, on_draft, confidence=confidence)
    loop = FillRun(runner, prompt, suffix_ids, fill, run, max_tokens=budget_tokens, stops=stops,
                   length_search=length_search, alternatives=alternatives)
    loop.run()
    if language is not None and loop.last is not None:
        repair_fill(runner, fill, loop.last, suffix, stops, bool(suffix_ids), language, run)
    text = fill.text(suffix, stops)
    others = [fill.text(suffix, stops, tail=row) for row in loop.rows_out] if alternatives > 1 else []
    finish_timings(run.timings, len(fill.tokens), t0)
    finish: FinishReason = "time" if run.timed_out else loop.finish
    return EngineResult(text=text, finish_reason=finish, timings=run.timings, hole_tokens=len(fill.tokens),
                        alternatives=distinct([text, *others]) if alternatives > 1 else [],
                        tokens=pieces(runner.decode, fill.tokens, fill.conf, text) if confidence else [])


class Fill(AnswerTokens):
    """The tokens of an answer committed so far, and the drafts that show it (token by token too
    with ``confidence``)."""

    def on_step(self, lengths: list[int]) -> StepCallback | None:
        """The draft callback of the next canvas (None without ``on_draft``)."""
        if self.on_draft is None:
            return None
        return draft_callback(self.decode, self.on_draft, self.healed, list(self.tokens), lengths, self.canvas,
                              list(self.conf) if self.confidence else None)


class FillRun:
    """The canvas loop of one fill: ``run()`` leaves the answer's tokens in ``fill``, and sets
    ``finish``, the alternative rows of the last canvas and that canvas (for repair)."""

    def __init__(self, runner: CanvasRunner, prompt: list[int], suffix_ids: list[int], fill: Fill, run: Run, *,
                 max_tokens: int, stops: set[int], length_search: bool, alternatives: int) -> None:
        self.runner = runner
        self.prompt = prompt
        self.suffix_ids = suffix_ids
        self.fill = fill
        self.ctx = run
        self.max_tokens = max_tokens
        self.stops = stops
        self.length_search = length_search
        self.alternatives = alternatives
        self.finish: FinishReason = "stop"
        self.rows_out: list[list[int]] = []
        self.last: LastCanvas | None = None

    def run(self) -> None:
        while self._canvas():
            pass

    def _lengths(self, remaining: int) -> tuple[list[int], int]:
        if self.suffix_ids:
            lengths, hold = hole_candidates(self.runner.canvas_length, remaining, len(self.suffix_ids))
            if not self.length_search:
                lengths = lengths[-1:]
        else:
            lengths, hold = [min(remaining, self.runner.canvas_length)], 0
        if len(lengths) < self.alternatives:  # more rows of the same lengths, each its own noise
            lengths = sorted((lengths * self.alternatives)[: max(self.alternatives, len(lengths))])
        return lengths, hold

    def _canvas(self) -> bool:
        """Denoise the next canvas; False when the fill is done."""
        runner, fill, ctx, stops, held = self.runner, self.fill, self.ctx, self.stops, bool(self.suffix_ids)
        remaining = self.max_tokens - len(fill.tokens)
        prompt = runner.prepare(self.prompt + fill.tokens, ctx.timings, first=fill.canvas == 0)
        lengths, hold = self._lengths(remaining)
        problem = infill_problem(runner.noise(len(lengths), ctx.gen), lengths, self.suffix_ids, hold,
                                 keep=self.alternatives)
        out = runner.denoise(prompt, problem, ctx, fill.on_step(lengths))
        best = best_row(out.scores, len(lengths))
        hole = out.argmax[best, : lengths[best]].tolist()
        conf = out.confidence[best, : lengths[best]].tolist()
        if runner.observer is not None:
            runner.observer(chosen_view(out, best, problem, [(0, lengths[best])]))
        if out.timed_out:
            fill.add(until(hole, stops), conf)
            self.finish = "time"
            return False
        end = next((i for i, t in enumerate(hole) if t in stops), None)
        if not held and end is not None:
            self.last = LastCanvas(prompt, out, best, problem)
            fill.add(hole[:end], conf)
            self.rows_out = [until(out.argmax[r, : lengths[r]].tolist(), stops) for r in out.alive]
            return False
        longest_won = held and best == len(lengths) - 1 and len(lengths) > 1
        if longest_won and remaining > runner.canvas_length and self.length_search:
            return self._plain(prompt)
        self.rows_out = [out.argmax[r, : lengths[r]].tolist() for r in out.alive]
        if not held and len(fill.tokens) + len(hole) < self.max_tokens:
            fill.commit(hole, conf)
            return True
        self.last = LastCanvas(prompt, out, best, problem)
        fill.add(hole, conf)
        if len(fill.tokens) >= self.max_tokens and (not held or best == len(lengths) - 1):
            self.finish = "length"
        return False

    def _plain(self, prompt: EncodedPrompt) -> bool:
        """The hole is longer than this canvas: commit a plain-continuation canvas, so that the
        search goes on after it; False when the time ran out."""
        ctx = self.ctx
        plain = self.runner.denoise(prompt, Problem(canvas=self.runner.noise(1, ctx.gen)), ctx)
        self.fill.commit(plain.argmax[0].tolist(), plain.confidence[0].tolist())
        if plain.timed_out:
            self.finish = "time"
            return False
        return True
