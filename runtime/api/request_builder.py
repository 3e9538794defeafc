"""Daemon requests from a buffer: a cursor or a selection -> its context window -> the request.

Every front end builds its requests here: the CLI's `infill`, `edit` and `watch`, and the
language server's ghost text and "Rewrite selection". The same buffer, cursor and budget give
the same prefix, suffix and fields whichever front end asks. What the caller wants back (``stream``:
drafts while the canvas refines, ``confidence``: per-token confidences) is the front end's decision,
made once from how it shows the answer, and travels in the request as it is. A request names the
grammar its window was cut with (`ContextWindow.language`), else the language as the front end gave
it (the daemon may know it). Torch-free.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from diffgemma.context.languages import normalize_language
from diffgemma.context.positions import PositionError
from diffgemma.context.window import cursor_window, selection_window
from diffgemma.runtime.api.protocol import EditRequest, ExtraFile, InfillRequest

# Files whose presence marks the root of a workspace (for cross-file context).
ROOT_MARKERS = (".git", ".hg", "pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml",
                "pom.xml", "build.gradle", "CMakeLists.txt", "Makefile", ".diffgemma")


class SnippetSource(Protocol):
    """What `context.crossfile.Workspace` offers: snippets of imported and recently changed files."""

    def extra_for(self, path: str | os.PathLike[str] | None, text: str, budget_chars: int, *,
                  language: str | None = None) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class Buffer:
    """The text a request is cut from, and what the daemon is told about it."""

    text: str
    language: str | None = None  # a grammar name (context.languages), or None: line windows
    path: str | None = None
    # Key of an open document (the language server's uri): a new version of the same buffer
    # is re-parsed incrementally from its last tree.
    document: str | None = None
    extra: Sequence[ExtraFile] = ()  # snippets of other files the model may read


@dataclass(frozen=True)
class Sampling:
    """The fields every request carries the same way; None leaves the daemon's default."""

    max_tokens: int | None = None
    steps: int | None = None
    seed: int | None = None
    model: str | None = None
    client: str | None = None  # supersession key: a newer request with the same key cancels this one


def extra_budget(context_chars: int) -> int:
    """Characters of cross-file context next to a window of ``context_chars``."""
    return context_chars // 2


def extra_files(snippets: Iterable[tuple[object, str]]) -> list[ExtraFile]:
    """``(path, text)`` snippets (context.crossfile) as the request's extra files."""
    return [ExtraFile(path=str(path), text=text) for path, text in snippets]


def workspace_root(path: Path) -> Path:
    """The nearest enclosing directory that looks like a project root, else the file's folder."""
    start = path.resolve().parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


def cross_file_context(path: str | os.PathLike[str], text: str, budget: int, language: str | None,
                       workspace: SnippetSource | None = None) -> list[ExtraFile]:
    """Definitions from the files the buffer imports (and, with a `context.crossfile.Workspace`,
    from recently changed files) within ``budget`` characters."""
    if budget <= 0:
        return []
    here = Path(path).resolve()
    if workspace is not None:
        pairs = workspace.extra_for(here, text, budget, language=language)
    else:
        from diffgemma.context.crossfile import crossfile_snippets

        pairs = crossfile_snippets(workspace_root(here), here, text, budget, language=language)
    return extra_files(pairs)


def _alternatives(alternatives: int | None) -> int | None:
    # One candidate is the plain answer: the field is left out rather than sent as 1.
    return alternatives if alternatives and alternatives > 1 else None


def _around(buffer: Buffer, start: int, end: int, budget: int) -> tuple[str, str, str | None]:
    """(prefix, suffix, language) of the window of ``budget`` characters around ``text[start:end]``.

    A buffer whose text outside the span fits the budget is its own window (the syntactic window
    takes every enclosing scope that fits, up to the whole module): it is used as it is, with no
    parse, which is the common case of a piped buffer or a small file."""
    text = buffer.text
    if not 0 <= start <= end <= len(text):
        raise PositionError(f"range {start}..{end} is outside the buffer (0..{len(text)})")
    if len(text) - (end - start) <= budget:
        return text[:start], text[end:], normalize_language(buffer.language) or buffer.language
    if start == end:
        window = cursor_window(text, start, buffer.language, budget, document=buffer.document)
    else:
        window = selection_window(text, start, end, buffer.language, budget, document=buffer.document)
    return window.prefix, window.suffix, window.language or buffer.language


def infill_request(buffer: Buffer, offset: int, budget: int, sampling: Sampling, *, stream: bool = False,
                   alternatives: int | None = None, refine: bool = True, confidence: bool = False) -> InfillRequest:
    """The infill at the cursor ``offset``: a syntactic window of ``budget`` characters around it."""
    prefix, suffix, language = _around(buffer, offset, offset, budget)
    return InfillRequest(
        prefix=prefix, suffix=suffix, language=language, path=buffer.path,
        extra=list(buffer.extra), stream=stream, alternatives=_alternatives(alternatives),
        refine=None if refine else False, confidence=True if confidence else None,
        max_tokens=sampling.max_tokens, steps=sampling.steps, seed=sampling.seed, model=sampling.model,
        client=sampling.client,
    )


def holes_request(buffer: Buffer, holes: Sequence[int], budget: int, sampling: Sampling, *, stream: bool = False,
                  alternatives: int | None = None, refine: bool = True, confidence: bool = False) -> InfillRequest:
    """One request for several holes at the offsets ``holes`` (ascending) of ``buffer.text``: the
    window before the first, the text between them whole, the window after the last."""
    text = buffer.text
    head, _, language = _around(buffer, holes[0], holes[0], budget)
    _, tail, _ = _around(buffer, holes[-1], holes[-1], budget)
    between = [text[a:b] for a, b in itertools.pairwise(holes)]
    return InfillRequest(
        prefix="", suffix=tail, holes=[{"prefix": p} for p in (head, *between)],
        language=language, path=buffer.path, extra=list(buffer.extra), stream=stream,
        alternatives=_alternatives(alternatives),
        refine=None if refine else False, confidence=True if confidence else None,
        max_tokens=sampling.max_tokens, steps=sampling.steps, seed=sampling.seed, model=sampling.model,
        client=sampling.client,
    )


def edit_request(buffer: Buffer, start: int, end: int, budget: int, sampling: Sampling, *,
                 instruction: str | None = None, strength: float | None = None,
                 stream: bool = False, refine: bool = True, confidence: bool = False) -> EditRequest:
    """The rewrite of ``text[start:end]``: a window of ``budget`` characters around the selection
    (which is sent whole, outside the budget)."""
    prefix, suffix, language = _around(buffer, start, end, budget)
    return EditRequest(
        prefix=prefix, selection=buffer.text[start:end], suffix=suffix,
        instruction=instruction or None, strength=strength, language=language,
        path=buffer.path, extra=list(buffer.extra), stream=stream, refine=None if refine else False,
        confidence=True if confidence else None, max_tokens=sampling.max_tokens, steps=sampling.steps,
        seed=sampling.seed, model=sampling.model, client=sampling.client,
    )
