"""Quality suites: task construction, scoring, and the sandboxed HumanEval runner."""

from __future__ import annotations

import pytest

from diffgemma.evals import eval_suites as E
from diffgemma.training.corpus import split_files


@pytest.fixture(scope="module")
def humaneval() -> list[E.Task]:
    return E.load_humaneval(limit=3)


def test_sandbox_passes_the_canonical_solution(humaneval: list[E.Task]) -> None:
    task = humaneval[0]
    outcome = E.run_humaneval(task, task.truth, timeout=10)
    assert outcome.passed and outcome.status == "passed"


def test_sandbox_fails_a_wrong_solution(humaneval: list[E.Task]) -> None:
    task = humaneval[0]
    wrong = E.run_humaneval(task, task.truth.replace("abs(elem - elem2)", "abs(elem - elem2) + 10"), timeout=10)
    assert not wrong.passed and wrong.status == "failed"
    assert not E.run_humaneval(task, "", timeout=10).passed


def test_sandbox_times_out_an_infinite_loop() -> None:
    outcome = E.run_sandboxed("while True:\n    pass\n", timeout=1.5)
    assert outcome.status == "timeout" and not outcome.passed


def test_sandbox_is_isolated(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFGEMMA_SECRET", "x")
    probe = "import os, sys\nassert 'DIFFGEMMA_SECRET' not in os.environ\nassert sys.flags.isolated\n"
    assert E.run_sandboxed(probe, timeout=10).passed
    big = E.run_sandboxed("x = bytearray(4 * 1024 ** 3)\n", timeout=10)
    assert big.status == "failed" and "MemoryError" in big.detail


def test_humaneval_tasks_are_whole(humaneval: list[E.Task]) -> None:
    assert len(E.load_humaneval()) == 164
    for task in humaneval:
        assert task.test and task.entry_point and task.truth
        assert E.parses(task.prefix + task.truth + task.suffix)


@pytest.mark.parametrize("kind", ["line", "multiline"])
def test_spans_come_from_held_out_files_and_are_deterministic(kind: str) -> None:
    held = set(split_files()[1])
    tasks = E.span_tasks(kind, 12, seed=0)
    assert len(tasks) == 12
    assert [t.id for t in tasks] == [t.id for t in E.span_tasks(kind, 12, seed=0)]
    for task in tasks:
        assert task.id.rsplit(":", 1)[0] in held
        # the cut is exact: putting the truth back gives the original (parsing) file
        assert E.parses(task.file_prefix + task.truth + task.file_suffix)
        assert task.file_prefix.endswith(task.prefix) and task.file_suffix.startswith(task.suffix)
        assert len(task.prefix) <= E.PREFIX_CHARS and len(task.suffix) <= E.SUFFIX_CHARS
        if kind == "line":
            assert "\n" not in task.truth and task.truth == task.truth.lstrip() and task.truth.strip()
            assert task.suffix.startswith("\n") or not task.suffix
        else:
            assert 1 <= task.truth.count("\n") <= 3


def test_scoring() -> None:
    assert E.exact_match("return x  \n", "return x")
    assert not E.exact_match("return y", "return x")
    assert not E.exact_match("\nreturn x", "return x")
    assert E.parses("def f():\n    return 1\n")
    assert not E.parses("def f(:\n    return 1\n")
    assert not E.parses("def f():\nreturn 1\n")  # tree-sitter may recover; ast does not


def test_trivial_baselines() -> None:
    task = E.Task(id="t", suite="line", prefix="def f():\n    x = 1\n    ", suffix="\n", truth="return x")
    assert E.empty_fill(task) == ""
    assert E.previous_line_fill(task) == "x = 1"
    mid = E.Task(id="t", suite="humaneval", prefix="def f():\n    for i in x:", suffix="\n", truth="")
    assert E.previous_line_fill(mid) == "\n    for i in x:"


def test_rewrite_tasks_corrupt_the_selection() -> None:
    lines = E.span_tasks("line", 5, seed=0)
    vocab = list(range(200, 260))
    encode = lambda text: [ord(c) for c in text]  # noqa: E731 - a character "tokenizer"
    decode = lambda ids: "".join(chr(i) for i in ids)  # noqa: E731
    tasks = E.rewrite_tasks(lines, encode, decode, vocab, seed=0)
    assert tasks and all(t.selection and t.selection != t.truth for t in tasks)
    assert all(len(t.selection) == len(t.truth) for t in tasks)
