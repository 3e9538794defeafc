"""The next-edit eval's oracle is right: every task's expected file is its original with the edit's
consequences made, checked against an independent rewrite of Python's syntax tree; and the suite
scores a played task as it should (no model needed for the builder; the tiny model for a run)."""

from __future__ import annotations

import ast
import re
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from diffgemma.context.line_edits import LineChange
from diffgemma.context.recent_edits import changes, tokens
from diffgemma.evals import next_edit_eval
from diffgemma.evals.next_edit_suite import KINDS, NEW_PARAMETER, NextEditTask, next_edit_tasks


@pytest.fixture(scope="module")
def tasks() -> list[NextEditTask]:
    return next_edit_tasks(6, seed=0)


class Renamed(ast.NodeTransformer):
    """``old`` -> ``new`` for names and parameters inside one function, or for attributes and the
    method's own definition anywhere."""

    def __init__(self, old: str, new: str, method: bool) -> None:
        self.old, self.new, self.method = old, new, method

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if not self.method and node.id == self.old:
            node.id = self.new
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        if not self.method and node.arg == self.old:
            node.arg = self.new
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if self.method and node.attr == self.old:
            node.attr = self.new
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        if self.method and node.name == self.old:
            node.name = self.new
        return node


def _enclosing(tree: ast.Module, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef:
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
             and n.lineno <= line + 1 <= (n.end_lineno or n.lineno)]
    return max(found, key=lambda n: n.lineno)  # the innermost


def _oracle(task: NextEditTask) -> str:
    """The expected file's tree, rebuilt from the original's by an independent transformation."""
    tree = ast.parse(task.original)
    if task.kind == "add-parameter":
        function = _enclosing(tree, task.cursor_line)
        function.args.args.append(ast.arg(arg=NEW_PARAMETER))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function.name:
                node.args.append(ast.Name(id=NEW_PARAMETER, ctx=ast.Load()))
        return ast.dump(tree)
    [rename] = changes([(task.path, task.diff)]).renames
    if task.kind == "rename-method":
        Renamed(rename.old, rename.new, method=True).visit(tree)
    else:
        function = _enclosing(tree, task.cursor_line)
        for child in [*function.args.args, *function.args.kwonlyargs, *function.body]:
            Renamed(rename.old, rename.new, method=False).visit(child)
    return ast.dump(tree)


def test_every_kind_is_built_and_the_choice_is_seeded(tasks: list[NextEditTask]) -> None:
    assert {t.kind for t in tasks} == set(KINDS)
    assert all(sum(t.kind == k for t in tasks) <= 6 for k in KINDS)
    assert [t.id for t in next_edit_tasks(6, seed=0)] == [t.id for t in tasks]
    assert [t.id for t in next_edit_tasks(6, seed=1)] != [t.id for t in tasks]


def test_the_expected_file_is_the_original_with_every_consequence_made(tasks: list[NextEditTask]) -> None:
    for task in tasks:
        assert ast.dump(ast.parse(task.expected)) == _oracle(task), task.id
        ast.parse(task.text)
        assert task.changed_lines and task.text != task.expected, task.id
        edited = [i for i, (a, b) in enumerate(zip(task.original.split("\n"), task.text.split("\n"), strict=True))
                  if a != b]
        assert edited == [task.cursor_line], task.id  # the user's edit is one line, where the cursor is
        removed = [ln[1:] for ln in task.diff.split("\n") if ln.startswith("-") and not ln.startswith("---")]
        added = [ln[1:] for ln in task.diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]
        assert removed == [task.original.split("\n")[task.cursor_line]]
        assert added == [task.text.split("\n")[task.cursor_line]]


