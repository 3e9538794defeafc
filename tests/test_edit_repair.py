"""Inline rewrite: per-token confidences and syntax-guided repair on the tiny random-weight model
(the mechanics; the quality figures come from diffgemma-mini's evaluation)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import grammars_missing

from diffgemma.context.syntax import new_issues, syntax_issues
from diffgemma.runtime.engine import repair
from diffgemma.runtime.engine.canvas import Run
from diffgemma.runtime.engine.denoise import Budget
from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.prompt import build_parts, strip_heal
from diffgemma.runtime.engine.rewrite import Rewritten, rewrite
from diffgemma.runtime.engine.types import SamplingSettings, Timings

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))

FAST = SamplingSettings(seed=3, steps=3)
PREFIX, SELECTION, SUFFIX = "def f(x):\n    y = g(", "x, 1", ")\n    return y\n"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir))


def _joined(result) -> str:
    return "".join(t.text for t in result.tokens)


def test_edit_confidences_are_probabilities_that_join_to_the_rewrite(engine: Engine) -> None:
    healed = "class Stack:\n    def push(self, item):\n        "  # the indentation moves into the selection
    cases = [(PREFIX, SELECTION, SUFFIX), (healed, "self.items.append(item)", "\n"),
             ("", "a = 1\nb = 2\n", ""), ("x = ", "(" * 40 + ")" * 40, "\n")]  # the last spans two canvases
    for prefix, selection, suffix in cases:
        result = engine.edit(prefix, selection, suffix, settings=FAST, refine=False, confidence=True)
        assert _joined(result) == result.text
        assert all(0.0 <= t.confidence <= 1.0 for t in result.tokens)
        assert len(result.tokens) <= result.hole_tokens
        assert result.text == "" or result.tokens


def test_rewrite_drafts_carry_their_tokens(engine: Engine) -> None:
    drafts = []
    engine.edit(PREFIX, SELECTION, SUFFIX, settings=FAST, on_draft=drafts.append, refine=False, confidence=True)
    assert drafts
    for draft in drafts:
        assert draft.tokens is not None and "".join(t.text for t in draft.tokens) == draft.text


def _broken_rewrite(engine: Engine, broken: str) -> tuple[Rewritten, Run]:
    """A rewrite of SELECTION whose last canvas has ``broken`` in its span (an injected error)."""
    parts = build_parts(PREFIX, ())
    prompt = engine.runner.prompt_ids(parts.header, parts.prefix)
    run = Run(cfg=engine.resolve(FAST), gen=torch.Generator().manual_seed(0), timings=Timings(), budget=Budget())
    done = rewrite(engine.runner, prompt, engine.encode_text(SELECTION), engine.encode_text(SUFFIX), parts.healed,
                   0.5, run, max_tokens=64, length_search=False, on_draft=None)
    assert done.last is not None
    out, best, problem = done.last.out, done.last.best, done.last.problem
    ids = engine.encode_text(broken)
    suffix_ids = engine.encode_text(SUFFIX)
    row = (ids + suffix_ids + [0] * engine.canvas_length)[: engine.canvas_length]
    argmax = out.argmax.clone()
    argmax[best] = torch.tensor(row)
    held = torch.zeros_like(problem.clamp.mask)
    held[best, len(ids): len(ids) + len(suffix_ids)] = True
    problem = dataclasses.replace(problem, clamp=dataclasses.replace(problem.clamp, mask=held))
    done.last = dataclasses.replace(done.last, out=dataclasses.replace(out, argmax=argmax), problem=problem)
    done.tokens, done.confidence = ids, [0.5] * len(ids)
    return done, run


def test_an_injected_syntax_error_in_a_rewrite_is_re_noised_and_repaired(engine: Engine) -> None:
    broken = "x]] + (1"
    assert new_issues([PREFIX, SUFFIX], [broken], "python", baseline=[SELECTION])
    done, run = _broken_rewrite(engine, broken)
    before = list(done.tokens)
    repair.repair_rewrite(engine.runner, done, PREFIX, SELECTION, SUFFIX, "", "python", run)
    assert 1 <= run.timings.refine_rounds <= repair.REFINE_ROUNDS
    text = strip_heal(engine.decode(done.tokens), "")
    # the version that parses, or the injected rewrite as it was when no round found one
    assert done.tokens == before or new_issues([PREFIX, SUFFIX], [text], "python", baseline=[SELECTION]) == []
    assert len(done.confidence) == len(done.tokens)


def test_a_rewrite_of_broken_code_that_stays_broken_brought_nothing_in() -> None:
    fixed = [PREFIX, SUFFIX]
    assert new_issues(fixed, ["x, 2"], "python", baseline=[SELECTION]) == []
    assert new_issues(fixed, ["x,, 2"], "python", baseline=[SELECTION])
    assert new_issues(fixed, ["x,, 2"], "python", baseline=["x,, 1"]) == []
    # the text after a longer or shorter rewrite is compared at its shifted place
    cut = ["x = (", ")\n\n\ndef g():\n    return ]]\n"]
    assert new_issues(cut, ["a + b + c"], "python", baseline=["a"]) == []


def test_edit_repair_is_on_with_a_grammar_and_off_when_asked(engine: Engine) -> None:
    for seed in range(8):
        settings = SamplingSettings(seed=seed, steps=3)
        off = engine.edit(PREFIX, SELECTION, SUFFIX, settings=settings, strength=1.0, language="python",
                          refine=False)
        if not new_issues([PREFIX, SUFFIX], [off.text], "python", baseline=[SELECTION]):
            continue  # this seed's rewrite parses: nothing to repair
        on = engine.edit(PREFIX, SELECTION, SUFFIX, settings=settings, strength=1.0, language="python",
                         confidence=True)
        assert off.timings.refine_rounds == 0 and on.timings.refine_rounds >= 1
        assert on.text == off.text or new_issues([PREFIX, SUFFIX], [on.text], "python", baseline=[SELECTION]) == []
        assert _joined(on) == on.text and all(0.0 <= t.confidence <= 1.0 for t in on.tokens)
        plain = engine.edit(PREFIX, SELECTION, SUFFIX, settings=settings, strength=1.0, language="no-such-language")
        assert plain.timings.refine_rounds == 0 and plain.text == off.text
        return
    pytest.fail("no seed gave a rewrite that breaks the syntax on random weights")


def test_pythons_own_parser_catches_what_the_grammar_accepts_relative_to_the_window() -> None:
    fixed = ["def f(x):\n    if x:\n", "    return 1\n"]
    assert syntax_issues("".join([fixed[0], "    pass\n", fixed[1]]), "python") == []  # tree-sitter accepts it
    assert new_issues(fixed, ["    pass\n"], "python")  # a block without its body
    assert new_issues(fixed, ["        pass\n"], "python") == []
    assert new_issues(fixed, ["\n"], "python")  # the empty hole's own error is no excuse for a blank fill
    # a window that starts inside a docstring, indented, and ends before a block's body
    head = '    in the docstring.\n    """\n        return 1\n\n    def g(self):\n        y = '
    tail = "\n        return y\n\n    def h(self):\n"
    assert new_issues([head, tail], ["2"], "python") == []
    assert new_issues([head, tail], ["2\n  if y:"], "python")


