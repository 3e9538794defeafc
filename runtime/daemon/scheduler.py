"""The daemon's scheduler: a bounded queue in front of ONE worker thread that owns the engine.

The engine is not thread-safe and its calls block for a long time, so it never runs on the event
loop: every load, generation and unload happens in the worker thread. The event loop only submits
jobs and is called back (thread-safely) with drafts and outcomes.

- Supersession: a job with a ``client`` key cancels that client's older queued or running job.
- Cancellation: ``cancel(id)`` sets the job's CancelToken, which the engine checks every denoising
  step; a queued job is dropped at once.
- keep_alive: after a job the model stays loaded for its keep_alive seconds (the daemon default
  when the request gave none); the worker unloads it when that passes with nothing to do.

Jobs, outcomes and limits are runtime.daemon.jobs'; what one job does on the engine is
runtime.daemon.execute's. Torch is imported only inside the worker, through the engine loader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Literal

from diffgemma.runtime.api.config import DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_QUEUE
from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line
from diffgemma.runtime.daemon.execute import run_on_engine
from diffgemma.runtime.daemon.jobs import (
    EngineLoader,
    Job,
    JobKind,
    JobRequest,
    Limits,
    Outcome,
    model_key,
)

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
    "default_engine_loader",
]

log = logging.getLogger("diffgemma.daemon")

# One text for every model a request may not use: it must not tell a missing path from a file
# that exists, or a directory from a system file.
MODEL_REFUSED = "model not available: this daemon serves its default model and those allowed with --allow-model"
MODEL_FIXED = "this daemon serves a fixed model (--fixed-model): requests cannot load or unload models"


def default_engine_loader(name: str, device: str | None, dtype: str | None, quantize: str | None = None,
                          sampler: str | None = None) -> Any:
    from diffgemma.runtime.engine.engine import Engine  # heavy (torch); only ever in the worker thread

    kwargs = {"sampler": sampler} if sampler else {}
    return Engine.load(name, device=device, dtype=dtype, quantize=quantize, **kwargs)


def _context_length(engine: Any) -> int | None:
    """The model's context window (llama.vscode sizes its prompts by /props' n_ctx)."""
    config = getattr(getattr(engine, "model", None), "config", None)
    text = getattr(config, "text_config", config)
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _real_model_if_cached() -> str | None:
    try:
        from diffgemma.runtime.engine.mini import REAL_MODEL_ID, real_model_cached

        return REAL_MODEL_ID if real_model_cached() else None
    except Exception:  # a broken cache only means: not cached
        return None


class Scheduler:
    def __init__(self, default_model: str | None = None, *, device: str | None = None,
                 dtype: str | None = None, keep_alive: float = DEFAULT_KEEP_ALIVE_S, max_queue: int = DEFAULT_MAX_QUEUE,
                 engine_loader: EngineLoader = default_engine_loader, quantize: str | None = None,
                 sampler: str | None = None, limits: Limits | None = None) -> None:
        self.default_model = default_model
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.sampler = sampler
        self.limits = limits or Limits()
        self._allowed_keys: set[str] | None = None
        self.keep_alive = keep_alive
        self.max_queue = max_queue
        self._load_engine = engine_loader

        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._running: Job | None = None
        self._pending_load: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

        # Model state; written by the worker, read (under the lock) by status().
        self._engine: Any = None
        self._model: str | None = None
        self._info: dict[str, Any] = {}
        self._state: Literal["unloaded", "loading", "ready", "error"] = "unloaded"
        self._loading_model: str | None = None
        self._load_started: float | None = None
        self._last_error: str | None = None
        self._unload_at: float | None = None
        self._started = time.time()

        # Counters for /v1/status.
        self.served = 0
        self.cancelled = 0
        self.superseded = 0
        self.rejected = 0
        self.errors = 0
        self.cache_hits = 0
        self.loads = 0
        self.unloads = 0
        self._latency_total_ms = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="diffgemma-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything, unload the model in the worker, and wait for it to finish."""
        with self._cond:
            self._stopping = True
            self._cancel_all_locked()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel_all(self) -> None:
        with self._cond:
            self._cancel_all_locked()

    def _cancel_all_locked(self) -> None:
        while self._queue:
            self._drop_locked(self._queue.popleft())
        if self._running is not None:
            self._running.cancel.cancel()

    def preload(self, model: str | None = None) -> None:
        """Load ``model`` (default: the daemon's) in the worker before any request asks for it."""
        name = model or self.default_model
        if not name:
            return
        with self._cond:
            self._pending_load = name
            # Report "loading" from now on, so a client that connects before the worker has
            # picked the load up waits for it instead of seeing an unloaded daemon.
            if self._engine is None:
                self._state = "loading"
                self._loading_model = name
                self._load_started = time.monotonic()
            self._cond.notify_all()

    # --- the event loop's side --------------------------------------------------------------

    def resolve_model(self, requested: str | None) -> str:
        """The model a request runs on; a WireError for one it may not name."""
        name = requested or self.default_model
        if not name:
            raise WireError(ErrorCode.NO_MODEL, "no model given and the daemon has no default; start it with "
                            "--model or DIFFGEMMA_MODEL, or name one in the request's \"model\" field")
        if not requested or requested == self.default_model:
            return name
        if self.limits.fixed_model:
            if self.default_model and model_key(requested) == model_key(self.default_model):
                return self.default_model
            raise WireError(ErrorCode.MODEL_LOCKED, MODEL_FIXED)
        if self.limits.restrict_models and model_key(requested) not in self._allowed():
            raise WireError(ErrorCode.MODEL_NOT_FOUND, MODEL_REFUSED)
        return name

    def _allowed(self) -> set[str]:
        if self._allowed_keys is None:
            names = [self.default_model, *self.limits.allowed_models, _real_model_if_cached()]
            self._allowed_keys = {model_key(n) for n in names if n}
        return self._allowed_keys

    def listed_models(self) -> list[str]:
        """The models requests may name, for /v1/models: default first, then loaded, then allowed."""
        names = [self.default_model, self._model, *self.limits.allowed_models]
        seen: list[str] = []
        for name in names:
            if name and name not in seen:
                seen.append(name)
        return seen

    def submit(self, job: Job) -> None:
        """Queue ``job``; supersede the same client's older work. Raises WireError (queue full)."""
        with self._cond:
            if self._stopping:
                raise WireError(ErrorCode.QUEUE_FULL, "the daemon is shutting down")
            if job.client is not None:
                for old in [j for j in self._queue if j.client == job.client]:
                    self._queue.remove(old)
                    self.superseded += 1
                    self._drop_locked(old)
                if self._running is not None and self._running.client == job.client \
                        and not self._running.cancel.cancelled:
                    self.superseded += 1
                    self._running.cancel.cancel()
            if len(self._queue) >= self.max_queue:
                self.rejected += 1
                raise WireError(ErrorCode.QUEUE_FULL, f"the daemon's queue is full ({self.max_queue} waiting); "
                                f"retry shortly or start it with a larger --queue")
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when no such job is waiting or running."""
        with self._cond:
            for job in self._queue:
                if job.id == job_id:
                    self._queue.remove(job)
                    self._drop_locked(job)
                    return True
            if self._running is not None and self._running.id == job_id:
                self._running.cancel.cancel()
                return True
        return False

    def has_job(self, job_id: str) -> bool:
        with self._cond:
            running = self._running is not None and self._running.id == job_id
            return running or any(j.id == job_id for j in self._queue)

    def _drop_locked(self, job: Job) -> None:
        job.cancel.cancel()
        self.cancelled += 1
        job.finish(Outcome(result=job.cancelled_result()))

    def status(self) -> dict[str, Any]:
        with self._cond:
            served = self.served
            now = time.monotonic()
            progress = None
            if self._state == "loading" and self._load_started is not None:
                progress = f"{now - self._load_started:.1f} s elapsed"
            unload_in = None
            if self._engine is not None and self._unload_at is not None:
                unload_in = round(max(0.0, self._unload_at - now), 1)
            return {
                "state": self._state,
                "model": self._model,
                "default_model": self.default_model,
                "loading_model": self._loading_model,
                "load_progress": progress,
                "last_error": self._last_error,
                "device": self._info.get("device", self.device),
                "dtype": self._info.get("dtype", self.dtype),
                "memory_bytes": int(self._info.get("memory_bytes") or 0) if self._engine is not None else 0,
                "parameters": self._info.get("parameters") if self._engine is not None else None,
                "canvas_length": self._info.get("canvas_length") if self._engine is not None else None,
                "context_length": self._info.get("context_length") if self._engine is not None else None,
                "sampler": self._info.get("sampler", self.sampler),
                "limits": {"max_request_seconds": self.limits.max_request_seconds,
                           "max_steps": self.limits.max_steps, "max_tokens": self.limits.max_tokens,
                           "fixed_model": self.limits.fixed_model},
                "keep_alive": self.keep_alive,
                "unload_in_s": unload_in,
                "queue_length": len(self._queue),
                "queue_limit": self.max_queue,
                "running": self._running.id if self._running is not None else None,
                "requests_served": served,
                "cancelled": self.cancelled,
                "superseded": self.superseded,
                "rejected": self.rejected,
                "errors": self.errors,
                "cache_hits": self.cache_hits,
                "loads": self.loads,
                "unloads": self.unloads,
                "mean_latency_ms": round(self._latency_total_ms / served, 3) if served else None,
                "uptime_s": round(time.time() - self._started, 1),
            }

    # --- the worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                job = None
                while True:
                    if self._stopping:
                        break
                    if self._pending_load is not None or self._queue:
                        break
                    if self._engine is not None and self._unload_at is not None:
                        wait = self._unload_at - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopping:
                    break
                load = self._pending_load
                self._pending_load = None
                if load is None and self._queue:
                    job = self._queue.popleft()
                    self._running = job
            if load is not None:
                self._safe_ensure_model(load)
            elif job is not None:
                try:
                    outcome = self._run(job)
                except BaseException as exc:  # keep the worker alive whatever happens
                    log.exception("request %s failed", job.id)
                    outcome = Outcome.failed(ErrorCode.INTERNAL,
                                             f"internal error: {type(exc).__name__}: {one_line(exc)}")
                # Not running any more before anyone hears the answer: a cancel that arrives
                # after the answer must find nothing to cancel.
                with self._cond:
                    self._running = None
                job.finish(outcome)
            else:
                self._unload("keep_alive expired")
        self._unload("shutting down")

    def _safe_ensure_model(self, name: str) -> None:
        try:
            self._ensure_model(name)
            self._set_unload_deadline(None)
        except Exception as exc:
            log.error("could not load %s: %s", name, one_line(exc))

    def _ensure_model(self, name: str) -> float:
        """Load ``name`` unless it is the loaded model; returns the milliseconds spent loading."""
        # The same spelling needs no look at the file system (the usual case: every request).
        if self._engine is not None and (name == self._model or model_key(name) == model_key(self._model or "")):
            return 0.0
        if self._engine is not None:
            # A mistyped name must not cost the user the model that works: check that the new
            # one can be found before dropping the old one.
            from diffgemma.runtime.engine.loading import resolve_model_path

            resolve_model_path(name)
        self._unload(f"switching to {name}")
        with self._cond:
            self._state = "loading"
            self._loading_model = name
            self._load_started = time.monotonic()
        started = time.perf_counter()
        log.info("loading model %s", name)
        try:
            if self.sampler:
                engine = self._load_engine(name, self.device, self.dtype, self.quantize, self.sampler)
            else:
                engine = self._load_engine(name, self.device, self.dtype, self.quantize)
            info = dict(engine.info())
            info.setdefault("context_length", _context_length(engine))
        except BaseException as exc:
            with self._cond:
                self._state = "error"
                self._loading_model = None
                self._last_error = one_line(exc)
            raise
        ms = (time.perf_counter() - started) * 1000
        with self._cond:
            self._engine = engine
            self._model = name
            self._info = info
            self._state = "ready"
            self._loading_model = None
            self._last_error = None
            self.loads += 1
        log.info("model %s ready in %.0f ms (%s, %s)", name, ms, info.get("device"), info.get("dtype"))
        return ms

    def _unload(self, why: str) -> None:
        if self._engine is None:
            return
        engine = self._engine
        with self._cond:
            self._engine = None
            self._info = {}
            self._state = "unloaded"
            self._unload_at = None
            self.unloads += 1
        try:
            engine.close()
        except Exception as exc:
            log.warning("closing the engine failed: %s", one_line(exc))
        log.info("unloaded model %s (%s)", self._model, why)

    def _set_unload_deadline(self, keep_alive: float | None) -> None:
        seconds = self.keep_alive if keep_alive is None else keep_alive
        with self._cond:
            self._unload_at = None if seconds < 0 else time.monotonic() + seconds

    def _run(self, job: Job) -> Outcome:
        started = time.monotonic()
        queue_ms = (started - job.submitted) * 1000
        if job.cancel.cancelled:
            with self._cond:
                self.cancelled += 1
            return Outcome(result=job.cancelled_result())
        try:
            load_ms = self._ensure_model(job.model)
        except Exception as exc:
            with self._cond:
                self.errors += 1
            return self._load_failed(job, exc)
        outcome = run_on_engine(self._engine, job, self.limits)
        if outcome.result is not None:
            outcome.result.timings["queue_ms"] = round(queue_ms, 3)
            outcome.result.timings["load_ms"] = round(load_ms, 3)
            latency_ms = (time.monotonic() - job.submitted) * 1000
            # Submit to answer inside the daemon: queue wait + model load + engine + our overhead.
            outcome.result.timings["daemon_ms"] = round(latency_ms, 3)
            with self._cond:
                if outcome.result.finish_reason == "cancelled":
                    self.cancelled += 1
                else:
                    self.served += 1
                    self._latency_total_ms += latency_ms
                    if int(outcome.result.timings.get("cached_tokens") or 0) > 0:
                        self.cache_hits += 1
        elif not outcome.ok:
            with self._cond:
                self.errors += 1
        keep_alive = None if self.limits.fixed_model else job.request.keep_alive
        self._set_unload_deadline(keep_alive)
        return outcome

    def _load_failed(self, job: Job, exc: Exception) -> Outcome:
        from diffgemma.runtime.engine.loading import ModelLoadError

        if self.limits.restrict_models:
            # Over TCP the reason could describe the operator's files: say only that it failed.
            log.error("could not load %s: %s", job.model, one_line(exc))
            return Outcome.failed(ErrorCode.MODEL_LOAD_FAILED, "the model could not be loaded; see the daemon's log")
        code = ErrorCode.MODEL_NOT_FOUND if isinstance(exc, ModelLoadError) else ErrorCode.MODEL_LOAD_FAILED
        return Outcome.failed(code, f"could not load model {job.model}: {one_line(exc)}")
