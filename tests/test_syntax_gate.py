"""The syntax gate (context.syntax_gate) and the language guess (context.guess), torch-free.

An answer never adds syntax errors to the code around it: it passes as it is, or an alternative
that adds none replaces it, or it is cut to its longest head that adds none, or the code stays as
it was, with a reason. Real tree-sitter grammars and Python's own parser judge every case.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import grammars_missing

from diffgemma.context.guess import guess_language
from diffgemma.context.languages import detect_language
from diffgemma.context.syntax_gate import added_errors, gate_fills, head_cuts

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=grammars_missing() or "")

DEMO = ["def add(a, b):\n    ", "\n"]  # the README's demo, the hole at the marker


def parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def test_a_fill_that_parses_passes_as_it_is() -> None:
    gated = gate_fills(DEMO, ["return a + b"], "python")
    assert gated.fills == ("return a + b",) and not gated.changed and gated.reason == ""


def test_the_demo_docstring_opener_is_refused_with_the_reason() -> None:
    """`\"\"\"` was what the demo printed: an unterminated string. No head of it is code, so the
    answer is empty, and the reason names Python's error."""
    gated = gate_fills(DEMO, ['"""'], "python")
    assert gated.fills == ("",)
    assert "unterminated triple-quoted string" in gated.reason and "left as it was" in gated.reason


def test_a_broken_tail_is_cut_to_the_longest_head_that_adds_none() -> None:
    gated = gate_fills(DEMO, ["total = a + b\n    return total\n    x = (a,"], "python")
    assert gated.fills == ("total = a + b\n    return total\n",)
    assert "was never closed" in gated.reason and "longest head" in gated.reason
    assert parses(DEMO[0] + gated.fills[0] + DEMO[1])


def test_a_head_is_cut_inside_the_line_at_a_word_end() -> None:
    gated = gate_fills(["x = 1\n", "\n"], ["y = x +"], "python")
    assert gated.fills == ("y = x",)


def test_an_alternative_that_adds_none_wins_over_a_head() -> None:
    gated = gate_fills(DEMO, ["return (a"], "python", alternatives=[["return ((a"], ["return a - b"]])
    assert gated.fills == ("return a - b",) and gated.alternative == 1
    assert "alternative" in gated.reason


def test_python_refusals_that_tree_sitter_accepts() -> None:
    """Python's parser judges too: a stray indent and a block without a body parse for tree-sitter."""
    assert added_errors(DEMO, ["x = 1\n      y = 2"], "python")
    gated = gate_fills(["def f(x):\n", "    return x\n"], ["    try:\n"], "python")
    assert gated.fills == ("",) and gated.changed


def test_errors_the_window_already_had_are_not_the_answers() -> None:
    """The window is cut from a file: a docstring whose opener is cut off stays broken, and the
    empty body of the demo is the code as it was, not something an answer adds."""
    window = ["    the end of a docstring whose opener the window cut off.\n    \"\"\"\n    return ", "\n"]
    assert not added_errors(window, ["1"], "python")
    assert not added_errors(DEMO, [""], "python") and not added_errors(DEMO, ["   "], "python")


def test_a_rewrite_that_adds_errors_leaves_the_selection() -> None:
    fixed = ["def f(items):\n", "    return out\n"]
    selection = "    out = [i * 2 for i in items]\n"
    gated = gate_fills(fixed, ["    out = [i * 2 for i in items\n"], "python", baseline=[selection], heads=False)
    assert gated.fills == (selection,) and gated.changed
    ok = gate_fills(fixed, ["    out = list(map(lambda i: i * 2, items))\n"], "python", baseline=[selection],
                    heads=False)
    assert not ok.changed


def test_several_holes_are_cut_hole_by_hole() -> None:
    fixed = ["def f(x):\n    y = ", "\n    z = ", "\n    return y + z\n"]
    gated = gate_fills(fixed, ["x + 1", "(x *"], "python")
    assert gated.fills == ("x + 1", "") and gated.changed  # no head of "(x *" closes its bracket
    assert not added_errors(fixed, gated.fills, "python")


