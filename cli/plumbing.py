"""What the generating commands (`infill`, `edit`, `watch`) share: what a run shows and so asks the
daemon for (decided once, from the terminal and the flags), connecting to the daemon with progress
lines on stderr, and one request from a buffer (runtime/api/request_builder.py) run with the live
view (cli/live.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffgemma.cli.errors import DaemonDown, RequestFailed, UsageProblem, WouldBreakSyntax
from diffgemma.cli.live import HolesCanvas, LiveCanvas
from diffgemma.cli.options import Settings
from diffgemma.context.languages import detect_language, has_grammar
from diffgemma.context.syntax_gate import added_errors
from diffgemma.runtime.api import paths
from diffgemma.runtime.api.errors import DaemonGone, one_line
from diffgemma.runtime.api.protocol import EditRequest, ExtraFile, InfillRequest, Result
from diffgemma.runtime.api.request_builder import (
    Buffer,
    SnippetSource,
    cross_file_context,
    edit_request,
    extra_budget,
    infill_request,
)

if TYPE_CHECKING:
    from diffgemma.runtime.api.client import Client

# --- the terminal ----------------------------------------------------------------------------------


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Where daemon start-up and model-loading lines go: stderr, unless --quiet."""

    last_stem: list[str] = [""]

    def say(line: str) -> None:
        # Progress arrives as "loading model X… 3.1 s elapsed" several times a second: print a
        # line only when the part up to the ellipsis changes (a new phase), not every tick.
        stem = line.split("…", 1)[0]
        if quiet or stem == last_stem[0]:
            return
        last_stem[0] = stem
        print(f"diffgemma: {line}", file=sys.stderr, flush=True)

    return say


def warn(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"diffgemma: warning: {message}", file=sys.stderr, flush=True)


# --- what a run shows, and so asks for -------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Where a run shows its result, decided once (`output_for`) from --json, --quiet and the
    terminal; what the request asks the daemon for follows from it, and from nothing else."""

    json: bool = False
    quiet: bool = False
    terminal: bool = False  # stderr is a terminal and no --quiet
    live: bool = False  # draw the drafts while the canvas refines: the request streams them
    confidence: bool = False  # per-token confidences: --json prints them, the live view dims unsure tokens

    def reports(self, applied: bool) -> bool:
        """A summary line on stderr: on a terminal, or after a write, unless --quiet."""
        return self.terminal or (applied and not self.quiet)


def output_for(quiet: bool, json: bool = False) -> Output:
    """The one place a run decides what it shows, and so what it asks for."""
    terminal = not quiet and stderr_is_terminal()
    return Output(json=json, quiet=quiet, terminal=terminal, live=terminal, confidence=json or terminal)


# `watch` runs unattended: no live view, no tokens.
UNATTENDED = Output()


@dataclass(frozen=True)
class Asks:
    """What a request asks for beyond the fill itself, from the command's own flags."""

    alternatives: int | None = None
    refine: bool = True


def connect(settings: Settings) -> Client:
    """A client to a healthy daemon: the one at --url, which must answer, or the local one, started
    (with the model named) when none answers."""
    # The HTTP client (httpx) loads only when a command talks to the daemon: `--help` never does.
    from diffgemma.runtime.api.client import connect_remote, ensure_daemon

    if settings.remote is not None:
        return connect_remote(settings.remote, on_progress=progress_printer(settings.quiet))
    return ensure_daemon(model=settings.sampling.model, socket=settings.socket,
                         on_progress=progress_printer(settings.quiet))


def language_for(path: Path | None, text: str, settings: Settings) -> str | None:
    """The buffer's grammar: --language, else from the file name, its first line or what it reads like."""
    language = detect_language(str(path) if path else None, settings.language, content=text, guess=True)
    if settings.language and language is None:
        raise UsageProblem(f"unknown language {settings.language!r} (use a grammar name such as python or rust)")
    return language


def buffer(settings: Settings, text: str, path: Path | None, workspace: SnippetSource | None = None) -> Buffer:
    """``text`` as a request source, with its language and the cross-file context of ``path``."""
    language = language_for(path, text, settings)
    if path is None:  # a piped buffer: no files around it
        return Buffer(text=text, language=language)
    return Buffer(text=text, language=language, path=str(path),
                  extra=extra_context(path, text, settings, language, workspace))


def extra_context(path: Path, text: str, settings: Settings, language: str | None,
                  workspace: SnippetSource | None) -> list[ExtraFile]:
    """Definitions from imported files (and, with a `Workspace`, recently saved files). Best
    effort: cross-file context only helps, so a failure is a warning."""
    try:
        return cross_file_context(path, text, extra_budget(settings.context_chars), language, workspace)
    except Exception as exc:
        warn(f"no cross-file context ({type(exc).__name__}: {one_line(exc)})", settings.quiet)
        return []


