"""The language server's record of recent edits: keystrokes coalesced into edits, kept as unified
diffs that `git apply` takes, bounded per document and across the workspace."""

from __future__ import annotations

import difflib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from lsprotocol import types

from diffgemma.lsp.edit_history import EditHistory, changed_lines, unified_diff
from diffgemma.lsp.edit_tracking import touched_lines

SOURCE = "def area(w, h):\n    return w * h\n\n\ndef main():\n    print(area(2, 3))\n"
URI = "file:///calc.py"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def type_over(history: EditHistory, uri: str, text: str, old: str, new: str, clock: Clock) -> str:
    """Replace the first ``old`` with ``new`` one keystroke at a time (delete, then type)."""
    at = text.index(old)
    head, rest = text[:at], text[at + len(old):]
    for cut in range(len(old)):
        text = head + old[cut + 1:] + rest
        history.change(uri, "calc.py", text)
        clock.now += 0.1
    for end in range(1, len(new) + 1):
        text = head + new[:end] + rest
        history.change(uri, "calc.py", text)
        clock.now += 0.1
    return text


def calc_history() -> tuple[Clock, EditHistory]:
    """A history on a clock of its own, with calc.py (SOURCE) open."""
    clock = Clock()
    history = EditHistory(clock=clock)
    history.open(URI, "calc.py", SOURCE)
    return clock, history


def test_keystrokes_become_one_edit_with_a_unified_diff() -> None:
    clock, history = calc_history()
    text = type_over(history, URI, SOURCE, "w, h", "width, h", clock)
    edits = history.edits()
    assert len(edits) == 1
    expected = "".join(difflib.unified_diff(SOURCE.splitlines(True), text.splitlines(True),
                                            "a/calc.py", "b/calc.py", n=2))
    assert edits[0].diff == expected
    assert edits[0].as_json() == {"path": "calc.py", "diff": expected}
    assert "-def area(w, h):\n+def area(width, h):\n" in edits[0].diff
    assert history.edits() == edits  # asking again records nothing new


def test_a_pause_or_a_change_elsewhere_ends_an_edit() -> None:
    clock, history = calc_history()
    text = type_over(history, URI, SOURCE, "w, h", "width, h", clock)
    clock.now += 5  # a pause
    text = type_over(history, URI, text, "w * h", "width * h", clock)  # the very next line
    text = type_over(history, URI, text, "(2, 3)", "(4, 3)", clock)  # far away, no pause
    diffs = [e.diff for e in history.edits()]
    assert len(diffs) == 3
    assert "+def area(width, h):" in diffs[0] and "width * h" not in diffs[0]
    assert "+    return width * h" in diffs[1]
    assert "+    print(area(4, 3))" in diffs[2]


def test_asking_in_the_middle_of_a_word_does_not_split_its_edit() -> None:
    clock, history = calc_history()
    text = type_over(history, URI, SOURCE, "w, h", "wi, h", clock)
    assert "+def area(wi, h):" in history.edits()[-1].diff  # a suggestion asked for here
    text = type_over(history, URI, text, "wi, h", "width, h", clock)
    edits = history.edits()
    assert len(edits) == 1 and "-def area(w, h):\n+def area(width, h):\n" in edits[0].diff
    # an edit elsewhere in between: the next change is an edit of its own
    history.change("file:///other.py", "other.py", "x = 1\n")
    history.change("file:///other.py", "other.py", "x = 2\n")
    history.edits()
    type_over(history, URI, text, "width", "wide", clock)
    assert len(history.edits()) == 3


def test_the_cursor_leaving_the_lines_ends_an_edit_and_an_undo_is_no_edit() -> None:
    clock, history = calc_history()
    text = type_over(history, URI, SOURCE, "w, h", "width, h", clock)
    history.cursor(URI, 1)  # next to the edit: still the same edit
    history.cursor(URI, 5)
    text = type_over(history, URI, text, "width", "w", clock)  # the same line again: a new edit
    assert len(history.edits()) == 2
    history.change(URI, "calc.py", text + "x\n")
    history.change(URI, "calc.py", text)
    assert len(history.edits()) == 2  # added and removed: nothing changed


def test_bounded_per_document_and_across_the_workspace() -> None:
    clock = Clock()
    history = EditHistory(clock=clock, per_document=3, workspace=5)
    texts = {}
    for name in ("a", "b"):
        uri = f"file:///{name}.py"
        texts[uri] = SOURCE
        history.open(uri, f"{name}.py", SOURCE)
    for i in range(4):
        for uri in texts:
            texts[uri] = texts[uri].replace("print(", f"print({i}, ", 1)
            history.change(uri, uri[8:], texts[uri])
            clock.now += 10
    edits = history.edits()
    assert len(edits) == 5
    assert [e.seq for e in edits] == sorted(e.seq for e in edits)  # newest last
    assert sum(e.uri == "file:///a.py" for e in edits) <= 3
    assert "print(3, 2, 1" in edits[-1].diff and edits[-1].path == "b.py"


