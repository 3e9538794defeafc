"""One canvas as vLLM's OpenAI ``/v1/completions`` request, and its answer read back.

A canvas is a read-only request (``diffusion_read_only``): vLLM denoises one canvas after the
prompt and emits it whole, without writing it to its KV cache, so ``max_tokens`` is the canvas
length (the OpenAI default of 16 would cut it). What we hold is seeded and pinned
(``diffusion_seed_canvas``, ``diffusion_pinned``); vLLM's pin resets the canvas INPUT at those
positions every step but emits the model's own argmax there, so the answer's pinned positions are
compared with the seed (`CanvasReply.joins`). The seed tokens at the scored positions are asked
for by id (``logprob_token_ids``, at most 128), their log-probabilities score the canvas; the
prompt is sent as token ids and answers come back as ids (``return_token_ids``,
``return_tokens_as_token_ids``), so no text is ever tokenized twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line

MAX_LOGPROB_TOKEN_IDS = 128  # vLLM's own limit (sampling_params.MAX_LOGPROB_TOKEN_IDS)
FLOOR_LOGPROB = -9999.0  # vLLM clamps log-probabilities here


@dataclass(frozen=True)
class CanvasSpec:
    """One canvas to denoise: its starting tokens (``seed``: a canvas length of ids, or None for
    vLLM's own noise), the positions held (``pinned``) and those whose held tokens score it."""

    seed: list[int] | None = None
    pinned: list[int] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    steps: int | None = None  # diffusion_max_steps (None: the server's)

    def with_steps(self, steps: int | None) -> CanvasSpec:
        return replace(self, steps=steps)

    def scored_ids(self) -> list[int]:
        if self.seed is None:
            return []
        return sorted({self.seed[p] for p in self.scored})


def completion_body(model: str, prompt: list[int], spec: CanvasSpec, canvas_length: int) -> dict[str, Any]:
    """The JSON body of one canvas's request."""
    xargs: dict[str, Any] = {"diffusion_read_only": 1, "diffusion_canvas_length": canvas_length}
    if spec.seed is not None:
        xargs["diffusion_seed_canvas"] = list(spec.seed)
        if spec.pinned:
            xargs["diffusion_pinned"] = list(spec.pinned)
    if spec.steps is not None:
        xargs["diffusion_max_steps"] = int(spec.steps)
    body: dict[str, Any] = {
        "model": model, "prompt": list(prompt), "max_tokens": canvas_length, "temperature": 1.0,
        "logprobs": 0, "return_tokens_as_token_ids": True, "return_token_ids": True, "stream": False,
        "vllm_xargs": xargs,
    }
    ids = spec.scored_ids()
    if ids:
        if len(ids) > MAX_LOGPROB_TOKEN_IDS:
            raise ValueError(f"{len(ids)} scored token ids; vLLM takes at most {MAX_LOGPROB_TOKEN_IDS}")
        body["logprob_token_ids"] = ids
    return body


@dataclass
class CanvasReply:
    """A denoised canvas: each position's token (the model's argmax), how sure it was, and the
    log-probability of the seed token at each scored position."""

    tokens: list[int]
    confidence: list[float]
    held_logp: dict[int, float]
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def score(self, spec: CanvasSpec) -> float:
        """The mean log-probability of the held tokens that score the canvas (0 without any)."""
        if not spec.scored:
            return 0.0
        return sum(self.held_logp.get(p, FLOOR_LOGPROB) for p in spec.scored) / len(spec.scored)

    def mismatches(self, spec: CanvasSpec) -> int:
        """Pinned positions where the model's own token differs from the held one."""
        if spec.seed is None:
            return 0
        return sum(1 for p in spec.pinned if p >= len(self.tokens) or self.tokens[p] != spec.seed[p])

    def joins(self, spec: CanvasSpec) -> bool:
        """The model's tokens at every pinned position are the held ones: the fill ends exactly at
        the held text, as the local engine's one-hot clamp makes it."""
        return self.mismatches(spec) == 0


def _placeholder_id(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token.removeprefix("token_id:"))
        except ValueError:
            return None
    return None


def parse_reply(data: Any, spec: CanvasSpec) -> CanvasReply:
    """A ``CompletionResponse`` (as JSON) read back; ProtocolMismatch when it is not one."""
    try:
        choice = data["choices"][0]
        logprobs = choice.get("logprobs") or {}
        ids = choice.get("token_ids")
        if ids is None:
            ids = [_placeholder_id(t) for t in logprobs.get("tokens") or []]
        tokens = [int(t) for t in ids]
        lps = logprobs.get("token_logprobs") or []
        confidence = [math.exp(lp) if isinstance(lp, int | float) else 0.0 for lp in lps]
        confidence += [0.0] * (len(tokens) - len(confidence))
        top = logprobs.get("top_logprobs") or []
        held: dict[int, float] = {}
        for p in spec.scored:
            entry = top[p] if p < len(top) and isinstance(top[p], dict) else {}
            assert spec.seed is not None
            held[p] = float(entry.get(f"token_id:{spec.seed[p]}", FLOOR_LOGPROB))
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return CanvasReply(tokens=tokens, confidence=confidence[: len(tokens)], held_logp=held,
                           finish_reason=choice.get("finish_reason"),
                           prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           cached_tokens=int(details.get("cached_tokens") or 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        raise ProtocolMismatch(f"vLLM's answer is not a completion: {type(exc).__name__}: {one_line(exc)}") from None


class ProtocolMismatch(WireError):
    """The server answered something that is not vLLM's completion shape."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.ENGINE_UNAVAILABLE, message)


def error_message(data: Any, fallback: str) -> str:
    """The message of vLLM's ``{"error": {"message", ...}}`` body."""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return one_line(str(err["message"]))
    return fallback
