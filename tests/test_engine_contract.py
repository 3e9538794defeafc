"""The engine interface's contract, one set of tests run against every engine the daemon can drive:
the local engine on the tiny DiffusionGemma, and the vLLM engine in front of the stand-in vLLM
server (vLLM's own serving code around the same tiny model; tests/vllm_harness.py).

What an engine may do differently is what its `Capabilities` say (drafts per step or per canvas,
an exact join or a reported one); everything else holds for both: typed results and finish
reasons, timings, the holes' and alternatives' shapes, cancellation, the time budget, and typed
errors before any work is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffgemma.runtime.api.results import FINISH_REASONS
from diffgemma.runtime.engine.interface import InferenceEngine
from diffgemma.runtime.engine.types import (
    Cancelled,
    CancelToken,
    Draft,
    EngineResult,
    HolesDraft,
    SettingsError,
)

PREFIX = "def total(values):\n    result = 0\n    for v in values:\n        "
SUFFIX = "\n    return result\n\n\nprint(total([1, 2, 3]))\n"
ENGINES = ["local", "vllm"]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[InferenceEngine]:
    made: InferenceEngine
    if request.param == "local":
        from diffgemma.runtime.engine.engine import Engine

        made = Engine.load(str(tiny_model_dir), device="cpu")
    else:
        from diffgemma.runtime.engine.vllm.engine import VllmEngine

        pytest.importorskip("vllm_harness", reason="the vLLM side harness (tests/vllm_harness.py) is not here")
        standin = request.getfixturevalue("vllm_standin")
        made = VllmEngine.connect(str(standin.model_dir), [standin.url])
    yield made
    made.close()


def typed(result: Any) -> EngineResult:
    assert isinstance(result, EngineResult)
    assert isinstance(result.text, str) and result.finish_reason in FINISH_REASONS
    assert result.timings.total_ms > 0 and result.timings.canvases >= 1
    return result


def test_an_infill_is_a_typed_result_that_ends_at_the_held_suffix(engine: InferenceEngine) -> None:
    result = typed(engine.infill(PREFIX, SUFFIX, max_tokens=16))
    assert result.finish_reason in ("stop", "length") and 1 <= result.hole_tokens <= 16
    head = SUFFIX.strip().splitlines()[0]
    assert not result.text.rstrip().endswith(head)  # the fill does not run on into the suffix
    if engine.capabilities().exact_join:
        assert result.timings.held_mismatches == 0
    else:  # checked against the held tokens, and said
        assert 0 <= result.timings.held_mismatches <= engine.canvas_length


def test_a_fill_without_suffix_stops_at_its_budget(engine: InferenceEngine) -> None:
    result = typed(engine.infill("x = ", "", max_tokens=5))
    assert result.hole_tokens <= 5 and result.finish_reason in ("stop", "length")
    longer = typed(engine.infill("x = ", "", max_tokens=engine.canvas_length + 8))
    assert longer.hole_tokens <= engine.canvas_length + 8


def test_an_edit_rewrites_the_selection(engine: InferenceEngine) -> None:
    result = typed(engine.edit("def f(x):\n", "    return x + 1\n", "\nprint(f(1))\n", strength=0.5))
    assert result.finish_reason in ("stop", "length") and result.hole_tokens >= 1


def test_several_holes_answer_one_fill_each(engine: InferenceEngine) -> None:
    pieces = ["a = ", "\nb = ", "\nc = [a, b]\n"]
    result = typed(engine.infill_holes(pieces, max_tokens=6))
    assert len(result.holes) == 2 and result.text == result.holes[0].text
    assert all(0 < h.hole_tokens <= 6 for h in result.holes)
    paired = typed(engine.infill_holes(pieces, max_tokens=6, alternatives=2))
    counts = {len(h.alternatives) for h in paired.holes}
    assert len(counts) == 1 and counts.pop() >= 1  # set k across every hole
    assert [h.alternatives[0] for h in paired.holes] == [h.text for h in paired.holes]


def test_a_chat_answers_in_turns(engine: InferenceEngine) -> None:
    result = typed(engine.chat([{"role": "user", "content": "Say hi"}], max_tokens=8))
    assert result.finish_reason in ("stop", "length") and result.hole_tokens <= 8


def test_alternatives_are_distinct_and_start_with_the_answer(engine: InferenceEngine) -> None:
    result = typed(engine.infill(PREFIX, SUFFIX, max_tokens=12, alternatives=3))
    assert 1 <= len(result.alternatives) <= 3
    assert len(set(result.alternatives)) == len(result.alternatives)
    assert result.alternatives[0] == result.text


def test_drafts_show_the_answer_as_it_forms(engine: InferenceEngine) -> None:
    drafts: list[Draft] = []
    typed(engine.infill(PREFIX, SUFFIX, max_tokens=12, on_draft=drafts.append))
    assert drafts and all(isinstance(d.text, str) for d in drafts)
    holes: list[Draft] = []
    typed(engine.infill_holes(["a = ", "\nb = ", "\n"], max_tokens=4, on_draft=holes.append))
    assert holes and all(isinstance(d, HolesDraft) and len(d.holes) == 2 for d in holes)
    if engine.capabilities().per_step_drafts:
        assert len(drafts) >= 2


def test_a_cancelled_request_raises_cancelled(engine: InferenceEngine) -> None:
    early = CancelToken()
    early.cancel()
    with pytest.raises(Cancelled):
        engine.infill(PREFIX, SUFFIX, cancel=early)
    midway = CancelToken()

    def cancel_on_first(draft: Draft) -> None:
        midway.cancel()

    with pytest.raises(Cancelled):
        engine.infill(PREFIX, SUFFIX, cancel=midway, on_draft=cancel_on_first)
    assert midway.cancelled


def test_past_the_deadline_the_answer_is_the_best_so_far(engine: InferenceEngine) -> None:
    result = engine.infill(PREFIX, SUFFIX, deadline=time.monotonic() - 1.0)
    assert isinstance(result, EngineResult) and result.finish_reason == "time"
    assert isinstance(result.text, str)


@pytest.mark.parametrize("call", ["alternatives", "max_tokens", "strength", "holes"])
def test_bad_settings_are_typed_errors(engine: InferenceEngine, call: str) -> None:
    with pytest.raises(SettingsError):
        if call == "alternatives":
            engine.infill(PREFIX, SUFFIX, alternatives=0)
        elif call == "max_tokens":
            engine.infill(PREFIX, SUFFIX, max_tokens=0)
        elif call == "strength":
            engine.edit("a", "b", "c", strength=1.5)
        else:
            engine.infill_holes(["only one piece"])


def test_tokens_round_trip(engine: InferenceEngine) -> None:
    text = "def f(x):\n\treturn x * 2  # twice\n"
    ids = engine.encode_text(text)
    assert ids and all(0 <= i < engine.vocab_size for i in ids)
    assert engine.decode(ids) == text
    assert engine.default_steps >= 1 and engine.info()["canvas_length"] == engine.canvas_length


NEXT_DOC = "def area(width, height):\n    return width * height\n\n\nprint(area(2, 3))\n"
NEXT_DIFF = ("@@ -1,2 +1,2 @@\n-def area(w, height):\n-    return w * height\n"
             "+def area(width, height):\n+    return width * height\n")


def test_a_next_edit_suggestion_is_a_rewrite_any_engine_serves(engine: InferenceEngine) -> None:
    """Next-edit is a function of an engine's edit: its answer's edits apply to the document, stay in
    the window the model rewrote, and never add a syntax error (the document parses, so the edited
    one must)."""
    from diffgemma.context.line_edits import apply_changes
    from diffgemma.runtime.engine.next_edit import NextEditAnswer, next_edit
    from diffgemma.runtime.engine.types import SamplingSettings

    for _ in range(2):  # no seed: the vLLM engine takes none
        answer = next_edit(engine, NEXT_DOC, 1, edits=[("m.py", NEXT_DIFF)], path="m.py", language="python",
                           threshold=0.0, max_tokens=32, settings=SamplingSettings(steps=4), client="contract")
        assert isinstance(answer, NextEditAnswer) and answer.finish_reason in FINISH_REASONS
        start, end = answer.window
        assert 0 <= start <= 1 < end and answer.timings.total_ms > 0
        assert all(start <= e.start_line <= e.end_line <= end for e in answer.edits)
        assert (answer.edits == []) == (answer.why is not None)
        compile(apply_changes(NEXT_DOC, answer.edits), "m.py", "exec")
