"""`diffgemma watch`: fill markers in files as they are saved, from any editor, no plugin.

Two kinds of marker, handled top to bottom in one pass per save:

* the fill marker (`<FILL>` by default): replaced by an infill at that spot;
* an instruction line, a comment of its own like `# diffgemma: use a dict here` (the comment
  token of the file's language: `#`, `//`, `--`, `;`, `%`, `/* */`, `<!-- -->`): the line is
  removed and the block below it is rewritten following the instruction. The block is the
  syntactic node that starts on the next non-blank line (a function, a class, a loop...) when
  it spans several lines; otherwise the paragraph there (lines up to a blank line or a dedent).

All edits of one save are written together, atomically, and only if the file is still
exactly as it was read: a newer save wins, and is processed in turn.
"""

from __future__ import annotations

import hashlib
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from diffgemma.cli import fileio, multihole
from diffgemma.cli import options as opt
from diffgemma.cli.errors import (
    EXIT_CODES_HELP,
    CliError,
    FileChanged,
    FileProblem,
    WouldBreakSyntax,
    classify,
    guarded,
)
from diffgemma.cli.fileio import BACKUP_SUFFIX, TEMP_MARK, SourceFile
from diffgemma.cli.plumbing import UNATTENDED, Asks, check_syntax, connect, fill_text, language_for, rewrite
from diffgemma.cli.watch_files import WatchedFiles
from diffgemma.context.crossfile import Workspace
from diffgemma.context.parsing import parse
from diffgemma.context.positions import position_to_offset
from diffgemma.runtime.api.config import MAX_FILE_BYTES
from diffgemma.runtime.api.errors import one_line
from diffgemma.runtime.api.request_builder import workspace_root

# Line-comment tokens by language; languages not listed accept any of them.
_COMMENT_TOKENS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("python", "ruby", "bash", "fish", "perl", "r", "yaml", "toml", "make", "elixir",
                     "julia", "nim", "powershell", "cmake", "dockerfile", "hcl", "terraform", "nix",
                     "gdscript", "starlark"), ("#",)),
    **dict.fromkeys(("c", "cpp", "cuda", "java", "javascript", "typescript", "tsx", "go", "rust",
                     "csharp", "kotlin", "swift", "scala", "dart", "zig", "objc", "groovy", "v",
                     "odin", "gleam", "glsl", "hlsl", "wgsl", "proto", "solidity", "css", "scss"),
                    ("//", "/*")),
    "php": ("//", "#", "/*"),
    **dict.fromkeys(("lua", "sql", "haskell", "elm", "ada", "vhdl"), ("--",)),
    **dict.fromkeys(("commonlisp", "clojure", "scheme", "racket", "elisp", "fennel"), (";",)),
    **dict.fromkeys(("erlang", "latex", "matlab", "prolog"), ("%",)),
    **dict.fromkeys(("html", "xml", "markdown", "vue", "svelte", "astro"), ("<!--",)),
}
_ALL_TOKENS = ("#", "//", "/*", "--", ";", "%", "<!--")
_CLOSERS = {"/*": r"\*/", "<!--": r"-->"}

HELP = """Watch files and fill markers in them whenever they are saved.

When a saved file under PATH (default: the current directory) contains the marker ([cyan]<FILL>[/cyan], \
--marker to change), each marker is replaced in place by an infill. A comment line of its own \
such as [cyan]# diffgemma: handle the empty list[/cyan] (with the comment token of the file's language) \
rewrites the block below it following the instruction, and the comment line is removed. The \
block is the syntactic node that starts on the next non-blank line (function, class, loop...) \
when it spans several lines, and otherwise the paragraph there.

Only files in a language diffgemma knows are filled (by name, or a #! line), not documentation \
such as Markdown; --include and --exclude (git-style globs, repeatable, relative to PATH) choose \
others, and files the project's .gitignore ignores are skipped, as are directories such as .git, \
node_modules and .venv. A file named as PATH is always watched.

Each save is handled in one pass and written atomically (with a FILE.diffgemma.bak backup), \
and only when the file is still as it was read: a newer save is never overwritten; it is \
handled in turn. While the daemon works stderr says [cyan]filling path:line…[/cyan]; one line per fill \
then goes to stdout ([cyan]path:line filled N chars in M ms[/cyan]), and a rewrite that leaves fewer \
lines says how many it removed and keeps the backup even with --no-backup. Ctrl-C stops watching."""

EPILOG = (
    """[bold]Examples[/bold]

  diffgemma watch                      watch the current directory
  diffgemma watch src tests --marker '??'
  diffgemma watch --include '*.md' --exclude 'vendor/**'
  diffgemma watch notes.py -m /models/my-checkpoint

"""
    + EXIT_CODES_HELP
)


