"""Reading source files and writing them back without ever losing the user's text.

Reads decode UTF-8 (a BOM is kept), refuse binary files, and normalise CRLF to LF when the
whole file uses CRLF, so positions and the model see plain lines. Writes go to a temporary
file in the same directory, are fsynced, take the original file's mode, and replace the file
with `os.replace`: a reader sees the old file or the new one, never half of one. Before the
replace, the file on disk is compared (size, mtime and SHA-256) with what was read; if
anything changed, nothing is written (`FileChanged`). The previous contents are kept beside
the file as `FILE.diffgemma.bak` (one backup per file, overwritten by the next write).

A symlink stays a link (its target is written); a file with more than one hard link is written
in place after the backup, so every name keeps sharing one text, and a write in place that fails
half-way (a full disk) puts the text that was read back; a file whose owner may not write it (no
`u+w`) is refused, whoever runs us, root included.

Temporary files are named `.FILE.diffgemma-tmp-PID-XXXX`; one left behind by a write that was
killed is removed by the next write to the same file (its writer is gone).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffgemma.cli.errors import FileChanged, FileProblem, OutOfRange, UsageProblem
from diffgemma.cli.leftovers import BACKUP_SUFFIX, TEMP_MARK, remove_leftovers, temp_prefix
from diffgemma.cli.options import parse_ascii_int
from diffgemma.context import positions
from diffgemma.runtime.api.config import MAX_HOLES

__all__ = ["BACKUP_SUFFIX", "TEMP_MARK"]  # named through this module by watch and the tests
_BOM = b"\xef\xbb\xbf"

# Called with the path right before the changed-underneath check of every write. The test
# suite uses it to change a file at exactly that moment; nothing else registers here.
before_commit_hooks: list[Callable[[Path], None]] = []


@dataclass(frozen=True)
class Snapshot:
    """What a file was when it was read: enough to notice any later change."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class SourceText:
    """A decoded text buffer and how to write it back byte-for-byte in the same style."""

    text: str  # LF line endings when the file is all-CRLF; otherwise exactly as decoded
    newline: str  # "\r\n" when the file was all-CRLF, else "\n"
    bom: bool

    def encode(self, text: str) -> bytes:
        if self.newline == "\r\n":
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        return (_BOM if self.bom else b"") + text.encode("utf-8")


@dataclass(frozen=True)
class SourceFile(SourceText):
    path: Path = Path()
    snapshot: Snapshot = Snapshot(0, 0, "")
    mode: int = 0o644


def decode_source(data: bytes, what: str) -> SourceText:
    """Decode bytes read from a file or stdin; binary or non-UTF-8 input is a FileProblem."""
    if b"\x00" in data[:65536]:
        raise FileProblem(f"{what} looks binary (contains NUL bytes)")
    bom = data.startswith(_BOM)
    if bom:
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(f"{what} is not valid UTF-8 (line {line})") from None
    crlf = text.count("\r\n")
    if crlf and crlf == text.count("\n"):
        return SourceText(text.replace("\r\n", "\n"), "\r\n", bom)
    return SourceText(text, "\n", bom)


