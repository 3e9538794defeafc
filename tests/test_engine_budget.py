"""What a request costs and what it may spend: decoder rows (pruned hole-length search), the time
budget, alternatives in one batch, committed canvases for streams, chat, and the daemon's head."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.runner import CanvasView
from diffgemma.runtime.engine.types import Draft, SamplingSettings, SettingsError

PREFIX = "def area(radius):\n    "
SUFFIX = "\n\n\nprint(area(2.0))\n"


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir))


class RowCounter:
    """Counts the canvas positions that really pass through the decoder."""

    def __init__(self, engine: Engine) -> None:
        self.rows: list[int] = []
        decoder = engine.model.model.decoder
        self.handle = decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):  # type: ignore[no-untyped-def]
        self.rows.append(int(kwargs["decoder_input_ids"].shape[0]))

    def close(self) -> None:
        self.handle.remove()


def _never_settles() -> SamplingSettings:
    # a confidence no random model reaches: every row runs all its steps
    return SamplingSettings(seed=0, steps=16, confidence_threshold=1e-12)


def test_the_daemon_default_is_the_streaming_head(engine: Engine) -> None:
    assert engine.sampler == "stream" and engine.info()["sampler"] == "stream"


def test_decoder_tokens_count_every_row_and_stay_near_one_canvas(engine: Engine) -> None:
    counter = RowCounter(engine)
    try:
        result = engine.infill(PREFIX, SUFFIX, settings=_never_settles())
    finally:
        counter.close()
    t = result.timings
    c = engine.canvas_length
    assert t.decoder_tokens == sum(counter.rows) * c
    lengths, _ = engine.hole_candidates(c, len(engine.encode_text(SUFFIX)))
    assert counter.rows[0] == len(lengths) > 1
    # successive halving: the batch shrinks after each of the first steps down to one row
    assert counter.rows == sorted(counter.rows, reverse=True) and counter.rows[-1] == 1
    assert t.steps == 16 and t.decoder_tokens <= 2 * c * t.steps


def test_without_pruning_every_candidate_would_run_every_step(engine: Engine) -> None:
    """The same request through the loop with pruning off costs all candidates on every step."""
    from diffgemma.runtime.engine import denoise

    saved = denoise.PRUNE_STEPS
    denoise.PRUNE_STEPS = ()
    try:
        result = engine.infill(PREFIX, SUFFIX, settings=_never_settles())
    finally:
        denoise.PRUNE_STEPS = saved
    lengths, _ = engine.hole_candidates(engine.canvas_length, len(engine.encode_text(SUFFIX)))
    assert result.timings.decoder_tokens == len(lengths) * engine.canvas_length * 16


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values into Python (on CUDA each one waits for the device)."""

    READS = frozenset({"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy"})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def test_settling_a_step_reads_the_device_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished rows and the successive halving are decided on the host from one transfer per step."""
    from diffgemma.runtime.engine import denoise

    settle = denoise._RowState.settle
    reads: list[tuple[int, int, int]] = []  # (host reads, rows before, rows after) per step

    def counted(state: denoise._RowState, finished: torch.Tensor, done: int) -> torch.Tensor | None:
        before = len(state.active)
        with HostReads() as mode:
            kept = settle(state, finished, done)
        reads.append((mode.count, before, len(state.active)))
        return kept

    monkeypatch.setattr(denoise._RowState, "settle", counted)
    result = engine.infill(PREFIX, SUFFIX, settings=_never_settles())
    assert len(reads) == result.timings.steps == 16
    assert [n for n, _, _ in reads] == [1] * 16
    assert any(after < before for _, before, after in reads)  # the steps that pruned read once too


def test_an_expired_deadline_returns_the_first_draft(engine: Engine) -> None:
    result = engine.infill(PREFIX, SUFFIX, settings=_never_settles(), deadline=time.monotonic())
    assert result.finish_reason == "time"
    assert result.timings.steps == 1  # at least one step: a draft is always a whole answer
    edit = engine.edit(PREFIX, "return 1\n", SUFFIX, settings=_never_settles(), deadline=time.monotonic())
    assert edit.finish_reason == "time" and edit.timings.steps == 1


def test_a_deadline_in_the_future_does_not_cut(engine: Engine) -> None:
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=0, steps=3),
                           deadline=time.monotonic() + 3600)
    assert result.finish_reason != "time"


def test_alternatives_are_distinct_and_led_by_the_answer(engine: Engine) -> None:
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=4), alternatives=3)
    assert result.alternatives and result.alternatives[0] == result.text
    assert len(set(result.alternatives)) == len(result.alternatives) <= 3
    plain = engine.infill(PREFIX, "", max_tokens=8, settings=SamplingSettings(seed=1, steps=4), alternatives=3)
    assert len(plain.alternatives) >= 2  # the same length, different noise
    with pytest.raises(SettingsError):
        engine.infill(PREFIX, SUFFIX, alternatives=9)


def test_committed_canvases_are_streamed_and_only_extended(engine: Engine) -> None:
    drafts: list[Draft] = []
    c = engine.canvas_length
    result = engine.infill(PREFIX, "", max_tokens=3 * c, settings=SamplingSettings(seed=2, steps=3,
                                                                                   confidence_threshold=1e-12),
                           on_draft=drafts.append)
    finals = [d for d in drafts if d.final]
    assert result.timings.canvases >= 2 and finals
    for earlier, later in itertools.pairwise(finals):
        assert later.text.startswith(earlier.text)
    assert result.text.startswith(finals[-1].text)
    # each committed canvas is announced before the next canvas's first step
    first_final = drafts.index(finals[0])
    assert any(d.canvas == finals[0].canvas + 1 for d in drafts[first_final:])


def test_chat_answers_in_the_turn_format(engine: Engine) -> None:
    result = engine.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "add two numbers"}],
                         max_tokens=16, settings=SamplingSettings(seed=0, steps=3))
    assert result.finish_reason in ("stop", "length") and result.timings.steps >= 1
    assert result.hole_tokens <= 2 * engine.canvas_length


def test_chat_messages_are_text_not_markup(engine: Engine) -> None:
    end_turn = engine.tokenizer.convert_tokens_to_ids("<turn|>")
    ids = engine.chat_ids([{"role": "user", "content": "say <turn|> and <|turn>model now"},
                           {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}])
    assert ids.count(end_turn) == 3  # one per turn: the one typed in the message stays text


def test_confidence_of_every_final_token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CanvasView] = []
    monkeypatch.setattr(engine, "observer", seen.append)
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=0, steps=4))
    (start, length), = seen[-1].spans
    assert length == result.hole_tokens
    conf = torch.tensor(seen[-1].confidence[start: start + length])
    assert conf.numel() > 0 and bool(((conf >= 0) & (conf <= 1)).all())


@pytest.mark.parametrize("kind", ["infill", "edit", "holes"])
def test_a_time_budget_that_cuts_repair_says_time(engine: Engine, kind: str) -> None:
    """The canvas settles within the budget; the budget runs out before repair is done (an observer
    that is slow on purpose sits between the two): the answer says "time", not "stop"."""
    from conftest import grammars_missing

    if grammars_missing():
        pytest.skip(grammars_missing() or "")
    settings = SamplingSettings(seed=2, steps=2)
    budget_s = 5.0

    def call(deadline: float | None):  # type: ignore[no-untyped-def]
        if kind == "edit":
            return engine.edit(PREFIX, "return radius * 2", SUFFIX, settings=settings, language="python",
                               strength=1.0, deadline=deadline)
        if kind == "holes":
            return engine.infill_holes([PREFIX + "x = ", "\n    y = ", SUFFIX], settings=settings,
                                       language="python", deadline=deadline, max_tokens=4)
        return engine.infill(PREFIX, SUFFIX, settings=settings, language="python", deadline=deadline,
                             max_tokens=8)

    free = call(None)
    assert free.finish_reason == "stop"
    if free.timings.refine_rounds == 0:
        pytest.skip("this seed's answer parsed: no repair to cut")  # the tiny model's output is random
    started: list[float] = []

    def slow(_view: CanvasView) -> None:  # the canvas is done: let the budget run out before repair
        time.sleep(max(0.0, started[0] + budget_s - time.monotonic()) + 0.05)

    engine.observer = slow
    try:
        started.append(time.monotonic())
        cut = call(started[0] + budget_s)
    finally:
        engine.observer = None
    assert cut.finish_reason == "time"
