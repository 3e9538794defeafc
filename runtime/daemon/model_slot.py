"""The one loaded engine: loading (and switching) it, unloading it when its keep_alive passes, and
the state /v1/status reports (unloaded, loading, ready, error; which engine, what it can do).

``ensure`` and ``unload`` run in the scheduler's worker threads only: they call the engine loader
(which imports torch for the local engine) and ``engine.close()``; one load runs at a time.
``status`` and the keep_alive bookkeeping may be called from any thread; they hold the condition
the workers wait on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

from diffgemma.runtime.api.config import DEFAULT_KEEP_ALIVE_S
from diffgemma.runtime.api.errors import one_line
from diffgemma.runtime.daemon.jobs import EngineLoader, model_key

log = logging.getLogger("diffgemma.daemon")

SlotState = Literal["unloaded", "loading", "ready", "error"]


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


class ModelSlot:
    def __init__(self, engine_loader: EngineLoader = default_engine_loader, *, device: str | None = None,
                 dtype: str | None = None, quantize: str | None = None, sampler: str | None = None,
                 keep_alive: float = DEFAULT_KEEP_ALIVE_S, cond: threading.Condition | None = None,
                 engine_kind: str = "local") -> None:
        self._load_engine = engine_loader
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.sampler = sampler
        self.keep_alive = keep_alive  # seconds after a job; < 0: never unload
        self.cond = cond or threading.Condition()
        self.engine_kind = engine_kind
        self._load_lock = threading.Lock()  # several workers (the vLLM engine) may ask at once

        self.engine: Any = None
        self.model: str | None = None  # the last model loaded (still named after an unload)
        self.state: SlotState = "unloaded"
        self._info: dict[str, Any] = {}
        self._loading_model: str | None = None
        self._load_started: float | None = None
        self._last_error: str | None = None
        self._unload_at: float | None = None
        self.loads = 0
        self.unloads = 0

    def mark_loading(self, name: str) -> None:
        """Report "loading" ``name`` before the worker picks the load up, so a client that connects
        meanwhile waits for it instead of seeing an unloaded daemon."""
        with self.cond:
            if self.engine is None:
                self._loading(name)

    def _loading(self, name: str) -> None:
        self.state = "loading"
        self._loading_model = name
        self._load_started = time.monotonic()

    def holds(self, name: str) -> bool:
        # The same spelling needs no look at the file system (the usual case: every request).
        return self.engine is not None and (name == self.model or model_key(name) == model_key(self.model or ""))

    def ensure(self, name: str) -> float:
        """Load ``name`` unless it is the loaded model; returns the milliseconds spent loading.

        A failed load leaves the slot in the "error" state with the reason and raises."""
        if self.holds(name):
            return 0.0
        with self._load_lock:
            return self._ensure(name)

    def _ensure(self, name: str) -> float:
        if self.holds(name):  # another worker loaded it while this one waited
            return 0.0
        if self.engine is not None:
            # A mistyped name must not cost the user the model that works: check that the new
            # one can be found before dropping the old one.
            from diffgemma.runtime.engine.loading import resolve_model_path

            resolve_model_path(name)
        self.unload(f"switching to {name}")
        with self.cond:
            self._loading(name)
        started = time.perf_counter()
        log.info("loading model %s", name)
        try:
            engine, info = self._load(name)
        except BaseException as exc:
            with self.cond:
                self.state = "error"
                self._loading_model = None
                self._last_error = one_line(exc)
            raise
        ms = (time.perf_counter() - started) * 1000
        with self.cond:
            self.engine = engine
            self.model = name
            self._info = info
            self.state = "ready"
            self._loading_model = None
            self._last_error = None
            self.loads += 1
        log.info("model %s ready in %.0f ms (%s, %s)", name, ms, info.get("device"), info.get("dtype"))
        return ms

    def _load(self, name: str) -> tuple[Any, dict[str, Any]]:
        if self.sampler:
            engine = self._load_engine(name, self.device, self.dtype, self.quantize, self.sampler)
        else:
            engine = self._load_engine(name, self.device, self.dtype, self.quantize)
        info = dict(engine.info())
        info.setdefault("context_length", _context_length(engine))
        return engine, info

    def unload(self, why: str) -> None:
        if self.engine is None:
            return
        engine = self.engine
        with self.cond:
            self.engine = None
            self._info = {}
            self.state = "unloaded"
            self._unload_at = None
            self.unloads += 1
        try:
            engine.close()
        except Exception as exc:
            log.warning("closing the engine failed: %s", one_line(exc))
        log.info("unloaded model %s (%s)", self.model, why)

    def keep(self, seconds: float | None = None) -> None:
        """Keep the model loaded for ``seconds`` from now (default: the daemon's keep_alive; < 0: for ever)."""
        seconds = self.keep_alive if seconds is None else seconds
        with self.cond:
            self._unload_at = None if seconds < 0 else time.monotonic() + seconds

    def idle_wait(self) -> float | None:
        """Seconds until the idle model is due to unload (<= 0: now); None when nothing is due."""
        with self.cond:
            if self.engine is None or self._unload_at is None:
                return None
            return self._unload_at - time.monotonic()

    def status(self) -> dict[str, Any]:
        with self.cond:
            loaded = self.engine is not None
            now = time.monotonic()
            progress = None
            if self.state == "loading" and self._load_started is not None:
                progress = f"{now - self._load_started:.1f} s elapsed"
            unload_in = round(max(0.0, self._unload_at - now), 1) if loaded and self._unload_at is not None else None
            engine = self.engine
            return {
                "state": self.state,
                "model": self.model,
                "engine": getattr(engine, "kind", self.engine_kind),
                "capabilities": engine.capabilities().to_dict() if loaded else None,
                "servers": engine.health().get("servers") if loaded else None,
                "loading_model": self._loading_model,
                "load_progress": progress,
                "last_error": self._last_error,
                "device": self._info.get("device", self.device),
                "dtype": self._info.get("dtype", self.dtype),
                "memory_bytes": int(self._info.get("memory_bytes") or 0) if loaded else 0,
                "parameters": self._info.get("parameters") if loaded else None,
                "canvas_length": self._info.get("canvas_length") if loaded else None,
                "context_length": self._info.get("context_length") if loaded else None,
                "vocab_size": self._info.get("vocab_size") if loaded else None,
                "sampler": self._info.get("sampler", self.sampler),
                "keep_alive": self.keep_alive,
                "unload_in_s": unload_in,
                "loads": self.loads,
                "unloads": self.unloads,
            }
