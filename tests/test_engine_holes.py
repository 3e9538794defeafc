"""Several holes, syntax-guided repair and per-token confidence on the tiny random-weight model
(the mechanics; the quality figures come from diffgemma-mini's evaluation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import grammars_missing

from diffgemma.context.syntax import new_issues, syntax_issues
from diffgemma.runtime.api import config
from diffgemma.runtime.engine import repair
from diffgemma.runtime.engine.denoise import Budget
from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.holes import plan_groups
from diffgemma.runtime.engine.runner import CanvasView
from diffgemma.runtime.engine.types import SamplingSettings, SettingsError, Timings

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))

FAST = SamplingSettings(seed=3, steps=3)
CLOSE = ["def f(x):\n    y = ", " + 1\n    z = ", "\n    return y\n"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir))


def test_close_holes_share_a_canvas_with_the_text_between_held_exactly(engine: Engine,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CanvasView] = []
    monkeypatch.setattr(engine, "observer", seen.append)
    result = engine.infill_holes(CLOSE, settings=FAST, refine_syntax=False)
    assert len(result.holes) == 2 and result.text == result.holes[0].text
    tokens, held = seen[-1].tokens, seen[-1].held
    (s0, n0), (s1, n1) = seen[-1].spans
    between = engine.encode_text(CLOSE[1])
    tail = engine.encode_text(CLOSE[2])[: engine.canvas_length // 4]
    # the text between the holes sits right after the first hole, held, and the second hole
    # starts right after it; the suffix head right after the second
    assert s0 == 0 and s1 == n0 + len(between)
    assert tokens[n0: s1] == between and all(held[n0: s1])
    assert tokens[s1 + n1: s1 + n1 + len(tail)] == tail and all(held[s1 + n1: s1 + n1 + len(tail)])
    assert not any(held[s0: s0 + n0]) and not any(held[s1: s1 + n1])
    # one scouting run of candidate lengths, then one canvas with the chosen lengths
    assert result.timings.canvases == 2
    assert {n0, n1} <= set(range(1, engine.canvas_length))


def test_far_holes_go_left_to_right_with_earlier_fills_as_context(engine: Engine) -> None:
    far = "\n".join(f"    v{i} = {i} * {i}" for i in range(12)) + "\n    w = "
    pieces = ["def f():\n    a = ", far, "\n    return w\n"]
    ids = [engine.encode_text(p) for p in pieces]
    assert [g.holes for g in plan_groups(engine.canvas_length, ids)] == [[0], [1]]
    assert [g.holes for g in plan_groups(engine.canvas_length, [engine.encode_text(p) for p in CLOSE])] == [[0, 1]]
    result = engine.infill_holes(pieces, settings=FAST, refine_syntax=False)
    assert len(result.holes) == 2
    # the second hole's prompt is the first group's answer in place: the same fill as asking for
    # it alone with that prefix
    second = engine.infill(pieces[0] + result.holes[0].text + pieces[1], pieces[2],
                           settings=SamplingSettings(seed=FAST.seed + 1, steps=3), refine=False)
    assert second.text == result.holes[1].text


def test_the_largest_seed_fills_every_group(engine: Engine) -> None:
    far = "\n".join(f"    v{i} = {i} * {i}" for i in range(12)) + "\n    w = "
    pieces = ["def f():\n    a = ", far, "\n    return w\n"]
    largest = SamplingSettings(seed=config.SEED_MAX, steps=3)
    result = engine.infill_holes(pieces, settings=largest, refine_syntax=False)  # the second group's seed wraps
    second = engine.infill(pieces[0] + result.holes[0].text + pieces[1], pieces[2],
                           settings=SamplingSettings(seed=0, steps=3), refine=False)
    assert second.text == result.holes[1].text


def test_hole_count_is_checked(engine: Engine) -> None:
    with pytest.raises(SettingsError):
        engine.infill_holes(["only text"])


def test_confidences_are_probabilities_aligned_with_the_text(engine: Engine) -> None:
    prefix = "class Stack:\n    def push(self, item):\n        "  # healed indentation
    for result in (engine.infill(prefix, "\n    def pop(self):\n", settings=FAST, refine=False, confidence=True),
                   engine.infill(prefix, "", max_tokens=40, settings=FAST, refine=False, confidence=True)):
        assert result.tokens, "a fill with text has tokens"
        assert "".join(t.text for t in result.tokens) == result.text
        assert all(0.0 <= t.confidence <= 1.0 for t in result.tokens)
        assert len(result.tokens) <= result.hole_tokens
    multi = engine.infill_holes(CLOSE, settings=FAST, refine_syntax=False, confidence=True)
    for hole in multi.holes:
        assert "".join(t.text for t in hole.tokens) == hole.text
        assert all(0.0 <= t.confidence <= 1.0 for t in hole.tokens)


def test_syntax_issues_are_relative_to_the_empty_fill() -> None:
    fixed = ["def f(x):\n    return (", ")\n"]
    assert syntax_issues("".join(fixed), "python") == []
    assert new_issues(fixed, ["x + 1"], "python") == []
    assert new_issues(fixed, ["x +"], "python")
    # a window cut inside a construct has errors of its own: a fill that keeps them is fine
    cut = ["x = (", ")\n\n\ndef g():\n    return ]]\n"]
    assert syntax_issues("".join(cut), "python")
    assert new_issues(cut, ["x"], "python") == []
    assert new_issues(fixed, ["x +"], "no-such-language") is None


def test_an_injected_syntax_error_is_re_noised_where_it_breaks(engine: Engine) -> None:
    prefix, suffix = "def f(x):\n    y = g(x, ", ")\n    return y\n"
    broken = engine.encode_text("x]] + (1")
    suffix_ids = engine.encode_text(suffix)
    length = engine.canvas_length
    row = (broken + suffix_ids + [0] * length)[:length]
    held = [False] * len(broken) + [True] * len(suffix_ids) + [False] * length
    layout = repair.Layout(tokens=row, held=held[:length], holes=[(0, len(broken))], confidence=[0.5] * length)
    runner = engine.runner
    run = runner.start(FAST, Budget())
    encoded = runner.prepare(runner.prompt_ids("", prefix), run.timings, first=True)

    def render(lay: repair.Layout) -> list[str]:
        return [engine.decode(lay.hole_tokens(0))]

    fixed = [prefix, suffix]
    issues = new_issues(fixed, render(layout), "python")
    assert issues
    chosen = repair._positions(runner, layout, fixed, render, issues, 0)
    assert chosen and set(chosen) <= set(range(len(broken)))
    rows = repair._denoise_round(runner, encoded, [(layout, chosen)] * 2, run)
    for cand in rows:  # only the re-noised positions may change; the held suffix stays
        assert [t for p, t in enumerate(cand.tokens[:len(broken) + len(suffix_ids)]) if p not in chosen] == \
            [t for p, t in enumerate(row[:len(broken) + len(suffix_ids)]) if p not in chosen]
    run.timings = Timings()
    out = repair.refine(runner, encoded, layout, fixed, render, "python", run)
    assert 1 <= run.timings.refine_rounds <= repair.REFINE_ROUNDS
    # the version that parses, or the original when no round found one
    assert out is layout or new_issues(fixed, render(out), "python") == []


def test_repair_through_infill_is_on_with_a_grammar_and_off_when_asked(engine: Engine) -> None:
    prefix, suffix = "def f(x):\n    return g(", ")\n"
    for seed in range(4):
        settings = SamplingSettings(seed=seed, steps=3)
        off = engine.infill(prefix, suffix, settings=settings, language="python", refine=False)
        if not new_issues([prefix, suffix], [off.text], "python"):
            continue  # this seed's fill parses: nothing to repair
        on = engine.infill(prefix, suffix, settings=settings, language="python", confidence=True)
        assert off.timings.refine_rounds == 0 and on.timings.refine_rounds >= 1
        assert on.text == off.text or new_issues([prefix, suffix], [on.text], "python") == []
        assert "".join(t.text for t in on.tokens) == on.text
        plain = engine.infill(prefix, suffix, settings=settings, language="no-such-language")
        assert plain.timings.refine_rounds == 0 and plain.text == off.text
        return
    pytest.fail("no seed gave a fill that breaks the syntax on random weights")


def test_drafts_carry_their_tokens_and_confidences(engine: Engine) -> None:
    drafts = []
    engine.infill("def f(x):\n    y = ", "\n    return y\n", settings=FAST, on_draft=drafts.append, refine=False,
                  confidence=True)
    assert drafts
    for draft in drafts:
        assert draft.tokens is not None
        assert "".join(t.text for t in draft.tokens) == draft.text
        assert all(0.0 <= t.confidence <= 1.0 for t in draft.tokens)


def test_token_pieces_are_built_only_when_asked(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-token confidences cost two decodes a token: a request that does not ask gets none, in
    its result or its drafts, and the engine does not decode for them."""
    decodes = []
    decode = engine.runner.decode

    def counted(ids):  # type: ignore[no-untyped-def]
        decodes.append(len(ids))
        return decode(ids)

    monkeypatch.setattr(engine.runner, "decode", counted)
    prefix, suffix = "def f(x):\n    y = ", "\n    return y\n"
    counts = []
    for asked in (False, True):
        decodes.clear()
        result = engine.infill(prefix, suffix, settings=FAST, refine=False, confidence=asked)
        assert bool(result.tokens) == asked and result.hole_tokens > 0
        counts.append(len(decodes))
    assert counts[0] <= 2 and counts[1] >= 2 * result.hole_tokens  # the answer's text vs two a token
    drafts: list = []
    plain = engine.infill(prefix, suffix, settings=FAST, refine=False, on_draft=drafts.append)
    assert drafts and all(d.tokens is None for d in drafts) and not plain.tokens
    drafts = []
    holes = engine.infill_holes(CLOSE, settings=FAST, refine_syntax=False, on_draft=drafts.append)
    assert all(not h.tokens for h in holes.holes) and not holes.tokens
    assert drafts and all(not h.tokens for d in drafts for h in d.holes)
    drafts = []
    edit = engine.edit(prefix, "x + 1", suffix, settings=FAST, refine=False, on_draft=drafts.append)
    assert not edit.tokens and drafts and all(d.tokens is None for d in drafts)


