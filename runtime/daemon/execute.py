"""One job on the loaded engine: its request turned into an engine call, the answer into an Outcome.

Runs in a scheduler worker thread (the local engine has one; the vLLM engine several). The engine is
reached through `interface.InferenceEngine` only and answers with a typed `EngineResult`. The
operator's limits cap what the request asked for; a request's failure becomes a typed Outcome,
never an exception.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from diffgemma.runtime.api.answer_gate import gate_result, request_language
from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line
from diffgemma.runtime.api.next_edit import NextEditRequest
from diffgemma.runtime.api.request_types import ChatRequest, EditRequest, InfillRequest, TokenizeRequest
from diffgemma.runtime.api.results import HoleAnswer, Result, TokenConfidence
from diffgemma.runtime.daemon import next_edit_job
from diffgemma.runtime.daemon.jobs import Job, Limits, Outcome
from diffgemma.runtime.engine.interface import InferenceEngine
from diffgemma.runtime.engine.next_edit import NextEditAnswer
from diffgemma.runtime.engine.types import Cancelled, EngineResult, SamplingSettings, SettingsError, TokenPiece

log = logging.getLogger("diffgemma.daemon")


def run_on_engine(engine: InferenceEngine, job: Job, limits: Limits) -> Outcome:
    try:
        if job.kind in ("tokenize", "detokenize"):
            return _tokens(engine, job)
        language = request_language(job.request) if isinstance(job.request, InfillRequest | EditRequest) else None
        res = _engine_call(engine, job, limits, language)
    except Cancelled:
        return Outcome(result=job.cancelled_result())
    except SettingsError as exc:
        return Outcome.failed(ErrorCode.INVALID_REQUEST, one_line(exc))
    except WireError as exc:
        return Outcome.failed(exc.code, exc.message)
    except Exception as exc:  # one request's failure must not take the daemon down
        log.exception("request %s failed", job.id)
        return Outcome.failed(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}: {one_line(exc)}")
    timings = _finite(res.timings.to_dict())
    log.info("%s %s: %s, %d tokens, %d steps, %.1f ms/step, %d cached, %.0f ms", job.kind, job.id,
             res.finish_reason, timings.get("generated_tokens", 0), timings.get("steps", 0),
             timings.get("ms_per_step", 0.0), timings.get("cached_tokens", 0), timings.get("total_ms", 0.0))
    if isinstance(res, NextEditAnswer):
        return Outcome(result=next_edit_job.result(res, job, timings))
    alternatives = list(res.alternatives)
    tokens, holes = _token_fields(job.request, res)
    result = Result(text=res.text, finish_reason=res.finish_reason, timings=timings, id=job.id, model=job.model,
                    alternatives=alternatives if len(alternatives) > 1 else [], tokens=tokens, holes=holes)
    if isinstance(job.request, InfillRequest | EditRequest):  # no answer adds syntax errors
        try:
            result = gate_result(job.request, result, language)
        except Exception as exc:  # an unchecked answer is never sent
            log.exception("request %s: the syntax gate failed", job.id)
            return Outcome.failed(ErrorCode.INTERNAL, f"internal error: syntax gate: {type(exc).__name__}")
    return Outcome(result=result)


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """Timings as JSON can carry them: a 0/0 rate becomes 0.0, never NaN."""
    return {k: (0.0 if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def _deadline(request: Any, limits: Limits) -> float | None:
    """When the best draft so far becomes the answer: the request's budget or the daemon's."""
    budgets = [limits.max_request_seconds or 0.0]
    own = getattr(request, "time_limit_ms", None)
    if own:
        budgets.append(own / 1000)
    useful = [x for x in budgets if x > 0]
    return time.monotonic() + min(useful) if useful else None


def _settings(engine: InferenceEngine, req: Any, limits: Limits) -> SamplingSettings:
    steps = req.steps
    ceiling = limits.max_steps
    default = engine.default_steps
    if steps is None and default > ceiling:
        steps = ceiling
    if steps is not None:
        steps = min(steps, ceiling)
    return SamplingSettings(steps=steps, seed=req.seed, **(req.options or {})).validate()


def _max_tokens(requested: int | None, limits: Limits) -> int | None:
    return None if requested is None else min(requested, limits.max_tokens)


def _engine_call(engine: InferenceEngine, job: Job, limits: Limits,
                 language: str | None = None) -> EngineResult | NextEditAnswer:
    """The engine's answer to ``job``; ``language`` is the grammar it repairs with (`request_language`)."""
    req: Any = job.request
    settings = _settings(engine, req, limits)
    max_tokens, deadline = _max_tokens(req.max_tokens, limits), _deadline(req, limits)
    # One developer's (or else one client's, or one file's) requests stay on one vLLM server, so its
    # prefix cache stays warm for them.
    client = job.owner or req.client or getattr(req, "path", None)
    if isinstance(req, ChatRequest):
        return engine.chat(req.messages, max_tokens=max_tokens, settings=settings, on_draft=job.on_draft,
                           cancel=job.cancel, deadline=deadline, client=client)
    if isinstance(req, NextEditRequest):  # always reads the changed tokens' confidences
        return next_edit_job.run(engine, req, {"max_tokens": max_tokens, "settings": settings,
                                               "on_draft": job.on_draft, "cancel": job.cancel,
                                               "deadline": deadline, "client": client})
    # per-token confidences cost two decodes a token: the engine builds them only when asked
    confidence = bool(req.confidence)
    extra = [(e.path, e.text) for e in req.extra]
    refine = req.refine is not False
    if isinstance(req, EditRequest):
        strength = {} if req.strength is None else {"strength": req.strength}
        return engine.edit(req.prefix, req.selection, req.suffix, instruction=req.instruction, extra=extra,
                           max_tokens=max_tokens, settings=settings, on_draft=job.on_draft, cancel=job.cancel,
                           deadline=deadline, language=language, refine=refine, confidence=confidence,
                           client=client, **strength)
    alternatives = req.alternatives if req.alternatives and req.alternatives > 1 else 1
    if req.holes:  # several holes: drafts and alternatives carry every hole (types.HolesDraft, HoleFill)
        return engine.infill_holes(req.pieces(), extra=extra, max_tokens=max_tokens, settings=settings,
                                   on_draft=job.on_draft, cancel=job.cancel, deadline=deadline,
                                   language=language, refine_syntax=refine, alternatives=alternatives,
                                   confidence=confidence, client=client)
    return engine.infill(req.prefix, req.suffix, extra=extra, max_tokens=max_tokens, settings=settings,
                         on_draft=job.on_draft, cancel=job.cancel, deadline=deadline, alternatives=alternatives,
                         language=language, refine=refine, confidence=confidence, client=client)


