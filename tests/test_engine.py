"""The engine on the tiny random-weight DiffusionGemma: parity, joins, rewrite, drafts,
cancellation, prefix-cache reuse, settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.layout import trim_join
from diffgemma.runtime.engine.prefix_cache import PrefixCache, decoder_view, encode
from diffgemma.runtime.engine.runner import CanvasView
from diffgemma.runtime.engine.types import Cancelled, CancelToken, SamplingSettings, SettingsError

PREFIX = "import os\n\n\ndef add(a, b):\n    return a + b\n\n\nclass Stack:\n    def push(self, item):\n        "
SUFFIX = "\n\n    def pop(self):\n        return self.items.pop()\n"


@pytest.fixture(scope="module", params=["stream", "stock"])
def engine(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Engine:
    """Every engine test runs on the streaming head (the daemon's default) and the stock path."""
    return Engine.load(str(tiny_model_dir), sampler=request.param)


@pytest.fixture(scope="module")
def stock_engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(str(tiny_model_dir), sampler="stock")


class ForwardCounter:
    """Counts real decoder forwards and records the canvases they saw."""

    def __init__(self, engine: Engine) -> None:
        self.canvases: list[torch.Tensor] = []
        decoder = engine.model.model.decoder
        self.handle = decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.canvases.append(kwargs["decoder_input_ids"].clone())

    def close(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("seed", [0, 7])
def test_loop_reproduces_generate_token_for_token(stock_engine: Engine, seed: int) -> None:
    engine = stock_engine
    ids = [engine.bos_id, *engine.encode_text(PREFIX)]
    torch.manual_seed(seed)
    reference = engine.model.generate(torch.tensor([ids]), max_new_tokens=3 * engine.canvas_length)
    ours, timings = engine.generate(ids, max_new_tokens=3 * engine.canvas_length, settings=SamplingSettings(seed=seed))
    assert ours == reference.sequences[0].tolist()
    assert timings.steps > 0 and timings.canvases >= 1


def test_parity_breaks_with_another_seed(stock_engine: Engine) -> None:
    engine = stock_engine
    """The parity test can fail: a different seed gives different tokens."""
    ids = [engine.bos_id, *engine.encode_text(PREFIX)]
    torch.manual_seed(0)
    reference = engine.model.generate(torch.tensor([ids]), max_new_tokens=engine.canvas_length)
    ours, _ = engine.generate(ids, max_new_tokens=engine.canvas_length, settings=SamplingSettings(seed=1))
    assert ours != reference.sequences[0].tolist()


def test_infill_holds_the_suffix_and_joins_exactly(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CanvasView] = []
    monkeypatch.setattr(engine, "observer", seen.append)
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=3))
    canvas, held = seen[-1].tokens, seen[-1].held
    assert seen[-1].spans == [(0, result.hole_tokens)]
    suffix_ids = engine.encode_text(SUFFIX)
    hole = result.hole_tokens
    assert 0 < hole < engine.canvas_length
    # The held suffix tokens survived every denoising step, right after the hole.
    held_tokens = [t for t, h in zip(canvas, held, strict=True) if h]
    assert held_tokens == suffix_ids[: len(held_tokens)] and len(held_tokens) > 0
    assert held[hole] and not any(held[:hole])
    # Decoding prefix + hole + held suffix gives back prefix + fill + suffix head exactly.
    joined = engine.tokenizer.decode(
        engine.encode_text(PREFIX.rstrip(" ")) + canvas[: hole + len(held_tokens)],
        clean_up_tokenization_spaces=False,
    )
    head = engine.tokenizer.decode(held_tokens, clean_up_tokenization_spaces=False)
    assert joined.startswith(PREFIX.rstrip(" ")) and joined.endswith(head)
    spliced = PREFIX + result.text + SUFFIX
    assert spliced.startswith(PREFIX) and spliced.endswith(SUFFIX)
    assert result.finish_reason in ("stop", "length")


