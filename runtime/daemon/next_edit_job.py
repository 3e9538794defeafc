"""A next-edit request on the engine: its fields as `runtime.engine.next_edit`'s arguments, the
answer as a `NextEditResult`, its drafts as stream lines. Runs in the scheduler's worker thread."""

from __future__ import annotations

from typing import Any

from diffgemma.runtime.api.next_edit import LineEdit, NextEditRequest, NextEditResult
from diffgemma.runtime.daemon.jobs import Job
from diffgemma.runtime.engine.next_edit import NextEditAnswer, NextEditDraft, next_edit


def run(engine: Any, req: NextEditRequest, common: dict[str, Any]) -> NextEditAnswer:
    """The engine's answer; ``common`` holds what every generating job passes (settings, budget,
    drafts, cancellation, max_tokens)."""
    return next_edit(engine, req.text, req.cursor.line, first_line=req.first_line,
                     edits=[(e.path, e.diff) for e in req.edits], path=req.path, language=req.language,
                     threshold=req.resolved_threshold, extra=[(e.path, e.text) for e in req.extra], **common)


def result(answer: NextEditAnswer, job: Job, timings: dict[str, Any]) -> NextEditResult:
    edits = [LineEdit(start_line=c.start_line, end_line=c.end_line, text=c.text, confidence=c.confidence)
             for c in answer.edits]
    return NextEditResult(text=answer.text, finish_reason=answer.finish_reason, timings=timings, id=job.id,
                          model=job.model, edits=edits, next_line=answer.next_line, threshold=answer.threshold,
                          reason=answer.reason,
                          window={"start_line": answer.window[0], "end_line": answer.window[1]})


def draft_fields(draft: Any) -> dict[str, Any]:
    """What a next-edit draft line adds: the window being rewritten and the edits it makes so far."""
    if not isinstance(draft, NextEditDraft):
        return {}
    return {"window": {"start_line": draft.window[0], "end_line": draft.window[1]},
            "edits": [c.to_json() for c in draft.edits]}
