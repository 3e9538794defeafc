"""The syntax gate on a request's answer: the daemon passes every answer through it (torch-free).

Whatever made the answer (the local engine after its own repair, a vLLM server, a next-edit
proposal built on a rewrite), `gate_result` holds it against the window the request sent
(`context.syntax_gate`): a fill, several holes or a rewrite that adds a syntax error is replaced by
an alternative that adds none, cut to its longest head that adds none, or left empty (a rewrite:
the selection unchanged), with ``finish_reason`` "syntax" (unless a limit cut it, which wins) and
``Result.reason`` saying why. Alternatives that add errors are dropped. A request with
``allow_broken`` skips it. The grammar is the request's language, else its path's, else what the
window reads like (`request_language`), the same one the engine repairs with. The daemon calls it
on every result at its boundary (`runtime/daemon/execute.py`); the quality evaluation calls it on
the engine's answers, so its figures are what users get.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diffgemma.context.languages import detect_language, has_grammar
from diffgemma.context.syntax_gate import Gated, added_errors, gate_fills
from diffgemma.runtime.api.request_types import EditRequest, InfillRequest
from diffgemma.runtime.api.results import FinishReason, HoleAnswer, Result, TokenConfidence, alternative_sets

# A continuation (an infill with no text at all after it: a completion prompt, code being written at
# the end of a buffer) is not judged: nothing follows it that it could break, its end is where the
# model or max_tokens stopped, and streams send it canvas by canvas as it is committed, so cutting
# it afterwards would leave a client with other text than the answer.

# Finish reasons that say a limit cut the answer: they stay, the gate's reason goes with them.
LIMIT_REASONS = ("time", "length", "cancelled")


def request_language(req: Any) -> str | None:
    """The grammar a request's answer is judged (and repaired) with: its language, else its path's,
    else what its window reads like; None when no grammar loads for it."""
    text = "".join(req.pieces()) if isinstance(req, InfillRequest) else (
        req.prefix + req.selection + req.suffix if isinstance(req, EditRequest) else "")
    language = detect_language(req.path, req.language, content=text, guess=True)
    return language if language is not None and has_grammar(language) else None


def gate_result(req: InfillRequest | EditRequest, result: Result, language: str | None) -> Result:
    """``result`` as far as it adds no syntax error to ``req``'s window (see the module doc)."""
    if language is None or req.allow_broken or result.finish_reason == "cancelled":
        return result
    if isinstance(req, EditRequest):
        gated = gate_fills([req.prefix, req.suffix], [result.text], language, baseline=[req.selection],
                           heads=False)
        return _single(result, gated, [req.prefix, req.suffix], language, [req.selection])
    if req.holes:
        return _holes(req, result, language)
    if not req.suffix:  # a continuation: nothing after it to break (see above)
        return result
    fixed = [req.prefix, req.suffix]
    others = [[a] for a in result.alternatives[1:]]
    return _single(result, gate_fills(fixed, [result.text], language, alternatives=others), fixed, language, None)


def _finish(result: Result, gated: Gated) -> FinishReason:
    if not gated.changed or result.finish_reason in LIMIT_REASONS:
        return result.finish_reason
    return "syntax"


def _clean(texts: list[str], answer: str, fixed: list[str], language: str, baseline: list[str] | None) -> list[str]:
    """Alternatives that add no error, the answer first, each once."""
    out = [answer]
    for text in texts:
        if text not in out and not added_errors(fixed, [text], language, baseline):
            out.append(text)
    return out


def _single(result: Result, gated: Gated, fixed: list[str], language: str, baseline: list[str] | None) -> Result:
    text = gated.fills[0]
    alternatives = _clean(result.alternatives, text, fixed, language, baseline) if result.alternatives else []
    return dataclasses.replace(
        result, text=text, finish_reason=_finish(result, gated), reason=gated.reason or result.reason,
        tokens=_tokens(result.tokens, result.text, text),
        alternatives=alternatives if len(alternatives) > 1 else [])


def _holes(req: InfillRequest, result: Result, language: str) -> Result:
    fixed = req.pieces()
    texts = [str(h.get("text", "")) for h in result.holes]
    if len(texts) != len(fixed) - 1:
        return result  # malformed: the front end refuses it
    sets = [list(s) for s in alternative_sets(result)]
    gated = gate_fills(fixed, texts, language, alternatives=sets[1:])
    clean = [list(gated.fills)] + [s for s in sets if s != list(gated.fills)
                                   and not added_errors(fixed, s, language)]
    holes: list[HoleAnswer] = []
    for i, hole in enumerate(result.holes):
        entry = hole.copy()
        entry["text"] = gated.fills[i]
        if "tokens" in entry:
            entry["tokens"] = _tokens(list(entry["tokens"] or []), texts[i], gated.fills[i])
        if "alternatives" in entry:
            entry["alternatives"] = [s[i] for s in clean]
        holes.append(entry)
    return dataclasses.replace(result, text=gated.fills[0], holes=holes, finish_reason=_finish(result, gated),
                               reason=gated.reason or result.reason,
                               tokens=_tokens(result.tokens, result.text, gated.fills[0]))


def _tokens(tokens: list[TokenConfidence], old: str, new: str) -> list[TokenConfidence]:
    """The per-token pieces of ``old`` kept for ``new``: all when it is unchanged, the ones of a head
    cut to it, none for another text (an alternative, or what was there before)."""
    if new == old:
        return tokens
    if not new or not old.startswith(new):
        return []
    out: list[TokenConfidence] = []
    used = 0
    for piece in tokens:
        text = str(piece.get("text", ""))
        if used >= len(new):
            break
        part = text[: len(new) - used]
        out.append({**piece, "text": part})
        used += len(part)
    return out
