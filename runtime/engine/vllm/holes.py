"""Several holes in one request, as vLLM requests (the local engine's plan: `engine.holes`).

Holes close together share one canvas, ``[hole][between][hole]...[hole][after]``, the text between
them pinned; groups farther apart are filled left to right, each after the earlier fills. In a
shared canvas the hole lengths are scouted first: one short request per candidate length (every
hole at that length), each hole then taking the length under which the held text right after it
scored best; then one request per answer wanted (alternatives) at the chosen lengths, each from
its own noise. A row whose pinned positions came back as held ranks first (it joins exactly).
A group of one hole is a single-hole fill (`fill`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from diffgemma.runtime.api import config
from diffgemma.runtime.engine.confidence import pieces as token_pieces
from diffgemma.runtime.engine.layout import (
    check_alternatives,
    finish_timings,
    hole_candidates,
    plan_groups,
    sets,
    trim_join,
)
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.types import (
    Draft,
    DraftCallback,
    EngineResult,
    FinishReason,
    HoleDraft,
    HoleFill,
    HolesDraft,
    SettingsError,
    TokenPiece,
)
from diffgemma.runtime.engine.vllm.canvases import SCOUT_STEPS, CanvasRun, capped_scored, rank
from diffgemma.runtime.engine.vllm.fill import FillAsk, fill_canvases
from diffgemma.runtime.engine.vllm.tokens import CheckpointTokenizer
from diffgemma.runtime.engine.vllm.wire import CanvasReply, CanvasSpec


@dataclass(frozen=True)
class HolesAsk:
    pieces: list[str]  # the fixed text around the holes (one more piece than holes)
    extra: Sequence[tuple[str, str]]
    max_tokens: int | None  # per hole
    alternatives: int
    confidence: bool
    stops: frozenset[int]
    language: str | None = None  # repair single-hole groups' syntax with this grammar


class HoleDrafts:
    """Drafts of several holes: the finished groups' holes final, the current group's refining,
    the rest waiting (`engine.holes`' drafts, one per canvas here)."""

    def __init__(self, on_draft: DraftCallback, count: int) -> None:
        self.on_draft = on_draft
        self.count = count
        self.done: list[HoleFill] = []
        self.steps = 0

    def show(self, current: list[tuple[str, list[TokenPiece]]], group: int) -> None:
        self.steps += 1
        holes = [HoleDraft(f.text, "final", list(f.tokens)) for f in self.done]
        holes += [HoleDraft(text, "refining", tokens) for text, tokens in current]
        holes += [HoleDraft("", "waiting") for _ in range(self.count - len(holes))]
        first = holes[0]
        self.on_draft(HolesDraft(step=self.steps, text=first.text, canvas=group, tokens=first.tokens, holes=holes))

    def single(self, group: int) -> DraftCallback:
        def relay(draft: Draft) -> None:
            if not draft.final:
                self.show([(draft.text, list(draft.tokens or []))], group)

        return relay


@dataclass
class _Layout:
    """Holes of chosen lengths in one canvas: where each is, the held text, the scored spans."""

    holes: list[tuple[int, int]]
    held: dict[int, int]  # position -> held token
    spans: list[list[int]]  # per hole: the held positions right after it that score it

    def spec(self, noise: list[int]) -> CanvasSpec:
        seed = list(noise)
        for p, token in self.held.items():
            seed[p] = token
        return CanvasSpec(seed=seed, pinned=sorted(self.held), scored=capped_scored(seed, self.spans))


def layout(lengths: Sequence[int], between: Sequence[list[int]], length: int, hold_cap: int) -> _Layout:
    holes: list[tuple[int, int]] = []
    held: dict[int, int] = {}
    spans: list[list[int]] = []
    pos = 0
    for n, after in zip(lengths, between, strict=True):
        holes.append((pos, n))
        pos += n
        kept = after[: max(0, length - pos)]
        held.update({pos + i: t for i, t in enumerate(kept)})
        spans.append(list(range(pos, pos + min(len(kept), hold_cap))))
        pos += len(kept)
    return _Layout(holes, held, spans)


GroupOut = tuple[list[HoleFill], FinishReason, list[tuple[str, ...]]]


async def infill_holes(run: CanvasRun, tok: CheckpointTokenizer, ask: HolesAsk,
                       on_draft: DraftCallback | None) -> EngineResult:
    """Fill the holes between ``ask.pieces``; one `HoleFill` per hole in ``holes``."""
    fixed = ask.pieces
    if not 2 <= len(fixed) <= config.MAX_HOLES + 1:
        raise SettingsError(f"between 1 and {config.MAX_HOLES} holes are allowed (got {len(fixed) - 1})")
    check_alternatives(ask.alternatives)
    t0 = time.perf_counter()
    drafts = HoleDrafts(on_draft, len(fixed) - 1) if on_draft is not None else None
    fixed_ids = [tok.encode_text(p) for p in fixed]
    fills: list[HoleFill] = []
    group_sets: list[list[tuple[str, ...]]] = []
    finish: FinishReason = "stop"
    for index, group in enumerate(plan_groups(run.length, fixed_ids)):
        first, last = group.holes[0], group.holes[-1]
        before = fixed[0] + "".join(f.text + fixed[h + 1] for h, f in enumerate(fills))
        if len(group.holes) == 1:
            out = await _single(run, tok, before, fixed[first + 1], ask, drafts, index)
        else:
            out = await _joint(run, tok, before, list(fixed[first + 1: last + 2]), fixed_ids[first + 1: last + 2],
                               ask, drafts, index)
        fills += out[0]
        group_sets.append(out[2])
        if drafts is not None:
            drafts.done = list(fills)
        if out[1] == "time" or (out[1] == "length" and finish == "stop"):
            finish = out[1]
    chosen = sets(group_sets, ask.alternatives) if ask.alternatives > 1 else []
    answers = [dataclasses.replace(f, alternatives=[s[i] for s in chosen]) for i, f in enumerate(fills)]
    timings = finish_timings(run.timings, sum(f.hole_tokens for f in fills), t0)
    return EngineResult(text=fills[0].text, finish_reason=finish, timings=timings,
                        hole_tokens=sum(f.hole_tokens for f in fills), tokens=fills[0].tokens,
                        alternatives=[s[0] for s in chosen] if len(fixed) == 2 else [], holes=answers)


async def _single(run: CanvasRun, tok: CheckpointTokenizer, before: str, after: str, ask: HolesAsk,
                  drafts: HoleDrafts | None, index: int) -> GroupOut:
    parts = build_parts(before, ask.extra)
    fill = FillAsk(prompt=tok.prompt_ids(parts.header, parts.prefix), suffix_ids=tok.encode_text(after),
                   healed=parts.healed, prefix=before, suffix=after,
                   max_tokens=ask.max_tokens or run.length, stops=ask.stops, alternatives=ask.alternatives,
                   language=ask.language)
    r = await fill_canvases(run, tok.decode, fill, drafts.single(index) if drafts is not None else None,
                            ask.confidence)
    return ([HoleFill(text=r.text, hole_tokens=r.hole_tokens, tokens=r.tokens)], r.finish_reason,
            [(t,) for t in (r.alternatives or [r.text])])


async def _joint(run: CanvasRun, tok: CheckpointTokenizer, before: str, after: list[str], after_ids: list[list[int]],
                 ask: HolesAsk, drafts: HoleDrafts | None, group: int) -> GroupOut:
    """Holes sharing one canvas; ``after[i]`` is the fixed text after hole i."""
    length, k = run.length, len(after)
    hold_cap = max(1, length // 4)
    between = [*after_ids[:-1], after_ids[-1][:hold_cap]]
    room = (length - sum(len(b) for b in between)) // k
    parts = build_parts(before, ask.extra)
    prompt = tok.prompt_ids(parts.header, parts.prefix)
    context = [before, *after]

    def texts(lay: _Layout, reply: CanvasReply) -> list[tuple[str, list[TokenPiece]]]:
        out = []
        for i, (start, n) in enumerate(lay.holes):
            tokens, conf = reply.tokens[start: start + n], reply.confidence[start: start + n]
            text = strip_heal(tok.decode([t for t in tokens if t not in ask.stops]), parts.healed if i == 0 else "")
            text = trim_join(text, context[i], context[i + 1])
            out.append((text, token_pieces(tok.decode, tokens, conf, text) if ask.confidence else []))
        return out

    show: Callable[[_Layout, CanvasReply], None] | None = None
    if drafts is not None:
        def show(lay: _Layout, reply: CanvasReply) -> None:
            drafts.show(texts(lay, reply), group)

    grid, _ = hole_candidates(length, max(1, min(room, ask.max_tokens or room)), 0)
    lengths, fallback = await _scout(run, prompt, grid, between, hold_cap, k, show)
    chosen = layout(lengths, between, length, hold_cap)
    specs = [chosen.spec(run.noise()).with_steps(run.steps) for _ in range(ask.alternatives)]
    batch = await run.denoise(prompt, specs)
    order = [i for i in rank(specs, batch.replies) if batch.replies[i] is not None]
    replies = [r for i in order if (r := batch.replies[i]) is not None]
    rows = [texts(chosen, r) for r in replies]
    if replies:
        run.timings.held_mismatches += replies[0].mismatches(specs[order[0]])
    elif fallback is not None:
        run.timings.held_mismatches += fallback[1].mismatches(fallback[0].spec(fallback[1].tokens))
    if replies and show is not None:
        show(chosen, replies[0])
    if not rows and fallback is not None:  # out of time before the final canvas: the best scouted one
        rows = [texts(*fallback)]
    if not rows:
        rows = [[("", [])] * k]
    fills = [HoleFill(text=text, hole_tokens=n, tokens=shown)
             for (text, shown), (_, n) in zip(rows[0], chosen.holes, strict=True)]
    return fills, "time" if batch.timed_out or not replies else "stop", [tuple(t for t, _ in row) for row in rows]


async def _scout(run: CanvasRun, prompt: list[int], grid: list[int], between: list[list[int]], hold_cap: int, k: int,
                 show: Callable[[_Layout, CanvasReply], None] | None
                 ) -> tuple[list[int], tuple[_Layout, CanvasReply] | None]:
    """Each hole's length, and the best scouted canvas (the answer if time runs out first)."""
    if len(grid) == 1:
        return [grid[-1]] * k, None
    rows = [layout([n] * k, between, run.length, hold_cap) for n in grid]
    specs = [lay.spec(run.noise()).with_steps(min(SCOUT_STEPS, run.full_steps)) for lay in rows]
    batch = await run.denoise(prompt, specs)
    done = [r for r in range(len(grid)) if batch.replies[r] is not None]
    if not done:
        return [grid[-1]] * k, None
    lengths = []
    for i in range(k):
        def mean(r: int, i: int = i) -> float:
            reply = batch.replies[r]
            assert reply is not None
            scored = [p for p in rows[r].spans[i] if p in set(specs[r].scored)]
            return sum(reply.held_logp.get(p, 0.0) for p in scored) / max(1, len(scored))

        lengths.append(grid[max(done, key=mean)])
    best = rank(specs, batch.replies)[0]
    reply = batch.replies[best]
    assert reply is not None
    if show is not None:
        show(rows[best], reply)
    return lengths, (rows[best], reply)
