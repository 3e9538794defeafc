"""`diffgemma infill`: fill the hole at a file position, at a marker, or in a piped buffer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffgemma.cli import options as opt
from diffgemma.cli.errors import EXIT_CODES_HELP, UsageProblem, guarded
from diffgemma.cli.plumbing import Asks, fill_text, language_for, timings_line
from diffgemma.runtime.api.config import MAX_ALTERNATIVES

if TYPE_CHECKING:
    from diffgemma.runtime.api.protocol import Result

AlternativesOpt = Annotated[
    int | None,
    typer.Option("--alternatives", parser=opt.int_parser(1, MAX_ALTERNATIVES), metavar="N",
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

Several markers are filled together: holes close to each other are denoised in one canvas, each
seeing the others, farther ones left to right.

Lines and columns are 1-based and count characters; COL is the cursor position before that
character, so COL = line length + 1 is the end of the line. Without COL the cursor goes after
the indentation of a blank or indent-only line, and otherwise after the line's last non-blank
character (trailing blanks stay after the cursor).

The daemon starts automatically (with --model) when none answers on the socket; start-up and
model-loading progress goes to stderr. On a terminal a live view on stderr shows the canvas
refining step by step; with --quiet, or when stderr is not a terminal, only the result is
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

With --apply the file is replaced atomically (same mode and line endings), the previous contents
are kept as FILE.diffgemma.bak, and nothing is written if FILE changed since it was read. --json
prints {text, range: {start: {line, col}, end: {line, col}}, tokens, timings, ...}; the range is
where the text now sits (1-based, end exclusive) and tokens are [{text, confidence}] that join to
the text. With several markers --json prints {holes: [{text, range, tokens}], ...}, and --apply
writes all the fills at once; with --alternatives each hole also has alternatives: [text, ...],
index k of every hole being set k (set 0 is the answer, the one --apply writes). A fill that
breaks the syntax is re-noised where it breaks and denoised again (--no-refine: keep it as it
came).

"""
    + EXIT_CODES_HELP
)


# --- the command --------------------------------------------------------------------------------


@guarded
def infill(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="FILE:LINE[:COL], FILE with a marker, or -.",
                                          show_default=False)],
    apply: opt.ApplyOpt = False,
    json_out: opt.JsonOpt = False,
    marker: opt.MarkerOpt = None,
    language: opt.LanguageOpt = None,
    model: opt.ModelOpt = None,
    socket: opt.SocketOpt = None,
    max_tokens: opt.MaxTokensOpt = None,
    steps: opt.StepsOpt = None,
    seed: opt.SeedOpt = None,
    context_chars: opt.ContextCharsOpt = None,
    no_backup: opt.NoBackupOpt = False,
    quiet: opt.QuietOpt = False,
    alternatives: AlternativesOpt = None,
    no_refine: NoRefineOpt = False,
) -> None:
    from diffgemma.cli import fileio

    settings = opt.resolve(quiet=quiet, model=model, socket=socket, max_tokens=max_tokens, steps=steps,
                           seed=seed, marker=marker, context_chars=context_chars,
                           backup=False if no_backup else None)
    asks = Asks(alternatives=alternatives, refine=not no_refine, confidence=json_out)
    if target == "-":
        if apply:
            raise UsageProblem("--apply needs a FILE; with stdin the filled buffer goes to stdout")
        source: fileio.SourceText = fileio.read_stdin()
        _fill_marker(source, None, "stdin", settings, language, apply=False, json_out=json_out, asks=asks)
        return
    path_s, line, col = fileio.parse_target(target)
    source = fileio.read_source(path_s)
    if apply:
        fileio.check_writable(source)  # refuse before the daemon does the work
    if line is None:
        _fill_marker(source, Path(path_s), path_s, settings, language, apply=apply, json_out=json_out, asks=asks)
        return
    offset, position = fileio.position_offset(source.text, line, col, path_s)
    _fill_at(source, Path(path_s), offset, position, settings, language, apply=apply, json_out=json_out,
             asks=asks)


