"""Candidate canvases as concurrent vLLM requests, and the choice between them.

The local engine denoises candidate rows (hole lengths, rewrite lengths) as one batch and halves
them on their held-text score after each of the first steps. vLLM emits a read-only canvas once,
when it converges, so the choice is made in two rounds of concurrent requests (`choose`):

1. scouting: every candidate denoised for ``SCOUT_STEPS`` steps, scored on the log-probability of
   its held tokens (the same score the local engine prunes on);
2. finals: the best ``FINALISTS`` (or as many as alternatives asked for) continue from their
   scouted canvases for the full steps. A canvas whose emitted tokens at the pinned positions are
   not the held ones does not join exactly (vLLM pins only the input), so it ranks below every
   canvas that does. With one answer wanted, the race ends as soon as the best-scouted finalist
   that joins exactly is in: the others are aborted (their connections closed).

The request's budget is watched throughout: a cancel (a disconnect, a newer request of the same
client) aborts every request in flight and raises `Cancelled`; at the deadline the requests in
flight are aborted and the best canvas so far (a final, else a scouted one: a draft is always a
whole answer) is the answer, with ``timed_out`` set.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from diffgemma.runtime.engine.types import Cancelled, CancelToken, Timings
from diffgemma.runtime.engine.vllm.servers import ServerPool
from diffgemma.runtime.engine.vllm.wire import (
    MAX_LOGPROB_TOKEN_IDS,
    CanvasReply,
    CanvasSpec,
    completion_body,
    parse_reply,
)

SCOUT_STEPS = 2  # steps of the scouting round (the held-text scores separate within two)
FINALISTS = 2  # candidates that go on to the full steps when one answer is wanted
POLL_S = 0.02  # how often a call looks at its cancel token while requests are in flight


@dataclass
class Batch:
    """The answers to concurrent requests, in request order (None: not finished), and whether the
    deadline cut the round."""

    replies: list[CanvasReply | None]
    timed_out: bool = False


@dataclass
class Ranked:
    """Candidates by rank, best first: (candidate index, its canvas)."""

    rows: list[tuple[int, CanvasReply]]
    timed_out: bool = False


StopWhen = Callable[[list[CanvasReply | None]], bool]


class CanvasRun:
    """What the canvases of one engine call share: the servers and the key that routes them, the
    canvas geometry, the budget, the random noise, the steps and the timings."""

    def __init__(self, pool: ServerPool, key: str, canvas_length: int, vocab_size: int, *,
                 cancel: CancelToken | None, deadline: float | None, steps: int | None, default_steps: int) -> None:
        self.pool = pool
        self.key = key
        self.length = canvas_length
        self.vocab = vocab_size
        self.cancel = cancel
        self.deadline = deadline
        self.steps = steps  # diffusion_max_steps to send (None: the server's own)
        self.full_steps = steps if steps is not None else default_steps
        self.rng = random.Random()  # noise only: vLLM itself takes no seed, so nothing here repeats
        self.timings = Timings()
        self.requests = 0

    def noise(self) -> list[int]:
        return [self.rng.randrange(self.vocab) for _ in range(self.length)]

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def _one(self, prompt: list[int], spec: CanvasSpec) -> CanvasReply:
        self.requests += 1
        _server, data = await self.pool.complete(self.key, completion_body("", prompt, spec, self.length))
        reply = parse_reply(data, spec)
        self.timings.encoded_tokens += reply.prompt_tokens
        if self.timings.canvases == 0:  # the request's own prompt (later canvases' hold earlier text)
            self.timings.cached_tokens = max(self.timings.cached_tokens, reply.cached_tokens)
            self.timings.prompt_tokens = max(self.timings.prompt_tokens, len(prompt))
        return reply

    async def denoise(self, prompt: list[int], specs: list[CanvasSpec], stop_when: StopWhen | None = None) -> Batch:
        """Every spec as its own request, at once; ends when all are in, ``stop_when`` says enough
        (the rest are aborted), or the deadline passes (the rest are aborted, ``timed_out``)."""
        tasks: list[asyncio.Future[CanvasReply]] = [asyncio.ensure_future(self._one(prompt, spec)) for spec in specs]
        replies: list[CanvasReply | None] = [None] * len(specs)
        timed_out = await settle(tasks, replies, self.cancel, self.deadline, stop_when)
        self.timings.canvases += 1
        return Batch(replies, timed_out)


async def _abort(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel the requests still in flight and wait until their connections are closed; the
    failures of those that ended are taken (the call has raised the first one already)."""
    live = [t for t in tasks if not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
    for task in tasks:
        if not task.cancelled():
            task.exception()


async def settle(tasks: list[asyncio.Future[CanvasReply]], replies: list[CanvasReply | None],
                 cancel: CancelToken | None, deadline: float | None, stop_when: StopWhen | None) -> bool:
    """Wait for ``tasks``, filling ``replies``; True when the deadline cut them."""
    pending: set[asyncio.Future[CanvasReply]] = set(tasks)
    try:
        while pending:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("request cancelled")
            wait = POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                wait = min(wait, left)
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                replies[tasks.index(task)] = task.result()  # a failed request fails the call
            if done and stop_when is not None and stop_when(replies):
                return False
        return False
    finally:
        await _abort(list(tasks))


def rank(specs: list[CanvasSpec], replies: list[CanvasReply | None]) -> list[int]:
    """Finished candidates, best first: those that join exactly, then by held-text score (the
    earlier, shorter candidate on a tie, as the local engine's argmax)."""
    done = [i for i, r in enumerate(replies) if r is not None]

    def key(i: int) -> tuple[bool, float, int]:
        reply = replies[i]
        assert reply is not None
        return (not reply.joins(specs[i]), -reply.score(specs[i]), i)

    return sorted(done, key=key)


def continued(spec: CanvasSpec, reply: CanvasReply) -> CanvasSpec:
    """``spec`` seeded with what its scouting canvas reached (the held tokens held again)."""
    base = spec.seed if spec.seed is not None else reply.tokens
    seed = [reply.tokens[p] if p < len(reply.tokens) else base[p] for p in range(len(base))]
    for p in spec.pinned:
        seed[p] = base[p]
    return CanvasSpec(seed=seed, pinned=spec.pinned, scored=spec.scored, steps=spec.steps)


def _first_join(specs: list[CanvasSpec]) -> StopWhen:
    """Stop once the best-scouted finalist that joins exactly is in (every finalist scouted
    better has finished and does not join)."""
    def enough(replies: list[CanvasReply | None]) -> bool:
        for spec, reply in zip(specs, replies, strict=True):
            if reply is None:
                return False
            if reply.joins(spec):
                return True
        return False

    return enough


Scouted = Callable[[int, CanvasReply], None]


async def choose(run: CanvasRun, prompt: list[int], specs: list[CanvasSpec], keep: int,
                 on_scout: Scouted | None = None) -> Ranked:
    """Denoise the candidate ``specs`` and rank them (see the module's text); ``keep``: how many
    answers are wanted (alternatives); ``on_scout`` sees the best scouted canvas (a draft)."""
    steps = [s.with_steps(run.steps) for s in specs]
    stop = _first_join if keep == 1 else None
    if len(specs) == 1 or run.full_steps <= SCOUT_STEPS:  # nothing to scout: the candidates as they are
        batch = await run.denoise(prompt, steps)
        return Ranked([(i, r) for i in rank(steps, batch.replies) if (r := batch.replies[i]) is not None],
                      batch.timed_out)
    scout = await run.denoise(prompt, [s.with_steps(SCOUT_STEPS) for s in specs])
    scouted = [(i, r) for i in rank(specs, scout.replies) if (r := scout.replies[i]) is not None]
    if scout.timed_out or not scouted:
        return Ranked(scouted, True)
    if on_scout is not None:
        on_scout(*scouted[0])
    finalists = scouted[: max(keep, FINALISTS)]
    finals = [continued(steps[i], reply) for i, reply in finalists]
    batch = await run.denoise(prompt, finals, stop(finals) if stop else None)
    rows = [(finalists[j][0], r) for j in rank(finals, batch.replies) if (r := batch.replies[j]) is not None]
    if not rows:  # out of time before any final: the scouted canvases are the best so far
        return Ranked(scouted, True)
    return Ranked(rows, batch.timed_out)


def capped_scored(seed: list[int], spans: list[list[int]]) -> list[int]:
    """Scored positions from several spans (one per hole), taken in turn from each span's head,
    while the distinct tokens they hold fit vLLM's limit on ``logprob_token_ids``."""
    ids: set[int] = set()
    out: list[int] = []
    for depth in range(max((len(s) for s in spans), default=0)):
        for span in spans:
            if depth < len(span):
                p = span[depth]
                if seed[p] not in ids and len(ids) >= MAX_LOGPROB_TOKEN_IDS:
                    return sorted(out)
                ids.add(seed[p])
                out.append(p)
    return sorted(out)


def hole_spec(noise: list[int], n: int, following: list[int], hold: int) -> CanvasSpec:
    """A canvas with its first ``n`` positions to write, ``following`` held right after them and
    its first ``hold`` held tokens scoring it."""
    seed = list(noise)
    held = following[: len(seed) - n]
    seed[n: n + len(held)] = held
    pinned = list(range(n, n + len(held)))
    return CanvasSpec(seed=seed, pinned=pinned, scored=capped_scored(seed, [pinned[:hold]]))


def run_sync(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on the engine's event loop from a worker thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
