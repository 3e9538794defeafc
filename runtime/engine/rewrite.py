"""An inline rewrite canvas after canvas: the selection, left to right, each canvas starting from
its tokens (`canvas.rewrite_problem`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from diffgemma.runtime.engine.canvas import (
    DraftCallback,
    Run,
    best_row,
    draft_callback,
    rewrite_lengths,
    rewrite_problem,
)
from diffgemma.runtime.engine.types import FinishReason

if TYPE_CHECKING:
    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.fill import LastCanvas


@dataclass
class Rewritten:
    """The rewritten selection's tokens with their confidences, why it ended, and its last canvas
    (for repairing it): the tokens from ``committed`` on are that canvas's span."""

    tokens: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    finish: FinishReason = "stop"
    last: LastCanvas | None = None
    committed: int = 0


def rewrite(engine: Engine, prompt: list[int], sel_ids: list[int], suffix_ids: list[int], healed: str,
            strength: float, run: Run, *, max_tokens: int, length_search: bool,
            on_draft: DraftCallback | None) -> Rewritten:
    """The rewritten selection. A canvas holds as much of the selection as leaves room for a
    quarter canvas of what follows; the last one searches lengths around the selection's own."""
    length = engine.canvas_length
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
        use = engine._prepare(prompt + done.tokens, run.timings, first=canvas_index == 0)
        problem, hold = rewrite_problem(engine._noise(len(cands), run.gen), cands, orig, following, strength, run.gen)
        on_step = (draft_callback(engine.decode, on_draft, healed, list(done.tokens), cands, canvas_index,
                                  list(done.confidence)) if on_draft is not None else None)
        prompt_len = len(prompt) + len(done.tokens)
        out = engine._denoise(use.cache, prompt_len, problem, run.cfg, run.gen, run.timings, run.budget, on_step)
        best = best_row(out.scores, len(cands)) if hold > 0 else 0
        done.committed = len(done.tokens)
        done.last = (use.cache, prompt_len, out, best, problem)
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