def test_the_evaluation_compares_repair_on_and_off(tiny_model_dir: Path) -> None:
    from diffgemma.evals import evaluate

    report = evaluate.run_eval(str(tiny_model_dir), suites=["line"], groups=["baselines", "repair"], limit=2)
    by_name = {s["name"]: s["scores"] for s in report["systems"]}
    off, on = by_name["model, --no-refine"]["line"], by_name["model + repair (the default)"]["line"]
    raw = by_name["model + repair, --allow-broken"]["line"]
    assert off["n"] == on["n"] == raw["n"] == 2
    assert on["parses"] >= raw["parses"]  # the gate only ever takes errors out
    table = evaluate.format_markdown(report)
    assert "| model, --no-refine |" in table and "| model + repair (the default) |" in table


FAR = ["def f():\n    a = ", "\n".join(f"    v{i} = {i} * {i}" for i in range(12)) + "\n    w = ", "\n    return w\n"]


def _check_drafts(drafts: list, result: object, count: int) -> None:
    from diffgemma.runtime.engine.holes import HolesDraft

    assert drafts and all(isinstance(d, HolesDraft) for d in drafts)
    assert [d.step for d in drafts] == list(range(1, len(drafts) + 1))  # one per denoising step
    final = [h.text for h in result.holes]  # type: ignore[attr-defined]
    for draft in drafts:
        states = [h.state for h in draft.holes]
        assert len(states) == count and draft.text == draft.holes[0].text
        # filled left to right: final holes, then the group being denoised, then the waiting ones
        assert states == sorted(states, key=["final", "refining", "waiting"].index) and "refining" in states
        for i, hole in enumerate(draft.holes):
            if hole.state == "final":  # a final hole is the answer's, already
                assert hole.text == final[i]
            if hole.state == "waiting":
                assert hole.text == ""
            assert "".join(t.text for t in hole.tokens) == hole.text


