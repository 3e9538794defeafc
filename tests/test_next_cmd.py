"""`diffgemma next` on scratch git repositories against a real daemon (the tiny random-weight
checkpoint): the work tree's diff as the recent edits, the unified diff on stdout, --json, --apply,
--diff, and one-line errors. The weights are random, so the checks are about structure: what reaches
stdout, that the file changes exactly as the proposed edits say, where the next place is."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_cli_commands import Daemon, daemon, ok  # noqa: F401 - the module's daemon fixture

from diffgemma.cli.recent_diffs import FileDiff, order_and_bound, split_files
from diffgemma.context.line_edits import split_lines
from diffgemma.runtime.api import config

# Code in no language the tools know (an unknown extension, and text the language guesser abstains
# on): with no grammar, every change the random model makes is a candidate, so --threshold 0
# proposes something to show, write and check.
CODE = '''use os


proc area(width, height)
    # The area.
    total = width * height
    return total


proc helper()
    return 1


proc more()
    return 2


proc scale(x)
    print(width)
    return area(x, x) * 2
'''
SHAPES = '''class Shape:
    def size(self):
        return 1

    def other(self):
        return 2


def use(s):
    a = 1
    b = 2
    return s.size() + a + b
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "calc.src").write_text(CODE)
    (tmp_path / "shapes.py").write_text(SHAPES)
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "start")
    (tmp_path / "calc.src").write_text(CODE.replace("proc area(width, height)", "proc area(w, height)"))
    return tmp_path


def applied(text: str, edits: list[dict]) -> str:
    lines = split_lines(text)
    for edit in sorted(edits, key=lambda e: e["start_line"], reverse=True):
        lines[edit["start_line"] - 1: edit["end_line"] - 1] = [edit["text"]]
    return "".join(lines)


def test_the_work_tree_s_diff_gives_a_proposal_printed_as_a_diff(daemon: Daemon, repo: Path) -> None:  # noqa: F811
    path = repo / "calc.src"
    before = path.read_text()
    args = ["next", "calc.src", "--threshold", "0", "--seed", "1"]
    data = json.loads(ok(daemon.run([*args, "--json"], cwd=repo)).stdout)
    assert set(data) >= {"edits", "next_line", "reason", "window", "diff", "timings", "applied", "threshold"}
    assert data["edits"] and data["reason"] is None and data["applied"] is False and data["threshold"] == 0.0
    window = data["window"]
    assert window["start_line"] <= 4 < window["end_line"]  # around the first changed line (1-based)
    assert all(window["start_line"] <= e["start_line"] <= e["end_line"] <= window["end_line"] for e in data["edits"])
    plain = ok(daemon.run(args, cwd=repo))
    assert plain.stdout.decode() == data["diff"] and plain.stdout.startswith(b"--- a/calc.src\n+++ b/calc.src\n")
    assert path.read_text() == before  # printing never writes
    # `width` is still used on line 19: the next place, outside the window
    assert data["next_line"] == 19 or window["start_line"] <= 19 < window["end_line"]


def test_apply_writes_exactly_the_proposed_edits_with_a_backup(daemon: Daemon, repo: Path) -> None:  # noqa: F811
    path = repo / "calc.src"
    before = path.read_text()
    data = json.loads(ok(daemon.run(["next", f"{path}:6", "--threshold", "0", "--seed", "1", "--apply", "--json"],
                                    cwd=repo)).stdout)
    assert data["edits"] and data["applied"] is True
    assert path.read_text() == applied(before, data["edits"])
    assert Path(data["backup"]).read_text() == before


def test_apply_refuses_when_the_file_changes_underneath(daemon: Daemon, repo: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from diffgemma.cli import fileio
    from diffgemma.cli.app import app

    path = repo / "calc.src"
    meanwhile = path.read_text() + "# saved meanwhile\n"
    monkeypatch.setattr(fileio, "before_commit_hooks", [lambda p: p.write_text(meanwhile)])
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["next", str(path), "--threshold", "0", "--seed", "1", "--apply"], env=daemon.env)
    assert result.exit_code == 7, result.output
    assert "changed since it was read" in result.output and "Traceback" not in result.output
    assert path.read_text() == meanwhile and not (repo / "calc.src.diffgemma.bak").exists()


def test_nothing_confident_prints_nothing_and_says_why(daemon: Daemon, repo: Path) -> None:  # noqa: F811
    path = repo / "calc.src"
    plain = ok(daemon.run(["next", str(path), "--threshold", "1"], cwd=repo))
    assert plain.stdout == b"" and b"diffgemma: no edit proposed: " in plain.stderr
    assert plain.stderr.count(b"\n") == 1
    data = json.loads(ok(daemon.run(["next", str(path), "--threshold", "1", "--json", "-q"], cwd=repo)).stdout)
    assert data["edits"] == [] and data["diff"] == "" and data["reason"]


def test_a_renamed_method_leads_to_its_callers(daemon: Daemon, repo: Path) -> None:  # noqa: F811
    path = repo / "shapes.py"
    path.write_text(SHAPES.replace("def size(self)", "def extent(self)"))
    data = json.loads(ok(daemon.run(["next", str(path), "--threshold", "1", "--json"], cwd=repo)).stdout)
    # the cursor's block (the method) has no use of `size`: the window is the caller's block
    assert data["window"]["start_line"] <= 12 < data["window"]["end_line"] and data["edits"] == []


def test_a_diff_file_serves_outside_a_repository(daemon: Daemon, repo: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                                                 ) -> None:
    elsewhere = tmp_path_factory.mktemp("plain")
    (elsewhere / "calc.src").write_text((repo / "calc.src").read_text())
    (elsewhere / "recent.diff").write_text(git(repo, "diff"))
    data = json.loads(ok(daemon.run(["next", str(elsewhere / "calc.src"), "--diff", str(elsewhere / "recent.diff"),
                                     "--threshold", "1", "--json"], cwd=elsewhere)).stdout)
    assert data["edits"] == [] and data["window"]["start_line"] <= 4 < data["window"]["end_line"]
    piped = daemon.run(["next", str(elsewhere / "calc.src"), "--diff", "-", "--threshold", "1", "--json"],
                       stdin=git(repo, "diff").encode(), cwd=elsewhere)
    assert json.loads(ok(piped).stdout)["window"] == data["window"]


def test_errors_are_one_line_with_their_exit_codes(daemon: Daemon, repo: Path,  # noqa: F811
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("norepo")
    (outside / "a.py").write_text("x = 1\n")
    (outside / "empty.diff").write_text("nothing here\n")
    git(repo, "checkout", "--", "calc.src")  # no changes left
    cases = [
        (["next", str(outside / "a.py")], 2, "is not in a git repository: give the recent edits with --diff FILE"),
        (["next", str(repo / "calc.src")], 2, "no recent edits: git shows no changes"),
        (["next", str(outside / "a.py"), "--diff", str(outside / "none.diff")], 3, "no such diff file"),
        (["next", str(outside / "a.py"), "--diff", str(outside / "empty.diff")], 2, "holds no unified diff hunks"),
        (["next", f"{outside / 'a.py'}:9", "--diff", str(outside / "empty.diff")], 4, "line 9 is out of range"),
        (["next", str(outside / "missing.py")], 3, "no such file"),
        (["next", str(outside / "a.py"), "--threshold", "2"], 2, "--threshold"),
    ]
    for args, code, message in cases:
        result = daemon.run(args, cwd=outside)
        err = result.stderr.decode()
        assert result.returncode == code, (args, err)
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (args, err)


def test_the_file_s_own_diff_goes_last_and_the_others_by_age(tmp_path: Path) -> None:
    for name, age in (("old.py", 300), ("new.py", 100), ("target.py", 200)):
        (tmp_path / name).write_text("x\n")
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    text = "".join(f"diff --git a/{n} b/{n}\n--- a/{n}\n+++ b/{n}\n@@ -1 +1 @@\n-x\n+y\n"
                   for n in ("new.py", "target.py", "old.py"))
    files = split_files(text, "unused")
    assert [f.path for f in files] == ["new.py", "target.py", "old.py"]
    ordered = order_and_bound(files, tmp_path / "target.py", tmp_path, 0)
    assert [f.path for f in ordered] == ["old.py", "new.py", "target.py"]
    huge = FileDiff("new.py", "diff --git a/new.py b/new.py\n@@ -1 +1 @@\n-" + "x" * config.MAX_NEXT_EDIT_DIFF_CHARS)
    assert [f.path for f in order_and_bound([huge, files[1]], tmp_path / "target.py", tmp_path, 0)] == ["target.py"]
    hunks = "--- a/t.py\n+++ b/t.py\n" + "".join(f"@@ -{n} +{n} @@\n-{'a' * 4000}\n+b\n" for n in (1, 50, 100, 150))
    [cut] = order_and_bound([FileDiff("target.py", hunks)], tmp_path / "target.py", tmp_path, 99)
    assert "@@ -100 +100 @@" in cut.diff and "@@ -1 +1 @@" not in cut.diff
    assert split_files("@@ -1 +1 @@\n-a\n+b\n", "mine.py") == [FileDiff("mine.py", "@@ -1 +1 @@\n-a\n+b\n")]
    assert split_files("no hunks\n", "mine.py") == []
