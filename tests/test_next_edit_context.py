"""Next-edit's torch-free parts: recent edits read from diffs, the places they touch in a document,
the window to rewrite, and a rewrite turned into line edits with confidences and a syntax gate."""

from __future__ import annotations

import pytest
from conftest import grammars_missing

from diffgemma.context.edit_places import block_around, candidate_places, plan, same_file
from diffgemma.context.line_edits import (
    LineChange,
    apply_changes,
    char_confidences,
    keep_parsing,
    line_changes,
    split_lines,
)
from diffgemma.context.recent_edits import changed_lines, changes, parse_hunks

needs_grammar = pytest.mark.skipif(grammars_missing() is not None, reason=grammars_missing() or "")

DOC = '''import os


def area(w, height):
    """The area."""
    total = width * height
    if width < 0:
        raise ValueError(width)
    return total


def scale(width):
    return area(width, width) * 2


class Shape:
    def size(self):
        return self.measure(1)

    def measure(self, k, extra):
        return k


def use(s):
    return s.measure(2), s.measure(3, 4)
'''


def diff(old: str, new: str, line: int, path: str = "m.py") -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -{line} +{line} @@\n-{old}\n+{new}\n"


def test_hunks_know_where_each_change_sits_on_the_new_side() -> None:
    text = ("diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -3,4 +3,5 @@ import os\n \n"
            "-def area(width, height):\n+def area(w, height):\n+    # new\n     x = 1\n@@ -20 +21,0 @@\n-gone\n"
            "\\ No newline at end of file\n")
    first, second = parse_hunks(text)
    assert first.removed == ("def area(width, height):",) and first.added == ("def area(w, height):", "    # new")
    assert first.added_at == (3, 4) and first.removed_at == (3,)
    assert second.removed == ("gone",) and second.added == () and second.removed_at == (21,)
    assert changed_lines(text) == [3, 4, 21]


def test_renames_parameters_and_undone_renames_are_read_from_diffs() -> None:
    found = changes([("m.py", diff("def area(width, height):", "def area(w, height):", 4))])
    assert [(r.old, r.new, r.definition, r.line) for r in found.renames] == [("width", "w", False, 3)]
    assert found.parameters == []  # a list as long as before: a rename, not a new parameter
    method = changes([("m.py", diff("    def measure(self, k):", "    def measure(self, k, extra):", 20))])
    assert [(p.function, p.added, p.required) for p in method.parameters] == [("measure", ("extra",), 2)]
    optional = changes([("m.py", diff("def f(a):", "def f(a, b=2):", 1))])
    assert optional.parameters == []  # callers need not pass a parameter with a default
    renamed = changes([("o.py", diff("    def old_name(self):", "    def new_name(self):", 7))])
    assert [(r.old, r.new, r.definition) for r in renamed.renames] == [("old_name", "new_name", True)]
    undone = changes([("m.py", diff("x = a", "x = b", 1)), ("m.py", diff("x = b", "x = a", 1))])
    assert not undone
    keyword = changes([("m.py", diff("if x:", "while x:", 1))])
    assert not keyword


@needs_grammar
def test_a_local_rename_touches_its_function_and_a_definition_rename_the_whole_file() -> None:
    local = changes([("m.py", diff("def area(width, height):", "def area(w, height):", 4))])
    assert [p.line for p in candidate_places(DOC, "python", local, "m.py")] == [5, 6, 7]
    # `scale`'s own parameter `width` is another name: not touched by area's rename
    assert all(p.why == "uses width (renamed to w)" for p in candidate_places(DOC, "python", local, "m.py"))
    method = changes([("other.py", diff("    def size(self):", "    def extent(self):", 3, "other.py"))])
    assert [p.line for p in candidate_places(DOC, "python", method, "m.py")] == [16]
    elsewhere = changes([("other.py", diff("x = width", "x = w", 3, "other.py"))])
    assert candidate_places(DOC, "python", elsewhere, "m.py") == []  # a local of another file


@needs_grammar
def test_calls_passing_too_few_arguments_are_places() -> None:
    grown = changes([("m.py", diff("    def measure(self, k):", "    def measure(self, k, extra):", 20))])
    places = candidate_places(DOC, "python", grown, "m.py")
    assert [p.line for p in places] == [17, 24]  # s.measure(3, 4) already passes both


def test_without_a_grammar_whole_words_on_lines_are_places() -> None:
    local = changes([("m.py", diff("def area(width, height):", "def area(w, height):", 4))])
    assert [p.line for p in candidate_places(DOC, None, local, "m.py")] == [5, 6, 7, 11, 12]
    # a window of the document: diffs count document lines, places count the window's
    window = "\n".join(DOC.split("\n")[3:9])
    assert [p.line for p in candidate_places(window, None, local, "m.py", first_line=3)] == [2, 3, 4]


