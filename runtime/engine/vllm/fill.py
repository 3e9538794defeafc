"""An infill (or a chat answer) canvas after canvas, as vLLM requests.

The same loop as the local engine's (`engine.fill.FillRun`): each canvas tries the candidate hole
lengths with the suffix head held after each (`canvases.choose`); a hole longer than one canvas
(the longest candidate wins) commits a plain canvas and searches again after it; without a
suffix, canvases follow one another until a stop token or the token budget. Each canvas is one
round of requests, so drafts come per canvas: the best scouted canvas, then the finished one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from diffgemma.runtime.engine.answer import AnswerTokens
from diffgemma.runtime.engine.confidence import pieces
from diffgemma.runtime.engine.layout import distinct, finish_timings, hole_candidates, until
from diffgemma.runtime.engine.prompt import strip_heal
from diffgemma.runtime.engine.types import Draft, DraftCallback, EngineResult, FinishReason
from diffgemma.runtime.engine.vllm.canvases import SCOUT_STEPS, CanvasRun, choose, hole_spec
from diffgemma.runtime.engine.vllm.repair import LastCanvas, repair_span
from diffgemma.runtime.engine.vllm.wire import CanvasReply, CanvasSpec

Decode = Callable[[Sequence[int]], str]


class Answer(AnswerTokens):
    """The tokens of an answer so far and the drafts that show it (`engine.fill.Fill`'s part)."""

    def draft(self, hole: list[int], conf: list[float], step: int) -> None:
        """A draft: the committed canvases and ``hole`` of the current one."""
        if self.on_draft is None:
            return
        tokens = self.tokens + hole
        text = strip_heal(self.decode(tokens), self.healed)
        shown = pieces(self.decode, tokens, self.conf + conf, text) if self.confidence else None
        self.on_draft(Draft(step=step, text=text, canvas=self.canvas, tokens=shown))


@dataclass(frozen=True)
class FillAsk:
    """One fill: the prompt, the held suffix, how the text joins its sides, its limits."""

    prompt: list[int]
    suffix_ids: list[int]
    healed: str
    prefix: str
    suffix: str
    max_tokens: int
    stops: frozenset[int]
    alternatives: int = 1
    language: str | None = None  # repair the fill's syntax with this grammar (None: no repair)


class FillLoop:
    """The canvases of one fill; ``run()`` leaves the answer in ``answer``, why it ended in
    ``finish``, the other candidates of the last canvas in ``rows_out`` and that canvas in
    ``last`` (for repair)."""

    def __init__(self, run: CanvasRun, ask: FillAsk, answer: Answer) -> None:
        self.run_ = run
        self.ask = ask
        self.answer = answer
        self.finish: FinishReason = "stop"
        self.rows_out: list[list[int]] = []
        self.last: LastCanvas | None = None

    async def run(self) -> None:
        while await self._canvas():
            pass

    def _lengths(self, remaining: int) -> tuple[list[int], int]:
        length, ask = self.run_.length, self.ask
        if ask.suffix_ids:
            lengths, hold = hole_candidates(length, remaining, len(ask.suffix_ids))
        else:
            lengths, hold = [min(remaining, length)], 0
        if len(lengths) < ask.alternatives:  # more rows of the same lengths, each its own noise
            lengths = sorted((lengths * ask.alternatives)[: max(ask.alternatives, len(lengths))])
        return lengths, hold

    async def _canvas(self) -> bool:
        """The next canvas; False when the fill is done."""
        run, ask, answer = self.run_, self.ask, self.answer
        held = bool(ask.suffix_ids)
        remaining = ask.max_tokens - len(answer.tokens)
        lengths, hold = self._lengths(remaining)
        specs = [hole_spec(run.noise(), n, ask.suffix_ids, hold) if held else CanvasSpec() for n in lengths]

        def scouted(i: int, reply: CanvasReply) -> None:
            answer.draft(reply.tokens[: lengths[i]], reply.confidence[: lengths[i]], SCOUT_STEPS)

        prompt = ask.prompt + answer.tokens
        ranked = await choose(run, prompt, specs, ask.alternatives, scouted)
        if not ranked.rows:  # out of time before any canvas came back
            self.finish = "time"
            return False
        best, reply = ranked.rows[0]
        hole, conf = reply.tokens[: lengths[best]], reply.confidence[: lengths[best]]
        if ranked.timed_out:
            run.timings.held_mismatches += reply.mismatches(specs[best])
            answer.add(until(hole, ask.stops), conf)
            self.finish = "time"
            return False
        answer.draft(hole, conf, run.full_steps)
        end = next((i for i, t in enumerate(hole) if t in ask.stops), None)
        rows = [(lengths[i], r.tokens) for i, r in ranked.rows]
        if not held and end is not None:
            self.last = LastCanvas(prompt, specs[best], reply, end)
            answer.add(hole[:end], conf)
            self.rows_out = [until(tokens[:n], ask.stops) for n, tokens in rows]
            return False
        longest_won = held and best == len(lengths) - 1 and len(lengths) > 1
        if longest_won and remaining > run.length:  # this canvas is dropped for a plain one
            return await self._plain(prompt)
        run.timings.held_mismatches += reply.mismatches(specs[best])  # the canvas the answer keeps
        self.rows_out = [tokens[:n] for n, tokens in rows]
        if not held and len(answer.tokens) + len(hole) < ask.max_tokens:
            answer.commit(hole, conf)
            return True
        self.last = LastCanvas(prompt, specs[best], reply, len(hole))
        answer.add(hole, conf)
        if len(answer.tokens) >= ask.max_tokens and (not held or best == len(lengths) - 1):
            self.finish = "length"
        return False

    async def _plain(self, prompt: list[int]) -> bool:
        """The hole is longer than this canvas: commit a plain canvas so the search goes on after
        it; False when the time ran out."""
        batch = await self.run_.denoise(prompt, [CanvasSpec(steps=self.run_.steps)])
        reply = batch.replies[0]
        if reply is None:
            self.finish = "time"
            return False
        self.answer.commit(reply.tokens, reply.confidence)
        return True


async def fill_canvases(run: CanvasRun, decode: Decode, ask: FillAsk, on_draft: DraftCallback | None,
                        confidence: bool) -> EngineResult:
    """A fill (or a chat answer) after ``ask.prompt``, canvas after canvas."""
    t0 = time.perf_counter()
    answer = Answer(decode, ask.healed, ask.prefix, on_draft, confidence)
    loop = FillLoop(run, ask, answer)
    await loop.run()
    if ask.language is not None and loop.last is not None and loop.finish != "time":
        await _repair(run, decode, ask, answer, loop.last, ask.language)
    text = answer.text(ask.suffix, ask.stops)
    others = [answer.text(ask.suffix, ask.stops, tail=row) for row in loop.rows_out] if ask.alternatives > 1 else []
    finish_timings(run.timings, len(answer.tokens), t0)
    return EngineResult(text=text, finish_reason=loop.finish, timings=run.timings, hole_tokens=len(answer.tokens),
                        alternatives=distinct([text, *others]) if ask.alternatives > 1 else [],
                        tokens=pieces(decode, answer.tokens, answer.conf, text) if confidence else [])


async def _repair(run: CanvasRun, decode: Decode, ask: FillAsk, answer: Answer, last: LastCanvas,
                  language: str) -> None:
    """The last canvas's hole repaired in place where it breaks the window's syntax (`repair`)."""
    base = answer.committed

    def render(tail: list[int]) -> str:
        return answer.text(ask.suffix, ask.stops, tail=until(tail, ask.stops))

    repaired = await repair_span(run, decode, last, answer.tokens[base:], answer.conf[base:],
                                 [ask.prefix, ask.suffix], render, language)
    if repaired is not None:
        tokens, conf = repaired
        answer.tokens[base:] = until(tokens, ask.stops)
        answer.conf[base:] = conf[: len(answer.tokens) - base]
