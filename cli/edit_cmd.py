"""`diffgemma edit`: rewrite a selection in place, shown as a unified diff."""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from diffgemma.cli import fileio
from diffgemma.cli import options as opt
from diffgemma.cli.errors import EXIT_CODES_HELP, UsageProblem, guarded
from diffgemma.cli.live import print_diff
from diffgemma.cli.plumbing import Asks, check_syntax, output_for, rewrite, stdout_is_terminal, timings_line

HELP = """Rewrite a selection of FILE, optionally following an instruction, and print a unified \
diff.

[bold]--selection[/bold] L1[:C1]-L2[:C2] names the span with 1-based lines and columns. Without \
columns it spans whole lines: from the start of L1 to the end of L2's text (the newline after L2 \
stays). C1 is the first character of the selection and C2 the cursor position where it ends \
(exclusive): 3:5-3:9 selects four characters of line 3.

The diff is colored on a terminal. --apply also writes the result into FILE (atomically, with a \
backup FILE.diffgemma.bak, refusing if FILE changed since it was read). With [cyan]-[/cyan] \
instead of FILE the buffer is read from stdin, --selection counts lines of that buffer, and the \
whole rewritten buffer is printed instead of a diff.

--json prints the rewrite with its range, the diff, timings and tokens: [{text, confidence}] that \
join to the rewritten text, each with the probability the model gave it. A rewrite that brings \
syntax errors into the file that the selection did not have is re-noised where it breaks and \
denoised again (--no-refine: keep it as it came); when no version adds none the selection is left \
as it is, with finish_reason "syntax" and the reason on stderr, and --apply writes nothing \
(--allow-broken takes the rewrite as it is)."""

EPILOG = (
    """[bold]Examples[/bold]

  diffgemma edit app.py -s 10-14 -i 'use a list comprehension'
  diffgemma edit app.py --selection 10-14 --apply
  diffgemma edit app.py --selection 3:5-3:20 --strength 0.3 --json
  cat a.py | diffgemma edit - --selection 2-4 > b.py

"""
    + EXIT_CODES_HELP
)

SelectionOpt = Annotated[
    str,
    typer.Option("--selection", "-s", metavar="L1[:C1]-L2[:C2]", help="The span to rewrite.",
                 show_default=False),
]
InstructionOpt = Annotated[
    str | None,
    typer.Option("--instruction", "-i", help="What to change, in words.", show_default=False),
]
StrengthOpt = Annotated[
    float | None,
    typer.Option("--strength", min=0.0, max=1.0,
                 help="0 keeps the selection as it is, 1 rewrites freely (default: the daemon's, 0.5).",
                 show_default=False),
]

NoRefineOpt = Annotated[
    bool,
    typer.Option("--no-refine", help="Keep the rewrite as denoised: no syntax-guided repair (on by default "
                                      "for languages with a grammar)."),
]


def diff_lines(text: str) -> list[str]:
    """Lines split at "\n" only (str.splitlines also splits at \r, \f, \x1c..., which diff does not)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def unified_diff(old: str, new: str, path: str) -> str:
    """A `diff -u` style diff, with the "No newline at end of file" notes diff itself writes."""
    lines: list[str] = []
    # git's a/ b/ labels for relative paths; an absolute path is shown as it is.
    before, after = (path, path) if path.startswith("/") or path == "stdin" else (f"a/{path}", f"b/{path}")
    for line in difflib.unified_diff(diff_lines(old), diff_lines(new), fromfile=before, tofile=after):
        if line.endswith("\n"):
            lines.append(line)
        else:
            lines.append(line + "\n\\ No newline at end of file\n")
    return "".join(lines)


@guarded
@opt.shared_options(marker=False)
def edit(
    target: Annotated[str, typer.Argument(metavar="FILE", help="The file to edit, or - for stdin.",
                                          show_default=False)],
    selection: SelectionOpt,
    instruction: InstructionOpt = None,
    strength: StrengthOpt = None,
    no_refine: NoRefineOpt = False,
    apply: opt.ApplyOpt = False,
    json_out: opt.JsonOpt = False,
    *,
    settings: opt.Settings,
) -> None:
    out = output_for(settings.quiet, json_out)
    fileio.parse_selection(selection)  # a malformed selection is a usage error before any reading
    source: fileio.SourceText
    if target == "-":
        if apply:
            raise UsageProblem("--apply needs a FILE; with stdin the rewritten buffer goes to stdout")
        source = fileio.read_stdin()
        path: Path | None = None
        shown = "stdin"
    else:
        source = fileio.read_source(target)
        if apply:
            fileio.check_writable(source)  # refuse before the daemon does the work
        path, shown = Path(target), target
    text = source.text
    start, end, first, _last = fileio.selection_offsets(text, selection, shown)
    result, new_text = rewrite(settings, out, text, start, end, path, instruction, strength,
                               title=f"{shown}:{selection}", asks=Asks(refine=not no_refine))
    changed = new_text != text
    backup = None
    if apply and changed:
        assert isinstance(source, fileio.SourceFile)  # --apply is refused for stdin
        check_syntax(settings, path, [text[:start], text[end:]], [result.text], baseline=[text[start:end]])
        backup = fileio.write_source(source, new_text, backup=settings.backup)
    diff = unified_diff(text, new_text, shown)
    if json_out:
        stop = fileio.offset_position(new_text, start + len(result.text))
        payload = {
            "text": result.text,
            "original": text[start:end],
            "range": {"start": first.as_json(), "end": stop.as_json()},
            "diff": diff,
            "timings": result.timings,
            "finish_reason": result.finish_reason,
            "tokens": result.tokens,
            "model": result.model,
            "path": str(path) if path else None,
            "applied": apply,
            "backup": str(backup) if backup else None,
        }
        if result.reason:
            payload["reason"] = result.reason
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif path is None:
        fileio.write_stdout(source, new_text)
    else:
        print_diff(diff, color=stdout_is_terminal())
    if out.reports(apply):
        what = "rewritten" if changed else "no change"
        line = f"diffgemma: {shown}:{selection}: {what} ({timings_line(result)})"
        if apply and changed:
            line += " written" + (f", backup {backup}" if backup else "")
        print(line, file=sys.stderr, flush=True)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("edit", help=HELP, epilog=EPILOG)(edit)
