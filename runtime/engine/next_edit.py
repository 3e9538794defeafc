"""Next-edit suggestions over any engine that rewrites: the edit that follows the recent ones.

`next_edit` is a function of an engine's ``edit`` (a rewrite whose canvas starts from the current
text and keeps what the model does not confidently change), not a method of one engine, so every
engine that offers ``edit`` offers next-edit too. It:

1. reads what the recent edits changed (`context.recent_edits`: renamed names, functions that gained
   parameters) and where that still shows in the document (`context.edit_places`);
2. picks the window to rewrite: the enclosing function or block of the cursor when a candidate
   place lies there, else of the next candidate, cut to a few canvases of tokens;
3. rewrites it with the recent edits in the prompt (a diff block before the code), asking for
   per-token confidences;
4. turns the rewritten window into line edits (`context.line_edits`), keeps those whose changed
   tokens are all more probable than the threshold and that bring in no syntax error, and names
   the candidate place after the window as where to go next.

The rewrite is not repaired (``refine=False``): the syntax gate judges each line edit on its own,
so a sure change on one line survives a broken one on another, and the repair rounds would triple
the decoder tokens of a suggestion for proposals that the threshold mostly drops anyway.

The drafts carry the window's rewrite so far and its edits (no threshold), so an editor can show
the suggestion forming. Torch-free: the daemon's stream code imports its draft type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from diffgemma.context.edit_places import Place, candidate_places, plan
from diffgemma.context.line_edits import LineChange, apply_changes, keep_parsing, line_changes
from diffgemma.context.recent_edits import changes as read_changes
from diffgemma.context.window import selection_window
from diffgemma.runtime.api.config import DEFAULT_CONTEXT_CHARS
from diffgemma.runtime.engine.types import CancelToken, Draft, EngineResult, FinishReason, SamplingSettings, Timings

DraftCallback = Callable[[Draft], None]
# How much of the window the rewrite re-noises from the start (see Engine.edit's ``strength``): a
# next edit changes little, so most of the window starts as it is and stays unless the model is sure.
STRENGTH = 0.3
MAX_WINDOW_LINES = 40  # the largest enclosing block a window takes whole
MAX_CANVASES = 3  # the window is cut to what this many canvases rewrite
DIFF_PATH = "recent edits (unified diff)"  # how the diff block is introduced in the prompt


class EditingEngine(Protocol):
    """What next-edit needs of an engine: its rewrite, its tokenizer and its canvas length."""

    canvas_length: int

    def encode_text(self, text: str) -> list[int]: ...

    def edit(self, prefix: str, selection: str, suffix: str, **options: Any) -> EngineResult: ...


@dataclass
class NextEditDraft(Draft):
    """A draft of the window's rewrite and the line edits it would make so far (no threshold)."""

    edits: list[LineChange] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)  # document lines [start, end) being rewritten


@dataclass
class NextEditAnswer:
    """The proposed edits (document lines), where to go next, and why nothing is proposed."""

    edits: list[LineChange]
    next_line: int | None
    threshold: float
    reason: str | None
    text: str  # the window as the proposed edits leave it
    window: tuple[int, int]  # document lines [start, end) the model rewrote
    finish_reason: FinishReason
    timings: Timings
    places: list[Place] = field(default_factory=list)  # the candidate places found (text lines)
    # why nothing is proposed, as a word: "kept" (no change), "unsure" (under the threshold),
    # "syntax" (every sure change adds a syntax error); None when something is
    why: str | None = None


@dataclass(frozen=True)
class _Window:
    start: int  # text lines [start, end)
    end: int
    next_line: int | None  # text line


def diff_block(edits: Sequence[tuple[str, str]]) -> str:
    """The recent edits as one unified diff, each under its file's header."""
    parts = []
    for path, diff in edits:
        body = diff if diff.endswith("\n") else diff + "\n"
        if not body.startswith(("---", "diff ")):
            body = f"--- a/{path}\n+++ b/{path}\n{body}"
        parts.append(body)
    return "".join(parts)