def instruction_pattern(language: str | None) -> re.Pattern[str]:
    """The instruction-line regex for a language: `<comment> diffgemma: <instruction> [closer]`."""
    tokens = _COMMENT_TOKENS.get(language or "", _ALL_TOKENS)
    alternatives: list[str] = []
    for token in tokens:
        closer = _CLOSERS.get(token)
        tail = rf"(?:\s*{closer})?" if closer else ""
        alternatives.append(rf"{re.escape(token)}+\s*diffgemma:\s*(?P<i{len(alternatives)}>.*?){tail}")
    return re.compile(rf"^[ \t]*(?:{'|'.join(alternatives)})[ \t]*$", re.MULTILINE)


def _instruction(match: re.Match[str]) -> str:
    return next(value for name, value in match.groupdict().items() if name.startswith("i") and value is not None)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def block_lines(text: str, first: int, language: str | None) -> int:
    """The last line (0-based, inclusive) of the block that starts on line `first`."""
    lines = text.split("\n")
    node_last = _syntactic_block(text, lines, first, language)
    if node_last is not None and node_last > first:
        return node_last
    base = _indent(lines[first])
    last = first
    blank_seen = deeper_seen = False
    for index in range(first + 1, len(lines)):
        line = lines[index]
        if not line.strip():
            blank_seen = True
            continue
        depth = _indent(line)
        if depth > base:
            last, deeper_seen, blank_seen = index, True, False
            continue
        if depth < base:
            break
        if line.lstrip().startswith(("}", ")", "]", "end")):
            last = index  # the block's closing line
            if deeper_seen:
                break
            continue
        if deeper_seen or blank_seen:
            break  # a new statement after a block or a paragraph
        last = index
    return last


def _syntactic_block(text: str, lines: list[str], first: int, language: str | None) -> int | None:
    """Last line of the largest tree-sitter node that starts where line `first`'s code starts."""
    if language is None:
        return None
    try:
        doc = parse(text, language)
    except Exception:  # no grammar, or a parser problem: the indentation rule still works
        return None
    if doc is None or not doc.parsable:
        return None
    offset = position_to_offset(text, first, _indent(lines[first]), base=0)
    start_byte = doc.c2b(offset)
    node = doc.root.descendant_for_byte_range(start_byte, start_byte)
    best = None
    while node is not None and node.parent is not None:
        if node.start_byte == start_byte:
            best = node
        elif node.start_byte < start_byte:
            break
        node = node.parent
    if best is None:
        return None
    return text.count("\n", 0, doc.b2c(best.end_byte))


@dataclass
class Fill:
    line: int  # 1-based, in the file as written
    kind: str  # "filled" | "rewrote"
    chars: int
    lines: int  # lines of the new text
    ms: float
    old_lines: int = 0  # a rewrite: lines of the block it replaced

    @property
    def removed(self) -> int:
        """Lines a rewrite took out (0 when it kept as many or added some)."""
        return max(0, self.old_lines - self.lines) if self.kind == "rewrote" else 0

    def describe(self, path: Path, backup: Path | None) -> str:
        if self.kind == "filled":
            return f"{path}:{self.line} filled {self.chars} chars in {self.ms:.0f} ms"
        line = f"{path}:{self.line} rewrote {self.lines} lines ({self.chars} chars) in {self.ms:.0f} ms"
        if self.removed:
            line += f"; removed {self.removed} of its {self.old_lines} lines" + (f", backup {backup}" if backup else "")
        return line


def announce(settings: opt.Settings, what: str) -> None:
    """Say what the daemon works on while it does (a fill takes seconds on a busy machine)."""
    if not settings.quiet:
        print(f"diffgemma: filling {what}…", file=sys.stderr, flush=True)


