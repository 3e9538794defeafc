"""The daemon's API described for /openapi.json, from the protocol dataclasses (request schemas come
from their checkers)."""

from __future__ import annotations

from typing import Any

from diffgemma.runtime.api import next_edit
from diffgemma.runtime.api.config import MAX_ALTERNATIVES
from diffgemma.runtime.api.errors import ErrorCode
from diffgemma.runtime.api.request_types import CancelRequest, EditRequest, InfillRequest
from diffgemma.runtime.api.schema import DRAFT_SCHEMA, RESULT_SCHEMA, json_schema
from diffgemma.runtime.daemon.dispatch import API_VERSION


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(schema: dict[str, Any], stream: str | None = None, extra: dict[str, str] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if stream:
        content[stream] = {"schema": {"type": "string", "description": "one event per line"}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for code, text in {"400": "bad request (one-line reason)", **(extra or {})}.items():
        responses[code] = {"description": text, **error}
    return responses


_GENERATION_ERRORS = {"413": "body over --max-body", "409": "duplicate request id",
                      "503": "queue full", "500": "the request failed inside the daemon"}
_LLAMA_INFILL_BODY: dict[str, Any] = {"type": "object", "properties": {
    "input_prefix": {"type": "string"}, "input_suffix": {"type": "string"}, "prompt": {"type": "string"},
    "input_extra": {"type": "array", "items": {"type": "object", "required": ["text"],
                                               "properties": {"filename": {"type": "string"},
                                                              "text": {"type": "string"}}}},
    "n_predict": {"type": "integer"}, "stream": {"type": "boolean"}, "cache_prompt": {"type": "boolean"},
    "t_max_predict_ms": {"type": "number"}, "stop": {"type": "array", "items": {"type": "string"}},
    "response_fields": {"type": "array", "items": {"type": "string"}}, "seed": {"type": "integer"}},
    "description": "llama.cpp /infill; sampler fields are accepted and ignored"}
_OPENAI_COMPLETION_BODY: dict[str, Any] = {"type": "object", "required": ["prompt"], "properties": {
    "prompt": {"type": "string"}, "suffix": {"type": "string"}, "max_tokens": {"type": "integer"},
    "temperature": {"type": "number"}, "stop": {"oneOf": [{"type": "string"},
                                                          {"type": "array", "items": {"type": "string"}}]},
    "stream": {"type": "boolean"}, "model": {"type": "string"}, "echo": {"type": "boolean"},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_ALTERNATIVES}, "seed": {"type": "integer"}},
    "description": "OpenAI legacy completions with suffix (fill in the middle)"}
_ERROR_SCHEMA: dict[str, Any] = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "code": {"type": "string", "enum": [c.value for c in ErrorCode]}}}}}