def test_infill_without_clamp_or_search(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CanvasView] = []
    monkeypatch.setattr(engine, "observer", seen.append)
    plain = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=3), clamp_suffix=False, max_tokens=8)
    assert plain.hole_tokens <= 8
    assert seen and not any(held for view in seen for held in view.held)  # nothing held
    one = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=3), length_search=False)
    assert one.hole_tokens > 0


def test_hole_candidates_cover_short_and_long(engine: Engine) -> None:
    lengths, hold = engine.hole_candidates(max_hole=1000, suffix_len=50)
    assert lengths[0] == 1 and lengths[-1] == engine.canvas_length - hold
    assert hold == engine.canvas_length // 4
    lengths, hold = engine.hole_candidates(max_hole=5, suffix_len=2)
    assert max(lengths) == 5 and hold == 2


def test_long_hole_continues_on_next_canvas(engine: Engine) -> None:
    """max_tokens beyond one canvas: a plain suffix-free fill spans several canvases."""
    result = engine.infill(PREFIX, "", max_tokens=2 * engine.canvas_length, settings=SamplingSettings(seed=0))
    # Random weights rarely emit <eos>; when they do the fill stops early.
    assert result.timings.canvases >= 1
    assert result.hole_tokens <= 2 * engine.canvas_length


def test_rewrite_starts_from_the_selection(engine: Engine) -> None:
    selection = "        self.items.append(item)\n"
    prefix = PREFIX.rsplit("\n", 1)[0] + "\n"
    counter = ForwardCounter(engine)
    try:
        result = engine.edit(prefix, selection, SUFFIX, strength=0.0, settings=SamplingSettings(seed=5, steps=4))
        first = counter.canvases[0]
    finally:
        counter.close()
    sel_ids = engine.encode_text(selection)
    # Every candidate length's row starts from the selection's own tokens (no noise at strength 0).
    shortest = min(round(len(sel_ids) * 0.75), len(sel_ids) - 2)
    assert shortest >= 3
    for row in first.tolist():
        assert row[:shortest] == sel_ids[:shortest]
    assert isinstance(result.text, str) and result.finish_reason == "stop"


def test_rewrite_strength_one_starts_from_noise(engine: Engine) -> None:
    selection = "        self.items.append(item)\n"
    prefix = PREFIX.rsplit("\n", 1)[0] + "\n"
    counter = ForwardCounter(engine)
    try:
        engine.edit(prefix, selection, SUFFIX, strength=1.0, settings=SamplingSettings(seed=5, steps=2))
        first = counter.canvases[0][0].tolist()
    finally:
        counter.close()
    sel_ids = engine.encode_text(selection)
    same = sum(a == b for a, b in zip(first, sel_ids, strict=False))
    assert same < len(sel_ids) // 2


def test_rewrite_with_instruction_and_long_selection(engine: Engine) -> None:
    long_sel = "".join(f"    x{i} = {i} * 2\n" for i in range(20))
    assert len(engine.encode_text(long_sel)) > engine.canvas_length
    result = engine.edit("def f():\n", long_sel, "    return x0\n", instruction="use a loop",
                         settings=SamplingSettings(seed=1, steps=3))
    assert result.timings.canvases >= 2
    assert result.text


def test_drafts_arrive_every_step(engine: Engine) -> None:
    drafts = []
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=2, steps=6), on_draft=drafts.append)
    assert [d.step for d in drafts] == list(range(1, result.timings.steps + 1))
    assert all(isinstance(d.text, str) for d in drafts)


def test_cancel_stops_within_one_step(engine: Engine) -> None:
    token = CancelToken()
    counter = ForwardCounter(engine)
    seen = []

    def on_draft(draft):
        seen.append(draft.step)
        if draft.step == 2:
            token.cancel()

    try:
        with pytest.raises(Cancelled):
            engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=40, confidence_threshold=1e-12),
                          on_draft=on_draft, cancel=token)
        forwards = len(counter.canvases)
    finally:
        counter.close()
    assert seen == [1, 2]
    assert forwards == 2  # no decoder forward after the cancel