def test_diff_paths_name_the_document_by_their_tail() -> None:
    assert same_file("b/src/m.py", "/home/u/proj/src/m.py") and same_file("m.py", "src/m.py")
    assert same_file("a/m.py", None)
    assert not same_file("src/n.py", "/home/u/proj/src/m.py") and not same_file("am.py", "m.py")


@needs_grammar
def test_the_window_is_the_cursor_s_block_or_the_next_place_s() -> None:
    assert block_around(DOC, "python", 5, 40) == (3, 9)  # the whole function
    assert block_around(DOC, "python", 7, 3) == (5, 8)  # the if statement, grown by the line above
    # a two-line function at the top of the file grows downwards (there is no line above it)
    top = "def area(w, h):\n    return w * h\n\n\nprint(area(2, 3))\n"
    assert block_around(top, "python", 1, 40) == (0, 3) and block_around(top, None, 0, 40) == (0, 6)
    assert block_around("x = 1", "python", 0, 40) == (0, 1)
    grown = changes([("m.py", diff("    def measure(self, k):", "    def measure(self, k, extra):", 20))])
    places = candidate_places(DOC, "python", grown, "m.py")
    in_class = plan(DOC, "python", 19, places, 40)  # a place in the cursor's block (the class)
    assert (in_class.start_line, in_class.end_line, in_class.next_line) == (15, 21, 24)
    elsewhere = plan(DOC, "python", 4, places, 40)  # none in area(): the next place's block
    assert (elsewhere.start_line, elsewhere.end_line, elsewhere.next_line) == (15, 21, 24)
    last = plan(DOC, "python", 24, places, 40)  # nothing after it: the next place wraps around
    assert (last.start_line, last.end_line, last.next_line) == (22, 25, 17)
    nothing = plan(DOC, "python", 5, [], 40)
    assert (nothing.start_line, nothing.end_line, nothing.next_line) == (3, 9, None)


def test_a_rewrite_becomes_line_edits_scored_by_the_tokens_they_change() -> None:
    old = "def f(w):\n    y = width + 1\n    return width\n"
    new = "def f(w):\n    y = w + 1\n    return w\n"
    pieces = [(t, 0.9) for t in ["def", " f", "(", "w", "):", "\n", "   ", " y", " =", " "]]
    pieces += [("w", 0.6), (" +", 0.95), (" 1", 0.99), ("\n", 1.0), ("   ", 1.0), (" return", 1.0), (" ", 1.0),
               ("w", 0.8), ("\n", 1.0)]
    assert char_confidences(new, pieces) is not None
    assert char_confidences("ab", [("abc", 0.5)]) == [0.5, 0.5]  # a rewrite cut back to its last line
    assert char_confidences("abc\n", [("abc", 0.5)]) == [0.5, 0.5, 0.5, 1.0]  # the held newline
    assert char_confidences("xyz", [("abc", 0.9)]) == [0.0, 0.0, 0.0]  # not its pieces: unsure
    [change] = line_changes(old, new, pieces, first_line=10)
    assert (change.start_line, change.end_line, change.text) == (11, 13, "    y = w + 1\n    return w\n")
    assert change.confidence == 0.6 and change.mean_confidence == pytest.approx(0.7)  # the two `w`s
    assert apply_changes(old, [change], 10) == new
    deleted = line_changes("a\nb\nc\n", "a\nc\n", None)
    assert deleted == [LineChange(1, 2, "", 1.0, 1.0)]
    inserted = line_changes("a\nc\n", "a\nb\nc\n", [("a\nb\nc\n", 0.3)])
    assert [(c.start_line, c.end_line, c.text, c.confidence) for c in inserted] == [(1, 1, "b\n", 0.3)]
    # a draft that has not reached the window's end does not delete the lines it has not written
    assert line_changes("a\nb\nc\n", "a\n", None, partial=True) == []
    assert split_lines("x\ny") == ["x\n", "y"] and split_lines("") == []


@needs_grammar
def test_the_gate_keeps_only_edits_that_parse_with_the_ones_before() -> None:
    window = "def f(w):\n    y = width + 1\n    return width\n"
    good = LineChange(1, 2, "    y = w + 1\n", 0.9, 0.9)
    bad = LineChange(2, 3, "    return (w\n", 0.9, 0.9)
    kept, dropped = keep_parsing([good, bad], window, 0, "import os\n\n", "\nprint(1)\n", "python", True)
    assert kept == [good] and dropped
    kept, dropped = keep_parsing([bad], window, 0, "", "", None, True)
    assert kept == [bad] and not dropped  # no grammar: nothing to judge by
