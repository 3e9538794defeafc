"""The next-edit contract on the tiny random-weight DiffusionGemma: `next_edit` over an engine's
rewrite. The answer's shape, edits that apply to the document, nothing over a threshold of 1.0, no
syntax error ever added, the recent edits in the prompt, drafts, cancellation and a window of a
document numbered in the document's lines."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from conftest import grammars_missing

from diffgemma.context.line_edits import apply_changes, split_lines
from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.next_edit import DIFF_PATH, NextEditAnswer, NextEditDraft, diff_block, next_edit
from diffgemma.runtime.engine.types import Cancelled, CancelToken, Draft, EngineResult, SamplingSettings

DOC = '''import os


def area(w, height):
    """The area."""
    total = width * height
    return total


def scale(x):
    print(width)
    return area(x, x) * 2
'''
DIFF = "--- a/m.py\n+++ b/m.py\n@@ -4 +4 @@\n-def area(width, height):\n+def area(w, height):\n"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir))


class Recording:
    """An engine seen through its rewrite only: next-edit needs nothing else of an engine, and the
    test sees what the rewrite was asked."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.canvas_length = engine.canvas_length
        self.calls: list[dict[str, Any]] = []

    def encode_text(self, text: str) -> list[int]:
        return self.engine.encode_text(text)

    def edit(self, prefix: str, selection: str, suffix: str, **options: Any) -> EngineResult:
        self.calls.append({"prefix": prefix, "selection": selection, "suffix": suffix, **options})
        return self.engine.edit(prefix, selection, suffix, **options)


def ask(engine: Any, text: str = DOC, cursor: int = 3, **options: Any) -> NextEditAnswer:
    defaults: dict[str, Any] = {"edits": [("m.py", DIFF)], "path": "m.py", "threshold": 0.0,
                                "settings": SamplingSettings(seed=0, steps=4)}
    return next_edit(engine, text, cursor, **{**defaults, **options})


def test_the_answer_s_edits_apply_to_the_document_and_the_window(engine: Engine) -> None:
    answer = ask(engine)  # no language: every change counts, no grammar judges it
    start, end = answer.window
    assert start <= 3 < end and answer.finish_reason in ("stop", "length") and answer.reason is None
    assert answer.edits and answer.threshold == 0.0
    assert all(start <= e.start_line <= e.end_line <= end and 0 < e.confidence <= 1 for e in answer.edits)
    assert all(a.end_line <= b.start_line for a, b in zip(answer.edits, answer.edits[1:], strict=False))
    lines = split_lines(DOC)
    new = apply_changes(DOC, answer.edits)
    assert new.startswith("".join(lines[:start])) and new.endswith("".join(lines[end:]))
    assert answer.text == apply_changes("".join(lines[start:end]), answer.edits, start)
    assert answer.timings.decoder_tokens > 0 and [p.line for p in answer.places] == [5, 10]


def test_a_rewrite_cut_short_never_deletes_what_it_did_not_reach(engine: Engine) -> None:
    answer = ask(engine, max_tokens=3)  # less than a line: the window's lines are not rewritten
    assert answer.finish_reason == "length" and answer.edits == [] and answer.why == "kept"


def test_nothing_is_proposed_over_a_threshold_of_one(engine: Engine) -> None:
    answer = ask(engine, threshold=1.0)
    assert answer.edits == [] and answer.text == "" and answer.threshold == 1.0
    assert answer.reason is not None and "\n" not in answer.reason and answer.why in ("kept", "unsure")


@pytest.mark.skipif(grammars_missing() is not None, reason=grammars_missing() or "")
def test_a_proposal_never_adds_a_syntax_error(engine: Engine) -> None:
    judged = 0
    for seed in range(4):
        answer = ask(engine, language="python", settings=SamplingSettings(seed=seed, steps=4))
        ast.parse(apply_changes(DOC, answer.edits))  # DOC parses, so the edited document must
        judged += not answer.edits and answer.why == "syntax" and "syntax error" in (answer.reason or "")
    assert judged  # the random model's rewrites break the syntax: the gate dropped them


def test_the_recent_edits_are_in_the_prompt_and_any_rewriting_engine_serves(engine: Engine) -> None:
    recording = Recording(engine)
    answer = ask(recording, extra=[("util.py", "def helper():\n    pass\n")])
    [call] = recording.calls
    assert call["extra"] == [("util.py", "def helper():\n    pass\n"), (DIFF_PATH, diff_block([("m.py", DIFF)]))]
    assert call["confidence"] is True and call["refine"] is False  # the gate judges each edit instead
    start, end = answer.window
    lines = DOC.split("\n")
    assert call["selection"] == "\n".join(lines[start:end])  # whole lines, the last newline held after
    assert call["prefix"].endswith("".join(split_lines(DOC)[:start])) and call["suffix"].startswith("\n")
    assert diff_block([("m.py", "@@ -1 +1 @@\n-a\n+b\n")]) == "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-a\n+b\n"


def test_drafts_show_the_window_and_its_edits_so_far(engine: Engine) -> None:
    drafts: list[Draft] = []
    answer = ask(engine, on_draft=drafts.append)
    assert drafts and all(isinstance(d, NextEditDraft) and d.window == answer.window for d in drafts)
    assert [d.step for d in drafts] == sorted(d.step for d in drafts) or len({d.canvas for d in drafts}) > 1
    assert any(d.edits for d in drafts)


def test_cancellation_stops_within_a_step(engine: Engine) -> None:
    cancel = CancelToken()
    seen: list[Draft] = []

    def on_draft(draft: Draft) -> None:
        seen.append(draft)
        cancel.cancel()

    with pytest.raises(Cancelled):
        ask(engine, on_draft=on_draft, cancel=cancel, settings=SamplingSettings(seed=0, steps=64))
    assert len(seen) == 1


def test_a_window_of_a_document_answers_in_document_lines(engine: Engine) -> None:
    lines = DOC.split("\n")
    part = "\n".join(lines[3:12])  # document lines 3..11
    whole = ask(engine, threshold=1.0)
    windowed = ask(engine, text=part, first_line=3, threshold=1.0)
    assert windowed.window[0] >= 3 and windowed.window[0] <= 3 < windowed.window[1]
    assert windowed.next_line == whole.next_line == 10