def test_a_closed_document_keeps_its_edits_until_they_age_out() -> None:
    clock = Clock()
    history = EditHistory(clock=clock, workspace=2)
    history.open("file:///a.py", "a.py", SOURCE)
    history.change("file:///a.py", "a.py", SOURCE.replace("w * h", "h * w"))
    history.close("file:///a.py")
    assert [e.path for e in history.edits()] == ["a.py"]
    history.open("file:///b.py", "b.py", "x = 1\n")
    history.close("file:///b.py")  # nothing edited: nothing kept
    for value in ("2", "3"):
        history.change("file:///c.py", "c.py", "x = 1\n")  # unknown document: opened, no edit
        history.change("file:///c.py", "c.py", f"x = {value}\n")
        clock.now += 10
    assert [e.path for e in history.edits()] == ["c.py", "c.py"]


def test_changed_lines() -> None:
    assert changed_lines("a\nb\nc\n", "a\nB\nc\n") == (1, 1)
    assert changed_lines("a\nb\n", "a\nb\nc\nd\n") == (2, 3)
    assert changed_lines("a\nb\nc\n", "a\nc\n") == (1, 1)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SOURCE, SOURCE.replace("w, h", "width, height").replace("w * h", "width * height")),
        (SOURCE, SOURCE + "\n\nmain()"),  # adds a last line without a newline
        (SOURCE.rstrip("\n"), SOURCE.rstrip("\n") + "  # done"),  # changes such a line
        (SOURCE, "import math\n" + SOURCE.replace("print(", "print(math.pi, ")),
        ("", "x = 1\n"),
        ("x = 1\n", ""),
    ],
)
def test_git_applies_the_diffs(tmp_path: Path, old: str, new: str) -> None:
    (tmp_path / "calc.py").write_text(old)
    (tmp_path / "change.diff").write_text(unified_diff("calc.py", old, new))
    subprocess.run(["git", "apply", "--unidiff-zero", "change.diff"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "calc.py").read_text() == new
    assert unified_diff("calc.py", new, new) == ""


def apply_patch(old: str, diff: str) -> str:
    """Apply a unified diff strictly: every context and removed line must be there, every hunk's
    counts must add up."""
    pieces = old.split("\n")
    lines = [p + "\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    rows = diff.split("\n")[2:]
    out: list[str] = []
    at = i = 0
    while i < len(rows) and rows[i]:
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@$", rows[i])
        assert m, rows[i]
        a_len, b_len = int(m[2] or 1) if m[2] != "0" else 0, int(m[4] or 1) if m[4] != "0" else 0
        first = int(m[1]) - 1 if a_len else int(m[1])
        out.extend(lines[at:first])
        at, i, seen = first, i + 1, [0, 0]
        while i < len(rows) and rows[i] and not rows[i].startswith("@@"):
            no_newline = i + 1 < len(rows) and rows[i + 1].startswith("\\")
            text = rows[i][1:] + ("" if no_newline else "\n")
            if rows[i][0] in " -":
                assert lines[at] == text
                at, seen[0] = at + 1, seen[0] + 1
            if rows[i][0] in " +":
                out.append(text)
                seen[1] += 1
            i += 2 if no_newline else 1
        assert seen == [a_len, b_len]
    return "".join(out + lines[at:])


def test_every_diff_applies_exactly() -> None:
    rng = random.Random(7)
    words = ["a", "bb", "c c", "", "dd d", "é😀"]
    for _ in range(1500):
        old = [rng.choice(words) + "\n" for _ in range(rng.randint(0, 9))]
        new = list(old)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(new))
            kind = rng.random()
            if kind < 0.3 and new:
                new[min(at, len(new) - 1)] = rng.choice(words) + "\n"
            elif kind < 0.5 and new:
                line = new[min(at, len(new) - 1)]
                cut = rng.randint(0, len(line) - 1)
                new[min(at, len(new) - 1)] = line[:cut] + "xyz"[rng.randint(0, 2)] + line[cut:]
            elif kind < 0.75:
                new.insert(at, rng.choice(words) + "\n")
            elif new:
                del new[min(at, len(new) - 1)]
        a, b = "".join(old), "".join(new)
        a = a.rstrip("\n") if rng.random() < 0.3 else a
        b = b.rstrip("\n") if rng.random() < 0.3 else b
        for context in (0, 1, 2, 3):
            diff = unified_diff("p", a, b, context)
            assert (diff == "") == (a == b)
            if diff:
                assert apply_patch(a, diff) == b, (a, b, context, diff)
        if a != b:
            first, last = changed_lines(a, b)
            assert 0 <= first <= last <= b.count("\n")


def test_change_events_say_which_lines_and_how_many_were_added() -> None:
    def partial(line: int, end_line: int, text: str) -> types.TextDocumentContentChangePartial:
        span = types.Range(start=types.Position(line, 0), end=types.Position(end_line, 0))
        return types.TextDocumentContentChangePartial(range=span, text=text)

    assert touched_lines([partial(3, 3, "x")]) == ((3, 3), 0)
    assert touched_lines([partial(3, 3, "a\nb\n")]) == ((3, 5), 2)
    assert touched_lines([partial(3, 6, "")]) == ((3, 3), -3)
    assert touched_lines([partial(9, 9, "x"), partial(2, 2, "y\n")]) == ((2, 9), 1)
    assert touched_lines([types.TextDocumentContentChangeWholeDocument(text="all")]) is None
