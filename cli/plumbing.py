"""What the generating commands (`infill`, `edit`, `watch`) share: connecting to the daemon,
building a request from a buffer (runtime/api/request_builder.py) and running it with the live view."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffgemma.cli import options as opt
from diffgemma.cli.errors import RequestFailed, UsageProblem

if TYPE_CHECKING:
    from diffgemma.runtime.api.client import Client
    from diffgemma.runtime.api.protocol import EditRequest, ExtraFile, InfillRequest, Result
    from diffgemma.runtime.api.request_builder import Buffer, Sampling, SnippetSource


@dataclass(frozen=True)
class Asks:
    """What a request asks for beyond the fill itself."""

    alternatives: int | None = None
    refine: bool = True
    confidence: bool = False  # per-token confidences (--json, the live view)


def connect(settings: opt.Settings) -> Client:
    """A client to a healthy daemon, starting one (with settings.model) when none answers."""
    from diffgemma.cli.live import progress_printer
    from diffgemma.runtime.api.client import ensure_daemon

    return ensure_daemon(model=settings.model, socket=settings.socket,
                         on_progress=progress_printer(settings.quiet))


def language_for(path: str | None, explicit: str | None, text: str) -> str | None:
    from diffgemma.context.languages import detect_language

    language = detect_language(path, explicit, content=text)
    if explicit and language is None:
        raise UsageProblem(f"unknown language {explicit!r} (use a grammar name such as python or rust)")
    return language


def sampling(settings: opt.Settings) -> Sampling:
    from diffgemma.runtime.api.request_builder import Sampling

    return Sampling(max_tokens=settings.max_tokens, steps=settings.steps, seed=settings.seed,
                    model=settings.model)


def extra_context(path: Path | None, text: str, settings: opt.Settings, language: str | None = None,
                  workspace: SnippetSource | None = None) -> list[ExtraFile]:
    """Definitions from imported files (and, with a `Workspace`, recently saved files). Best
    effort: cross-file context only helps, so a failure is a warning."""
    from diffgemma.runtime.api.request_builder import cross_file_context, extra_budget

    if path is None:
        return []
    try:
        return cross_file_context(path, text, extra_budget(settings.context_chars), language, workspace)
    except Exception as exc:
        from diffgemma.cli.live import warn
        from diffgemma.runtime.api.errors import one_line

        warn(f"no cross-file context ({type(exc).__name__}: {one_line(exc)})", settings.quiet)
        return []


def buffer(settings: opt.Settings, text: str, path: Path | None, language: str | None,
           workspace: SnippetSource | None = None) -> Buffer:
    """``text`` as a request source, with the cross-file context of ``path``."""
    from diffgemma.runtime.api.request_builder import Buffer

    return Buffer(text=text, language=language, path=str(path) if path else None,
                  extra=extra_context(path, text, settings, language, workspace))


def run_request(client: Client, req: InfillRequest | EditRequest, *, live: bool, title: str) -> Result:
    """Send one request; on a terminal (live=True) stream drafts into the live view."""
    from diffgemma.cli.live import live_view
    from diffgemma.runtime.api.protocol import EditRequest

    view = live_view(live, req.prefix, req.suffix, title)
    on_draft = view.update if view is not None else None
    with view if view is not None else contextlib.nullcontext():
        if isinstance(req, EditRequest):
            result = client.edit(req, on_draft=on_draft)
        else:
            result = client.infill(req, on_draft=on_draft)
    return finished(result)


def finished(result: Result) -> Result:
    if result.finish_reason == "cancelled":
        raise RequestFailed("the request was cancelled before it finished")
    return result


def timings_line(result: Result) -> str:
    total = result.timings.get("total_ms")
    steps = result.timings.get("steps")
    parts = [f"{total:.0f} ms" if isinstance(total, int | float) else None,
             f"{steps} steps" if steps is not None else None, result.finish_reason]
    return ", ".join(p for p in parts if p)


def fill_text(settings: opt.Settings, text: str, offset: int, path: Path | None,
              explicit_language: str | None, title: str, *, live: bool | None = None,
              workspace: SnippetSource | None = None, asks: Asks = Asks()) -> Result:
    """Infill `text` at `offset` through the daemon (live view unless quiet or live=False)."""
    from diffgemma.runtime.api.request_builder import infill_request

    language = language_for(str(path) if path else None, explicit_language, text)
    live = (not settings.quiet) if live is None else live
    req = infill_request(buffer(settings, text, path, language, workspace), offset, settings.context_chars,
                         sampling(settings), stream=live, alternatives=asks.alternatives, refine=asks.refine,
                         confidence=asks.confidence or live)
    with connect(settings) as client:
        return run_request(client, req, live=live, title=title)


def rewrite(settings: opt.Settings, text: str, start: int, end: int, path: Path | None,
            language: str | None, instruction: str | None, strength: float | None,
            *, title: str, live: bool | None = None, workspace: SnippetSource | None = None,
            asks: Asks = Asks()) -> tuple[Result, str]:
    """Rewrite text[start:end] through the daemon; returns (result, the whole new buffer)."""
    from diffgemma.runtime.api.request_builder import edit_request

    lang = language_for(str(path) if path else None, language, text)
    show = (not settings.quiet) if live is None else live
    req = edit_request(buffer(settings, text, path, lang, workspace), start, end, settings.context_chars,
                       sampling(settings), instruction=instruction, strength=strength, stream=show,
                       refine=asks.refine, confidence=asks.confidence or show)
    with connect(settings) as client:
        result = run_request(client, req, live=show, title=title)
    return result, text[:start] + result.text + text[end:]