def _tokens(engine: InferenceEngine, job: Job) -> Outcome:
    req = job.request
    assert isinstance(req, TokenizeRequest)
    if job.kind == "detokenize":
        vocab = engine.vocab_size
        bad = next((t for t in req.tokens or [] if vocab and not 0 <= t < vocab), None)
        if bad is not None:
            return Outcome.failed(ErrorCode.INVALID_REQUEST,
                                  f"token {bad} is outside the vocabulary (0..{vocab - 1})")
        return Outcome(value={"content": engine.decode(req.tokens or [])})
    ids = engine.encode_text(req.content or "")
    if req.with_pieces:
        return Outcome(value={"tokens": [{"id": i, "piece": engine.decode([i])} for i in ids]})
    return Outcome(value={"tokens": ids})


def _token_fields(req: Any, res: EngineResult) -> tuple[list[TokenConfidence], list[HoleAnswer]]:
    """Result.tokens (the engine built them when the request asked for confidences) and
    Result.holes (several holes: {"text", "tokens"?, "alternatives"?} each)."""
    asked = bool(getattr(req, "confidence", None))  # chat requests have no such field

    def pieces(items: list[TokenPiece]) -> list[TokenConfidence]:
        return [t.to_dict() for t in items]

    tokens = pieces(res.tokens)
    holes = []
    if getattr(req, "holes", None):
        for hole in res.holes:
            entry: HoleAnswer = {"text": hole.text}
            if asked:
                entry["tokens"] = pieces(hole.tokens)
            if hole.alternatives:  # aligned across the holes: index k of each is set k
                entry["alternatives"] = list(hole.alternatives)
            holes.append(entry)
    return tokens, holes