def test_several_holes_report_a_draft_after_every_step(engine: Engine) -> None:
    drafts: list = []
    close = engine.infill_holes(CLOSE, settings=FAST, refine_syntax=False, on_draft=drafts.append, confidence=True)
    _check_drafts(drafts, close, 2)
    assert close.timings.steps == len(drafts)  # the scouting run's steps and the chosen canvas's
    assert all(h.state == "refining" for d in drafts for h in d.holes)  # one shared canvas
    drafts = []
    far = engine.infill_holes(FAR, settings=FAST, refine_syntax=False, on_draft=drafts.append, confidence=True)
    _check_drafts(drafts, far, 2)
    states = [tuple(h.state for h in d.holes) for d in drafts]
    assert states[0] == ("refining", "waiting") and states[-1] == ("final", "refining")
    assert [d.canvas for d in drafts] == sorted(d.canvas for d in drafts) and drafts[-1].canvas == 1
    # the drafts do not change the answer
    assert [h.text for h in far.holes] == [h.text for h in engine.infill_holes(FAR, settings=FAST,
                                                                             refine_syntax=False).holes]


def test_alternatives_of_close_holes_are_rows_of_one_canvas(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list = []
    seen: list[CanvasView] = []
    original = engine.runner.denoise

    def recorded(prompt, problem, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(prompt, problem, *args, **kwargs)
        runs.append((problem, out))
        return out

    monkeypatch.setattr(engine.runner, "denoise", recorded)
    monkeypatch.setattr(engine, "observer", seen.append)
    result = engine.infill_holes(CLOSE, settings=FAST, refine_syntax=False, alternatives=3)
    lists = [h.alternatives for h in result.holes]
    assert len({len(a) for a in lists}) == 1  # aligned: index k of every hole is set k
    sets = list(zip(*lists, strict=True))
    assert len(sets) == 3 and len(set(sets)) == 3  # distinct (random weights, three noises)
    assert sets[0] == tuple(h.text for h in result.holes)
    problem, out = runs[-1]  # the chosen lengths, one row per alternative
    assert out.argmax.shape[0] == 3
    (s0, n0), (s1, n1) = seen[-1].spans
    assert s0 == 0
    between = engine.encode_text(CLOSE[1])
    tail = engine.encode_text(CLOSE[2])[: engine.canvas_length // 4]
    stops = set(engine.eos_ids)
    for row in range(3):  # every set is joined exactly: the same held text at every boundary
        tokens = out.argmax[row].tolist()
        assert tokens[n0: s1] == between and tokens[s1 + n1: s1 + n1 + len(tail)] == tail
        assert bool(problem.clamp.mask[row, n0: s1].all())
        assert sets[row][1] == engine.decode([t for t in tokens[s1: s1 + n1] if t not in stops])


def test_alternatives_of_far_holes_are_conditioned_on_the_first_set(engine: Engine) -> None:
    result = engine.infill_holes(FAR, settings=FAST, refine_syntax=False, alternatives=3)
    lists = [h.alternatives for h in result.holes]
    assert len(lists[0]) == len(lists[1]) >= 2
    sets = list(zip(*lists, strict=True))
    assert len(set(sets)) == len(sets) and sets[0] == tuple(h.text for h in result.holes)
    # the first hole's alternatives are its own single-hole alternatives ...
    first = engine.infill(FAR[0], FAR[1], settings=FAST, refine=False, alternatives=3)
    assert first.alternatives[: len(lists[0])] == lists[0][: len(first.alternatives)]
    # ... and the second hole's come from one run after the answer's first fill
    second = engine.infill(FAR[0] + result.holes[0].text + FAR[1], FAR[2],
                           settings=SamplingSettings(seed=FAST.seed + 1, steps=3), refine=False, alternatives=3)
    assert set(lists[1]) <= set(second.alternatives)


def test_alternatives_are_checked_for_several_holes(engine: Engine) -> None:
    for bad in (0, 5, True):
        with pytest.raises(SettingsError):
            engine.infill_holes(CLOSE, settings=FAST, alternatives=bad)  # type: ignore[arg-type]