def test_when_no_round_parses_a_head_of_the_fill_that_does_is_kept(engine: Engine) -> None:
    fixed = ["def f(x):\n    y = 1\n", "    return y\n"]
    ids = engine.encode_text("    z = 2\n    w = (")
    length = engine.canvas_length
    lay = repair.Layout(tokens=(ids + [0] * length)[:length], held=[False] * length, holes=[(0, len(ids))],
                        confidence=[0.5] * length)

    def render(one: repair.Layout) -> list[str]:
        return [engine.decode(one.hole_tokens(0))]

    head = repair._line_head(engine.runner, [lay], fixed, render, "python", None)
    assert head is not None and render(head) == ["    z = 2\n"]
    blank = engine.encode_text("\n    w = (")
    lay.tokens[: len(blank)], lay.holes = blank, [(0, len(blank))]
    assert repair._line_head(engine.runner, [lay], fixed, render, "python", None) is None  # never a blank fill


@pytest.mark.parametrize(("fill", "closer"), [('"""', '"""'), ("'''Add", "'''"), ('x = "ab', '"'),
                                              ("y = foo(a, ", ")"), ("z = [1, 2", "]"), ("w = {1: ", "}")])
def test_an_opener_never_closed_gets_its_closer(fill: str, closer: str) -> None:
    fixed = ["def add(a, b):\n    ", "\n"]
    issues = new_issues(fixed, [fill], "python")
    assert issues
    text = repair.splice(fixed, [fill]).text
    assert closer in {repair._closer(i, text) for i in issues}
    assert all(repair._closer(i, text) is None for i in new_issues(fixed, ["else:"], "python") or [])


def test_the_closed_row_keeps_the_opener_holds_its_closer_and_frees_the_middle(engine: Engine) -> None:
    fixed = ["def add(a, b):\n    ", "\n"]
    ids = engine.encode_text('"""')
    length = engine.canvas_length
    after = engine.encode_text("\n")
    tokens = (ids + after + [0] * length)[:length]
    held = ([False] * len(ids) + [True] * len(after) + [False] * length)[:length]
    lay = repair.Layout(tokens=tokens, held=held, holes=[(0, len(ids))], confidence=[0.5] * length)

    def render(one: repair.Layout) -> list[str]:
        return [engine.decode(one.hole_tokens(0))]

    issues = new_issues(fixed, render(lay), "python")
    [(closed, free)] = repair._closed(engine.runner, lay, fixed, render, issues)
    (start, hole) = closed.holes[0]
    kept = closed.tokens[start: start + hole]
    assert engine.decode(kept[: len(ids)]) == '"""' and engine.decode(kept[hole - len(ids):]) == '"""'
    assert free == list(range(len(ids), hole - len(ids)))  # only the middle is denoised again
    assert closed.tokens[hole: hole + len(after)] == after
    assert closed.held[hole: hole + len(after)] == [True] * len(after)
    assert len(closed.tokens) == len(closed.held) == len(closed.confidence) == length
    # the denoised row ends where it must: the closer stays, so the docstring is whole
    run = engine.runner.start(FAST, Budget())
    parts = build_parts(fixed[0], ())
    prompt = engine.runner.prepare(engine.runner.prompt_ids(parts.header, parts.prefix), run.timings, True)
    [out] = repair._denoise_round(engine.runner, prompt, [(closed, free)], run)
    assert render(out)[0].startswith('"""') and render(out)[0].endswith('"""')