def _fill_at(source: Any, path: Path, offset: int, position: Any, settings: opt.Settings,
             language: str | None, *, apply: bool, json_out: bool, asks: Asks = Asks()) -> None:
    from diffgemma.cli import fileio
    from diffgemma.cli.live import stdout_is_terminal

    text = source.text
    result = fill_text(settings, text, offset, path, language, f"{path}:{position.line}:{position.col}",
                       asks=asks)
    new_text = text[:offset] + result.text + text[offset:]
    backup = None
    if apply and result.text:
        backup = fileio.write_source(source, new_text, backup=settings.backup)
    end = fileio.offset_position(new_text, offset + len(result.text))
    if json_out:
        _print_json(result, position, end, path=str(path), applied=apply, backup=backup)
    else:
        sys.stdout.write(result.text)
        if stdout_is_terminal() and not result.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    _report(settings, result, f"{path}:{position.line}:{position.col}", apply, backup)


def _fill_marker(source: Any, path: Path | None, what: str, settings: opt.Settings,
                 language: str | None, *, apply: bool, json_out: bool, asks: Asks = Asks()) -> None:
    from diffgemma.cli import fileio
    from diffgemma.cli.multihole import split_markers

    holes = split_markers(source.text, settings.marker, what)
    if holes is not None:
        _fill_holes(source, holes, path, what, settings, language, apply=apply, json_out=json_out, asks=asks)
        return
    offset = fileio.find_marker(source.text, settings.marker, what)
    text = source.text[:offset] + source.text[offset + len(settings.marker):]
    position = fileio.offset_position(text, offset)
    result = fill_text(settings, text, offset, path, language, f"{what}:{position.line}:{position.col}",
                       asks=asks)
    new_text = text[:offset] + result.text + text[offset:]
    backup = None
    if apply:
        backup = fileio.write_source(source, new_text, backup=settings.backup)
    end = fileio.offset_position(new_text, offset + len(result.text))
    if json_out:
        _print_json(result, position, end, path=str(path) if path else None, applied=apply, backup=backup)
    elif not apply:
        fileio.write_stdout(source, new_text)
    _report(settings, result, f"{what}:{position.line}:{position.col}", apply, backup)


def _fill_holes(source: Any, holes: Any, path: Path | None, what: str, settings: opt.Settings,
                language: str | None, *, apply: bool, json_out: bool, asks: Asks) -> None:
    """Several markers: one request, every fill written (or printed) at once."""
    from diffgemma.cli import fileio, multihole

    whole = holes.filled([""] * holes.count)
    language = language_for(str(path) if path else None, language, whole)
    where = f"{what}: {holes.count} holes"
    result = multihole.fill_holes(settings, holes, language, path, asks, where)
    fills = multihole.hole_texts(result, holes.count)  # set 0 of the alternatives: what is written
    new_text = holes.filled(fills)
    backup = fileio.write_source(source, new_text, backup=settings.backup) if apply else None
    if json_out:
        multihole.print_json(result, holes, fills, path=str(path) if path else None, applied=apply, backup=backup)
    elif not apply:
        fileio.write_stdout(source, new_text)
    _report(settings, result, where, apply, backup, chars=sum(map(len, fills)))


def _print_json(result: Result, start: Any, end: Any, *, path: str | None, applied: bool,
                backup: Path | None) -> None:
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
    if result.alternatives:
        payload["alternatives"] = result.alternatives
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _report(settings: opt.Settings, result: Result, where: str, applied: bool, backup: Path | None,
            chars: int | None = None) -> None:
    from diffgemma.cli.live import stderr_is_terminal

    if settings.quiet or not (applied or stderr_is_terminal()):
        return
    if result.holes:
        from diffgemma.cli.multihole import print_alternatives

        print_alternatives(result)
    else:
        for i, other in enumerate(result.alternatives[1:], start=2):  # the first is the answer itself
            print(f"diffgemma: alternative {i}:\n{other}", file=sys.stderr, flush=True)
    count = len(result.text) if chars is None else chars
    line = f"diffgemma: {where}: {count} chars ({timings_line(result)})"
    if applied:
        line += " written" + (f", backup {backup}" if backup else "")
    print(line, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("infill", help=opt.reflow(HELP), epilog=opt.reflow(EPILOG), no_args_is_help=True)(infill)

