"""What the scheduler queues: a job (one request on its way to the engine), its outcome, and the
operator's limits on what a request may cost (torch-free)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diffgemma.runtime.api.config import DEFAULT_MAX_REQUEST_SECONDS, DEFAULT_MAX_STEPS, DEFAULT_MAX_TOKENS
from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line, status_of
from diffgemma.runtime.api.next_edit import NextEditRequest, NextEditResult
from diffgemma.runtime.api.request_types import ChatRequest, EditRequest, InfillRequest, TokenizeRequest
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.engine.types import CancelToken, Draft

log = logging.getLogger("diffgemma.daemon")

JobKind = Literal["infill", "edit", "chat", "tokenize", "detokenize", "next-edit"]
JobRequest = InfillRequest | EditRequest | ChatRequest | TokenizeRequest | NextEditRequest
EngineLoader = Callable[..., Any]  # (name, device, dtype, quantize, sampler) -> Engine


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
    owner: str | None = None  # the developer (tokens file) it runs for; None: the daemon's owner
    superseded: bool = False  # cancelled by a newer job with the same key

    @property
    def client(self) -> tuple[str | None, str] | None:
        """The supersession key: the request's client key, scoped to the developer who sent it, so
        one developer's requests never supersede another's."""
        return None if self.request.client is None else (self.owner, self.request.client)

    def finish(self, outcome: Outcome) -> None:
        # A job finishes once: a cancel racing with the worker's own end must not answer twice.
        if self.finished:
            return
        self.finished = True
        try:
            self.on_done(outcome)
        except Exception:  # a callback failing must never take the worker down
            log.exception("job %s: completion callback failed", self.id)

    def cancelled_result(self) -> Result:
        """The answer of a job cancelled before or while it ran."""
        queue_ms = (time.monotonic() - self.submitted) * 1000
        kind = NextEditResult if self.kind == "next-edit" else Result
        return kind(text="", finish_reason="cancelled", timings={"queue_ms": round(queue_ms, 3)},
                    id=self.id, model=self.model)


def model_key(name: str) -> str:
    """Two spellings of one local checkpoint directory are the same model."""
    path = Path(name).expanduser()
    try:
        if path.exists():
            return str(path.resolve())
    except (OSError, ValueError):
        pass
    return name