def _fit(engine: EditingEngine, lines: list[str], start: int, end: int, focus: int) -> tuple[int, int]:
    """[start, end) cut, around ``focus``, to what MAX_CANVASES canvases rewrite (a quarter of each
    holds what follows)."""
    room = MAX_CANVASES * (engine.canvas_length - engine.canvas_length // 4)
    sizes = [len(engine.encode_text(line)) for line in lines[start:end]]
    while sum(sizes) > room and end - start > 1:
        if end - 1 - focus >= focus - start:
            end -= 1
            sizes.pop()
        else:
            start += 1
            sizes.pop(0)
    return start, end


def _window(engine: EditingEngine, text: str, lines: list[str], language: str | None, cursor: int,
            places: list[Place]) -> _Window:
    chosen = plan(text, language, cursor, places, MAX_WINDOW_LINES)
    inside = [p.line for p in places if chosen.start_line <= p.line < chosen.end_line]
    # cut around the place nearest the cursor (the cursor's own line holds the edit already made)
    focus = min(inside, key=lambda n: abs(n - cursor)) if inside else cursor
    start, end = _fit(engine, lines, chosen.start_line, chosen.end_line, focus)
    outside = [p.line for p in places if not start <= p.line < end]
    after = [n for n in outside if n >= end]
    return _Window(start, end, after[0] if after else (outside[0] if outside else None))


def _reason(found: list[LineChange], confident: list[LineChange], kept: list[LineChange],
            threshold: float) -> tuple[str, str] | tuple[None, None]:
    """(why, in a word; the one line the answer says) when nothing is proposed."""
    if kept:
        return None, None
    if not found:
        return "kept", "no change: the model keeps the code around the cursor as it is"
    if not confident:
        best = max(c.confidence for c in found)
        return "unsure", f"no confident change (the most confident is {best:.2f}, the threshold {threshold:g})"
    return "syntax", "every confident change would add a syntax error"


def next_edit(engine: EditingEngine, text: str, cursor_line: int, *, first_line: int = 0,
              edits: Sequence[tuple[str, str]] = (), path: str | None = None, language: str | None = None,
              threshold: float, extra: Sequence[tuple[str, str]] = (), max_tokens: int | None = None,
              settings: SamplingSettings | None = None, on_draft: DraftCallback | None = None,
              cancel: CancelToken | None = None, deadline: float | None = None,
              context_chars: int = DEFAULT_CONTEXT_CHARS, strength: float = STRENGTH,
              client: str | None = None) -> NextEditAnswer:
    """The edits proposed in ``text`` (a document's lines from ``first_line`` on) after ``edits``
    ((path, unified diff), newest last), near the cursor's line (a document line). Lines in the
    answer are document lines; an edit is proposed when the weakest of its changed tokens is more
    probable than ``threshold``. ``client`` keeps one client's rewrites on one server (vLLM engine)."""
    lines = text.split("\n")
    places = candidate_places(text, language, read_changes(edits), path, first_line)
    win = _window(engine, text, lines, language, cursor_line - first_line, places)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    # The selection is the window's lines without the last newline: the suffix starts with it, so
    # the rewrite ends exactly at a line's end.
    a, b = offsets[win.start], offsets[win.end] - 1
    closed = win.end < len(lines)  # the window's last line has its newline
    window = text[a:b] + ("\n" if closed else "")
    ctx = selection_window(text, a, b, language, context_chars)
    doc_start, doc_end = first_line + win.start, first_line + win.end
    block = diff_block(edits)
    relay = _relay(on_draft, window, closed, doc_start, doc_end) if on_draft is not None else None
    result = engine.edit(ctx.prefix, text[a:b], ctx.suffix, strength=strength,
                         extra=[*extra, *([(DIFF_PATH, block)] if block else [])], max_tokens=max_tokens,
                         settings=settings, on_draft=relay, cancel=cancel, deadline=deadline, language=language,
                         refine=False, confidence=True, client=client)
    # a rewrite cut short (max_tokens, the time budget) counts up to its last whole line, and the
    # window's lines after that are not rewritten rather than deleted
    cut = result.finish_reason in ("length", "time")
    rewritten = result.text[: result.text.rfind("\n") + 1] if cut else result.text + ("\n" if closed else "")
    found = line_changes(window, rewritten, [(t.text, t.confidence) for t in result.tokens], doc_start,
                         partial=cut)
    confident = [c for c in found if c.confidence > threshold]
    kept, _ = keep_parsing(confident, window, doc_start, ctx.prefix, ctx.suffix, language, strip_newline=closed)
    next_line = None if win.next_line is None else first_line + win.next_line
    why, reason = _reason(found, confident, kept, threshold)
    return NextEditAnswer(edits=kept, next_line=next_line, threshold=threshold, reason=reason, why=why,
                          text=apply_changes(window, kept, doc_start) if kept else "", window=(doc_start, doc_end),
                          finish_reason=result.finish_reason, timings=result.timings, places=places)


def _relay(on_draft: DraftCallback, window: str, closed: bool, start: int, end: int) -> DraftCallback:
    """The rewrite's drafts as next-edit drafts: the window so far and the edits it would make."""

    def relay(draft: Draft) -> None:
        pieces = [(t.text, t.confidence) for t in draft.tokens] if draft.tokens else None
        so_far = draft.text + ("\n" if closed else "")
        edits = line_changes(window, so_far, pieces, start, partial=True)
        on_draft(NextEditDraft(step=draft.step, text=draft.text, canvas=draft.canvas, final=draft.final,
                               tokens=draft.tokens, edits=edits, window=(start, end)))

    return relay