def _snapshot(data: bytes, st: os.stat_result) -> Snapshot:
    return Snapshot(st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def read_source(path: str | Path) -> SourceFile:
    """Read a text file for editing; every way it can be unusable is a one-line FileProblem."""
    path = Path(path)
    shown = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileProblem(f"no such file: {shown}") from None
    except PermissionError:
        raise FileProblem(f"permission denied: {shown}") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {shown}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{shown} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(f"{shown} is not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read()
            st = os.fstat(handle.fileno())
    except PermissionError:
        raise FileProblem(f"permission denied: {shown}") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {shown}: {exc.strerror}") from None
    decoded = decode_source(data, shown)
    return SourceFile(
        text=decoded.text,
        newline=decoded.newline,
        bom=decoded.bom,
        path=path,
        snapshot=_snapshot(data, st),
        mode=stat.S_IMODE(st.st_mode),
    )


def changed_since(source: SourceFile) -> str | None:
    """Why the file on disk no longer matches the snapshot, or None when it still does."""
    try:
        with source.path.open("rb") as handle:
            st = os.fstat(handle.fileno())
            if st.st_size != source.snapshot.size:
                return "its size changed"
            data = handle.read()
    except FileNotFoundError:
        return "it was deleted"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if hashlib.sha256(data).hexdigest() != source.snapshot.sha256:
        return "its contents changed"
    if st.st_mtime_ns != source.snapshot.mtime_ns:
        return "it was saved again"
    return None


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def check_writable(source: SourceFile) -> None:
    """Refuse a file its owner may not write (FileProblem, exit 3), before any work is done.

    The owner's write bit is the user's own "do not change this" mark. Root could write it
    anyway, and os.replace only needs the directory to be writable, so neither is asked: the
    mode decides, for every user alike.
    """
    if not source.mode & stat.S_IWUSR:
        raise FileProblem(f"{source.path} is read-only (mode {source.mode:04o}); nothing written")


def write_target(path: Path) -> Path:
    """The file a write to ``path`` must change: through symlinks, to the file they name.

    Replacing the link itself would turn it into a regular file and leave its target unedited.
    """
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_source(source: SourceFile, new_text: str, *, backup: bool = True) -> Path | None:
    """Replace the file with `new_text` (in the file's own newline style).

    Returns the backup path (or None). Raises FileChanged, leaving the file as it is, when the
    file on disk differs from what was read, and FileProblem when its owner may not write it.

    A symlink keeps being a link: its target is written. A file with several hard links is
    written in place (after the backup is safely on disk) so that every name sees the new
    text; any other file is replaced atomically through a temporary file.
    """
    check_writable(source)
    path = source.path
    target = write_target(path)
    payload = source.encode(new_text)
    for hook in before_commit_hooks:
        hook(path)
    try:
        links = os.stat(target).st_nlink
    except FileNotFoundError:
        _check_unchanged(source)  # deleted since it was read: that is a change, not a problem
        raise
    except OSError as exc:
        raise FileProblem(f"cannot write {path}: {exc.strerror}") from None
    if links > 1:
        return _write_in_place(source, target, payload, backup)
    return _write_replacing(source, target, payload, backup)


def _check_unchanged(source: SourceFile) -> None:
    reason = changed_since(source)
    if reason is not None:
        raise FileChanged(f"{source.path} changed since it was read ({reason}); nothing written")


def _write_replacing(source: SourceFile, target: Path, payload: bytes, backup: bool) -> Path | None:
    """Write a temporary file beside ``target`` and rename it over: readers see old or new."""
    path, directory = source.path, target.parent
    remove_leftovers(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), dir=directory)
    except OSError as exc:
        raise FileProblem(f"cannot write in {directory}: {exc.strerror}; {path} is unchanged") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, source.mode)
        _check_unchanged(source)
        saved = _backup_if(source, backup)
        os.replace(tmp, target)
        _fsync_dir(directory)
        return saved
    except OSError as exc:
        # Nothing reached the file itself: the rename is the only step that changes it.
        raise FileProblem(f"cannot write {path}: {exc.strerror}; {path} is unchanged") from None
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def _write_in_place(source: SourceFile, target: Path, payload: bytes, backup: bool) -> Path | None:
    """Overwrite ``target``'s own inode, so its other hard links keep sharing the new text.

    A rename would give this name a new inode and leave the other names with the old text,
    silently splitting what the user linked on purpose. Refusing would make hard-linked files
    uneditable. Writing in place is not atomic, so the backup goes first (fsynced): a crash
    mid-write leaves FILE.diffgemma.bak to restore from. Without --no-backup nothing can be lost.
    """
    path = source.path
    remove_leftovers(target)
    try:
        # unbuffered: every write reaches the file (or fails) where we can see it, none at close
        with open(target, "r+b", buffering=0) as handle:
            _check_unchanged(source)
            saved = _backup_if(source, backup)
            try:
                _overwrite(handle.fileno(), payload)
            except OSError as exc:
                raise FileProblem(_restore(handle.fileno(), source, saved,
                                           f"cannot write {path}: {exc.strerror}")) from None
        return saved
    except OSError as exc:
        raise FileProblem(f"cannot write {path}: {exc.strerror}; {path} is unchanged") from None


