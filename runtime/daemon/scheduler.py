"""The daemon's scheduler: a bounded queue in front of ONE worker thread that owns the engine.

The engine is not thread-safe and its calls block for a long time, so it never runs on the event
loop: every load, generation and unload happens in the worker thread. The event loop only submits
jobs and is called back (thread-safely) with drafts and outcomes.

- Supersession: a job with a ``client`` key cancels that client's older queued or running job.
- Cancellation: ``cancel(id)`` sets the job's CancelToken, which the engine checks every denoising
  step; a queued job is dropped at once.
- keep_alive: after a job the model stays loaded for its keep_alive seconds (the daemon default
  when the request gave none); the worker unloads it when that passes with nothing to do.

Torch is imported only inside the worker, through the engine loader.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line, status_of
from diffgemma.runtime.api.protocol import ChatRequest, EditRequest, InfillRequest, Result, TokenizeRequest
from diffgemma.runtime.engine.types import Cancelled, CancelToken, Draft, SamplingSettings, SettingsError

log = logging.getLogger("diffgemma.daemon")

JobKind = Literal["infill", "edit", "chat", "tokenize", "detokenize"]
JobRequest = InfillRequest | EditRequest | ChatRequest | TokenizeRequest
EngineLoader = Callable[..., Any]  # (name, device, dtype, quantize, sampler) -> Engine

DEFAULT_MAX_REQUEST_SECONDS = 30.0  # interactive use: nobody waits longer for a completion
DEFAULT_MAX_STEPS = 256  # per canvas; the checkpoints settle in 12-16 of their default 48
DEFAULT_MAX_TOKENS = 1024  # longer answers are capped (4 canvases of the real model)

# One text for every model a request may not use: it must not tell a missing path from a file
# that exists, or a directory from a system file.
MODEL_REFUSED = "model not available: this daemon serves its default model and those allowed with --allow-model"
MODEL_FIXED = "this daemon serves a fixed model (--fixed-model): requests cannot load or unload models"


@dataclass
class Limits:
    """What one request may cost and which models requests may name (operator settings)."""

    max_request_seconds: float | None = DEFAULT_MAX_REQUEST_SECONDS  # None or <= 0: no limit
    max_steps: int = DEFAULT_MAX_STEPS
    max_tokens: int = DEFAULT_MAX_TOKENS
    allowed_models: tuple[str, ...] = ()
    # When False, any model may be named (a Unix socket only its owner reaches); TCP sets it True.
    restrict_models: bool = False
    fixed_model: bool = False


@dataclass
class Outcome:
    """What a job ended with: a result (or a plain value for token jobs), or a typed error."""

    result: Result | None = None
    value: Any = None
    code: ErrorCode | None = None
    message: str = ""

    @classmethod
    def failed(cls, code: ErrorCode, message: str) -> Outcome:
        return cls(code=code, message=one_line(message))

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def status(self) -> int:
        return 200 if self.code is None else status_of(self.code)

    @property
    def error(self) -> WireError | None:
        return None if self.code is None else WireError(self.code, self.message or "request failed")


@dataclass
class Job:
    kind: JobKind
    request: JobRequest
    model: str
    on_done: Callable[[Outcome], None]
    on_draft: Callable[[Draft], None] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    cancel: CancelToken = field(default_factory=CancelToken)
    submitted: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def client(self) -> str | None:
        return self.request.client

    def finish(self, outcome: Outcome) -> None:
        # A job finishes once: a cancel racing with the worker's own end must not answer twice.
        if self.finished:
            return
        self.finished = True
        try:
            self.on_done(outcome)
        except Exception:  # a callback failing must never take the worker down
            log.exception("job %s: completion callback failed", self.id)


def default_engine_loader(name: str, device: str | None, dtype: str | None, quantize: str | None = None,
                          sampler: str | None = None) -> Any:
    from diffgemma.runtime.engine.engine import Engine  # heavy (torch); only ever in the worker thread

    kwargs = {"sampler": sampler} if sampler else {}
    return Engine.load(name, device=device, dtype=dtype, quantize=quantize, **kwargs)


def _model_key(name: str) -> str:
    """Two spellings of one local checkpoint directory are the same model."""
    path = Path(name).expanduser()
    try:
        if path.exists():
            return str(path.resolve())
    except (OSError, ValueError):
        pass
    return name


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """Timings as JSON can carry them: a 0/0 rate becomes 0.0, never NaN."""
    return {k: (0.0 if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def _context_length(engine: Any) -> int | None:
    """The model's context window (llama.vscode sizes its prompts by /props' n_ctx)."""
    config = getattr(getattr(engine, "model", None), "config", None)
    text = getattr(config, "text_config", config)
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _real_model_if_cached() -> str | None:
    try:
        from diffgemma.runtime.engine.loading import REAL_MODEL_ID
        from diffgemma.runtime.engine.mini import real_model_cached

        return REAL_MODEL_ID if real_model_cached() else None
    except Exception:  # a broken cache only means: not cached
        return None


class Scheduler:
    def __init__(self, default_model: str | None = None, *, device: str | None = None,
                 dtype: str | None = None, keep_alive: float = 600.0, max_queue: int = 16,
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
            if self.default_model and _model_key(requested) == _model_key(self.default_model):
                return self.default_model
            raise WireError(ErrorCode.MODEL_LOCKED, MODEL_FIXED)
        if self.limits.restrict_models and _model_key(requested) not in self._allowed():
            raise WireError(ErrorCode.MODEL_NOT_FOUND, MODEL_REFUSED)
        return name

    def _allowed(self) -> set[str]:
        if self._allowed_keys is None:
            names = [self.default_model, *self.limits.allowed_models, _real_model_if_cached()]
            self._allowed_keys = {_model_key(n) for n in names if n}
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
        job.finish(Outcome(result=self._cancelled_result(job)))

    def _cancelled_result(self, job: Job) -> Result:
        queue_ms = (time.monotonic() - job.submitted) * 1000
        return Result(text="", finish_reason="cancelled", timings={"queue_ms": round(queue_ms, 3)},
                      id=job.id, model=job.model)

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
                                             f"internal error: {type(exc).__name__}: {_one_line(exc)}")
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
            log.error("could not load %s: %s", name, _one_line(exc))

    def _ensure_model(self, name: str) -> float:
        """Load ``name`` unless it is the loaded model; returns the milliseconds spent loading."""
        if self._engine is not None and _model_key(name) == _model_key(self._model or ""):
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
                self._last_error = _one_line(exc)
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
            log.warning("closing the engine failed: %s", _one_line(exc))
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
            return Outcome(result=self._cancelled_result(job))
        try:
            load_ms = self._ensure_model(job.model)
        except Exception as exc:
            with self._cond:
                self.errors += 1
            return self._load_failed(job, exc)
        outcome = self._generate(job)
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
            log.error("could not load %s: %s", job.model, _one_line(exc))
            return Outcome.failed(ErrorCode.MODEL_LOAD_FAILED, "the model could not be loaded; see the daemon's log")
        code = ErrorCode.MODEL_NOT_FOUND if isinstance(exc, ModelLoadError) else ErrorCode.MODEL_LOAD_FAILED
        return Outcome.failed(code, f"could not load model {job.model}: {_one_line(exc)}")

    def _deadline(self, request: Any) -> float | None:
        """When the best draft so far becomes the answer: the request's budget or the daemon's."""
        limits = [self.limits.max_request_seconds or 0.0]
        own = getattr(request, "time_limit_ms", None)
        if own:
            limits.append(own / 1000)
        useful = [x for x in limits if x > 0]
        return time.monotonic() + min(useful) if useful else None

    def _settings(self, req: Any) -> SamplingSettings:
        steps = req.steps
        ceiling = self.limits.max_steps
        default = getattr(getattr(self._engine, "defaults", None), "steps", None)
        if steps is None and isinstance(default, int) and default > ceiling:
            steps = ceiling
        if steps is not None:
            steps = min(steps, ceiling)
        return SamplingSettings(steps=steps, seed=req.seed, **(req.options or {})).validate()

    def _max_tokens(self, requested: int | None) -> int | None:
        return None if requested is None else min(requested, self.limits.max_tokens)

    def _generate(self, job: Job) -> Outcome:
        try:
            if job.kind in ("tokenize", "detokenize"):
                return self._tokens(job)
            res = self._engine_call(job)
        except Cancelled:
            return Outcome(result=self._cancelled_result(job))
        except SettingsError as exc:
            return Outcome.failed(ErrorCode.INVALID_REQUEST, _one_line(exc))
        except WireError as exc:
            return Outcome.failed(exc.code, exc.message)
        except Exception as exc:  # one request's failure must not take the daemon down
            log.exception("request %s failed", job.id)
            return Outcome.failed(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {_one_line(exc)}")
        timings = _finite(res.timings.to_dict() if hasattr(res.timings, "to_dict") else dict(res.timings))
        log.info("%s %s: %s, %d tokens, %d steps, %.1f ms/step, %d cached, %.0f ms", job.kind, job.id,
                 res.finish_reason, timings.get("generated_tokens", 0), timings.get("steps", 0),
                 timings.get("ms_per_step", 0.0), timings.get("cached_tokens", 0), timings.get("total_ms", 0.0))
        alternatives = list(getattr(res, "alternatives", None) or [])
        tokens, holes = _confidence_fields(job.request, res)
        return Outcome(result=Result(text=res.text, finish_reason=res.finish_reason, timings=timings, id=job.id,
                                     model=job.model, alternatives=alternatives if len(alternatives) > 1 else [],
                                     tokens=tokens, holes=holes))

    def _engine_call(self, job: Job) -> Any:
        req: Any = job.request
        engine = self._engine
        settings = self._settings(req)
        common = {"max_tokens": self._max_tokens(req.max_tokens), "settings": settings,
                  "on_draft": job.on_draft, "cancel": job.cancel, "deadline": self._deadline(req)}
        if isinstance(req, ChatRequest):
            return engine.chat(req.messages, **common)
        extra = [(e.path, e.text) for e in req.extra]
        if isinstance(req, EditRequest):
            if req.strength is not None:
                common["strength"] = req.strength
            return engine.edit(req.prefix, req.selection, req.suffix, instruction=req.instruction,
                         extra=extra, **common)
        if req.alternatives and req.alternatives > 1:
            common["alternatives"] = req.alternatives
        if req.holes:  # several holes: no drafts (each hole's draft is not one text)
            del common["on_draft"]
            return engine.infill_holes(req.pieces(), extra=extra, language=req.language,
                                       refine_syntax=req.refine is not False, **common)
        return engine.infill(req.prefix, req.suffix, extra=extra, language=req.language,
                             refine=req.refine is not False, **common)

    def _tokens(self, job: Job) -> Outcome:
        req = job.request
        assert isinstance(req, TokenizeRequest)
        engine = self._engine
        if job.kind == "detokenize":
            vocab = int(getattr(engine, "vocab_size", 0) or 0)
            bad = next((t for t in req.tokens or [] if vocab and not 0 <= t < vocab), None)
            if bad is not None:
                return Outcome.failed(ErrorCode.INVALID_REQUEST,
                                      f"token {bad} is outside the vocabulary (0..{vocab - 1})")
            return Outcome(value={"content": engine.decode(req.tokens or [])})
        ids = engine.encode_text(req.content or "")
        if req.with_pieces:
            return Outcome(value={"tokens": [{"id": i, "piece": engine.decode([i])} for i in ids]})
        return Outcome(value={"tokens": ids})


def _confidence_fields(req: Any, res: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Result.tokens (when the request asked for confidences) and Result.holes (several holes)."""
    asked = bool(getattr(req, "confidence", None))

    def pieces(items: Any) -> list[dict[str, Any]]:
        return [t.to_dict() for t in items or []] if asked else []

    tokens = pieces(getattr(res, "tokens", None))
    holes = []
    if getattr(req, "holes", None):
        for hole in getattr(res, "holes", None) or []:
            entry: dict[str, Any] = {"text": hole.text}
            if asked:
                entry["tokens"] = pieces(hole.tokens)
            holes.append(entry)
    return tokens, holes