def test_renames_change_only_whole_words_to_a_fresh_name(tasks: list[NextEditTask]) -> None:
    for task in (t for t in tasks if t.kind != "add-parameter"):
        [rename] = changes([(task.path, task.diff)]).renames
        assert not re.search(rf"\b{re.escape(rename.new)}\b", task.original), task.id  # a fresh name
        for line in task.changed_lines:
            before, after = tokens(task.text.split("\n")[line]), tokens(task.expected.split("\n")[line])
            ops = SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
            # the line changes only where a whole word `old` became `new` (a string's text stays)
            assert all(before[a1:a2] == [rename.old] and after[b1:b2] == [rename.new]
                       for tag, a1, a2, b1, b2 in ops if tag != "equal"), task.id
        assert not [n for n in ast.walk(ast.parse(task.expected)) if isinstance(n, ast.Attribute)
                    and n.attr == rename.old] if task.kind == "rename-method" else True


def test_a_played_task_is_scored_against_the_oracle(tasks: list[NextEditTask]) -> None:
    task = next(t for t in tasks if t.kind == "rename-parameter")
    line = task.changed_lines[0]
    right = LineChange(line, line + 1, task.expected.split("\n")[line] + "\n", 0.9, 0.9)
    wrong = LineChange(line, line + 1, "pass\n", 0.9, 0.9)
    assert next_edit_eval._right([right], task.expected) and not next_edit_eval._right([wrong], task.expected)
    row = next_edit_eval.summary([next_edit_eval.Played(exact=True, proposed_first=True, proposals=1, parsing=1,
                                                        right=1, rounds=2, ms=[10.0, 30.0], decoder_tokens=[5, 7]),
                                  next_edit_eval.Played(exact=False, proposed_first=False, rounds=1, ms=[20.0],
                                                        decoder_tokens=[6])])
    assert row["exact"] == 0.5 and row["no_proposal"] == 0.5 and row["parses"] == 1.0 and row["right"] == 1.0
    assert row["ms_p50"] == 20.0 and row["ms_p95"] == 30.0 and row["decoder_tokens"] == 6.0
    assert row["none_kept"] == 0.0 and row["none_unsure"] == 0.0  # the second task's why is not known here
    assert "| model | 2 | 50% | 50% (0% / 0% / 0%) | 100% | 100% |" in next_edit_eval.format_rows(
        [{"name": "model", "threshold": 0.5, "all": row, "kinds": {}}])


def test_the_suite_runs_on_an_engine(tiny_model_dir: Path, tasks: list[NextEditTask]) -> None:
    from diffgemma.runtime.engine.engine import Engine

    engine = Engine.load(str(tiny_model_dir))
    picked = [next(t for t in tasks if t.kind == kind) for kind in KINDS]
    [row] = next_edit_eval.evaluate(engine, picked, 0, [("tiny, threshold 1", 1.0)])
    assert row["all"]["n"] == 4 and row["all"]["no_proposal"] == 1.0 and row["all"]["exact"] == 0.0
    assert row["all"]["rounds"] >= 1.0 and row["all"]["decoder_tokens"] > 0 and set(row["kinds"]) == set(KINDS)
    assert row["all"]["none_kept"] + row["all"]["none_unsure"] + row["all"]["none_syntax"] == 1.0


def test_a_perfect_model_reaches_the_expected_file(tiny_model_dir: Path, tasks: list[NextEditTask]) -> None:
    """The oracle rewrite (the expected lines, certain) through the real next-edit code: the places,
    windows, next places and rounds lead a model that rewrites right to the expected file."""
    from diffgemma.runtime.engine.engine import Engine

    oracle = next_edit_eval.OracleRewrite(Engine.load(str(tiny_model_dir)))
    few = [t for t in tasks if len(t.changed_lines) <= 3]
    assert {t.kind for t in few} == set(KINDS)
    missed = [t.id for t in few if not next_edit_eval.play(oracle, t, 0, 0.5).exact]
    assert not missed
    [row] = next_edit_eval.evaluate(oracle, few[:2], 0, [("oracle", 0.5)])
    assert row["all"]["exact"] == 1.0 and row["all"]["right"] == 1.0 and row["all"]["parses"] == 1.0
