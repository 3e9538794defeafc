"""The model slot on its own, driven from the test thread as the worker drives it: loading through
the ``engine_loader`` seam, switching, failures, keep_alive, and the state /v1/status shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from scheduler_standins import StandInLoader, checkpoint

from diffgemma.runtime.daemon.model_slot import ModelSlot
from diffgemma.runtime.engine.loading import ModelLoadError


@pytest.fixture
def loader() -> StandInLoader:
    return StandInLoader()


def test_a_model_loads_once_and_reports_what_it_is(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader, device="cpu", dtype="float32")
    name = checkpoint(tmp_path / "a")
    assert slot.status()["state"] == "unloaded" and slot.status()["memory_bytes"] == 0
    assert slot.ensure(name) > 0.0
    assert slot.ensure(name) == 0.0 and slot.ensure(f"{tmp_path}/./a") == 0.0  # the same model, spelled twice
    assert len(loader.engines) == 1 and slot.engine is loader.last
    status = slot.status()
    assert (status["state"], status["model"], status["loads"], status["last_error"]) == ("ready", name, 1, None)
    assert (status["memory_bytes"], status["parameters"], status["canvas_length"]) == (4096, 1000, 16)
    assert status["context_length"] == 512  # read from the engine's model config


def test_the_sampler_reaches_the_loader_only_when_set(tmp_path: Path, loader: StandInLoader) -> None:
    name = checkpoint(tmp_path / "a")
    ModelSlot(loader, device="cpu", quantize="4bit").ensure(name)
    ModelSlot(loader, sampler="stock").ensure(name)
    assert loader.args == [(name, "cpu", None, "4bit"), (name, None, None, None, "stock")]


def test_switching_models_closes_the_old_engine(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader)
    a, b = checkpoint(tmp_path / "a"), checkpoint(tmp_path / "b")
    slot.ensure(a)
    first = loader.last
    slot.ensure(b)
    assert first.closed and slot.engine is loader.last and loader.last.name == b
    assert (slot.loads, slot.unloads, slot.status()["model"]) == (2, 1, b)


def test_a_mistyped_name_keeps_the_loaded_model(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader)
    a = checkpoint(tmp_path / "a")
    slot.ensure(a)
    with pytest.raises(ModelLoadError):
        slot.ensure(str(tmp_path / "typo"))
    assert slot.engine is loader.last and not loader.last.closed and slot.status()["state"] == "ready"
    assert len(loader.engines) == 1 and slot.unloads == 0


def test_a_failed_load_is_the_error_state_until_a_load_succeeds(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader)
    bad, good = checkpoint(tmp_path / "bad"), checkpoint(tmp_path / "good")
    loader.fail[bad] = RuntimeError("CUDA out of memory\nthe allocator's long report")
    with pytest.raises(RuntimeError):
        slot.ensure(bad)
    status = slot.status()
    assert (status["state"], status["last_error"], status["loading_model"]) == ("error", "CUDA out of memory", None)
    assert slot.engine is None and slot.loads == 0
    slot.ensure(good)
    assert (slot.status()["state"], slot.status()["last_error"]) == ("ready", None)


def test_keep_alive_sets_when_the_idle_model_unloads(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader, keep_alive=300.0)
    assert slot.idle_wait() is None  # nothing loaded, nothing to unload
    slot.ensure(checkpoint(tmp_path / "a"))
    slot.keep()
    wait = slot.idle_wait()
    assert wait is not None and 299.0 < wait <= 300.0 and slot.status()["unload_in_s"] == pytest.approx(300, abs=1)
    slot.keep(-1)  # for ever
    assert slot.idle_wait() is None and slot.status()["unload_in_s"] is None
    slot.keep(0)
    wait = slot.idle_wait()
    assert wait is not None and wait <= 0


def test_unload_closes_the_engine_and_remembers_the_model(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader)
    name = checkpoint(tmp_path / "a")
    slot.ensure(name)
    slot.keep(0)
    slot.unload("keep_alive expired")
    status = slot.status()
    assert loader.last.closed and slot.engine is None and slot.idle_wait() is None
    assert (status["state"], status["model"], status["unloads"], status["memory_bytes"]) == ("unloaded", name, 1, 0)
    slot.unload("again")  # nothing loaded: nothing to do
    assert slot.unloads == 1


def test_mark_loading_reports_a_preload_before_the_worker_starts_it(tmp_path: Path, loader: StandInLoader) -> None:
    slot = ModelSlot(loader)
    slot.mark_loading("m")
    status = slot.status()
    assert (status["state"], status["loading_model"]) == ("loading", "m")
    assert status["load_progress"].endswith("s elapsed")
    slot.ensure(checkpoint(tmp_path / "a"))
    slot.mark_loading("m")  # a loaded model keeps answering "ready"
    assert slot.status()["state"] == "ready"