class FileWatcher:
    """Processes saved files: finds markers, asks the daemon, writes the file back once."""

    def __init__(self, settings: opt.Settings, files: WatchedFiles | None = None) -> None:
        self.settings = settings
        self.files = files
        self.written: dict[Path, str] = {}  # path -> sha256 of what we wrote (ignore our own saves)
        self.workspaces: dict[Path, Workspace] = {}  # root -> context Workspace fed with the saves we see
        self.backup: Path | None = None  # the backup of the last file written
        # this save's edits, top to bottom: (start, end) in the new text and what was there before
        self.edits: list[tuple[int, int, str]] = []

    def workspace_for(self, path: Path) -> Workspace:
        """The cross-file Workspace of path's project; saves seen here count as recent changes."""
        root = workspace_root(path)
        if root not in self.workspaces:
            self.workspaces[root] = Workspace(root)
        return self.workspaces[root]

    def handle(self, path: Path) -> list[Fill]:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return []
            source = fileio.read_source(path)
        except (FileProblem, OSError):
            return []  # deleted, binary, not UTF-8, a directory: nothing to fill there
        if self.written.get(path) == source.snapshot.sha256:
            return []
        if self.files is not None and not self.files.wants(path, source.text):
            return []
        workspace = self.workspace_for(path)
        language = language_for(path, source.text, self.settings)
        pattern = instruction_pattern(language)
        if self.settings.marker not in source.text and not pattern.search(source.text):
            workspace.note_change(path.resolve(), source.text)
            return []
        fileio.check_writable(source)  # a read-only file: say so once per save, ask nothing
        self.edits = []
        fills, text = self._fill_all(source, path, language, pattern, workspace)
        if not fills:
            return []
        self._check_syntax(path, text)
        # a rewrite that takes lines out keeps the text it replaced beside the file, whatever --no-backup says
        keep = self.settings.backup or any(fill.removed for fill in fills)
        self.backup = fileio.write_source(source, text, backup=keep)
        self.written[path] = hashlib.sha256(source.encode(text)).hexdigest()
        workspace.note_change(path.resolve(), text)
        return fills

    def _check_syntax(self, path: Path, text: str) -> None:
        """Nothing is written that adds syntax errors to the file (the edits against what they
        replaced: nothing at a marker, the block at an instruction)."""
        pieces, fills, before, at = [], [], [], 0
        for start, end, old in self.edits:
            pieces.append(text[at:start])
            fills.append(text[start:end])
            before.append(old)
            at = end
        if fills:
            check_syntax(self.settings, path, [*pieces, text[at:]], fills, baseline=before)

    def _fill_all(self, source: SourceFile, path: Path, language: str | None,
                  pattern: re.Pattern[str], workspace: Workspace) -> tuple[list[Fill], str]:
        text = source.text
        marker = self.settings.marker
        if text.count(marker) > 1 and not pattern.search(text):
            return self._fill_joint(text, path, language, workspace)
        budget = text.count(marker) + len(pattern.findall(text))  # model output never loops us
        fills: list[Fill] = []
        position = 0
        while budget > 0:
            budget -= 1
            at = text.find(marker, position)
            match = pattern.search(text, position)
            if at < 0 and match is None:
                break
            if match is not None and (at < 0 or match.start() < at):
                text, position, fill = self._rewrite(text, match, path, language, workspace)
            else:
                text, position, fill = self._fill(text, at, path, language, workspace)
            if fill is not None:
                fills.append(fill)
        return fills, text

    def _fill_joint(self, text: str, path: Path, language: str | None,
                    workspace: Workspace) -> tuple[list[Fill], str]:
        """Several fill markers and no instruction: one request for all of them (holes close to
        each other are denoised together, each seeing the others)."""
        holes = multihole.Holes(fileio.marker_pieces(text, self.settings.marker, str(path)))
        announce(self.settings, f"{path}: {holes.count} holes")
        started = time.monotonic()
        result = multihole.fill_holes(self.settings, UNATTENDED, holes, path, Asks(), str(path), workspace)
        ms = (time.monotonic() - started) * 1000
        fills = multihole.hole_texts(result, holes.count)
        new_text = holes.filled(fills)
        self.edits += [(start, end, "") for start, end in holes.offsets(fills)]
        return [Fill(new_text.count("\n", 0, start) + 1, "filled", end - start, 0, ms)
                for start, end in holes.offsets(fills)], new_text

    def _fill(self, text: str, at: int, path: Path, language: str | None,
              workspace: Workspace) -> tuple[str, int, Fill]:
        text = text[:at] + text[at + len(self.settings.marker):]
        line = text.count("\n", 0, at) + 1
        announce(self.settings, f"{path}:{line}")
        started = time.monotonic()
        result = fill_text(self.settings, UNATTENDED, text, at, path, str(path), workspace=workspace)
        ms = (time.monotonic() - started) * 1000
        text = text[:at] + result.text + text[at:]
        self.edits.append((at, at + len(result.text), ""))
        return text, at + len(result.text), Fill(line, "filled", len(result.text), 0, ms)

    def _rewrite(self, text: str, match: re.Match[str], path: Path, language: str | None,
                 workspace: Workspace) -> tuple[str, int, Fill | None]:
        instruction = _instruction(match)
        line_start = match.start()
        line_end = text.find("\n", match.end())
        # Without the marker line: the block then starts at the marker line's offset.
        text = text[:line_start] + (text[line_end + 1:] if line_end >= 0 else "")
        lines = text.split("\n")
        first = text.count("\n", 0, line_start)
        while first < len(lines) and not lines[first].strip():
            first += 1
        if first >= len(lines):
            print(f"diffgemma: {path}:{first}: nothing below the diffgemma: line to rewrite",
                  file=sys.stderr, flush=True)
            return text, line_start, None
        last = block_lines(text, first, language)
        start = position_to_offset(text, first, 0, base=0)
        end = position_to_offset(text, last, len(lines[last]), base=0)
        announce(self.settings, f"{path}:{first + 1}-{last + 1}")
        started = time.monotonic()
        block = text[start:end]
        result, text = rewrite(self.settings, UNATTENDED, text, start, end, path, instruction or None, None,
                               title=f"{path}:{first + 1}", workspace=workspace)
        self.edits.append((start, start + len(result.text), block))
        ms = (time.monotonic() - started) * 1000
        return text, start + len(result.text), Fill(first + 1, "rewrote", len(result.text),
                                                    result.text.count("\n") + 1, ms, old_lines=last - first + 1)


