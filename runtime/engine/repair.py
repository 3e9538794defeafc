"""Syntax-guided repair: re-noise the part of a fill where the parse breaks and denoise it again.

After a canvas converges, its fills are spliced into the window around them and parsed with
tree-sitter (`context.syntax`). When the fills bring in ERROR or MISSING nodes that the window
without them does not have, the fill tokens overlapping those nodes (plus a margin) go back to
noise and the canvas is denoised again with every other position held, so the model rewrites
only where the syntax broke, seeing the text on both sides. A few rounds, a wider margin each
time, the last one re-noising the whole hole; the first version that parses wins. When none
does, the original stays. This is what a left-to-right decoder cannot do: it can only cut or
patch the end of its answer, never rewrite its middle with the suffix in view.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffgemma.context.syntax import SyntaxIssue, new_issues, splice
from diffgemma.runtime.engine import steps as S
from diffgemma.runtime.engine.canvas import Run, until
from diffgemma.runtime.engine.denoise import Problem
from diffgemma.runtime.engine.prompt import strip_heal
from diffgemma.runtime.engine.runner import CanvasRunner, EncodedPrompt, chosen_view

if TYPE_CHECKING:
    from diffgemma.runtime.engine.fill import Fill, LastCanvas
    from diffgemma.runtime.engine.rewrite import Rewritten

REFINE_ROUNDS = 3
# Rows denoised per round, each from its own noise: two tries for the price of a little more
# than one step's worth of decoder time at small canvases.
REFINE_ROWS = 2
MARGIN_TOKENS = (2, 4)  # per round; the round after these re-noises the whole hole
# Parses spent looking for a head of the fill that parses when no round does.
MAX_HEAD_CHECKS = 48


@dataclass
class Layout:
    """One denoised canvas row: its tokens, held positions, the holes in it and confidences."""

    tokens: list[int]
    held: list[bool]
    holes: list[tuple[int, int]]  # (start, length) in canvas positions
    confidence: list[float]

    def hole_tokens(self, i: int) -> list[int]:
        start, length = self.holes[i]
        return self.tokens[start: start + length]


# fills(layout) -> each hole's text as it will be spliced into the window
Renderer = Callable[[Layout], list[str]]


def repair_language(language: str | None) -> str | None:
    """The grammar to repair with, or None when ``language`` has none here."""
    from diffgemma.context.languages import has_grammar, normalize_language

    name = normalize_language(language) if language else None
    return name if name is not None and has_grammar(name) else None


def refine(runner: CanvasRunner, prompt: EncodedPrompt, layout: Layout, fixed: Sequence[str], render: Renderer,
           language: str | None, run: Run, baseline: Sequence[str] | None = None) -> Layout:
    """The layout with repaired holes, or ``layout`` itself when it parses or no round helps.
    ``fixed`` is the window's text around the holes (one more piece than holes); issues count
    against the window with ``baseline`` in the holes (default: empty)."""
    issues = new_issues(fixed, render(layout), language, baseline)
    if not issues:  # parses, or no grammar
        return layout
    tried: list[Layout] = []
    for round_ in range(REFINE_ROUNDS):
        if run.budget.expired():
            run.timed_out = True  # repair was cut: the answer says "time"
            break
        noised = _positions(runner, layout, fixed, render, issues, round_)
        if not noised:
            break
        run.timings.refine_rounds += 1
        if run.on_repair is not None:
            run.on_repair(round_ + 1, render(layout))
        if round_ >= len(MARGIN_TOKENS):  # the whole hole again, at other lengths too
            rows = [(lay, _hole_positions(lay)) for lay in _resized(layout)]
            rows += _closed(runner, layout, fixed, render, issues)
        else:
            rows = [(layout, noised)] * REFINE_ROWS
        candidates = _denoise_round(runner, prompt, rows, run)
        tried += candidates
        parsed = [(c, p) for c, (_, p) in zip(candidates, rows, strict=True)
                  if not new_issues(fixed, render(c), language, baseline)]
        if parsed:
            return max(parsed, key=lambda cp: _mean(cp[0].confidence, cp[1]))[0]
    # no round parses: a head of a version that does, else the model's own fill (never an
    # empty one: deleting what it wrote is no repair)
    return _line_head(runner, [layout, *tried], fixed, render, language, baseline) or layout


def _line_head(runner: CanvasRunner, layouts: list[Layout], fixed: Sequence[str], render: Renderer,
               language: str | None, baseline: Sequence[str] | None) -> Layout | None:
    """A head of one of ``layouts`` (one hole each) that leaves a window without new issues: cut
    after the last line break where one does, first of the layouts in order; else cut inside its
    last line, at the latest token where one does. The text kept is never blank."""
    seen: set[str] = set()
    checks = 0

    def parses(lay: Layout, m: int) -> Layout | None:
        nonlocal checks
        start = lay.holes[0][0]
        cut = Layout(tokens=lay.tokens, held=lay.held, holes=[(start, m)], confidence=lay.confidence)
        text = render(cut)[0]
        if not text.strip() or text in seen or checks >= MAX_HEAD_CHECKS:
            return None
        seen.add(text)
        checks += 1
        return cut if not new_issues(fixed, [text], language, baseline) else None

    if any(len(lay.holes) != 1 for lay in layouts):
        return None
    breaks = [[m for m in range(n - 1, 0, -1) if runner.decode(lay.tokens[s: s + m]).endswith("\n")]
              for lay in layouts for s, n in lay.holes]
    for lay, ms in zip(layouts, breaks, strict=True):  # whole lines
        for m in ms:
            if (found := parses(lay, m)) is not None:
                return found
    for lay, ms in zip(layouts, breaks, strict=True):  # the last line, cut at a token
        last = ms[0] if ms else 0
        for m in range(lay.holes[0][1] - 1, last, -1):
            if (found := parses(lay, m)) is not None:
                return found
    return None


def _mean(values: list[float], positions: list[int]) -> float:
    return sum(values[p] for p in positions) / max(1, len(positions))


def _positions(runner: CanvasRunner, layout: Layout, fixed: Sequence[str], render: Renderer,
               issues: list[SyntaxIssue], round_: int) -> list[int]:
    """Canvas positions to re-noise: fill tokens overlapping an issue, plus a margin; in the last
    round, every hole position. An issue in the fixed text (where the parser gave up on an
    unclosed bracket, say) points at the nearest fill before it."""
    if round_ >= len(MARGIN_TOKENS):
        return _hole_positions(layout)
    margin = MARGIN_TOKENS[round_]
    spliced = splice(fixed, render(layout))
    chosen: set[int] = set()
    for issue in issues:
        hit = [i for i, (a, b) in enumerate(spliced.fills) if issue.start <= b and issue.end >= a]
        if not hit:
            before = [i for i, (a, _) in enumerate(spliced.fills) if a <= issue.start]
            hit = [before[-1] if before else 0]
        for i in hit:
            start, length = layout.holes[i]
            offsets = _offsets(runner, layout.hole_tokens(i))
            a = issue.start - spliced.fills[i][0]
            b = issue.end - spliced.fills[i][0]
            touched = [k for k in range(length) if offsets[k] <= b and offsets[k + 1] >= a]
            if not touched:  # the issue lies past this fill: its tail
                touched = [length - 1]
            lo, hi = max(0, min(touched) - margin), min(length, max(touched) + margin + 1)
            chosen.update(range(start + lo, start + hi))
    return sorted(chosen)


def _offsets(runner: CanvasRunner, tokens: list[int]) -> list[int]:
    """Character offset where each token's text starts in the decoded fill (and the end)."""
    out, prev = [0], ""
    for k in range(1, len(tokens) + 1):
        text = runner.decode(tokens[:k])
        # a token that completes a multi-byte character can shorten the decoded text's tail
        out.append(max(out[-1], len(text) if text.startswith(prev[: len(text)]) else out[-1]))
        prev = text
    return out


