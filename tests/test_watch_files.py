"""Which files `diffgemma watch` fills (languages it knows, --include/--exclude, .gitignore), what
it says while it works, and a rewrite that takes lines out: the rules alone, then the real command
against a real daemon on the tiny random-weight checkpoint."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
from pathlib import Path

from test_cli_commands import Daemon, _lines, _wait_for, cli_command, daemon  # noqa: F401 - the daemon fixture

from diffgemma.cli.watch_cmd import Fill
from diffgemma.cli.watch_files import WatchedFiles


def tree(root: Path) -> Path:
    (root / ".git").mkdir()
    (root / ".gitignore").write_text("build/\n*.gen.py\n")
    (root / "src").mkdir()
    (root / "src" / ".gitignore").write_text("local_*.py\n!local_keep.py\n")
    (root / "build").mkdir()
    for name in ("app.py", "README.md", "notes.txt", "build/out.py", "x.gen.py", "src/lib.rs", "src/local_tmp.py",
                 "src/local_keep.py", "vendor.py", "tool"):
        (root / name).write_text("<FILL>\n")
    return root


def test_only_code_files_not_ignored_by_git(tmp_path: Path) -> None:
    root = tree(tmp_path.resolve())
    (root / "tool").write_text("#!/usr/bin/env python3\n<FILL>\n")
    rules = WatchedFiles([root], set())
    chosen = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                    if p.is_file() and ".git" not in p.parts and rules.wants(p, p.read_text()))
    # Markdown and plain text are not code; build/, *.gen.py and src/local_* are ignored by git
    # (src/local_keep.py is let back in by its folder's own .gitignore); `tool` is Python by its #! line
    assert chosen == ["app.py", "src/lib.rs", "src/local_keep.py", "tool", "vendor.py"]


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    root = tree(tmp_path.resolve())
    rules = WatchedFiles([root], set(), include=("*.md", "*.py"), exclude=("vendor.py", "src/**"))
    chosen = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                    if p.is_file() and ".git" not in p.parts and rules.wants(p, p.read_text()))
    assert chosen == ["README.md", "app.py"]  # included by name, whatever the language; .gitignore still applies
    named = WatchedFiles([], {(root / "build" / "out.py")})
    assert named.wants(root / "build" / "out.py", "<FILL>\n")  # named on the command line: always


def test_a_rewrite_that_removes_lines_says_so() -> None:
    kept = Fill(line=4, kind="rewrote", chars=30, lines=3, ms=12.0, old_lines=3)
    assert kept.describe(Path("a.py"), None) == "a.py:4 rewrote 3 lines (30 chars) in 12 ms"
    shrunk = Fill(line=4, kind="rewrote", chars=6, lines=1, ms=12.0, old_lines=9)
    assert shrunk.describe(Path("a.py"), Path("a.py.diffgemma.bak")) == (
        "a.py:4 rewrote 1 lines (6 chars) in 12 ms; removed 8 of its 9 lines, backup a.py.diffgemma.bak")


def test_watch_skips_what_it_should_and_says_what_it_fills(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    root = tree(tmp_path.resolve())
    process = subprocess.Popen([*cli_command(), "watch", str(root), "--no-backup", "--socket", str(daemon.socket)],
                               env={**daemon.env, "DIFFGEMMA_MAX_TOKENS": "4"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, out), daemon=True).start()
    threading.Thread(target=_lines, args=(process.stderr, err), daemon=True).start()
    try:
        _wait_for(err, r"watching .* for <FILL>", 120)
        skipped = {name: (root / name).read_text() for name in ("README.md", "build/out.py", "x.gen.py")}
        for name, text in skipped.items():
            (root / name).write_text(text + "\n")  # saved: none of them may be filled
        # a loop of twelve lines rewritten with at most 4 tokens: lines are taken out
        loop = "".join(f"    total += {i}\n" for i in range(11))
        saved = f"# diffgemma: sum it\ndef f():\n{loop}    return total\n"
        (root / "app.py").write_text(saved)
        seen = _wait_for(err, r"filling .*app\.py:\d+-\d+…", 240)
        assert not [line for line in seen if re.search(r"README|out\.py|gen\.py", line)], seen
        done = _wait_for(out, r"app\.py:1 rewrote", 240)[-1]
        match = re.fullmatch(r".*app\.py:1 rewrote (\d+) lines \(\d+ chars\) in \d+ ms; removed (\d+) of its 13 lines, "
                             r"backup (.*)\n", done)
        assert match is not None, done
        assert int(match[1]) + int(match[2]) == 13
        backup = Path(match[3])  # kept although --no-backup: code was taken out
        assert backup.read_text() == saved
        for name, text in skipped.items():
            assert (root / name).read_text() == text + "\n"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
