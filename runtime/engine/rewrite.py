"""An inline rewrite canvas after canvas: the selection, left to right, each canvas starting from
its tokens (`canvas.rewrite_problem`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from diffgemma.runtime.engine.canvas import (
    DraftCallback,
    Run,
    announce_repairs,
    best_row,
    checked_max_tokens,
    draft_callback,
    finish_timings,
    rewrite_lengths,
    rewrite_problem,
)
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.denoise import Budget
from diffgemma.runtime.engine.fill import LastCanvas
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.repair import repair_language, repair_rewrite
from diffgemma.runtime.engine.runner import CanvasRunner, chosen_view
from diffgemma.runtime.engine.types import EngineResult, FinishReason, SamplingSettings, SettingsError


@dataclass
class Rewritten:
    """The rewritten selection's tokens with their confidences, why it ended, and its last canvas
    (for repairing it): the tokens from ``committed`` on are that canvas's span."""

    tokens: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    finish: FinishReason = "stop"
    last: LastCanvas | None = None
    committed: int = 0


def edit(runner: CanvasRunner, prefix: str, selection: str, suffix: str, *, settings: SamplingSettings | None,
         budget: Budget, instruction: str | None = None, strength: float = 0.5,
         extra: Sequence[tuple[str, str]] = (), max_tokens: int | None = None, on_draft: DraftCallback | None = None,
         length_search: bool = True, language: str | None = None, refine: bool = True,
         confidence: bool = False) -> EngineResult:
    """``selection`` rewritten in place (`Engine.edit` says how)."""
    t0 = time.perf_counter()
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
        raise SettingsError(f"strength must be a number between 0 and 1 (got {strength!r})")
    run = runner.start(settings, budget, confidence=confidence)
    announce_repairs(run, on_draft)
    parts = build_parts(prefix, extra, instruction)
    prompt = runner.prompt_ids(parts.header, parts.prefix)
    # The healed indentation belongs to the selection's first line now.
    sel_ids = runner.encode_text(parts.healed + selection)
    suffix_ids = runner.encode_text(suffix)
    budget_tokens = checked_max_tokens(max_tokens, default=max(2 * len(sel_ids) + 16, runner.canvas_length))
    done = rewrite(runner, prompt, sel_ids, suffix_ids, parts.healed, strength, run,
                   max_tokens=budget_tokens, length_search=length_search, on_draft=on_draft)
    grammar = repair_language(language) if refine else None
    if grammar is not None and done.finish != "time":
        repair_rewrite(runner, done, prefix, selection, suffix, parts.healed, grammar, run)
    if run.timed_out:  # a canvas or the repair after it was cut
        done.finish = "time"
    stops = set(runner.eos_ids)
    text = strip_heal(runner.decode([t for t in done.tokens if t not in stops]), parts.healed)
    finish_timings(run.timings, len(done.tokens), t0)
    return EngineResult(text=text, finish_reason=done.finish, timings=run.timings, hole_tokens=len(done.tokens),
                        tokens=pieces(runner.decode, done.tokens, done.confidence, text) if confidence else [])


def rewrite(runner: CanvasRunner, prompt: list[int], sel_ids: list[int], suffix_ids: list[int], healed: str,
            strength: float, run: Run, *, max_tokens: int, length_search: bool,
            on_draft: DraftCallback | None) -> Rewritten:
    """The rewritten selection. A canvas holds as much of the selection as leaves room for a
    quarter canvas of what follows; the last one searches lengths around the selection's own."""
    length = runner.canvas_length
    hold_cap = max(1, length // 4)
    done = Rewritten()
    pos = 0
    canvas_index = 0
    while True:
        rest = sel_ids[pos:]
        last = len(rest) <= length - min(hold_cap, len(suffix_ids))
        orig = rest if last else rest[: length - hold_cap]
        following = suffix_ids if last else rest[len(orig):] + suffix_ids
        cands = rewrite_lengths(length, orig, following, last and length_search, max_tokens - len(done.tokens))
        encoded = runner.prepare(prompt + done.tokens, run.timings, first=canvas_index == 0)
        problem, hold = rewrite_problem(runner.noise(len(cands), run.gen), cands, orig, following, strength, run.gen)
        on_step = (draft_callback(runner.decode, on_draft, healed, list(done.tokens), cands, canvas_index,
                                  list(done.confidence) if run.confidence else None)
                   if on_draft is not None else None)
        out = runner.denoise(encoded, problem, run, on_step)
        best = best_row(out.scores, len(cands)) if hold > 0 else 0
        if runner.observer is not None:
            runner.observer(chosen_view(out, best, problem, [(0, cands[best])]))
        done.committed = len(done.tokens)
        done.last = LastCanvas(encoded, out, best, problem)
        done.tokens += out.argmax[best, : cands[best]].tolist()
        done.confidence += out.confidence[best, : cands[best]].tolist()
        pos += len(orig)
        canvas_index += 1
        if out.timed_out:
            done.finish = "time"
            return done
        if last or len(done.tokens) >= max_tokens:
            break
    done.finish = "length" if len(done.tokens) >= max_tokens and pos < len(sel_ids) else "stop"
    return done