def test_other_languages_and_no_grammar() -> None:
    js = ["function add(a, b) {\n  ", "\n}\n"]
    assert gate_fills(js, ["return a + b;"], "javascript").fills == ("return a + b;",)
    assert gate_fills(js, ["return (a + b;"], "javascript").changed
    assert gate_fills(DEMO, ['"""'], None).fills == ('"""',)  # nothing judges it
    assert added_errors(DEMO, ['"""'], None) is None


def test_head_cuts_never_split_a_run_of_punctuation() -> None:
    assert '""' not in head_cuts('"""')
    assert head_cuts("a = f(x)\nb = (") == ["a = f(x)\nb = (", "a = f(x)\n", "a = f(x)", "a = f(x", "a = f(",
                                            "a = f", "a =", "a"]


@pytest.mark.parametrize(("text", "expected"), [
    ("def add(a, b):\n    <FILL>\n", "python"),
    ("import os\n\nclass A:\n    def f(self):\n        return self.x\n", "python"),
    ("#include <stdio.h>\n\nint main(void) {\n    printf(\"hi\\n\");\n    return 0;\n}\n", "c"),
    ("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tx := 1\n\tfmt.Println(x)\n}\n", "go"),
    ("fn main() {\n    let mut x = 1;\n    println!(\"{}\", x);\n}\n", "rust"),
    ("const add = (a, b) => a + b;\nconsole.log(add(1, 2));\n", "javascript"),
    ("Dear team,\n\nthe meeting moves to Tuesday. Bring the notes.\n", None),
    ("x = 1\n", None),  # too little to tell: no guess
])
def test_guess_language(text: str, expected: str | None) -> None:
    assert guess_language(text) == expected


def test_detect_language_guesses_only_when_asked() -> None:
    text = "def add(a, b):\n    return a + b\n"
    assert detect_language(None, content=text) is None
    assert detect_language(None, content=text, guess=True) == "python"
    assert detect_language("notes.md", content=text, guess=True) == "markdown"  # the name wins


def test_the_command_line_refuses_to_write_what_breaks_the_file(tmp_path: Path) -> None:
    """The daemon judged the answer in its window; before a write the whole file is judged again
    (--apply, watch): adding an error there is exit 9 and nothing written; --allow-broken writes."""
    from diffgemma.cli.errors import ExitCode, WouldBreakSyntax
    from diffgemma.cli.options import Settings
    from diffgemma.cli.plumbing import check_syntax
    from diffgemma.cli.watch_cmd import FileWatcher

    path = tmp_path / "m.py"
    pieces = ["def f(x):\n    y = ", "\n    return y\n"]
    check_syntax(Settings(), path, pieces, ["x + 1"])
    with pytest.raises(WouldBreakSyntax) as caught:
        check_syntax(Settings(), path, pieces, ["(x + 1"])
    assert caught.value.code == ExitCode.SYNTAX == 9 and f"{path}:2" in str(caught.value)
    check_syntax(Settings(allow_broken=True), path, pieces, ["(x + 1"])
    check_syntax(Settings(), tmp_path / "notes.txt", ["some ", " words"], ["(x + 1"])  # no grammar: not judged
    # a rewrite is judged against the block it replaced
    check_syntax(Settings(), path, ["def f(x):\n", "    return y\n"], ["    y = (x\n"], baseline=["    y = (x\n"])

    watcher = FileWatcher(Settings())
    text = "def f(x):\n    y = x + 1\n    z = (x\n    return y\n"
    watcher.edits = [(18, 23, ""), (28, 34, "")]  # "x + 1" was a marker, "z = (x" another
    with pytest.raises(WouldBreakSyntax):
        watcher._check_syntax(path, text)
    watcher.edits = [(18, 23, "")]
    watcher._check_syntax(path, text.replace("z = (x", "z = x"))
