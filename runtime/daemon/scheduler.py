"""The daemon's scheduler: worker threads that own the engine, fed by a bounded queue.

The local engine is not thread-safe and its calls block for a long time, so it has ONE worker and
never runs on the event loop: every load, generation and unload happens in that thread. The vLLM
engine sends each job's canvases to vLLM servers, which batch the requests of many clients: it
gets several workers (``workers``), each running one job at a time. The event loop only submits
jobs and is called back (thread-safely) with drafts and outcomes.

Three parts, one lock (the condition the worker waits on):

- the queue (runtime.daemon.job_queue): bounded, supersession by client key, cancel by id;
- the model slot (runtime.daemon.model_slot): loads, switches and unloads the one engine, and
  unloads it when a job's keep_alive (the daemon default when the request gave none) passes idle;
- the policy (runtime.daemon.policy): which models a request may name, and what it hears when its
  model fails to load.

Jobs, outcomes and limits are runtime.daemon.jobs'; what one job does on the engine is
runtime.daemon.execute's. Torch is imported only inside the worker, through the engine loader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffgemma.runtime.api.config import DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_QUEUE
from diffgemma.runtime.api.errors import ErrorCode, one_line
from diffgemma.runtime.daemon.execute import run_on_engine
from diffgemma.runtime.daemon.job_queue import JobQueue
from diffgemma.runtime.daemon.jobs import (
    EngineLoader,
    Job,
    JobKind,
    JobRequest,
    Limits,
    Outcome,
)
from diffgemma.runtime.daemon.model_slot import ModelSlot, default_engine_loader
from diffgemma.runtime.daemon.policy import MODEL_FIXED, MODEL_REFUSED, ModelPolicy

__all__ = [
    "MODEL_FIXED",
    "MODEL_REFUSED",
    "EngineLoader",
    "Job",
    "JobKind",
    "JobRequest",
    "Limits",
    "Outcome",
    "Scheduler",
    "Tally",
    "default_engine_loader",
]

log = logging.getLogger("diffgemma.daemon")


@dataclass
class Tally:
    """How the jobs the worker ran ended (jobs dropped while queued are the queue's to count)."""

    served: int = 0
    cancelled: int = 0
    errors: int = 0
    cache_hits: int = 0
    latency_total_ms: float = 0.0

    def record(self, outcome: Outcome, latency_ms: float) -> None:
        if outcome.result is not None:
            if outcome.result.finish_reason == "cancelled":
                self.cancelled += 1
            else:
                self.served += 1
                self.latency_total_ms += latency_ms
                if int(outcome.result.timings.get("cached_tokens") or 0) > 0:
                    self.cache_hits += 1
        elif outcome.status >= 500:  # the daemon's own failures; a client's mistake is not an error here
            self.errors += 1

    @property
    def mean_latency_ms(self) -> float | None:
        return round(self.latency_total_ms / self.served, 3) if self.served else None


class Scheduler:
    def __init__(self, default_model: str | None = None, *, device: str | None = None,
                 dtype: str | None = None, keep_alive: float = DEFAULT_KEEP_ALIVE_S, max_queue: int = DEFAULT_MAX_QUEUE,
                 engine_loader: EngineLoader = default_engine_loader, quantize: str | None = None,
                 sampler: str | None = None, limits: Limits | None = None, workers: int = 1,
                 engine_kind: str = "local") -> None:
        self.limits = limits or Limits()
        self.workers = max(1, workers)
        self._cond = threading.Condition()
        self.policy = ModelPolicy(default_model, self.limits)
        self.queue = JobQueue(max_queue, self._cond)
        self.slot = ModelSlot(engine_loader, device=device, dtype=dtype, quantize=quantize, sampler=sampler,
                              keep_alive=keep_alive, cond=self._cond, engine_kind=engine_kind)
        self.tally = Tally()
        self._pending_load: str | None = None
        self._threads: list[threading.Thread] = []
        self._alive = 0  # workers still running (the last one out unloads the model)
        self._load_failed: Callable[[BaseException], None] | None = None  # the preload's caller, told
        self._started = time.time()

    @property
    def default_model(self) -> str | None:
        return self.policy.default_model

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._alive = self.workers
        for n in range(self.workers):
            name = "diffgemma-engine" if self.workers == 1 else f"diffgemma-engine-{n}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything, unload the model in a worker, and wait for the workers to finish."""
        self.queue.close()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def cancel_all(self) -> None:
        self.queue.cancel_all()

    def preload(self, model: str | None = None, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Load ``model`` (default: the daemon's) in the worker before any request asks for it;
        ``on_failure`` hears (in the worker thread) why it did not load."""
        name = model or self.default_model
        if not name:
            return
        with self._cond:
            self._pending_load = name
            self._load_failed = on_failure
            self.slot.mark_loading(name)
            self._cond.notify_all()

    # --- the event loop's side --------------------------------------------------------------

    def resolve_model(self, requested: str | None) -> str:
        """The model a request runs on; a WireError for one it may not name."""
        return self.policy.resolve(requested)

    def listed_models(self) -> list[str]:
        """The models requests may name, for /v1/models: default first, then loaded, then allowed."""
        return self.policy.listed(self.slot.model)

    def submit(self, job: Job) -> None:
        """Queue ``job``; supersede the same client's older work. Raises WireError (queue full)."""
        self.queue.submit(job)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when no such job is waiting or running."""
        return self.queue.cancel(job_id)

    def has_job(self, job_id: str) -> bool:
        return self.queue.has_job(job_id)

    def status(self) -> dict[str, Any]:
        with self._cond:  # one snapshot: the parts share this lock
            slot = self.slot.status()
            running = self.queue.running
            return {
                **{k: slot[k] for k in ("state", "model", "engine", "capabilities", "servers")},
                "default_model": self.default_model,
                **{k: slot[k] for k in ("loading_model", "load_progress", "last_error", "device", "dtype",
                                        "memory_bytes", "parameters", "canvas_length", "context_length",
                                        "vocab_size", "sampler")},
                "limits": {"max_request_seconds": self.limits.max_request_seconds,
                           "max_steps": self.limits.max_steps, "max_tokens": self.limits.max_tokens,
                           "fixed_model": self.limits.fixed_model},
                "keep_alive": slot["keep_alive"],
                "unload_in_s": slot["unload_in_s"],
                "queue_length": len(self.queue),
                "queue_limit": self.queue.max_queue,
                "running": running.id if running is not None else None,
                "running_jobs": self.queue.running_count,
                "workers": self.workers,
                "requests_served": self.tally.served,
                "cancelled": self.queue.dropped + self.tally.cancelled,
                "superseded": self.queue.superseded,
                "rejected": self.queue.rejected,
                "errors": self.tally.errors,
                "cache_hits": self.tally.cache_hits,
                "loads": slot["loads"],
                "unloads": slot["unloads"],
                "mean_latency_ms": self.tally.mean_latency_ms,
                "uptime_s": round(time.time() - self._started, 1),
            }

    # --- the worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        while (step := self._next()) is not None:
            load, job = step
            if load is not None:
                self._preload(load)
            elif job is not None:
                self.queue.done(job, self._run_safely(job))
            else:
                self.slot.unload("keep_alive expired")
        with self._cond:
            self._alive -= 1
            last = self._alive == 0
        if last:
            self.slot.unload("shutting down")

    def _next(self) -> tuple[str | None, Job | None] | None:
        """What the worker does next: (model to load, None), (None, job), (None, None) to unload the
        idle model, or None to stop. Waits until there is something."""
        with self._cond:
            while not self.queue.closed:
                if self._pending_load is not None:
                    load, self._pending_load = self._pending_load, None
                    return load, None
                job = self.queue.take()
                if job is not None:
                    return None, job
                wait = self.slot.idle_wait()
                if wait is not None and wait <= 0:
                    return None, None
                self._cond.wait(wait)
        return None

    def _preload(self, name: str) -> None:
        try:
            self.slot.ensure(name)
            self.slot.keep()
        except Exception as exc:
            log.error("could not load %s: %s", name, one_line(exc))
            if self._load_failed is not None:
                self._load_failed(exc)

    def _run_safely(self, job: Job) -> Outcome:
        try:
            return self._run(job)
        except BaseException as exc:  # keep the worker alive whatever happens
            log.exception("request %s failed", job.id)
            return Outcome.failed(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {one_line(exc)}")

    def _run(self, job: Job) -> Outcome:
        queue_ms = (time.monotonic() - job.submitted) * 1000
        if job.cancel.cancelled:
            with self._cond:
                self.tally.cancelled += 1
            return Outcome(result=job.cancelled_result())
        try:
            load_ms = self.slot.ensure(job.model)
        except Exception as exc:
            outcome = self.policy.load_failed(job.model, exc)
            with self._cond:
                self.tally.record(outcome, 0.0)
            return outcome
        outcome = run_on_engine(self.slot.engine, job, self.limits)
        latency_ms = (time.monotonic() - job.submitted) * 1000
        if outcome.result is not None:
            outcome.result.timings["queue_ms"] = round(queue_ms, 3)
            outcome.result.timings["load_ms"] = round(load_ms, 3)
            # Submit to answer inside the daemon: queue wait + model load + engine + our overhead.
            outcome.result.timings["daemon_ms"] = round(latency_ms, 3)
        with self._cond:
            self.tally.record(outcome, latency_ms)
        self.slot.keep(self.policy.keep_alive(job.request.keep_alive))
        return outcome