def _hole_positions(layout: Layout) -> list[int]:
    return [p for start, length in layout.holes for p in range(start, start + length)]


def _resized(layout: Layout) -> list[Layout]:
    """The layout with its (single) hole at other lengths, the held text after it moved along:
    a fill that cannot parse at its length (a call missing its closing bracket) may at another.
    Several holes keep their lengths (two rows of the same)."""
    if len(layout.holes) != 1:
        return [layout] * REFINE_ROWS
    (start, n), size = layout.holes[0], len(layout.tokens)
    held_after = sum(layout.held[start + n:])
    room = size - start - min(held_after, max(1, size // 4))
    out = []
    # half, same, one and a half, double, and a longer one: a fill cut too short to close what it
    # opens (a docstring's quotes, a call's brackets) parses at none of the first four
    lengths = {max(1, n // 2), n, min(room, n + max(2, n // 2)), min(room, 2 * n), min(room, max(8, 4 * n))}
    for m in sorted(lengths - {0, -1}):
        def moved(values: list[Any], fill: Any, m: int = m) -> list[Any]:
            return (values[:start] + [fill] * m + values[start + n:] + [fill] * size)[:size]

        out.append(Layout(tokens=moved(layout.tokens, 0), held=moved(layout.held, False), holes=[(start, m)],
                          confidence=moved(layout.confidence, 0.0)))
    return out


# What closes an opener Python's parser names as never closed
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_NEVER_CLOSED = re.compile(r"^'([(\[{])' was never closed")


def _closer(issue: SyntaxIssue, text: str) -> str | None:
    """The text that closes what ``issue`` says was opened and never closed (Python's parser's
    words: a bracket, a string), or None."""
    if (m := _NEVER_CLOSED.match(issue.message)) is not None:
        return _CLOSERS[m.group(1)]
    if issue.message.startswith("unterminated triple-quoted string"):
        quote = text[issue.start: issue.start + 3]
        return quote if quote in ('"""', "'''") else None
    if issue.message.startswith("unterminated string literal"):
        quote = text[issue.start: issue.start + 1]
        return quote if quote in ('"', "'") else None
    return None


def _closed(runner: CanvasRunner, layout: Layout, fixed: Sequence[str], render: Renderer,
            issues: list[SyntaxIssue]) -> list[tuple[Layout, list[int]]]:
    """A row that keeps the fill up to an opener it never closes (a docstring's quotes, a call's
    bracket), holds the closer a few lines later and lets the model write between them: the
    canvas denoises both ways, so the text in between is written knowing where it must end."""
    if len(layout.holes) != 1:
        return []
    spliced = splice(fixed, render(layout))
    (start, n), size = layout.holes[0], len(layout.tokens)
    fill_start, fill_end = spliced.fills[0]
    for issue in issues:
        closer = _closer(issue, spliced.text)
        if closer is None or not fill_start <= issue.start < fill_end:
            continue
        offsets = _offsets(runner, layout.hole_tokens(0))
        opener = len(closer) if closer[0] in "\"'" else 1  # a string opens with its closer's quotes
        head = next((k for k in range(1, n + 1) if offsets[k] >= issue.start - fill_start + opener), n)
        ends = runner.encode_text(closer)
        middle = max(8, 2 * n)
        hole = head + middle + len(ends)
        held_after = sum(layout.held[start + n:])
        if start + hole + min(held_after, max(1, size // 4)) > size:
            return []
        tokens = (layout.tokens[:start + head] + [0] * middle + ends + layout.tokens[start + n:])[:size]
        held = (layout.held[:start + head] + [False] * (middle + len(ends)) + layout.held[start + n:])[:size]
        conf = (layout.confidence[:start + head] + [0.0] * middle + [1.0] * len(ends)
                + layout.confidence[start + n:])[:size]
        pad = size - len(tokens)
        closed = Layout(tokens=tokens + [0] * pad, held=held + [False] * pad, holes=[(start, hole)],
                        confidence=conf + [0.0] * pad)
        return [(closed, list(range(start + head, start + head + middle)))]
    return []


def _denoise_round(runner: CanvasRunner, prompt: EncodedPrompt, rows: list[tuple[Layout, list[int]]],
                   run: Run) -> list[Layout]:
    """One row per (layout, positions): those positions re-noised, the rest of the holes and the
    held text held; the free tail after the held text stays free, as in the first pass."""
    device = runner.device
    length = len(rows[0][0].tokens)
    noise = runner.noise(len(rows), run.gen).cpu()
    canvas, masks, held_tokens, focus = [], [], [], []
    for r, (layout, noised) in enumerate(rows):
        current = torch.tensor(layout.tokens, dtype=torch.long)
        hole_mask = torch.zeros(length, dtype=torch.bool)
        for start, n in layout.holes:
            hole_mask[start: start + n] = True
        free = torch.zeros(length, dtype=torch.bool)
        free[noised] = True
        held = (torch.tensor(layout.held, dtype=torch.bool) | hole_mask) & ~free
        canvas.append(torch.where(free, noise[r], current))
        masks.append(held)
        held_tokens.append(torch.where(held, current, torch.full_like(current, -1)))
        focus.append(free)
    clamp = S.Clamp(mask=torch.stack(masks).to(device), tokens=torch.stack(held_tokens).to(device))
    problem = Problem(canvas=torch.stack(canvas).to(device), clamp=clamp, keep=0, focus=torch.stack(focus).to(device))
    out = runner.denoise(prompt, problem, run)
    run.timed_out = run.timed_out or out.timed_out
    results = []
    for r, (layout, noised) in enumerate(rows):
        conf = out.confidence[r].tolist()
        free_set = set(noised)
        merged = [conf[p] if p in free_set else layout.confidence[p] for p in range(length)]
        results.append(Layout(tokens=out.argmax[r].tolist(), held=layout.held, holes=layout.holes,
                              confidence=merged))
    return results


def _last_layout(last: LastCanvas, hole_len: int) -> Layout:
    """The chosen row of a request's last canvas, its hole (``hole_len`` tokens) at the start."""
    view = chosen_view(last.out, last.best, last.problem, [(0, hole_len)])
    return Layout(tokens=view.tokens, held=view.held, holes=view.spans, confidence=view.confidence)


def repair_fill(runner: CanvasRunner, fill: Fill, last: LastCanvas, suffix: str, stops: set[int],
                held_suffix: bool, language: str, run: Run) -> None:
    """Syntax-guided repair of an infill's last canvas (`fill.Fill`), in place: the hole
    of the chosen row, with the committed canvases before it and the suffix after it fixed."""
    base = fill.committed
    hole_len = len(fill.tokens) - base
    if not held_suffix:  # the hole ran to a stop token: a few positions past it may grow it
        hole_len = min(last.out.argmax.shape[1], hole_len + 4)
    layout = _last_layout(last, max(hole_len, 1))

    def cut(tokens: list[int]) -> list[int]:
        return tokens if held_suffix else until(tokens, stops)

    def render(lay: Layout) -> list[str]:
        return [fill.text(suffix, stops, tail=cut(lay.hole_tokens(0)))]

    fixed = [fill.prefix, suffix]
    repaired = refine(runner, last.prompt, layout, fixed, render, language, run)
    if repaired is not layout:
        new = cut(repaired.hole_tokens(0))
        fill.tokens[base:] = new
        fill.conf[base:] = repaired.confidence[: len(new)]


def repair_rewrite(runner: CanvasRunner, done: Rewritten, prefix: str, selection: str, suffix: str, healed: str,
                   language: str, run: Run) -> None:
    """Syntax-guided repair of an inline rewrite's last canvas (`rewrite.Rewritten`), in place:
    its span re-noised where the rewrite brings in errors that ``selection`` in its place did not
    have, the earlier canvases' tokens and the held text after the span fixed."""
    if done.last is None:
        return
    base = done.committed
    span = len(done.tokens) - base
    if span < 1:
        return
    layout = _last_layout(done.last, span)

    def render(lay: Layout) -> list[str]:
        return [strip_heal(runner.decode(done.tokens[:base] + lay.hole_tokens(0)), healed)]

    repaired = refine(runner, done.last.prompt, layout, [prefix, suffix], render, language, run,
                      baseline=[selection])
    if repaired is not layout:
        new = repaired.hole_tokens(0)
        done.tokens[base:] = new
        done.confidence[base:] = repaired.confidence[: len(new)]