def _overwrite(fd: int, payload: bytes) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    rest = memoryview(payload)
    while rest:
        rest = rest[os.write(fd, rest):]
    os.ftruncate(fd, len(payload))
    os.fsync(fd)


def _restore(fd: int, source: SourceFile, saved: Path | None, failed: str) -> str:
    """After a write in place failed half-way: put back what was read, and say what the file holds.

    The old text fits in the blocks the file already had (a full disk refuses only new ones)."""
    try:
        _overwrite(fd, source.encode(source.text))
    except OSError as exc:
        where = f"its previous text is in {saved}" if saved else "its previous text could not be put back"
        return f"{failed}; {source.path} is damaged ({exc.strerror} while restoring it): {where}"
    return f"{failed}; {source.path} was restored to the text it had, nothing changed"


def _backup_if(source: SourceFile, backup: bool) -> Path | None:
    if not backup:
        return None
    saved = backup_path(source.path)
    _write_backup(source.path, saved, source)
    return saved


def _write_backup(path: Path, saved: Path, source: SourceFile) -> None:
    """Keep what was read (byte-for-byte: decoding round-trips) as the backup, atomically."""
    data = source.encode(source.text)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(saved), dir=saved.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, source.mode)
        os.replace(tmp_name, saved)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_stdin() -> SourceText:
    """The whole of stdin as a buffer; empty stdin or a terminal with nothing piped is an error."""
    stream = sys.stdin
    if stream is None:
        raise FileProblem("no stdin to read")
    if stream.isatty():
        raise FileProblem("stdin is a terminal: pipe a buffer in, e.g. `cat a.py | diffgemma infill -`")
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8")
    if not data.strip():
        raise FileProblem("stdin is empty: pipe a buffer in, e.g. `cat a.py | diffgemma infill -`")
    return decode_source(data, "stdin")


def write_stdout(source: SourceText, text: str) -> None:
    """Write a whole buffer to stdout in the input's newline style and encoding."""
    out = sys.stdout
    payload = source.encode(text)
    if hasattr(out, "buffer"):
        out.flush()
        out.buffer.write(payload)
        out.buffer.flush()
    else:
        out.write(payload.decode("utf-8"))
        out.flush()


# --- positions ------------------------------------------------------------------------------
# Lines and columns are 1-based; a column counts characters (code points) and names the
# cursor position before that character, so column len(line)+1 is the end of the line. The
# mapping itself is context/positions.py's; here are the CLI's syntax and its messages.

# [0-9], not \d: \d also matches other scripts' digits ("٣", "２"), which int() would accept.
_TARGET = re.compile(r"^(?P<path>.+?):(?P<line>[0-9]+)(?::(?P<col>[0-9]+))?$")
_POINT = r"([0-9]+)(?::([0-9]+))?"
_SELECTION = re.compile(rf"^[ \t]*{_POINT}[ \t]*-[ \t]*{_POINT}[ \t]*$")
# Larger line or column numbers cannot name a place in any buffer an editor holds; refusing
# them early also keeps int() away from strings of thousands of digits.
MAX_POSITION = 2**31 - 1


def _position_number(digits: str, what: str) -> int:
    try:
        return parse_ascii_int(digits, 0, MAX_POSITION)
    except ValueError:
        shown = digits if len(digits) <= 24 else f"{digits[:20]}… ({len(digits)} digits)"
        raise UsageProblem(f"{what} {shown} is too large (at most {MAX_POSITION})") from None


@dataclass(frozen=True)
class Position:
    line: int
    col: int

    def as_json(self) -> dict[str, int]:
        return {"line": self.line, "col": self.col}