def test_cancelled_request_frees_its_canvases(engine: Engine) -> None:
    """Even while the caller keeps the exception (and its traceback), the tensors are gone."""
    import gc
    import weakref

    token = CancelToken()
    refs: list[weakref.ref] = []
    handle = engine.model.model.decoder.register_forward_pre_hook(
        lambda m, a, kw: refs.append(weakref.ref(kw["decoder_input_ids"])), with_kwargs=True
    )
    try:
        with pytest.raises(Cancelled) as kept:
            engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=40, confidence_threshold=1e-12),
                          on_draft=lambda d: token.cancel() if d.step == 3 else None, cancel=token)
    finally:
        handle.remove()
    gc.collect()
    assert kept.value is not None and len(refs) == 3
    assert all(ref() is None for ref in refs)
    # The engine keeps working afterwards.
    assert engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=2)).timings.steps <= 2


def test_cancel_from_another_thread(engine: Engine) -> None:
    token = CancelToken()
    started = threading.Event()
    errors: list[BaseException] = []
    steps_after: list[int] = []

    def on_draft(draft):
        started.set()
        if token.cancelled:
            steps_after.append(draft.step)

    def run():
        try:
            engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=200, confidence_threshold=1e-12),
                          on_draft=on_draft, cancel=token)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    token.cancel()
    worker.join(60)
    assert not worker.is_alive()
    assert errors and isinstance(errors[0], Cancelled)
    assert len(steps_after) <= 1  # at most the step already running when cancel() landed


def test_prefix_cache_reuse_counts(engine: Engine) -> None:
    engine.prefix_cache.clear()
    first = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=2))
    assert first.timings.cached_tokens == 0
    assert first.timings.encoded_tokens > 10
    typed = engine.infill(PREFIX + "self.items", SUFFIX, settings=SamplingSettings(seed=1, steps=2))
    assert typed.timings.cached_tokens > 10
    assert typed.timings.encoded_tokens < first.timings.encoded_tokens / 3
    assert typed.timings.cached_tokens + typed.timings.encoded_tokens >= first.timings.encoded_tokens


def _keys(cache) -> list[torch.Tensor]:
    return [layer.keys for layer in decoder_view(cache, 1).layers]