def run_request(settings: Settings, req: InfillRequest | EditRequest, title: str) -> Result:
    """Send one request; when it streams (a live view) draw its drafts, one hole's or several.

    A daemon that goes away while it works on the request (it crashed, or was killed) is replaced
    and the request sent once more; a second loss is an error that says so. When the daemon's
    syntax gate changed the answer, its reason is one line on stderr."""
    if settings.allow_broken:
        req = dataclasses.replace(req, allow_broken=True)
    try:
        result = _send(settings, req, title)
    except DaemonGone as exc:
        if settings.remote is not None:  # a daemon elsewhere: its owner restarts it, not us
            raise DaemonDown(f"{one_line(exc)}; the request was not answered") from None
        progress_printer(settings.quiet)(f"{one_line(exc)}; sending the request to a new daemon…")
        try:
            result = _send(settings, req, title)
        except DaemonGone as again:
            log = paths.log_path(Path(settings.socket) if settings.socket else None)
            raise DaemonDown(f"{one_line(again)}, twice (the request was sent to a new daemon once); "
                             f"see its log: {log}") from None
    if result.finish_reason == "cancelled":
        raise RequestFailed("the request was cancelled before it finished")
    if result.reason:
        warn(f"{title}: {result.reason}", settings.quiet)
    return result


def _send(settings: Settings, req: InfillRequest | EditRequest, title: str) -> Result:
    with connect(settings) as client:
        view: LiveCanvas | None = None
        if req.stream and isinstance(req, InfillRequest) and req.holes:
            view = HolesCanvas(req.pieces(), title)
        elif req.stream:
            view = LiveCanvas(req.prefix, req.suffix, title)
        with view if view is not None else contextlib.nullcontext():
            on_draft = view.update if view is not None else None
            result = client.edit(req, on_draft) if isinstance(req, EditRequest) else client.infill(req, on_draft)
            if view is not None:
                view.finish(result)
    return result


def check_syntax(settings: Settings, path: Path | None, pieces: Sequence[str], fills: Sequence[str],
                 baseline: Sequence[str] | None = None) -> None:
    """Refuse to write ``fills`` into the text ``pieces`` around them when they add syntax errors to
    the whole file that ``baseline`` (what was there: default nothing) did not have; --allow-broken
    skips it. The daemon judged the answer in its window; this judges the file that is written."""
    text = "".join(pieces)
    language = language_for(path, text, settings)
    if settings.allow_broken or language is None or not has_grammar(language):
        return
    issues = added_errors(pieces, fills, language, baseline)
    if issues:
        filled = pieces[0] + "".join(f + p for f, p in zip(fills, pieces[1:], strict=True))
        where = f"{path}:{filled.count(chr(10), 0, issues[0].start) + 1}" if path else "the buffer"
        raise WouldBreakSyntax(f"{where}: the answer would add syntax errors to the file; nothing was written "
                               "(--allow-broken writes it anyway)")


def timings_line(result: Result) -> str:
    total = result.timings.get("total_ms")
    steps = result.timings.get("steps")
    parts = [f"{total:.0f} ms" if isinstance(total, int | float) else None,
             f"{steps} steps" if steps is not None else None, result.finish_reason]
    return ", ".join(p for p in parts if p)


def fill_text(settings: Settings, out: Output, text: str, offset: int, path: Path | None, title: str, *,
              asks: Asks = Asks(), workspace: SnippetSource | None = None) -> Result:
    """Infill ``text`` at ``offset`` through the daemon."""
    req = infill_request(buffer(settings, text, path, workspace), offset, settings.context_chars, settings.sampling,
                         stream=out.live, alternatives=asks.alternatives, refine=asks.refine,
                         confidence=out.confidence)
    return run_request(settings, req, title)


def rewrite(settings: Settings, out: Output, text: str, start: int, end: int, path: Path | None,
            instruction: str | None, strength: float | None, *, title: str, asks: Asks = Asks(),
            workspace: SnippetSource | None = None) -> tuple[Result, str]:
    """Rewrite text[start:end] through the daemon; returns (result, the whole new buffer)."""
    req = edit_request(buffer(settings, text, path, workspace), start, end, settings.context_chars,
                       settings.sampling, instruction=instruction, strength=strength, stream=out.live,
                       refine=asks.refine, confidence=out.confidence)
    result = run_request(settings, req, title)
    return result, text[:start] + result.text + text[end:]
