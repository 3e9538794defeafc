"""The scheduler with several workers (the vLLM engine's): jobs of different clients run inside the
engine at once, and a client's newer job still cancels its own running one. The stand-in engine's
gate (tests/scheduler_standins.py) holds every answer, so the overlap is forced, not timed."""

from __future__ import annotations

from pathlib import Path

from scheduler_standins import StandInLoader, checkpoint, job, wait_until

from diffgemma.runtime.daemon.scheduler import Scheduler


def test_several_workers_run_jobs_side_by_side(tmp_path: Path) -> None:
    loader = StandInLoader()
    model = checkpoint(tmp_path / "m")
    scheduler = Scheduler(model, engine_loader=loader, workers=3)
    scheduler.start()
    try:
        loader.gate.clear()  # the engine holds every answer until the gate opens
        jobs = [job(model, f"p{i} ", client=f"c{i}") for i in range(3)]
        for made, _ in jobs:
            scheduler.submit(made)
        wait_until(lambda: scheduler.status()["running_jobs"] == 3, "three jobs inside the engine at once")
        superseding, _ = job(model, "p0 again", client="c0")
        scheduler.submit(superseding)  # the same client's running job is cancelled, the others run on
        assert jobs[0][1].finish_reason() == "cancelled"
        loader.gate.set()
        assert [answer.finish_reason() for _, answer in jobs[1:]] == ["stop", "stop"]
    finally:
        loader.gate.set()
        scheduler.stop()
