"""Syntax repair through seeded canvases: the local engine's repair rounds (`engine.repair`) as vLLM
requests.

When the answer's last canvas brings syntax errors into its window, the tokens of its span that
overlap them (plus a margin, wider each round; the last round the whole span) are sent back as
noise in a canvas seeded with everything else it holds, and everything else is pinned: the rest of
the span, the held text after it. vLLM denoises the noised positions seeing both sides; its
tokens there replace ours (at the pinned positions we keep our own: vLLM pins only the input).
A few rows per round, each from its own noise; the first version that parses wins, the most
confident of a round's parsing rows; when none does, the answer stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from diffgemma.context.syntax import SyntaxIssue, new_issues, splice
from diffgemma.runtime.engine.vllm.canvases import CanvasRun
from diffgemma.runtime.engine.vllm.wire import CanvasReply, CanvasSpec

REFINE_ROUNDS = 3
REFINE_ROWS = 2
MARGIN_TOKENS = (2, 4)  # per round; the round after these re-noises the whole span

Decode = Callable[[Sequence[int]], str]
Render = Callable[[list[int]], str]  # the span's tokens -> its text as it is spliced into the window


@dataclass(frozen=True)
class LastCanvas:
    """An answer's last canvas: the prompt it followed, the spec it was denoised from and what came
    back; its span (the hole, the rewritten text) is its first ``span`` positions."""

    prompt: list[int]
    spec: CanvasSpec
    reply: CanvasReply
    span: int


def repair_language(language: str | None) -> str | None:
    """The grammar to repair with, or None when ``language`` has none here."""
    from diffgemma.context.languages import has_grammar, normalize_language

    name = normalize_language(language) if language else None
    return name if name is not None and has_grammar(name) else None


def _offsets(decode: Decode, tokens: list[int]) -> list[int]:
    """Where each token's text starts in the decoded span (and where the span ends)."""
    out = [0]
    for k in range(1, len(tokens) + 1):
        out.append(max(out[-1], len(decode(tokens[:k]))))
    return out


def noised_positions(decode: Decode, tokens: list[int], fixed: Sequence[str], text: str,
                     issues: list[SyntaxIssue], round_: int) -> list[int]:
    """Span positions to re-noise: those whose text overlaps an issue, plus the round's margin; in
    the last round all of them. An issue past the span (an unclosed bracket shows where the parser
    gives up) points at the span's tail."""
    n = len(tokens)
    if round_ >= len(MARGIN_TOKENS) or n == 0:
        return list(range(n))
    margin = MARGIN_TOKENS[round_]
    start = splice(fixed, [text]).fills[0][0]
    offsets = _offsets(decode, tokens)
    chosen: set[int] = set()
    for issue in issues:
        a, b = issue.start - start, issue.end - start
        touched = [k for k in range(n) if offsets[k] <= b and offsets[k + 1] >= a] or [n - 1]
        chosen.update(range(max(0, min(touched) - margin), min(n, max(touched) + margin + 1)))
    return sorted(chosen)


def _respec(last: LastCanvas, tokens: list[int], noised: list[int], noise: list[int]) -> CanvasSpec:
    seed = list(last.reply.tokens) + list(noise[len(last.reply.tokens):])
    seed[: len(tokens)] = tokens
    held = last.spec.seed or []
    for p in last.spec.pinned:
        seed[p] = held[p]
    for p in noised:
        seed[p] = noise[p]
    free = set(noised)
    pinned = sorted({p for p in range(len(tokens)) if p not in free} | set(last.spec.pinned))
    return CanvasSpec(seed=seed, pinned=pinned, steps=last.spec.steps)


async def repair_span(run: CanvasRun, decode: Decode, last: LastCanvas, tokens: list[int], conf: list[float],
                      fixed: Sequence[str], render: Render, language: str,
                      baseline: Sequence[str] | None = None) -> tuple[list[int], list[float]] | None:
    """The span's tokens and confidences repaired, or None when it parses already or no round finds
    a version that does (``fixed``: the window around the span; issues count against ``baseline``
    in its place, default empty)."""
    issues = new_issues(fixed, [render(tokens)], language, baseline)
    if not issues:
        return None
    for round_ in range(REFINE_ROUNDS):
        if run.expired():
            break
        noised = noised_positions(decode, tokens, fixed, render(tokens), issues, round_)
        run.timings.refine_rounds += 1
        batch = await run.denoise(last.prompt, [_respec(last, tokens, noised, run.noise()) for _ in range(REFINE_ROWS)])
        parsed = []
        for reply in batch.replies:
            if reply is None:
                continue
            new = [reply.tokens[p] if p in noised and p < len(reply.tokens) else t for p, t in enumerate(tokens)]
            sure = [reply.confidence[p] if p in noised and p < len(reply.confidence) else c for p, c in enumerate(conf)]
            if not new_issues(fixed, [render(new)], language, baseline):
                parsed.append((sum(sure[p] for p in noised) / max(1, len(noised)), new, sure))
        if parsed:
            _, new, sure = max(parsed, key=lambda found: found[0])
            return new, sure
        if batch.timed_out:
            break
    return None
