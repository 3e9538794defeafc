"""An inline rewrite canvas after canvas: the selection, left to right, each canvas starting from
its tokens (`canvas.rewrite_problem`)."""

from __future__ import annotations

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


def rewrite(engine: Engine, prompt: list[int], sel_ids: list[int], suffix_ids: list[int], healed: str,
            strength: float, run: Run, *, max_tokens: int, length_search: bool,
            on_draft: DraftCallback | None) -> tuple[list[int], FinishReason]:
    """The rewritten selection's tokens and why it ended. A canvas holds as much of the selection
    as leaves room for a quarter canvas of what follows; the last one searches lengths around
    the selection's own."""
    length = engine.canvas_length
    hold_cap = max(1, length // 4)
    out_ids: list[int] = []
    pos = 0
    canvas_index = 0
    while True:
        rest = sel_ids[pos:]
        last = len(rest) <= length - min(hold_cap, len(suffix_ids))
        orig = rest if last else rest[: length - hold_cap]
        following = suffix_ids if last else rest[len(orig):] + suffix_ids
        cands = rewrite_lengths(length, orig, following, last and length_search, max_tokens - len(out_ids))
        use = engine._prepare(prompt + out_ids, run.timings, first=canvas_index == 0)
        problem, hold = rewrite_problem(engine._noise(len(cands), run.gen), cands, orig, following, strength, run.gen)
        on_step = (draft_callback(engine.decode, on_draft, healed, list(out_ids), cands, canvas_index)
                   if on_draft is not None else None)
        out = engine._denoise(use.cache, len(prompt) + len(out_ids), problem, run.cfg, run.gen, run.timings,
                              run.budget, on_step)
        best = best_row(out.scores, len(cands)) if hold > 0 else 0
        out_ids += out.argmax[best, : cands[best]].tolist()
        pos += len(orig)
        canvas_index += 1
        if out.timed_out:
            return out_ids, "time"
        if last or len(out_ids) >= max_tokens:
            break
    return out_ids, "length" if len(out_ids) >= max_tokens and pos < len(sel_ids) else "stop"