def openapi_schema() -> dict[str, Any]:
    """The whole document: the native endpoints, then the compatibility ones."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "diffgemma daemon", "version": API_VERSION,
                 "description": "Code infilling and rewrites with DiffusionGemma. Over TCP every request but "
                                "/health needs `Authorization: Bearer <token>`."},
        "components": {
            "schemas": {
                "InfillRequest": json_schema(InfillRequest),
                "EditRequest": json_schema(EditRequest),
                "CancelRequest": json_schema(CancelRequest),
                "NextEditRequest": next_edit.request_schema(),
                "NextEditResult": next_edit.RESULT_SCHEMA,
                "Result": RESULT_SCHEMA,
                "Draft": DRAFT_SCHEMA,
                "Error": _ERROR_SCHEMA,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {**_native_paths(), **_main_compat_paths()},
        "security": [{"bearer": []}],
    }
    _add_compat_paths(doc["paths"], _GENERATION_ERRORS)
    return doc


def _native_paths() -> dict[str, Any]:
    result = {"$ref": "#/components/schemas/Result"}
    return {
        "/v1/infill": {"post": {
            "summary": "Fill the hole between prefix and suffix",
            "description": "With stream=true: NDJSON, one {type: draft, step, text, id} line per denoising "
                           "step (and one with final: true per committed canvas), then {type: result, ...} "
                           "(or {type: error, error: {message, type, code}, status, id}). With holes, each "
                           "draft has holes: [{text, state}] for every hole (components.schemas.Draft).",
            "requestBody": _json_body({"$ref": "#/components/schemas/InfillRequest"}),
            "responses": _answers(result, "application/x-ndjson", _GENERATION_ERRORS)}},
        "/v1/edit": {"post": {
            "summary": "Rewrite the selection between prefix and suffix",
            "requestBody": _json_body({"$ref": "#/components/schemas/EditRequest"}),
            "responses": _answers(result, "application/x-ndjson", _GENERATION_ERRORS)}},
        "/v1/next-edit": {"post": {
            "summary": "Propose the edit that follows the recent edits, near the cursor",
            "description": "With stream=true: NDJSON draft lines (the window's rewrite so far), then "
                           "{type: result, edits, next_line, threshold, reason, ...}.",
            "requestBody": _json_body({"$ref": "#/components/schemas/NextEditRequest"}),
            "responses": _answers({"$ref": "#/components/schemas/NextEditResult"}, "application/x-ndjson",
                                  _GENERATION_ERRORS)}},
        "/v1/cancel": {"post": {
            "summary": "Cancel a queued or running request by id",
            "requestBody": _json_body({"$ref": "#/components/schemas/CancelRequest"}),
            "responses": _answers({"type": "object", "properties": {"id": {"type": "string"},
                                                                    "cancelled": {"type": "boolean"}}})}},
        "/v1/status": {"get": {
            "summary": "Model, device, memory, load state, queue, counters, mean latency",
            "responses": _answers({"type": "object"})}},
        "/health": {"get": {"summary": "Liveness (no token needed)", "security": [],
                            "responses": _answers({"type": "object",
                                                   "properties": {"status": {"type": "string"}}})}},
        "/openapi.json": {"get": {"summary": "This document", "responses": _answers({"type": "object"})}},
    }


def _main_compat_paths() -> dict[str, Any]:
    """The two compatibility endpoints editors use most, described with their bodies."""
    return {
        "/infill": {"post": {
            "summary": "llama.cpp-compatible infill (llama.vim, llama.vscode)",
            "requestBody": _json_body(_LLAMA_INFILL_BODY),
            "responses": _answers({"type": "object", "properties": {
                "content": {"type": "string"}, "stop": {"type": "boolean"},
                "tokens_cached": {"type": "integer"}, "timings": {"type": "object"}}},
                "text/event-stream", _GENERATION_ERRORS)}},
        "/v1/completions": {"post": {
            "summary": "OpenAI legacy completions with suffix (Continue, Tabby)",
            "requestBody": _json_body(_OPENAI_COMPLETION_BODY),
            "responses": _answers({"type": "object", "properties": {
                "id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                "model": {"type": "string"}, "choices": {"type": "array"}, "usage": {"type": "object"}}},
                "text/event-stream", _GENERATION_ERRORS)}},
    }


def _add_compat_paths(paths: dict[str, Any], errors: dict[str, str]) -> None:
    for path, summary in _COMPAT_PATHS.items():
        method = "get" if path in ("/props", "/v1/models") else "post"
        paths[path] = {method: {"summary": summary, "responses": _answers({"type": "object"}, "text/event-stream",
                                                                           errors)}}


_COMPAT_PATHS = {
    "/completion": "llama.cpp completion (a prompt, maybe a FIM template); n_cmpl, t_max_predict_ms, stream",
    "/props": "llama.cpp server properties (default_generation_settings.n_ctx)",
    "/tokenize": "llama.cpp: {content} -> {tokens}",
    "/detokenize": "llama.cpp: {tokens} -> {content}",
    "/v1/models": "OpenAI model list: the default, loaded and allowed models",
    "/v1/chat/completions": "OpenAI chat: the model's chat template, plain generation; stream supported",
    "/v1/fim/completions": "Mistral FIM: prompt + suffix, chat-shaped answer; stream supported",
}
