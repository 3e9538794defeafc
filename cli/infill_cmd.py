"""`diffgemma infill`: fill the hole at a file position, at a marker, or in a piped buffer."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli import fileio, multihole
from diffgemma.cli import options as opt
from diffgemma.cli.errors import EXIT_CODES_HELP, UsageProblem, guarded
from diffgemma.cli.live import print_alternatives
from diffgemma.cli.plumbing import (
    Asks,
    Output,
    check_syntax,
    fill_text,
    output_for,
    stdout_is_terminal,
    timings_line,
)
from diffgemma.runtime.api.config import MAX_ALTERNATIVES
from diffgemma.runtime.api.protocol import Result

AlternativesOpt = Annotated[
    int | None,
    typer.Option("--alternatives", parser=partial(opt.int_option, 1, MAX_ALTERNATIVES), metavar="N",
                 help=f"Ask for N distinct candidates (1-{MAX_ALTERNATIVES}), denoised as one batch; the first "
                      "is the answer, --json lists them all. With several markers: N distinct sets of "
                      "fills, --json gives each hole's fill in every set.", show_default=False),
]
NoRefineOpt = Annotated[
    bool,
    typer.Option("--no-refine", help="Keep the fill as denoised: no syntax-guided repair (on by default "
                                      "for languages with a grammar)."),
]


HELP = """Fill the hole at a cursor with code that joins the text after it.

[bold]TARGET[/bold] is one of:

  [cyan]FILE:LINE[:COL][/cyan]   the cursor in FILE; prints the inserted text
  [cyan]FILE[/cyan]              FILE holds markers ([cyan]<FILL>[/cyan]); prints the filled buffer
  [cyan]-[/cyan]                 a buffer with markers on stdin; prints the filled buffer

Several markers are filled together: holes close to each other are denoised in one canvas, each \
seeing the others, farther ones left to right.

Lines and columns are 1-based and count characters; COL is the cursor position before that \
character, so COL = line length + 1 is the end of the line. Without COL the cursor goes after \
the indentation of a blank or indent-only line, and otherwise after the line's last non-blank \
character (trailing blanks stay after the cursor).

The daemon starts automatically (with --model) when none answers on the socket; start-up and \
model-loading progress goes to stderr. On a terminal a live view on stderr shows the canvas \
refining step by step; with --quiet, or when stderr is not a terminal, only the result is \
printed."""

EPILOG = (
    """[bold]Examples[/bold]

  diffgemma infill app.py:42              fill at the end of line 42
  diffgemma infill app.py:42:9 --apply    fill at column 9, write it into the file
  diffgemma infill app.py:42 --json       {text, range, timings} as JSON
  cat a.py | diffgemma infill - > b.py    a filter: the hole is marked <FILL>
  printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill - -l python
  diffgemma infill notes.py --marker @@   fill the @@ marker(s) in notes.py
  diffgemma infill app.py:42 --alternatives 3 --json

With --apply the file is replaced atomically (same mode and line endings), the previous contents \
are kept as FILE.diffgemma.bak, and nothing is written if FILE changed since it was read. --json \
prints {text, range: {start: {line, col}, end: {line, col}}, tokens, timings, ...}; the range is \
where the text now sits (1-based, end exclusive) and tokens are [{text, confidence}] that join to \
the text. With several markers --json prints {holes: [{text, range, tokens}], ...}, and --apply \
writes all the fills at once; with --alternatives each hole also has alternatives: \\[text, ...], \
index k of every hole being set k (set 0 is the answer, the one --apply writes). A fill that \
breaks the syntax is re-noised where it breaks and denoised again (--no-refine: keep it as it \
came); an answer never adds syntax errors: when no repaired version parses it is cut to its longest \
head that does, or left empty, with finish_reason "syntax" and the reason on stderr (--allow-broken \
takes it as it is). The language comes from --language, the file name, or what the text reads like.

