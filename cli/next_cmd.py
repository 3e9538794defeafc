"""`diffgemma next`: the edit that follows the recent ones, as a unified diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli import fileio, recent_diffs
from diffgemma.cli import options as opt
from diffgemma.cli.edit_cmd import unified_diff
from diffgemma.cli.errors import EXIT_CODES_HELP, OutOfRange, RequestFailed, UsageProblem, guarded
from diffgemma.cli.live import LiveCanvas, print_diff
from diffgemma.cli.plumbing import Output, connect, language_for, output_for, stdout_is_terminal, timings_line
from diffgemma.context.line_edits import split_lines
from diffgemma.context.recent_edits import changed_lines
from diffgemma.runtime.api.next_edit import Cursor, NextEditRequest, NextEditResult, RecentEdit

HELP = """Propose the edit that follows your recent edits in FILE, and print it as a unified diff.

The recent edits are the changes in the git work tree since the last commit (`git diff HEAD`), of \
FILE and of other files, or the unified diff in --diff FILE ([cyan]-[/cyan]: stdin). The model \
rewrites the code around LINE (1-based; default: FILE's first changed line) with those edits in \
view: after a rename it proposes the other uses of the old name, after a new parameter the calls \
that do not pass it yet. It looks first in the block around LINE, else at the next such place in \
FILE, and names the place after that (on stderr on a terminal; next_line in --json).

Nothing is printed when the model changes nothing it is sure of (--threshold: the probability \
every changed token must beat; the daemon's default 0.5) or when the change would add a syntax \
error; stderr says why. --apply writes the edits into FILE (atomically, with a backup \
FILE.diffgemma.bak, refusing if FILE changed since it was read). --json prints {edits: [{start_line, \
end_line, text, confidence}], next_line, window, reason, diff, timings, ...} with 1-based lines \
(an edit replaces lines start_line to end_line - 1)."""

EPILOG = (
    """[bold]Examples[/bold]

  diffgemma next app.py                  after a rename in app.py: the next use to rename
  diffgemma next app.py:42 --apply       look around line 42 and write the edit
  git diff > recent.diff; diffgemma next app.py --diff recent.diff --json
  diffgemma next app.py --threshold 0.8  only changes the model is very sure of

"""
    + EXIT_CODES_HELP
)

DiffOpt = Annotated[
    str | None,
    typer.Option("--diff", metavar="FILE", help="The recent edits as a unified diff (- for stdin) instead of "
                                                "git's work tree.", show_default=False),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--threshold", min=0.0, max=1.0, help="Propose only changes whose every changed token is more "
                                                       "probable than this (0-1; default: the daemon's, 0.5).",
                 show_default=False),
]


class NextCanvas(LiveCanvas):
    """The live view of the window being rewritten, placed in the file once the first draft names it."""

    def __init__(self, text: str, title: str) -> None:
        super().__init__("", "", title)
        self.lines = split_lines(text)

    def update(self, draft: dict[str, Any]) -> None:
        window = draft.get("window")
        if isinstance(window, dict) and isinstance(window.get("start_line"), int):
            start = window["start_line"]
            end = window["end_line"] if isinstance(window.get("end_line"), int) else start
            self.before = "".join(self.lines[max(0, start - 4): start])
            self.after = "\n" + "".join(self.lines[end: end + 3]).rstrip("\n")
        super().update(draft)


def _edits_for(target: Path, line: int | None, diff_file: str | None) -> tuple[list[RecentEdit], int]:
    """The recent edits (newest last) and the cursor line (0-based)."""
    root: Path | None = None
    if diff_file is not None:
        files = recent_diffs.split_files(recent_diffs.read_diff_file(diff_file), str(target))
        if not files:
            raise UsageProblem(f"{diff_file} holds no unified diff hunks")
    else:
        root = recent_diffs.repository_root(target)
        files = recent_diffs.split_files(recent_diffs.working_tree_diff(root), str(target))
        if not files:
            raise UsageProblem(f"no recent edits: git shows no changes in {root} since the last commit "
                               "(edit something first, or give --diff FILE)")
    own = [f for f in files if (root / f.path).resolve() == target.resolve()] if root is not None else files[-1:]
    first = min((n for f in own for n in changed_lines(f.diff)), default=0)
    cursor = line - 1 if line is not None else first
    kept = recent_diffs.order_and_bound(files, target, root, cursor)
    return [RecentEdit(path=f.path, diff=f.diff) for f in kept], cursor


def _applied(text: str, result: NextEditResult) -> str:
    lines = split_lines(text)
    for edit in sorted(result.edits, key=lambda e: e.start_line, reverse=True):
        lines[edit.start_line: edit.end_line] = [edit.text]
    return "".join(lines)


@guarded
@opt.shared_options(marker=False, without=("max_tokens", "context_chars"))  # the window decides both
def next_edit(
    target: Annotated[str, typer.Argument(metavar="FILE[:LINE]", help="The file, and the line to look around.",
                                          show_default=False)],
    diff: DiffOpt = None,
    threshold: ThresholdOpt = None,
    apply: opt.ApplyOpt = False,
    json_out: opt.JsonOpt = False,
    *,
    settings: opt.Settings,
) -> None:
    out = output_for(settings.quiet, json_out)
    path_s, line, _col = fileio.parse_target(target)
    source = fileio.read_source(path_s)
    if apply:
        fileio.check_writable(source)  # refuse before the daemon does the work
    path = Path(path_s)
    text = source.text
    count = len(text.split("\n"))
    if line is not None and line > count:
        raise OutOfRange(f"{target}: line {line} is out of range (the file has {count} lines)")
    edits, cursor = _edits_for(path, line, diff)
    cursor = min(cursor, len(text.split("\n")) - 1)
    result = _ask(settings, out, text, path, cursor, edits, threshold, title=f"{path_s}:{cursor + 1}")
    new_text = _applied(text, result)
    backup = fileio.write_source(source, new_text, backup=settings.backup) if apply and result.edits else None
    _show(result, text, new_text, path_s, out, applied=apply and bool(result.edits), backup=backup, json_out=json_out)


def _ask(settings: opt.Settings, out: Output, text: str, path: Path, cursor: int, edits: list[RecentEdit],
         threshold: float | None, *, title: str) -> NextEditResult:
    lines = text.split("\n")
    req = NextEditRequest(text=text, cursor=Cursor(cursor, len(lines[cursor].rstrip())), edits=edits,
                          path=str(path.resolve()), language=language_for(path, text, settings), threshold=threshold,
                          stream=out.live, steps=settings.sampling.steps,
                          seed=settings.sampling.seed, model=settings.sampling.model)
    with connect(settings) as client:
        if out.live:
            with NextCanvas(text, title) as view:
                result = client.next_edit(req, view.update)
        else:
            result = client.next_edit(req)
    if result.finish_reason == "cancelled":
        raise RequestFailed("the request was cancelled before it finished")
    return result


def _show(result: NextEditResult, text: str, new_text: str, shown: str, out: Output, *, applied: bool,
          backup: Path | None, json_out: bool) -> None:
    diff = unified_diff(text, new_text, shown) if result.edits else ""
    if json_out:
        def one_based(line: int | None) -> int | None:
            return None if line is None else line + 1

        payload = {
            "edits": [{**e.to_json(), "start_line": e.start_line + 1, "end_line": e.end_line + 1}
                      for e in result.edits],
            "next_line": one_based(result.next_line), "reason": result.reason, "threshold": result.threshold,
            "window": {"start_line": result.window["start_line"] + 1, "end_line": result.window["end_line"] + 1}
            if result.window else None,
            "diff": diff, "path": shown, "applied": applied, "backup": str(backup) if backup else None,
            "finish_reason": result.finish_reason, "timings": result.timings, "model": result.model,
        }
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif diff:
        print_diff(diff, color=stdout_is_terminal())
    if out.quiet:
        return
    where = f"; next place: {shown}:{result.next_line + 1}" if result.next_line is not None else ""
    if not result.edits:
        print(f"diffgemma: no edit proposed: {result.reason or 'no change'}{where}", file=sys.stderr, flush=True)
    elif out.reports(applied):
        line = f"diffgemma: {shown}: {len(result.edits)} edit(s) proposed ({timings_line(result)}){where}"
        if applied:
            line += " written" + (f", backup {backup}" if backup else "")
        print(line, file=sys.stderr, flush=True)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("next", help=HELP, epilog=EPILOG, no_args_is_help=True)(next_edit)
