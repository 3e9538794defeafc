"""The language server's record of recent edits: keystrokes coalesced into edits, kept as unified
diffs that `git apply` takes, bounded per document and across the workspace."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

from diffgemma.lsp.edit_history import EditHistory, changed_lines, unified_diff

SOURCE = "def area(w, h):\n    return w * h\n\n\ndef main():\n    print(area(2, 3))\n"


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


def test_keystrokes_become_one_edit_with_a_unified_diff() -> None:
    clock = Clock()
    history = EditHistory(clock=clock)
    history.open("file:///calc.py", "calc.py", SOURCE)
    text = type_over(history, "file:///calc.py", SOURCE, "w, h", "width, h", clock)
    edits = history.edits()
    assert len(edits) == 1
    expected = "".join(difflib.unified_diff(SOURCE.splitlines(True), text.splitlines(True),
                                            "a/calc.py", "b/calc.py", n=2))
    assert edits[0].diff == expected
    assert edits[0].as_json() == {"path": "calc.py", "diff": expected}
    assert "-def area(w, h):\n+def area(width, h):\n" in edits[0].diff
    assert history.edits() == edits  # asking again records nothing new


def test_a_pause_or_a_change_elsewhere_ends_an_edit() -> None:
    clock = Clock()
    history = EditHistory(clock=clock)
    uri = "file:///calc.py"
    history.open(uri, "calc.py", SOURCE)
    text = type_over(history, uri, SOURCE, "w, h", "width, h", clock)
    clock.now += 5  # a pause
    text = type_over(history, uri, text, "w * h", "width * h", clock)  # the very next line
    text = type_over(history, uri, text, "(2, 3)", "(4, 3)", clock)  # far away, no pause
    diffs = [e.diff for e in history.edits()]
    assert len(diffs) == 3
    assert "+def area(width, h):" in diffs[0] and "width * h" not in diffs[0]
    assert "+    return width * h" in diffs[1]
    assert "+    print(area(4, 3))" in diffs[2]


def test_asking_in_the_middle_of_a_word_does_not_split_its_edit() -> None:
    clock = Clock()
    history = EditHistory(clock=clock)
    uri = "file:///calc.py"
    history.open(uri, "calc.py", SOURCE)
    text = type_over(history, uri, SOURCE, "w, h", "wi, h", clock)
    assert "+def area(wi, h):" in history.edits()[-1].diff  # a suggestion asked for here
    text = type_over(history, uri, text, "wi, h", "width, h", clock)
    edits = history.edits()
    assert len(edits) == 1 and "-def area(w, h):\n+def area(width, h):\n" in edits[0].diff
    # an edit elsewhere in between: the next change is an edit of its own
    history.change("file:///other.py", "other.py", "x = 1\n")
    history.change("file:///other.py", "other.py", "x = 2\n")
    history.edits()
    type_over(history, uri, text, "width", "wide", clock)
    assert len(history.edits()) == 3


def test_the_cursor_leaving_the_lines_ends_an_edit_and_an_undo_is_no_edit() -> None:
    clock = Clock()
    history = EditHistory(clock=clock)
    uri = "file:///calc.py"
    history.open(uri, "calc.py", SOURCE)
    text = type_over(history, uri, SOURCE, "w, h", "width, h", clock)
    history.cursor(uri, 1)  # next to the edit: still the same edit
    history.cursor(uri, 5)
    text = type_over(history, uri, text, "width", "w", clock)  # the same line again: a new edit
    assert len(history.edits()) == 2
    history.change(uri, "calc.py", text + "x\n")
    history.change(uri, "calc.py", text)
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