def parse_target(target: str) -> tuple[str, int | None, int | None]:
    """Split `FILE:LINE[:COL]` (or plain `FILE`); a malformed number is a UsageProblem."""
    if os.path.exists(target):
        return target, None, None
    match = _TARGET.match(target)
    if match is None:
        # `a.py:x` or `a.py:3:x`: a real file followed by something that is not a position.
        head = target
        for _ in range(2):
            head, sep, _tail = head.rpartition(":")
            if sep and head and os.path.isfile(head):
                raise UsageProblem(f"malformed position {target!r}: expected FILE:LINE[:COL] with numbers")
        return target, None, None
    line = _position_number(match["line"], "line")
    col = _position_number(match["col"], "column") if match["col"] is not None else None
    if line < 1 or (col is not None and col < 1):
        raise OutOfRange(f"{target}: lines and columns start at 1")
    return match["path"], line, col


def default_column(line_text: str) -> int:
    """Column used when none is given: after the indentation of a blank or indent-only line,
    else after the last non-blank character (trailing blanks stay after the cursor)."""
    stripped = line_text.rstrip()
    if not stripped:
        return len(line_text) + 1
    return len(stripped) + 1


def position_offset(text: str, line: int, col: int | None, where: str = "") -> tuple[int, Position]:
    """The character offset of LINE[:COL] in `text`, range-checked (OutOfRange)."""
    lines = positions.line_count(text)
    label = f"{where}: " if where else ""
    if not 1 <= line <= lines:
        raise OutOfRange(f"{label}line {line} is out of range (the buffer has {lines} lines)")
    line_text = positions.line_text(text, line)
    if col is None:
        col = default_column(line_text)
    if not 1 <= col <= len(line_text) + 1:
        raise OutOfRange(
            f"{label}column {col} is out of range on line {line} "
            f"(it has {len(line_text)} characters; columns 1-{len(line_text) + 1})"
        )
    return positions.position_to_offset(text, line, col), Position(line, col)


def offset_position(text: str, offset: int) -> Position:
    return Position(*positions.offset_to_position(text, offset))


def parse_selection(spec: str) -> tuple[int, int | None, int, int | None]:
    """Parse `L1[:C1]-L2[:C2]`; anything else is a UsageProblem."""
    match = _SELECTION.match(spec)
    if match is None:
        raise UsageProblem(f"malformed selection {spec!r}: expected L1[:C1]-L2[:C2], e.g. 10-14 or 3:5-3:20")
    names = ("line", "column", "line", "column")
    l1, c1, l2, c2 = (_position_number(g, name) if g is not None else None
                      for g, name in zip(match.groups(), names, strict=True))
    assert l1 is not None and l2 is not None
    return l1, c1, l2, c2


def selection_offsets(text: str, spec: str, where: str = "") -> tuple[int, int, Position, Position]:
    """Offsets [start, end) of a selection. Without columns it spans whole lines: from the start
    of L1 to the end of L2's text (its newline stays outside). C2 is exclusive: the cursor
    position where the selection ends."""
    l1, c1, l2, c2 = parse_selection(spec)
    label = f"{where}: " if where else ""
    if min(l1, l2) < 1 or (c1 is not None and c1 < 1) or (c2 is not None and c2 < 1):
        raise OutOfRange(f"{label}selection {spec}: lines and columns start at 1")
    lines = positions.line_count(text)
    for line in (l1, l2):
        if line > lines:
            raise OutOfRange(f"{label}selection {spec}: line {line} is out of range "
                             f"(the buffer has {lines} lines)")
    start, p1 = position_offset(text, l1, c1 if c1 is not None else 1, where)
    end, p2 = position_offset(text, l2, c2 if c2 is not None else len(positions.line_text(text, l2)) + 1, where)
    if end < start:
        raise OutOfRange(f"{label}selection {spec} ends before it starts")
    return start, end, p1, p2


def marker_pieces(text: str, marker: str, what: str) -> list[str]:
    """The text around each marker (one more piece than markers). No marker is an OutOfRange error,
    and so are more than MAX_HOLES: likelier a marker that occurs in the code itself."""
    pieces = text.split(marker)
    count = len(pieces) - 1
    if count == 0:
        raise OutOfRange(f"{what} has no {marker} marker: put one where the text should go")
    if count > MAX_HOLES:
        raise OutOfRange(f"{what} has {count} {marker} markers: at most {MAX_HOLES} holes at once")
    return pieces
