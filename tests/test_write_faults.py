"""Writes that cannot complete: a full disk under a hard-linked file (written in place) puts the old
text back and says so, a clean refusal says the file is unchanged, and the temporary files of a
killed write are removed by the next write to that file. A real small tmpfs where one can be
mounted (root), and ENOSPC injected at the write everywhere."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffgemma.cli import fileio, leftovers
from diffgemma.cli.errors import FileProblem

OLD = "def f(x):\n    return x\n" * 20  # ~500 bytes: one page
NEW = "def g(y):\n    return y * 2\n" * 400  # ~11 KB: three pages


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, or a skip where this user cannot mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_disk(directory: Path) -> list[Path]:
    """Fill the file system with one-page files until it refuses another; returns them."""
    pages = []
    for i in range(1000):
        page = directory / f"filler-{i}"
        try:
            page.write_bytes(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            page.unlink(missing_ok=True)
            return pages
        pages.append(page)
    raise AssertionError("the disk never filled up")


def linked_pair(directory: Path) -> tuple[Path, Path]:
    path, other = directory / "f.py", directory / "g.py"
    path.write_text(OLD)
    os.link(path, other)
    return path, other


def test_a_full_disk_under_a_hard_linked_file_puts_the_old_text_back(small_disk: Path) -> None:
    path, other = linked_pair(small_disk)
    source = fileio.read_source(path)
    pages = fill_disk(small_disk)
    pages.pop().unlink()  # room for the backup, not for the new text
    with pytest.raises(FileProblem) as refused:
        fileio.write_source(source, NEW)
    message = str(refused.value)
    assert "No space left on device" in message and "was restored to the text it had" in message
    assert path.read_text() == OLD and other.read_text() == OLD  # both names, whole
    assert fileio.backup_path(path).read_text() == OLD


def test_a_full_disk_that_refuses_the_backup_leaves_the_file_unchanged(small_disk: Path) -> None:
    path, other = linked_pair(small_disk)
    source = fileio.read_source(path)
    fill_disk(small_disk)
    with pytest.raises(FileProblem, match=r"No space left on device; .*f\.py is unchanged"):
        fileio.write_source(source, NEW)
    assert path.read_text() == OLD and other.read_text() == OLD
    single = small_disk / "h.py"
    for page in sorted(small_disk.glob("filler-*"))[:2]:
        page.unlink()
    single.write_text(OLD)
    fill_disk(small_disk)
    with pytest.raises(FileProblem, match=r"h\.py is unchanged"):  # the renaming path: a new file is needed
        fileio.write_source(fileio.read_source(single), NEW, backup=False)
    assert single.read_text() == OLD and not list(small_disk.glob(f"*{fileio.TEMP_MARK}*"))


def _enospc_after(limit: int, monkeypatch: pytest.MonkeyPatch, also_restore: bool = False) -> None:
    """os.write in fileio writes ``limit`` bytes of the new text, then fails with ENOSPC; the
    writes that restore the old text then work, or fail too (``also_restore``)."""
    real = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data)[:limit])
        if calls["n"] == 2 or also_restore:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(fileio.os, "write", write)


def test_an_injected_enospc_mid_write_restores_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, other = linked_pair(tmp_path)
    source = fileio.read_source(path)
    _enospc_after(4096, monkeypatch)  # the first 4,096 bytes of the new text reach the file
    with pytest.raises(FileProblem, match="was restored to the text it had, nothing changed"):
        fileio.write_source(source, NEW)
    assert path.read_text() == OLD and other.read_text() == OLD


def test_a_write_that_cannot_be_undone_names_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _other = linked_pair(tmp_path)
    source = fileio.read_source(path)
    _enospc_after(4096, monkeypatch, also_restore=True)
    with pytest.raises(FileProblem) as refused:
        fileio.write_source(source, NEW)
    assert f"{path} is damaged" in str(refused.value)
    assert f"its previous text is in {fileio.backup_path(path)}" in str(refused.value)
    assert fileio.backup_path(path).read_text() == OLD


def test_the_next_write_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text(OLD)
    # a writer killed between creating its temporary file and renaming it
    code = ("import os, sys, tempfile; from pathlib import Path; from diffgemma.cli import leftovers; "
            "path = Path(sys.argv[1]); fd, _ = tempfile.mkstemp(prefix=leftovers.temp_prefix(path), dir=path.parent); "
            "os.write(fd, b'half'); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(path)])
    old_style = tmp_path / f".a.py{fileio.TEMP_MARK}k3j2h1g0"  # no pid: an earlier release's
    old_style.write_text("half")
    stale = time.time() - 2 * leftovers.LEFTOVER_AGE_S
    os.utime(old_style, (stale, stale))
    fresh_other = tmp_path / f".a.py{fileio.TEMP_MARK}{os.getppid()}-inflight"  # a live writer's: kept
    fresh_other.write_text("in flight")
    unrelated = tmp_path / f".b.py{fileio.TEMP_MARK}1-x"
    unrelated.write_text("another file's")
    assert len(list(tmp_path.glob(f".a.py{fileio.TEMP_MARK}*"))) == 3
    fileio.write_source(fileio.read_source(path), NEW)
    assert sorted(p.name for p in tmp_path.glob(f".*{fileio.TEMP_MARK}*")) == sorted(
        [fresh_other.name, unrelated.name])
    assert path.read_text() == NEW
