"""An inline rewrite as vLLM requests: the selection, left to right, each canvas seeded from it.

The layout is the local engine's (`engine.rewrite`): a canvas holds as much of the selection as
leaves a quarter canvas for what follows it, which is pinned right after the rewritten span; the
last canvas tries lengths around the selection's own. The seed starts from the selection's
tokens, ``strength`` of them noise. What vLLM cannot do is the local engine's anchor: there a
position the sampler does not accept falls back to the selection's token with probability
``1 - strength``; vLLM re-noises it from the whole vocabulary, so a rewrite through vLLM strays
further from the selection at the same strength.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.layout import checked_max_tokens, finish_timings, rewrite_lengths
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.types import DraftCallback, EngineResult, FinishReason, SettingsError
from diffgemma.runtime.engine.vllm.canvases import SCOUT_STEPS, CanvasRun, capped_scored, choose
from diffgemma.runtime.engine.vllm.fill import Answer
from diffgemma.runtime.engine.vllm.repair import LastCanvas, repair_span
from diffgemma.runtime.engine.vllm.tokens import CheckpointTokenizer
from diffgemma.runtime.engine.vllm.wire import CanvasReply, CanvasSpec


def rewrite_spec(noise: list[int], m: int, orig: list[int], following: list[int], strength: float, hold: int,
                 rng: random.Random) -> CanvasSpec:
    """A canvas whose first ``m`` positions rewrite ``orig`` (seeded with it, ``strength`` of it
    noise), with ``following`` held after them, its first ``hold`` tokens scoring the canvas."""
    seed = list(noise)
    for i, token in enumerate(orig[:m]):
        if rng.random() >= strength:
            seed[i] = token
    held = following[: len(seed) - m]
    seed[m: m + len(held)] = held
    pinned = list(range(m, m + len(held)))
    return CanvasSpec(seed=seed, pinned=pinned, scored=capped_scored(seed, [pinned[:hold]]))


@dataclass(frozen=True)
class EditAsk:
    prefix: str
    selection: str
    suffix: str
    instruction: str | None
    strength: float
    extra: Sequence[tuple[str, str]]
    max_tokens: int | None
    language: str | None = None  # repair the rewrite's syntax with this grammar (None: no repair)


async def edit(run: CanvasRun, tok: CheckpointTokenizer, ask: EditAsk, stops: frozenset[int],
               on_draft: DraftCallback | None, confidence: bool) -> EngineResult:
    """``ask.selection`` rewritten in place; ``stops`` are left out of its text."""
    t0 = time.perf_counter()
    strength = ask.strength
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
        raise SettingsError(f"strength must be a number between 0 and 1 (got {strength!r})")
    parts = build_parts(ask.prefix, ask.extra, ask.instruction)
    prompt = tok.prompt_ids(parts.header, parts.prefix)
    sel_ids = tok.encode_text(parts.healed + ask.selection)  # the healed indentation is the selection's now
    suffix_ids = tok.encode_text(ask.suffix)
    budget = checked_max_tokens(ask.max_tokens, default=max(2 * len(sel_ids) + 16, run.length))
    answer = Answer(tok.decode, parts.healed, ask.prefix, on_draft, confidence)
    finish, last = await _canvases(run, prompt, sel_ids, suffix_ids, float(strength), budget, answer)
    if ask.language is not None and last is not None and finish != "time":
        def render(tail: list[int]) -> str:
            kept = [t for t in answer.tokens[: answer.committed] + tail if t not in stops]
            return strip_heal(tok.decode(kept), parts.healed)

        repaired = await repair_span(run, tok.decode, last, answer.tokens[answer.committed:],
                                     answer.conf[answer.committed:], [ask.prefix, ask.suffix], render,
                                     ask.language, baseline=[ask.selection])
        if repaired is not None:
            answer.tokens[answer.committed:], answer.conf[answer.committed:] = repaired
    text = strip_heal(tok.decode([t for t in answer.tokens if t not in stops]), parts.healed)
    finish_timings(run.timings, len(answer.tokens), t0)
    return EngineResult(text=text, finish_reason=finish, timings=run.timings, hole_tokens=len(answer.tokens),
                        tokens=pieces(tok.decode, answer.tokens, answer.conf, text) if confidence else [])


async def _canvases(run: CanvasRun, prompt: list[int], sel_ids: list[int], suffix_ids: list[int], strength: float,
                    budget: int, answer: Answer) -> tuple[FinishReason, LastCanvas | None]:
    """The rewritten selection's tokens into ``answer``, canvas after canvas (``answer.committed``:
    where the last canvas's span starts); why it ended, and that last canvas."""
    length = run.length
    hold_cap = max(1, length // 4)
    pos = 0
    last: LastCanvas | None = None
    while True:
        rest = sel_ids[pos:]
        final = len(rest) <= length - min(hold_cap, len(suffix_ids))
        orig = rest if final else rest[: length - hold_cap]
        following = suffix_ids if final else rest[len(orig):] + suffix_ids
        cands = rewrite_lengths(length, orig, following, final, budget - len(answer.tokens))
        hold = min(len(following), length - max(cands)) if following else 0
        specs = [rewrite_spec(run.noise(), m, orig, following, strength, hold, run.rng) for m in cands]

        def scouted(i: int, reply: CanvasReply, cands: list[int] = cands) -> None:
            answer.draft(reply.tokens[: cands[i]], reply.confidence[: cands[i]], SCOUT_STEPS)

        ranked = await choose(run, prompt + answer.tokens, specs, 1, scouted)
        if not ranked.rows:
            return "time", last
        best, reply = ranked.rows[0]
        span, conf = reply.tokens[: cands[best]], reply.confidence[: cands[best]]
        run.timings.held_mismatches += reply.mismatches(specs[best])
        answer.draft(span, conf, run.full_steps)
        answer.committed = len(answer.tokens)
        last = LastCanvas(prompt + answer.tokens, specs[best], reply, len(span))
        answer.add(span, conf)
        pos += len(orig)
        answer.canvas += 1
        if ranked.timed_out:
            return "time", last
        if final or len(answer.tokens) >= budget:
            break
    return ("length" if len(answer.tokens) >= budget and pos < len(sel_ids) else "stop"), last