def _watch_filter(roots: list[Path], files: set[Path], rules: WatchedFiles) -> Any:
    from watchfiles import Change, DefaultFilter

    default = DefaultFilter()

    def keep(change: Change, raw: str) -> bool:
        if change == Change.deleted or not default(change, raw):
            return False
        name = Path(raw).name
        if name.endswith(BACKUP_SUFFIX) or TEMP_MARK in name:
            return False
        inside = not files or Path(raw).resolve() in files or any(
            Path(raw).resolve().is_relative_to(root) for root in roots
        )
        return inside and rules.path_allowed(Path(raw))

    return keep


@guarded
@opt.shared_options(marker=True)
def watch(
    paths: Annotated[list[Path] | None, typer.Argument(metavar="[PATH]...", help="Files or directories.",
                                                      show_default=False)] = None,
    include: Annotated[list[str] | None, typer.Option(
        "--include", metavar="GLOB", show_default=False,
        help="Fill only files matching this git-style glob (repeatable), whatever their language.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="GLOB", show_default=False,
        help="Never fill files matching this git-style glob (repeatable).")] = None,
    *,
    settings: opt.Settings,
) -> None:
    import watchfiles  # its Rust watcher is loaded only by the command that watches

    quiet = settings.quiet
    if settings.language:
        language_for(None, "", settings)  # an unknown --language is an error now, not on every save
    targets = [Path(p) for p in (paths or [Path(".")])]
    roots: list[Path] = []
    files: set[Path] = set()
    for target in targets:
        if not target.exists():
            raise FileProblem(f"no such file or directory: {target}")
        if target.is_dir():
            roots.append(target.resolve())
        else:
            files.add(target.resolve())
    watched = sorted({*roots, *(f.parent for f in files)})
    rules = WatchedFiles(roots, files, tuple(include or ()), tuple(exclude or ()))
    connect(settings).close()  # start the daemon and load the model before the first save

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both end the loop cleanly (even where the shell started us with SIGINT
    # ignored, as background jobs of a script are).
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watcher = FileWatcher(settings, rules)
    ready = False
    try:
        for changes in watchfiles.watch(*watched, watch_filter=_watch_filter(roots, files, rules), debounce=400,
                                        rust_timeout=300, yield_on_timeout=True):
            if not ready:
                ready = True
                if not quiet:
                    shown = " ".join(str(t) for t in targets)
                    print(f"diffgemma: watching {shown} for {settings.marker} (Ctrl-C to stop)",
                          file=sys.stderr, flush=True)
            for path in sorted({Path(raw) for _change, raw in changes}):
                _handle(watcher, path)
    except KeyboardInterrupt:
        pass
    if not quiet:
        print("diffgemma: stopped watching", file=sys.stderr, flush=True)


def _handle(watcher: FileWatcher, path: Path) -> None:
    """Process one saved file; errors are reported and watching goes on."""
    try:
        fills = watcher.handle(path)
    except CliError as exc:
        if isinstance(exc, FileChanged):
            print(f"diffgemma: {path}: saved again while filling; nothing written (the new save is next)",
                  file=sys.stderr, flush=True)
        elif isinstance(exc, WouldBreakSyntax):
            print(f"diffgemma: {one_line(exc)}", file=sys.stderr, flush=True)
        else:
            print(f"diffgemma: error: {path}: {one_line(exc)}", file=sys.stderr, flush=True)
        return
    except Exception as exc:
        error = classify(exc)
        message = one_line(error) if error else f"{type(exc).__name__}: {one_line(exc)}"
        print(f"diffgemma: error: {path}: {message}", file=sys.stderr, flush=True)
        return
    for fill in fills:
        print(fill.describe(path, watcher.backup), flush=True)


# This module's commands, as cli/app.py loads them.
commands = typer.Typer(rich_markup_mode="rich")
commands.command("watch", help=HELP, epilog=EPILOG)(watch)
