"""Temporary files of writes that were killed half-way, and how the next write finds them.

A write goes through `.FILE.diffgemma-tmp-PID-XXXX` beside the file (cli/fileio.py); killed before
its rename, it leaves that file behind. The next write to the same file removes the ones whose
writer is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from pathlib import Path

BACKUP_SUFFIX = ".diffgemma.bak"
TEMP_MARK = ".diffgemma-tmp-"
# A temporary file without its writer's pid in the name (earlier releases) is taken for a leftover
# once it is this old: a write holds its temporary file for milliseconds.
LEFTOVER_AGE_S = 60.0


def temp_prefix(target: Path) -> str:
    return f".{target.name}{TEMP_MARK}{os.getpid()}-"


def remove_leftovers(target: Path) -> None:
    """Remove the temporary files that killed writes of ``target`` (or of its backup) left: those
    whose writer is gone, and unnamed ones older than LEFTOVER_AGE_S."""
    for name in (target.name, target.name + BACKUP_SUFFIX):
        for leftover in target.parent.glob(f".{glob.escape(name)}{TEMP_MARK}*"):
            tag = leftover.name[len(name) + 1 + len(TEMP_MARK):].split("-", 1)[0]
            with contextlib.suppress(OSError):
                if tag.isdigit() and len(tag) < 10:
                    if _pid_alive(int(tag)):
                        continue
                elif time.time() - leftover.lstat().st_mtime < LEFTOVER_AGE_S:
                    continue
                leftover.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier write of this process that was cut short
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
