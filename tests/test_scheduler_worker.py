"""The scheduler with its worker thread and a stand-in engine (tests/scheduler_standins.py) loaded
through ``engine_loader``: what runs when, what gets cancelled, loads and unloads, and the counters
/v1/status reports. The gate holds the stand-in's answer, so every ordering here is forced, not timed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scheduler_standins import StandInLoader, checkpoint, job, wait_until

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.jobs import Limits
from diffgemma.runtime.daemon.policy import MODEL_FIXED
from diffgemma.runtime.daemon.scheduler import Scheduler


@pytest.fixture
def loader() -> StandInLoader:
    return StandInLoader()


@pytest.fixture
def model(tmp_path: Path) -> str:
    return checkpoint(tmp_path / "base")


@pytest.fixture
def make(loader: StandInLoader, model: str) -> Iterator[Any]:
    started: list[Scheduler] = []

    def build(**kwargs: Any) -> Scheduler:
        scheduler = Scheduler(model, engine_loader=loader, **kwargs)
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield build
    loader.gate.set()
    for scheduler in started:
        scheduler.stop()


def running(scheduler: Scheduler, loader: StandInLoader, job_id: str, prefix: str) -> None:
    """Wait until job ``job_id`` (asking for ``prefix``) is inside the engine."""
    wait_until(lambda: scheduler.status()["running"] == job_id and bool(loader.engines)
               and prefix in loader.last.calls, f"{job_id} to run")


def test_a_job_runs_on_the_loaded_engine_with_its_timings(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make()
    first, answer = job(model, "a = ")
    scheduler.submit(first)
    assert answer.text() == f"{model}:a = "
    timings = answer.get().result.timings  # type: ignore[union-attr]
    assert timings["load_ms"] > 0 and timings["queue_ms"] >= 0 and timings["daemon_ms"] >= timings["load_ms"]
    second, answer = job(model, "rewrite me", edit=True)
    scheduler.submit(second)
    assert answer.text() == f"{model}:rewrite me"
    assert answer.get().result.timings["load_ms"] == 0  # type: ignore[union-attr]
    status = scheduler.status()
    assert (status["state"], status["model"], status["loads"], status["requests_served"]) == ("ready", model, 1, 2)
    assert loader.last.calls == ["a = ", "rewrite me"]


def test_a_newer_job_of_a_client_cancels_its_running_one(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make()
    loader.gate.clear()
    old, old_answer = job(model, "old", client="editor", job_id="old")
    scheduler.submit(old)
    running(scheduler, loader, "old", "old")
    new, new_answer = job(model, "new", client="editor")
    scheduler.submit(new)
    assert old_answer.finish_reason() == "cancelled"  # within a step, the gate still closed
    assert not new_answer.done
    loader.gate.set()
    assert new_answer.text() == f"{model}:new"
    status = scheduler.status()
    assert (status["superseded"], status["cancelled"], status["requests_served"]) == (1, 1, 1)


def test_cancel_drops_a_queued_job_unrun_and_stops_a_running_one(make: Any, loader: StandInLoader,
                                                                   model: str) -> None:
    scheduler = make()
    loader.gate.clear()
    first, first_answer = job(model, "first", job_id="first")
    queued, queued_answer = job(model, "queued", job_id="queued")
    scheduler.submit(first)
    running(scheduler, loader, "first", "first")
    scheduler.submit(queued)
    assert scheduler.has_job("queued") and scheduler.status()["queue_length"] == 1
    assert scheduler.cancel("queued") is True
    assert queued_answer.finish_reason() == "cancelled" and not first_answer.done
    assert scheduler.cancel("first") is True
    assert first_answer.finish_reason() == "cancelled"
    wait_until(lambda: scheduler.status()["running"] is None, "the worker to be idle")
    assert scheduler.cancel("first") is False and not scheduler.has_job("first")
    assert loader.last.calls == ["first"]  # the queued job never reached the engine
    assert scheduler.status()["cancelled"] == 2


def test_a_full_queue_rejects_and_the_worker_goes_on(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make(max_queue=1)
    loader.gate.clear()
    busy, busy_answer = job(model, "busy", job_id="busy")
    scheduler.submit(busy)
    running(scheduler, loader, "busy", "busy")
    waiting, waiting_answer = job(model, "waiting")
    scheduler.submit(waiting)
    with pytest.raises(WireError) as refused:
        scheduler.submit(job(model, "late")[0])
    assert refused.value.code == ErrorCode.QUEUE_FULL
    assert (scheduler.status()["rejected"], scheduler.status()["queue_length"], scheduler.status()["queue_limit"]) \
        == (1, 1, 1)
    loader.gate.set()
    assert busy_answer.text() == f"{model}:busy" and waiting_answer.text() == f"{model}:waiting"


def test_keep_alive_zero_unloads_after_the_answer_and_the_next_job_reloads(make: Any, loader: StandInLoader,
                                                                           model: str) -> None:
    scheduler = make(keep_alive=300.0)
    first, answer = job(model, "a", keep_alive=0)
    scheduler.submit(first)
    answer.get()
    wait_until(lambda: scheduler.status()["state"] == "unloaded", "the idle model to unload")
    assert loader.last.closed and scheduler.status()["unloads"] == 1
    again, answer = job(model, "b")
    scheduler.submit(again)
    assert answer.text() == f"{model}:b" and answer.get().result.timings["load_ms"] > 0  # type: ignore[union-attr]
    status = scheduler.status()
    assert (status["state"], status["loads"]) == ("ready", 2)
    assert status["unload_in_s"] == pytest.approx(300.0, abs=1)  # the daemon's default after a job that set none


def test_a_negative_keep_alive_keeps_the_model_for_ever(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make(keep_alive=0.0)
    first, answer = job(model, "a", keep_alive=-1)
    scheduler.submit(first)
    answer.get()
    assert scheduler.status()["unload_in_s"] is None and scheduler.status()["state"] == "ready"
    assert not loader.last.closed


def test_a_fixed_model_stays_loaded_whatever_the_request_says(make: Any, loader: StandInLoader, model: str,
                                                             tmp_path: Path) -> None:
    scheduler = make(keep_alive=300.0, limits=Limits(fixed_model=True))
    first, answer = job(model, "a", keep_alive=0)
    scheduler.submit(first)
    answer.get()
    assert scheduler.status()["state"] == "ready" and scheduler.status()["unload_in_s"] == pytest.approx(300, abs=1)
    with pytest.raises(WireError) as refused:
        scheduler.resolve_model(checkpoint(tmp_path / "other"))
    assert refused.value.message == MODEL_FIXED


def test_a_failed_load_answers_its_request_and_the_next_request_loads(make: Any, loader: StandInLoader,
                                                                       model: str, tmp_path: Path) -> None:
    scheduler = make()
    broken = checkpoint(tmp_path / "broken")
    loader.fail[broken] = RuntimeError("not enough memory")
    bad, bad_answer = job(broken, "a")
    scheduler.submit(bad)
    outcome = bad_answer.get()
    assert (outcome.code, outcome.message) == (ErrorCode.MODEL_LOAD_FAILED,
                                               f"could not load model {broken}: not enough memory")
    status = scheduler.status()
    assert (status["state"], status["last_error"], status["errors"]) == ("error", "not enough memory", 1)
    good, good_answer = job(model, "b")
    scheduler.submit(good)
    assert good_answer.text() == f"{model}:b"
    status = scheduler.status()
    assert (status["state"], status["last_error"], status["model"], status["loads"]) == ("ready", None, model, 1)


def test_a_restricted_daemon_hides_why_a_load_failed(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make(limits=Limits(restrict_models=True))
    loader.fail[model] = RuntimeError("/home/operator/secret is unreadable")
    bad, answer = job(model, "a")
    scheduler.submit(bad)
    assert answer.get().code == ErrorCode.MODEL_LOAD_FAILED and "secret" not in answer.get().message


def test_an_engine_failure_is_one_requests_error(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make()
    failing, failing_answer = job(model, "boom")
    scheduler.submit(failing)
    assert failing_answer.get().code == ErrorCode.INTERNAL
    assert "the stand-in engine broke" in failing_answer.get().message
    fine, fine_answer = job(model, "fine")
    scheduler.submit(fine)
    assert fine_answer.text() == f"{model}:fine" and scheduler.status()["errors"] == 1


def test_preload_reports_loading_at_once_and_the_first_job_finds_the_model(make: Any, loader: StandInLoader,
                                                                          model: str) -> None:
    loader.gate.clear()
    scheduler = Scheduler(model, engine_loader=loader)  # not started: only preload's own report
    scheduler.preload()
    assert (scheduler.status()["state"], scheduler.status()["loading_model"]) == ("loading", model)
    scheduler.start()
    try:
        wait_until(lambda: scheduler.status()["state"] == "ready", "the preload")
        loader.gate.set()
        first, answer = job(model, "a")
        scheduler.submit(first)
        assert answer.get().result.timings["load_ms"] == 0  # type: ignore[union-attr]
        assert scheduler.status()["loads"] == 1 and scheduler.status()["unload_in_s"] is not None
    finally:
        scheduler.stop()


def test_stop_cancels_the_work_unloads_and_refuses_more(make: Any, loader: StandInLoader, model: str) -> None:
    scheduler = make()
    loader.gate.clear()
    busy, busy_answer = job(model, "busy", job_id="busy")
    queued, queued_answer = job(model, "queued")
    scheduler.submit(busy)
    running(scheduler, loader, "busy", "busy")
    scheduler.submit(queued)
    scheduler.stop()
    assert busy_answer.finish_reason() == "cancelled" and queued_answer.finish_reason() == "cancelled"
    assert loader.last.closed and scheduler.status()["state"] == "unloaded"
    with pytest.raises(WireError) as refused:
        scheduler.submit(job(model, "late")[0])
    assert "shutting down" in refused.value.message


def test_the_counters_add_up(make: Any, loader: StandInLoader, model: str, tmp_path: Path) -> None:
    scheduler = make(max_queue=2)
    broken = checkpoint(tmp_path / "broken")
    loader.fail[broken] = RuntimeError("no")
    for prefix in ("plain", "cached prefix"):  # served: 2, one with cached prefix tokens
        j, answer = job(model, prefix)
        scheduler.submit(j)
        answer.get()
    j, answer = job(broken, "x")  # errors: 1; the model is unloaded (1) before the other fails to load
    scheduler.submit(j)
    answer.get()
    loader.gate.clear()
    busy, busy_answer = job(model, "busy", client="ed", job_id="busy")
    scheduler.submit(busy)  # loads: 2
    running(scheduler, loader, "busy", "busy")
    queued, _ = job(model, "queued", job_id="queued")
    scheduler.submit(queued)
    scheduler.submit(job(model, "other")[0])
    with pytest.raises(WireError):  # rejected: 1
        scheduler.submit(job(model, "late")[0])
    scheduler.cancel("queued")  # cancelled: 1 (dropped while queued)
    newer, newer_answer = job(model, "newer", client="ed")
    scheduler.submit(newer)  # superseded: 1; cancelled: 2 once "busy" stops
    busy_answer.get()
    loader.gate.set()
    newer_answer.get()
    wait_until(lambda: scheduler.status()["queue_length"] == 0 and scheduler.status()["running"] is None,
               "the queue to drain")
    status = scheduler.status()
    counts = {k: status[k] for k in ("requests_served", "cancelled", "superseded", "rejected", "errors",
                                     "cache_hits", "loads", "unloads")}
    assert counts == {"requests_served": 4, "cancelled": 2, "superseded": 1, "rejected": 1, "errors": 1,
                      "cache_hits": 1, "loads": 2, "unloads": 1}
    assert status["mean_latency_ms"] > 0


def test_the_scheduler_imports_no_torch_when_its_loader_does_not(tmp_path: Path) -> None:
    """Torch comes in through the engine loader only (in the worker), never through the scheduler."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from scheduler_standins import StandInLoader, checkpoint, job\n"
        "from diffgemma.runtime.daemon.scheduler import Scheduler\n"
        "name = checkpoint(__import__('pathlib').Path(sys.argv[2]))\n"
        "s = Scheduler(name, engine_loader=StandInLoader()); s.start()\n"
        "j, answer = job(name, 'a'); s.submit(j); answer.get(); s.stop()\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
