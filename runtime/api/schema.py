"""JSON schemas of the requests and the result (for /openapi.json), from the dataclasses (torch-free)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from diffgemma.runtime.api.checks import SAMPLING_OPTIONS
from diffgemma.runtime.api.config import (
    MAX_ALTERNATIVES,
    MAX_HOLES,
    MAX_STEPS,
    MAX_TIME_LIMIT_MS,
    MAX_TOKENS_LIMIT,
)
from diffgemma.runtime.api.request_types import CancelRequest
from diffgemma.runtime.api.results import FINISH_REASONS, HOLE_STATES

_SCHEMA_HINTS: dict[str, dict[str, Any]] = {
    "prefix": {"type": "string", "description": "Text before the hole."},
    "suffix": {"type": "string", "description": "Text after the hole."},
    "selection": {"type": "string", "description": "The text to rewrite."},
    "instruction": {"type": "string", "description": "What to change (optional)."},
    "strength": {"type": "number", "minimum": 0, "maximum": 1,
                 "description": "0 keeps the selection, 1 rewrites freely."},
    "language": {"type": "string", "description": "Language id (python, rust, ...)."},
    "path": {"type": "string", "description": "The file's path, shown to the model."},
    "extra": {"type": "array", "description": "Snippets of other files (the most recent ones within the "
                                              "context budget are used).",
              "items": {"type": "object", "additionalProperties": False, "required": ["path", "text"],
                        "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
    "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS,
              "description": "Maximum denoising steps per canvas."},
    "seed": {"type": "integer", "minimum": 0},
    "stream": {"type": "boolean", "description": "NDJSON: one draft line per step, then the result."},
    "client": {"type": "string", "description": "Supersession key: a newer request cancels older ones."},
    "model": {"type": "string", "description": "Model name or path; default: the daemon's model."},
    "id": {"type": "string", "description": "Request id (for /v1/cancel); assigned when absent."},
    "time_limit_ms": {"type": "integer", "minimum": 1, "maximum": MAX_TIME_LIMIT_MS,
                      "description": "Time budget: at its end the best draft so far is the answer "
                                     "(finish_reason \"time\")."},
    "alternatives": {"type": "integer", "minimum": 1, "maximum": MAX_ALTERNATIVES,
                     "description": "Distinct candidates denoised as one batch (Result.alternatives); with "
                                    "holes, distinct sets of fills (Result.holes[i].alternatives)."},
    "holes": {"type": "array", "minItems": 1, "maxItems": MAX_HOLES,
              "description": "Several holes: the text before each (since the previous hole; prefix comes "
                             "before the first one's); suffix is the text after the last (Result.holes).",
              "items": {"type": "object", "additionalProperties": False,
                        "properties": {"prefix": {"type": "string"}}}},
    "refine": {"type": "boolean", "description": "Syntax-guided repair (default: on where a grammar exists)."},
    "confidence": {"type": "boolean", "description": "Per-token confidences in the result (Result.tokens)."},
    "keep_alive": {"type": "number", "description": "Seconds to keep the model loaded; 0 unloads now."},
    "options": {"type": "object", "additionalProperties": False, "description": "Sampling overrides.",
                "properties": {k: {"type": "integer" if t is int else "number"}
                               for k, t in SAMPLING_OPTIONS.items()}},
}


def json_schema(cls: type) -> dict[str, Any]:
    """A JSON schema for a request dataclass: its fields, required ones, no additional properties."""
    props = {f.name: _SCHEMA_HINTS.get(f.name, {}) for f in fields(cls)}
    required = list(getattr(cls, "_required", ()))
    if cls is CancelRequest:
        props, required = {"id": {"type": "string"}}, ["id"]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


_TOKEN: dict[str, Any] = {"type": "object", "required": ["text", "confidence"],
                          "properties": {"text": {"type": "string"},
                                         "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text", "finish_reason", "timings", "id", "model"],
    "properties": {
        "text": {"type": "string"},
        "finish_reason": {"type": "string", "enum": list(FINISH_REASONS)},
        "timings": {"type": "object", "description": "encode_ms, steps, ms_per_step, tokens_per_forward, "
                                                     "cached_tokens, encoded_tokens, generated_tokens, "
                                                     "canvases, total_ms, queue_ms"},
        "id": {"type": "string"},
        "model": {"type": "string"},
        "alternatives": {"type": "array", "items": {"type": "string"}},
        "tokens": {"type": "array", "items": _TOKEN},
        "holes": {"type": "array", "description": "Several holes, in order; alternatives[k] of every hole is "
                                                  "set k (set 0 is the answer).",
                  "items": {"type": "object", "required": ["text"], "properties": {
                      "text": {"type": "string"}, "tokens": {"type": "array", "items": _TOKEN},
                      "alternatives": {"type": "array", "items": {"type": "string"}}}}},
    },
}

DRAFT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An NDJSON stream line: the canvas after one denoising step.",
    "required": ["type", "step", "text", "id"],
    "properties": {
        "type": {"const": "draft"},
        "step": {"type": "integer"},
        "text": {"type": "string", "description": "The fill so far (with holes: the first hole's)."},
        "id": {"type": "string"},
        "canvas": {"type": "integer"},
        "final": {"type": "boolean", "description": "This canvas is committed: later text only extends it."},
        "phase": {"type": "string", "enum": ["repairing"],
                  "description": "Set while the denoising steps are over and syntax repair round `round` runs on "
                                 "`text` (the answer so far, which does not parse)."},
        "round": {"type": "integer", "description": "With phase: the repair round (1-based)."},
        "tokens": {"type": "array", "items": _TOKEN, "description": "With confidence: text token by token."},
        "holes": {"type": "array", "description": "Several holes: every hole in order, earlier groups final, "
                                                  "the one being denoised refining, later ones waiting.",
                  "items": {"type": "object", "required": ["text", "state"], "properties": {
                      "text": {"type": "string"}, "state": {"type": "string", "enum": list(HOLE_STATES)},
                      "tokens": {"type": "array", "items": _TOKEN}}}},
    },
}