@pytest.mark.parametrize("edit", ["extend", "crop_shallow", "crop_recorded", "crop_past_history"])
def test_prefix_cache_matches_a_fresh_encode(engine: Engine, edit: str) -> None:
    """Reused caches equal a fresh encode, across the sliding window (16 in the tiny model)."""
    base = [engine.bos_id, *engine.encode_text(PREFIX * 2)]
    assert len(base) > 3 * engine.model.config.text_config.sliding_window
    pc = PrefixCache(engine.model)
    pc.prepare(base)
    if edit == "crop_past_history":
        # A crop trims sliding layers back to their window; a later crop deeper than what was
        # added since cannot be exact, so the cache re-encodes.
        pc.prepare(base[:-2] + engine.encode_text("yy"))
    second = {
        "extend": base + engine.encode_text("x = 1"),
        "crop_shallow": base[:-2] + engine.encode_text("zz"),
        "crop_recorded": base[:-40] + engine.encode_text("z = 3"),
        "crop_past_history": base[:-40] + engine.encode_text("z = 3"),
    }[edit]
    use = pc.prepare(second)
    fresh = PrefixCache(engine.model, enabled=False)
    fresh.prepare(second)
    if edit == "crop_past_history":
        assert use.cached_tokens == 0
    else:
        assert use.cached_tokens > 0
    for got, want in zip(_keys(use.cache), _keys(fresh.cache), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_reused_cache_is_bitwise_a_fresh_encode(engine: Engine) -> None:
    """Whatever the cache held before, a prompt's keys are bitwise those of a fresh encode (the
    prompt is encoded in the same blocks either way): a seeded request repeats its text."""
    base = [engine.bos_id, *engine.encode_text(PREFIX * 3)]
    fresh = PrefixCache(engine.model, enabled=False)
    fresh.prepare(base)
    histories = [[base], [base[:-7]], [base + engine.encode_text("x = 1")],
                 [base[: len(base) // 2], base[:-3] + engine.encode_text("yy")]]
    for history in histories:
        pc = PrefixCache(engine.model)
        for ids in history:
            pc.prepare(ids)
        use = pc.prepare(base)
        assert use.cached_tokens % pc.block == 0
        for got, want in zip(_keys(use.cache), _keys(fresh.cache), strict=True):
            assert torch.equal(got, want)


def test_deep_crop_without_history_would_be_wrong(engine: Engine) -> None:
    """Why the guard exists: cropping a plain sliding layer past its window loses positions."""
    from transformers import DynamicCache

    ids = [engine.bos_id, *engine.encode_text(PREFIX * 2)]
    cache = DynamicCache(config=engine.model.config.get_text_config(decoder=True))
    encode(engine.model, cache, ids, 0)
    with pytest.raises(RuntimeError):
        cache.crop(-5)


def test_timings_on_every_result(engine: Engine) -> None:
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=1, steps=3))
    t = result.timings
    assert t.steps >= 1 and t.ms_per_step > 0 and t.total_ms >= t.encode_ms
    assert t.tokens_per_forward == pytest.approx(t.generated_tokens / t.steps)
    assert set(t.to_dict()) >= {"encode_ms", "steps", "ms_per_step", "tokens_per_forward", "cached_tokens", "total_ms"}


def test_settings_default_to_the_generation_config_and_override(engine: Engine) -> None:
    cfg = engine.resolve(None)
    gen = engine.model.generation_config
    assert cfg.steps == gen.max_denoising_steps and cfg.t_min == gen.t_min and cfg.t_max == gen.t_max
    assert engine.resolve(SamplingSettings(steps=3, t_min=0.2)).steps == 3
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(steps=2, seed=0, confidence_threshold=1e-12))
    assert result.timings.steps == 2


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(steps=0),
        SamplingSettings(steps=100000),
        SamplingSettings(entropy_bound=-1.0),
        SamplingSettings(t_max=0.001),
        SamplingSettings(t_min=-1.0),
        SamplingSettings(seed=-3),
        SamplingSettings(confidence_threshold=0.0),
    ],
)
def test_bad_settings_are_rejected(engine: Engine, settings: SamplingSettings) -> None:
    with pytest.raises(SettingsError):
        engine.infill(PREFIX, SUFFIX, settings=settings)


def test_bad_options_are_rejected(engine: Engine) -> None:
    with pytest.raises(SettingsError, match="max_tokens"):
        engine.infill(PREFIX, SUFFIX, max_tokens=0)
    with pytest.raises(SettingsError, match="strength"):
        engine.edit(PREFIX, "x", SUFFIX, strength=1.5)
    # the temperature falls from the higher end to the lower, whichever the request named which
    cfg = engine.resolve(SamplingSettings(t_max=0.1))  # below the checkpoint's t_min: a colder run
    assert (cfg.t_max, cfg.t_min) == (engine.resolve(None).t_min, 0.1)
    cfg = engine.resolve(SamplingSettings(t_min=0.9, t_max=0.5))
    assert (cfg.t_max, cfg.t_min) == (0.9, 0.5)


def test_trim_join_drops_repeated_lines_only() -> None:
    assert trim_join("x = 1\nreturn x\n", "def f():\n    ", "return x\n") == "x = 1\n"
    assert trim_join("x = 1\n", "def f():\n    ", "return x\n") == "x = 1\n"
    assert trim_join("return", "", "return x\n") == "return"
