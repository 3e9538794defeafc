"""A stand-in engine for the scheduler's unit tests, loaded through the scheduler's ``engine_loader``.

The scheduling logic (queue, model slot, policy, worker) does not depend on what the engine
computes, only on when it answers and whether it notices its CancelToken: the stand-in answers
``infill``/``edit`` once its gate (a threading.Event) is open, and checks the token while it waits
as the real engine does once per denoising step. The model itself is exercised end to end in the
daemon's tests (tests/test_daemon_*.py) with the tiny DiffusionGemma.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from diffgemma.runtime.api.request_types import EditRequest, InfillRequest
from diffgemma.runtime.daemon.jobs import Job, Outcome
from diffgemma.runtime.engine.interface import Capabilities, EngineKind
from diffgemma.runtime.engine.types import CancelToken, EngineResult, Timings

WAIT_S = 30.0  # how long a test waits for the worker before it fails (never reached when it works)


class StandInEngine:
    """Answers ``<model>:<prefix>`` once ``gate`` is open; a prefix starting with ``cached`` reports
    cached prefix tokens, one starting with ``boom`` raises inside the engine. The infill and edit
    calls of `interface.InferenceEngine` are all the scheduler's tests send."""

    kind: EngineKind = "local"
    canvas_length = 16
    vocab_size = 64
    default_steps = 4

    def __init__(self, name: str, gate: threading.Event) -> None:
        self.name = name
        self.gate = gate
        self.calls: list[str] = []  # the prefixes (or selections) it was asked for, in order
        self.closed = False
        # What the daemon reads the context window from (llama.vscode's n_ctx).
        self.model = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=512)))

    def info(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float32", "memory_bytes": 4096, "parameters": 1000, "canvas_length": 16}

    def capabilities(self) -> Capabilities:
        return Capabilities()

    def health(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.closed = True

    def _answer(self, text: str, cancel: CancelToken) -> EngineResult:
        self.calls.append(text)
        while not self.gate.wait(0.005):
            cancel.raise_if_cancelled()  # what the real engine does once per denoising step
        cancel.raise_if_cancelled()
        if text.startswith("boom"):
            raise RuntimeError("the stand-in engine broke")
        cached = 3 if text.startswith("cached") else 0
        return EngineResult(text=f"{self.name}:{text}", finish_reason="stop",
                            timings=Timings(steps=1, generated_tokens=1, cached_tokens=cached))

    def infill(self, prefix: str, suffix: str, *, cancel: CancelToken, **_: Any) -> EngineResult:
        return self._answer(prefix, cancel)

    def edit(self, prefix: str, selection: str, suffix: str, *, cancel: CancelToken, **_: Any) -> EngineResult:
        return self._answer(selection, cancel)


class StandInLoader:
    """The ``engine_loader`` seam: builds a StandInEngine per load, or raises what ``fail`` names."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()  # answer at once unless a test closes the gate
        self.engines: list[StandInEngine] = []
        self.fail: dict[str, BaseException] = {}  # model name -> what loading it raises
        self.args: list[tuple[Any, ...]] = []

    def __call__(self, name: str, *args: Any) -> StandInEngine:
        self.args.append((name, *args))
        if name in self.fail:
            raise self.fail[name]
        engine = StandInEngine(name, self.gate)
        self.engines.append(engine)
        return engine

    @property
    def last(self) -> StandInEngine:
        return self.engines[-1]


class Answer:
    """A job's on_done: keeps the outcome and lets a test wait for it."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None
        self.calls = 0
        self._done = threading.Event()

    def __call__(self, outcome: Outcome) -> None:
        self.calls += 1
        self.outcome = outcome
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def get(self) -> Outcome:
        assert self._done.wait(WAIT_S), "the job was never answered"
        assert self.outcome is not None
        return self.outcome

    def text(self) -> str:
        outcome = self.get()
        assert outcome.ok and outcome.result is not None, (outcome.code, outcome.message)
        return outcome.result.text

    def finish_reason(self) -> str:
        result = self.get().result
        assert result is not None
        return result.finish_reason


def job(model: str, prefix: str = "x", *, client: str | None = None, job_id: str | None = None,
        keep_alive: float | None = None, edit: bool = False) -> tuple[Job, Answer]:
    answer = Answer()
    request: InfillRequest | EditRequest
    if edit:
        request = EditRequest(prefix="", selection=prefix, suffix="", client=client, keep_alive=keep_alive)
    else:
        request = InfillRequest(prefix=prefix, suffix="", client=client, keep_alive=keep_alive)
    made = Job(kind="edit" if edit else "infill", request=request, model=model, on_done=answer)
    if job_id:
        made.id = job_id
    return made, answer


def checkpoint(directory: Path) -> str:
    """A directory the loader's path check accepts as a checkpoint (its config.json is all it reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    return str(directory)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)
