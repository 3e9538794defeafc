"""/openapi.json, generated from the route table (runtime.daemon.endpoints): nothing here describes an
endpoint by hand.

Request bodies are described by their checkers (runtime.api.checks: each one says which JSON values it
accepts), answers by their types (TypedDicts and dataclasses, rendered by pydantic), streams item by
item (OpenAPI 3.2 ``itemSchema``: NDJSON lines, and server-sent events whose ``data`` is JSON), and
the errors a route can give follow from what its row declares. The document describes the daemon that
serves it: over TCP the bearer token, its 401 and the Origin/Host guard's 403; with the model loaded,
the token ids /detokenize takes and what its engine cannot take (the vLLM engine: a seed, sampling
options), and an engine whose servers can fail (502).
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from typing import Any

from diffgemma.runtime.api.checks import Schema
from diffgemma.runtime.api.config import SEED_MAX
from diffgemma.runtime.api.errors import ErrorCode, status_of
from diffgemma.runtime.api.results import ErrorBody
from diffgemma.runtime.daemon.dispatch import API_VERSION, ServerInfo
from diffgemma.runtime.daemon.endpoints import ENDPOINTS, Endpoint, Stream, Tagged

_REF = "#/components/schemas/{model}"

# What each error code means, for the answers' descriptions.
_MEANING: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "a field is missing, of the wrong type or out of range",
    ErrorCode.INVALID_JSON: "the body is not JSON (or not UTF-8, or nested too deeply)",
    ErrorCode.BODY_TOO_LARGE: "the body is over the daemon's --max-body",
    ErrorCode.UNAUTHORIZED: "missing or wrong bearer token",
    ErrorCode.FORBIDDEN: "the Host header does not name this daemon, or a web page's Origin is not allowed",
    ErrorCode.NOT_FOUND: "no such thing here",
    ErrorCode.MODEL_NOT_FOUND: "the model cannot be found, or this daemon may not serve it",
    ErrorCode.MODEL_LOCKED: "the daemon serves a fixed model (--fixed-model)",
    ErrorCode.NO_MODEL: "no model named and the daemon has no default",
    ErrorCode.DUPLICATE_ID: "a request with this id is already queued or running",
    ErrorCode.QUEUE_FULL: "the queue is full (--queue)",
    ErrorCode.MODEL_LOAD_FAILED: "the model failed to load",
    ErrorCode.INTERNAL: "the request failed inside the daemon",
    ErrorCode.ENGINE_UNAVAILABLE: "no server behind the daemon's engine answers",
}
_JOB_ERRORS = (ErrorCode.NO_MODEL, ErrorCode.MODEL_NOT_FOUND, ErrorCode.QUEUE_FULL, ErrorCode.MODEL_LOAD_FAILED,
               ErrorCode.INTERNAL)
_BODY_ERRORS = (ErrorCode.INVALID_JSON, ErrorCode.INVALID_REQUEST, ErrorCode.BODY_TOO_LARGE)


def openapi_document(info: ServerInfo, status: dict[str, Any],
                     rows: tuple[Endpoint, ...] = ENDPOINTS) -> dict[str, Any]:
    """The whole document of ``rows``, for the daemon described by ``info`` with the model state ``status``."""
    answers, components = _answer_schemas(rows)
    schemas = dict(components)
    paths: dict[str, Any] = {}
    tcp, remote = bool(info.token), status.get("engine") not in (None, "local")
    for row in rows:
        operation = _operation(row, answers, tcp, remote)
        if row.body is not None:
            fields = row.body.fields_spec()
            schemas[fields.name] = _engine_limits(fields.json_schema(), isinstance(row.body, type),
                                                  status.get("capabilities") or {})
        for path in row.paths:
            paths.setdefault(path, {})[row.method.lower()] = {**operation, "operationId": _operation_id(row.method,
                                                                                                        path)}
    _loaded_model_limits(schemas, status)
    doc: dict[str, Any] = {
        "openapi": "3.2.0",
        "info": {"title": "diffgemma daemon", "version": API_VERSION,
                 "description": "Code infilling and rewrites with DiffusionGemma, and the llama.cpp, OpenAI and "
                                "Mistral wire shapes editors already speak. Errors are "
                                "{\"error\": {\"message\", \"type\", \"code\"}} everywhere."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if tcp:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


def _answer_schemas(rows: tuple[Endpoint, ...]) -> tuple[dict[str, Schema], dict[str, Schema]]:
    """Every answer and stream item type of ``rows``: (schema by key, the shared components)."""
    types: dict[str, Any] = {"ErrorBody": ErrorBody}
    for row in rows:
        types[_key(row.answer)] = row.answer
        for item in row.stream.items if row.stream else ():
            inner = item.type if isinstance(item, Tagged) else item
            types[_key(inner)] = inner
    return _render(tuple(types.items()))


@functools.cache
def _render(types: tuple[tuple[str, Any], ...]) -> tuple[dict[str, Schema], dict[str, Schema]]:
    """The types' JSON Schemas, rendered once per set of types (pydantic reads TypedDicts, dataclasses,
    Literals and unions)."""
    from pydantic import TypeAdapter  # only the document needs it

    adapters = [(key, "serialization", TypeAdapter(tp)) for key, tp in types]
    rendered, definitions = TypeAdapter.json_schemas(adapters, ref_template=_REF)  # type: ignore[arg-type]
    by_key = {key: schema for (key, _), schema in rendered.items()}
    return by_key, definitions.get("$defs", {})


def _key(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _operation(row: Endpoint, answers: dict[str, Schema], tcp: bool, remote: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": answers[_key(row.answer)]}}
    if row.stream is not None:
        content[row.stream.media_type] = _stream_content(row.stream, answers)
    operation: dict[str, Any] = {"summary": row.summary,
                                 "responses": {"200": {"description": "OK", "content": content},
                                               **_error_responses(row, tcp, remote)}}
    if row.description:
        operation["description"] = row.description
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", row.path)]
    if parameters:
        operation["parameters"] = parameters
    if row.body is not None:
        ref = {"$ref": _REF.format(model=row.body.fields_spec().name)}
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    if row.public and tcp:
        operation["security"] = []
    return operation


def _item(item: Any, answers: dict[str, Schema]) -> Schema:
    if isinstance(item, Tagged):
        tag = {"type": "object", "required": ["type"], "properties": {"type": {"const": item.tag}}}
        return {"allOf": [answers[_key(item.type)], tag]}
    return answers[_key(item)]


def _stream_content(stream: Stream, answers: dict[str, Schema]) -> dict[str, Any]:
    """A stream's media type: OpenAPI 3.2's ``itemSchema`` is each event; for NDJSON ``schema`` is the
    whole stream, the array of its lines."""
    items = [_item(item, answers) for item in stream.items]
    if stream.media_type != "text/event-stream":
        line = {"anyOf": items} if len(items) > 1 else items[0]
        return {"schema": {"type": "array", "items": line}, "itemSchema": line}
    # server-sent events: each event's data is one of the items, or the error of a request that failed
    # after the stream began; OpenAI's streams end with the event [DONE]
    payload: Schema = {"contentMediaType": "application/json",
                       "contentSchema": {"anyOf": [*items, answers["ErrorBody"]]}}
    data: Schema = {"type": "string", **({"if": {"const": "[DONE]"}, "else": payload} if stream.done else payload)}
    return {"itemSchema": {"type": "object", "required": ["data"], "properties": {"data": data}}}


def _error_codes(row: Endpoint, tcp: bool, remote: bool = False) -> list[ErrorCode]:
    """What the route can answer besides 200, from what its row declares (``remote``: the engine's work
    is done by servers that can fail, as vLLM's)."""
    codes = list(row.errors)
    if tcp:
        codes.append(ErrorCode.FORBIDDEN)  # the Origin/Host guard comes first, on every route
        if not row.public:
            codes.append(ErrorCode.UNAUTHORIZED)
    if row.body is not None:
        codes += _BODY_ERRORS
    if row.job:
        codes += _JOB_ERRORS
        if remote:
            codes.append(ErrorCode.ENGINE_UNAVAILABLE)
        names = row.body.fields_spec().checks if row.body is not None else {}
        # the daemon's own requests may name their model and their id (compatibility bodies' model is
        # the client's label for this server: the daemon's model answers)
        if isinstance(row.body, type):
            codes.append(ErrorCode.MODEL_LOCKED)
            if "id" in names:
                codes.append(ErrorCode.DUPLICATE_ID)
    return list(dict.fromkeys(codes))


def _error_responses(row: Endpoint, tcp: bool, remote: bool) -> dict[str, Any]:
    by_status: dict[int, list[ErrorCode]] = defaultdict(list)
    for code in _error_codes(row, tcp, remote):
        by_status[status_of(code)].append(code)
    out: dict[str, Any] = {}
    for status in sorted(by_status):
        codes = by_status[status]
        schema = {"allOf": [{"$ref": _REF.format(model="ErrorBody")}],
                  "properties": {"error": {"properties": {"code": {"enum": [c.value for c in codes]}}}}}
        response: dict[str, Any] = {"description": "; ".join(f"{c.value}: {_MEANING.get(c, c.value)}" for c in codes),
                                    "content": {"application/json": {"schema": schema}}}
        if ErrorCode.UNAUTHORIZED in codes:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[str(status)] = response
    return out


def _operation_id(method: str, path: str) -> str:
    return re.sub(r"\W+", "_", f"{method.lower()}_{path.strip('/')}").strip("_")


def _loaded_model_limits(schemas: dict[str, Schema], status: dict[str, Any]) -> None:
    """What only the loaded model knows: the ids of its vocabulary (/detokenize refuses others)."""
    vocab = status.get("vocab_size")
    tokens = schemas.get("DetokenizeRequest", {}).get("properties", {}).get("tokens")
    if isinstance(vocab, int) and vocab > 0 and tokens is not None:
        tokens["items"] = {**tokens["items"], "maximum": vocab - 1}


def _engine_limits(schema: Schema, native: bool, capabilities: dict[str, Any]) -> Schema:
    """What the loaded engine refuses (400), taken out of a request body's schema: an engine without
    per-request seeds (vLLM) refuses a seed, one without sampling overrides refuses ``options``. A
    compatibility body's seed outside 0..2^63-1 means "random" and is still taken."""
    properties = schema.get("properties", {})
    if capabilities.get("seed") is False and "seed" in properties:
        note = {"description": "Not available with this daemon's engine (it takes no per-request seed)."}
        random = [{"type": "null"}, {"type": "integer", "maximum": -1}, {"type": "integer", "minimum": SEED_MAX + 1}]
        properties["seed"] = {"type": "null", **note} if native else {"anyOf": random, **note}
    if capabilities.get("sampling_options") is False and "options" in properties:
        properties["options"] = {"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}],
                                 "description": "Not available with this daemon's engine (its checkpoint decides)."}
    return schema