"""
    + EXIT_CODES_HELP
)


# --- the command --------------------------------------------------------------------------------


@guarded
@opt.shared_options(marker=True)
def infill(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="FILE:LINE[:COL], FILE with a marker, or -.",
                                          show_default=False)],
    apply: opt.ApplyOpt = False,
    json_out: opt.JsonOpt = False,
    alternatives: AlternativesOpt = None,
    no_refine: NoRefineOpt = False,
    *,
    settings: opt.Settings,
) -> None:
    out = output_for(settings.quiet, json_out)
    asks = Asks(alternatives=alternatives, refine=not no_refine)
    if target == "-":
        if apply:
            raise UsageProblem("--apply needs a FILE; with stdin the filled buffer goes to stdout")
        _fill_markers(fileio.read_stdin(), None, "stdin", settings, out, asks, apply=False)
        return
    path_s, line, col = fileio.parse_target(target)
    source = fileio.read_source(path_s)
    if apply:
        fileio.check_writable(source)  # refuse before the daemon does the work
    if line is None:
        _fill_markers(source, Path(path_s), path_s, settings, out, asks, apply=apply)
        return
    offset, position = fileio.position_offset(source.text, line, col, path_s)
    path = Path(path_s)
    _fill(Hole(source, source.text, offset, path, str(path), position), settings, out, asks, apply=apply)


@dataclass(frozen=True)
class Hole:
    """One hole to fill: the buffer around it (without its marker, when it was one) and the cursor."""

    source: fileio.SourceText  # as read: how it is written back
    text: str
    offset: int
    path: Path | None
    what: str  # the file as named, or "stdin"
    position: fileio.Position | None = None  # the cursor given as FILE:LINE[:COL]
    marker: bool = False  # the hole was a marker: the output is the whole filled buffer


def _fill_markers(source: fileio.SourceText, path: Path | None, what: str, settings: opt.Settings,
                  out: Output, asks: Asks, *, apply: bool) -> None:
    pieces = fileio.marker_pieces(source.text, settings.marker, what)
    if len(pieces) > 2:
        _fill_holes(source, multihole.Holes(pieces), path, what, settings, out, asks, apply=apply)
    else:
        _fill(Hole(source, "".join(pieces), len(pieces[0]), path, what, marker=True), settings, out, asks,
              apply=apply)


def _fill(hole: Hole, settings: opt.Settings, out: Output, asks: Asks, *, apply: bool) -> None:
    """Fill one hole; print the fill (at a cursor) or the filled buffer (at a marker), or --json."""
    report = out.reports(apply)
    start = hole.position
    if start is None and (out.json or out.live or report):  # only a display needs its line
        start = fileio.offset_position(hole.text, hole.offset)
    where = f"{hole.what}:{start.line}:{start.col}" if start else hole.what
    result = fill_text(settings, out, hole.text, hole.offset, hole.path, where, asks=asks)
    new_text = hole.text[:hole.offset] + result.text + hole.text[hole.offset:]
    backup = None
    if apply and (result.text or hole.marker):  # a marker is gone from the file even when nothing fills it
        assert isinstance(hole.source, fileio.SourceFile)  # --apply is refused for stdin
        check_syntax(settings, hole.path, [hole.text[:hole.offset], hole.text[hole.offset:]], [result.text])
        backup = fileio.write_source(hole.source, new_text, backup=settings.backup)
    if out.json:
        assert start is not None
        end = fileio.offset_position(new_text, hole.offset + len(result.text))
        _print_json(result, start, end, path=str(hole.path) if hole.path else None, applied=apply, backup=backup)
    elif hole.marker:
        if not apply:
            fileio.write_stdout(hole.source, new_text)
    else:
        sys.stdout.write(result.text)
        if stdout_is_terminal() and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    if report:
        _report(result, where, apply, backup)


def _fill_holes(source: fileio.SourceText, holes: multihole.Holes, path: Path | None, what: str,
                settings: opt.Settings, out: Output, asks: Asks, *, apply: bool) -> None:
    """Several markers: one request, every fill written (or printed) at once."""
    where = f"{what}: {holes.count} holes"
    result = multihole.fill_holes(settings, out, holes, path, asks, where)
    fills = multihole.hole_texts(result, holes.count)  # set 0 of the alternatives: what is written
    new_text = holes.filled(fills)
    backup = None
    if apply:
        assert isinstance(source, fileio.SourceFile)  # --apply is refused for stdin
        check_syntax(settings, path, holes.pieces, fills)
        backup = fileio.write_source(source, new_text, backup=settings.backup)
    if out.json:
        multihole.print_json(result, holes, fills, path=str(path) if path else None, applied=apply, backup=backup)
    elif not apply:
        fileio.write_stdout(source, new_text)
    if out.reports(apply):
        _report(result, where, apply, backup, chars=sum(map(len, fills)))


def _print_json(result: Result, start: fileio.Position, end: fileio.Position, *, path: str | None,
                applied: bool, backup: Path | None) -> None:
    payload: dict[str, Any] = {
        "text": result.text,
        "range": {"start": start.as_json(), "end": end.as_json()},
        "tokens": result.tokens,
        "timings": result.timings,
        "finish_reason": result.finish_reason,
        "model": result.model,
        "path": path,
        "applied": applied,
        "backup": str(backup) if backup else None,
    }
    if result.reason:
        payload["reason"] = result.reason
    if result.alternatives:
        payload["alternatives"] = result.alternatives
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _report(result: Result, where: str, applied: bool, backup: Path | None, chars: int | None = None) -> None:
    sets = multihole.hole_sets(result) if result.holes else [[text] for text in result.alternatives]
    if len(sets) > 1:
        print_alternatives(sets)
    count = len(result.text) if chars is None else chars
    line = f"diffgemma: {where}: {count} chars ({timings_line(result)})"
    if applied:
        line += " written" + (f", backup {backup}" if backup else "")
    print(line, file=sys.stderr, flush=True)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("infill", help=HELP, epilog=EPILOG)(infill)
