"""The recent edits `diffgemma next` sends: the working tree's changes from git, or a diff file.

`git diff HEAD` (staged and unstaged changes; plain `git diff` in a repository without commits) is
split into one diff per file. The file being edited goes last, as the newest edit; the others come
before it, most recently modified last. Edits that do not fit the request's bounds are left out
oldest first, and the file's own diff keeps the hunks nearest the cursor.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from diffgemma.cli.errors import FileProblem, UsageProblem
from diffgemma.context.recent_edits import changed_lines
from diffgemma.runtime.api.config import MAX_NEXT_EDIT_DIFF_CHARS, MAX_NEXT_EDITS

GIT_TIMEOUT_S = 30.0
_FILE_HEADER = re.compile(r"^diff --git ", re.MULTILINE)
_HUNK_START = re.compile(r"^@@ ", re.MULTILINE)


@dataclass(frozen=True)
class FileDiff:
    path: str  # as the diff names it (relative to the repository root for git)
    diff: str


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        raise UsageProblem("git is not installed: give the recent edits with --diff FILE") from None
    except subprocess.TimeoutExpired:
        raise UsageProblem(f"git did not answer within {GIT_TIMEOUT_S:g} s: give the recent edits with --diff FILE") \
            from None


def repository_root(path: Path) -> Path:
    """The root of the git work tree holding ``path``; a UsageProblem when there is none."""
    found = _git(path.resolve().parent, "rev-parse", "--show-toplevel")
    if found.returncode != 0 or not found.stdout.strip():
        raise UsageProblem(f"{path} is not in a git repository: give the recent edits with --diff FILE")
    return Path(found.stdout.strip())


def working_tree_diff(root: Path) -> str:
    """Every change in the work tree since the last commit (staged or not)."""
    options = ("--no-color", "--no-ext-diff", "--no-renames", "--src-prefix=a/", "--dst-prefix=b/")
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    found = _git(root, "diff", "HEAD", *options) if head.returncode == 0 else _git(root, "diff", *options)
    if found.returncode != 0:
        raise UsageProblem(f"git diff failed: {found.stderr.strip().splitlines()[0] if found.stderr.strip() else ''}")
    return found.stdout


def split_files(diff: str, default_path: str) -> list[FileDiff]:
    """One diff per file (``diff --git`` blocks, else ``---``/``+++`` headers); a diff without file
    headers is ``default_path``'s. Deleted and binary files are left out."""
    starts = [m.start() for m in _FILE_HEADER.finditer(diff)]
    if not starts:
        starts = [m.start() for m in re.finditer(r"^--- ", diff, re.MULTILINE)]
    if not starts:
        return [FileDiff(default_path, diff)] if _HUNK_START.search(diff) else []
    blocks = [diff[a:b] for a, b in zip(starts, [*starts[1:], len(diff)], strict=True)]
    out = []
    for block in blocks:
        target = re.search(r"^\+\+\+ (?:b/)?(.+?)\s*$", block, re.MULTILINE)
        if target is None or target.group(1) == "/dev/null" or not _HUNK_START.search(block):
            continue
        out.append(FileDiff(target.group(1), block))
    return out


def _nearest_hunks(diff: str, line: int, budget: int) -> str:
    """``diff`` cut to its hunks nearest ``line`` (0-based) that fit ``budget`` characters."""
    if len(diff) <= budget:
        return diff
    starts = [m.start() for m in _HUNK_START.finditer(diff)]
    head, hunks = diff[: starts[0]], [diff[a:b] for a, b in zip(starts, [*starts[1:], len(diff)], strict=True)]

    def distance(hunk: str) -> int:
        lines = changed_lines(hunk)
        return min((abs(n - line) for n in lines), default=1 << 30)

    kept: set[int] = set()
    size = len(head)
    for index in sorted(range(len(hunks)), key=lambda i: distance(hunks[i])):
        if size + len(hunks[index]) <= budget:
            kept.add(index)
            size += len(hunks[index])
    return head + "".join(hunks[i] for i in sorted(kept)) if kept else ""


def order_and_bound(diffs: list[FileDiff], target: Path, root: Path | None, line: int) -> list[FileDiff]:
    """The target file's diff last (cut to the hunks near ``line`` when too long), the others before
    it by modification time, oldest first, as many as the bounds allow."""
    def is_target(d: FileDiff) -> bool:
        return (root / d.path).resolve() == target.resolve() if root is not None else True

    own = [d for d in diffs if is_target(d)]
    others = [d for d in diffs if not is_target(d)]

    def mtime(d: FileDiff) -> float:
        try:
            return os.stat(root / d.path).st_mtime if root is not None else 0.0
        except OSError:
            return 0.0

    others.sort(key=mtime)
    budget = MAX_NEXT_EDIT_DIFF_CHARS - 1024  # room for the paths
    kept = [FileDiff(d.path, cut) for d in own if (cut := _nearest_hunks(d.diff, line, budget // 2 or budget))]
    size = sum(len(d.diff) for d in kept)
    for other in reversed(others):
        if len(kept) >= MAX_NEXT_EDITS or size + len(other.diff) > budget:
            continue
        kept.insert(0, other)
        size += len(other.diff)
    return kept


def read_diff_file(name: str) -> str:
    """A diff from a file, or stdin for "-"."""
    import sys

    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileProblem(f"no such diff file: {name}") from None
    except IsADirectoryError:
        raise FileProblem(f"{name} is a directory, not a diff") from None
    except UnicodeDecodeError:
        raise FileProblem(f"{name} is not UTF-8 text") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {name}: {exc.strerror}") from None
