"""/openapi.json is generated from the code that validates and answers, without a daemon (pure, fast).

Every field checker says which JSON values it accepts, and a checker accepts a value exactly when
its schema does (checked on generated values, field by field, for every body of every route); the
document is a valid OpenAPI 3.2 document whose schemas are valid JSON Schemas; every route the
server has is in it, and a new row in the route table is in both.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.definitions import OPENAPI_32_VALIDATOR

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import Fields, ProtocolError, registered_checkers, schema_of
from diffgemma.runtime.api.next_edit import LineEdit, NextEditResult
from diffgemma.runtime.api.request_types import InfillRequest
from diffgemma.runtime.api.results import FINISH_REASONS
from diffgemma.runtime.daemon.dispatch import Dispatcher, ServerInfo
from diffgemma.runtime.daemon.endpoints import ENDPOINTS, Endpoint
from diffgemma.runtime.daemon.native_routes import NativeRoutes
from diffgemma.runtime.daemon.openapi import openapi_document
from diffgemma.runtime.daemon.server import routes

TCP = ServerInfo(token="t" * 20)
UNIX = ServerInfo(socket="/run/d.sock")


def _keywords(fn: Any) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_every_checker_has_a_describer_with_its_keywords() -> None:
    described = registered_checkers()
    assert len(described) >= 20
    for check, describe in described.items():
        assert _keywords(check) == _keywords(describe), check.__name__


def _bodies() -> list[Fields]:
    return [row.body.fields_spec() for row in ENDPOINTS if row.body is not None]


def _bounds(schema: Any) -> set[float]:
    """Every bound a schema states (minimum, maxLength, maxItems, ...), however deep."""
    found: set[float] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("minimum", "maximum", "exclusiveMinimum", "maxLength", "minItems", "maxItems"):
                found.add(value)
            found |= _bounds(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= _bounds(item)
    return found


_EDGES = sorted({edge for body in _bodies() for check in body.checks.values()
                 for bound in _bounds(schema_of(check)) for edge in (bound - 1, bound, bound + 1, bound / 2)})
# JSON values: what a client can send in a field, with the edges the checkers care about: each bound
# the schemas state and its neighbours (as integers, whole floats, strings and arrays of that size),
# huge and negative integers, control and private-use characters, nesting.
_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_EDGE = st.sampled_from(_EDGES)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.integers(-3, 70),
                     _EDGE, _EDGE.map(lambda e: int(e) if float(e).is_integer() else e),
                     st.floats(allow_nan=False, allow_infinity=False), _TEXT,
                     _EDGE.filter(lambda e: 0 <= e <= 5000).map(lambda e: "x" * int(e)),
                     st.sampled_from(["", "a\nb", "\ue000id", "\u2028", "[DONE]", "text", "user"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), _EDGE.filter(lambda e: 0 <= e <= 40).map(lambda e: [{}] * int(e)),
    st.dictionaries(st.sampled_from(["prefix", "path", "text", "role", "content", "type", "filename", "t_min",
                                     "x"]), inner, max_size=4)), max_leaves=8)


def _accepts(check: Any, value: Any) -> bool:
    try:
        check("field", value)
    except ProtocolError:
        return False
    return True


# every distinct field of every body: (where, checker, its schema's validator)
_FIELDS = list({f"{body.name}.{name}": (f"{body.name}.{name}", check, jsonschema_rs.validator_for(schema_of(check)))
                for body in _bodies() for name, check in body.checks.items()}.values())


@settings(max_examples=1500, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON)
def test_a_checker_accepts_exactly_what_its_schema_allows(value: Any) -> None:
    for where, check, validator in _FIELDS:
        assert _accepts(check, value) == validator.is_valid(value), (where, value)


def test_whole_numbers_and_control_characters() -> None:
    assert InfillRequest.from_json({"suffix": "", "max_tokens": 16.0}).max_tokens == 16
    assert InfillRequest.from_json({"suffix": "", "id": "\ue000\U000f0000"}).id == "\ue000\U000f0000"
    with pytest.raises(ProtocolError, match="control characters"):
        InfillRequest.from_json({"suffix": "", "id": "a\u2028b"})
    with pytest.raises(ProtocolError):
        checks.string("id", "a\x7f", printable=True)


def test_the_document_is_valid_openapi_3_2() -> None:
    for info in (TCP, UNIX):
        doc = openapi_document(info, {"vocab_size": 512})
        OPENAPI_32_VALIDATOR.validate(doc)
        for schema in doc["components"]["schemas"].values():
            jsonschema_rs.meta.validate(schema)


def test_every_route_is_in_the_document() -> None:
    served = {(route.path, method) for route in routes(Dispatcher(None, UNIX))  # type: ignore[arg-type]
              for method in route.methods or () if method != "HEAD"}
    doc = openapi_document(UNIX, {})
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    assert served == documented


def test_a_new_row_is_a_route_and_an_operation() -> None:
    row = Endpoint("/v1/echo", "POST", NativeRoutes.cancel, "Echo", dict[str, str], body=InfillRequest, job=True)
    rows = (*ENDPOINTS, row)
    assert "/v1/echo" in {route.path for route in routes(Dispatcher(None, UNIX), rows)}  # type: ignore[arg-type]
    operation = openapi_document(TCP, {}, rows)["paths"]["/v1/echo"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InfillRequest"}
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "409", "413", "500", "503"}


def _codes(doc: dict[str, Any], path: str, method: str = "post") -> dict[str, list[str]]:
    responses = doc["paths"][path][method]["responses"]
    return {status: answer["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]
            ["enum"] for status, answer in responses.items() if status != "200"}


def test_errors_follow_from_what_a_route_declares() -> None:
    tcp, unix = openapi_document(TCP, {}), openapi_document(UNIX, {})
    infill = _codes(tcp, "/v1/infill")
    assert infill == {"400": ["invalid_json", "invalid_request", "no_model"], "401": ["unauthorized"],
                      "403": ["forbidden", "model_locked"], "404": ["model_not_found"], "409": ["duplicate_id"],
                      "413": ["body_too_large"], "500": ["model_load_failed", "internal_error"],
                      "503": ["queue_full"]}
    # a compatibility body's model is the client's label (the daemon's model answers): never locked,
    # and it carries no request id
    assert _codes(tcp, "/v1/completions")["403"] == ["forbidden"] and "409" not in _codes(tcp, "/v1/completions")
    assert _codes(tcp, "/health", "get") == {"403": ["forbidden"]}
    assert _codes(unix, "/health", "get") == {} and "401" not in _codes(unix, "/v1/infill")
    assert _codes(tcp, "/v1/models/{model_id}", "get") == {"401": ["unauthorized"], "403": ["forbidden"],
                                                           "404": ["not_found"]}
    assert tcp["paths"]["/health"]["get"]["security"] == [] and tcp["security"] == [{"bearer": []}]
    assert set(_codes(tcp, "/v1/cancel")) == {"400", "401", "403", "413"}


def test_streams_and_arrays_are_declared_as_json_objects() -> None:
    doc = openapi_document(TCP, {})
    infill = doc["paths"]["/v1/infill"]["post"]["responses"]["200"]["content"]
    lines = infill["application/x-ndjson"]["itemSchema"]["anyOf"]
    assert lines[0] == {"$ref": "#/components/schemas/DraftLine"} and len(lines) == 3
    assert infill["application/x-ndjson"]["schema"]["type"] == "array"
    event = doc["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    data = event["properties"]["data"]
    assert data["if"] == {"const": "[DONE]"} and data["else"]["contentMediaType"] == "application/json"
    llama = doc["paths"]["/infill"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/LlamaAnswer"}} in llama["anyOf"]
    draft = doc["components"]["schemas"]["DraftLine"]
    assert draft["required"] == ["type", "step", "text", "id"] and "holes" in draft["properties"]


def test_the_loaded_model_bounds_the_token_ids() -> None:
    tokens = openapi_document(UNIX, {"vocab_size": 512})["components"]["schemas"]["DetokenizeRequest"]
    assert tokens["properties"]["tokens"]["items"] == {"type": "integer", "minimum": 0, "maximum": 511}
    unloaded = openapi_document(UNIX, {"vocab_size": None})["components"]["schemas"]["DetokenizeRequest"]
    assert "maximum" not in unloaded["properties"]["tokens"]["items"]


def test_bodies_name_their_fields_in_one_line_errors() -> None:
    spec = Fields(name="X", kind="thing", checks={"n": partial(checks.integer, low=1, high=3)}, required=("n",))
    with pytest.raises(ProtocolError, match="thing request is missing the required field 'n'"):
        spec.read({})
    with pytest.raises(ProtocolError, match="unknown field 'm' in thing request"):
        spec.read({"n": 1, "m": 2})
    assert Fields(name="X", kind="thing", checks=spec.checks, strict=False).read({"n": 2.0, "m": 2}) == {"n": 2}


def test_an_engine_without_seeds_or_options_has_them_out_of_the_bodies() -> None:
    # the vLLM engine refuses a seed and sampling overrides (400): the document of such a daemon says so
    status = {"engine": "vllm", "capabilities": {"seed": False, "sampling_options": False}}
    doc = openapi_document(TCP, status)
    schemas = doc["components"]["schemas"]
    assert schemas["InfillRequest"]["properties"]["seed"]["type"] == "null"
    assert {"type": "integer", "maximum": -1} in schemas["CompletionRequest"]["properties"]["seed"]["anyOf"]
    assert schemas["EditRequest"]["properties"]["options"]["anyOf"][1]["maxProperties"] == 0
    assert _codes(doc, "/v1/infill")["502"] == ["engine_unavailable"]
    local = openapi_document(TCP, {"engine": "local", "capabilities": {"seed": True, "sampling_options": True}})
    assert "502" not in _codes(local, "/v1/infill") and "minimum" in str(local["components"]["schemas"]
                                                                            ["InfillRequest"]["properties"]["seed"])


def test_next_edit_is_declared_as_every_route_is() -> None:
    doc = openapi_document(TCP, {})
    operation, schemas = doc["paths"]["/v1/next-edit"]["post"], doc["components"]["schemas"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NextEditRequest"}
    body = schemas["NextEditRequest"]
    assert body["required"] == ["text", "cursor"] and body["properties"]["threshold"]["maximum"] == 1
    content = operation["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/NextEditReply"}
    assert content["application/x-ndjson"]["itemSchema"]["anyOf"][0] == {
        "$ref": "#/components/schemas/NextEditDraftLine"}
    assert set(_codes(doc, "/v1/next-edit")) == set(_codes(doc, "/v1/edit"))
    # what the daemon sends is what the document says, and nothing it does not
    answer = NextEditResult(text="b = 2\n", finish_reason="stop", timings={"total_ms": 1.5}, id="r", model="m",
                            edits=[LineEdit(start_line=3, end_line=4, text="b = 2\n", confidence=0.91)],
                            next_line=7, window={"start_line": 2, "end_line": 5})
    cancelled = NextEditResult(text="", finish_reason="cancelled", timings={}, id="r", model="m")
    reply = {"$ref": "#/components/schemas/NextEditReply", "components": doc["components"]}
    for sent in (answer.to_json(), cancelled.to_json()):
        jsonschema_rs.validate(reply, sent)
        assert set(schemas["NextEditReply"]["required"]) <= set(sent) <= set(schemas["NextEditReply"]["properties"])
    assert "window" not in schemas["NextEditReply"]["required"]


def test_the_syntax_gate_is_in_the_document() -> None:
    schemas = openapi_document(UNIX, {})["components"]["schemas"]
    for answer in ("Result", "NextEditReply"):
        assert schemas[answer]["properties"]["finish_reason"]["enum"] == list(FINISH_REASONS)
    assert "syntax" in FINISH_REASONS and "reason" in schemas["Result"]["properties"]
    for body in ("InfillRequest", "EditRequest"):
        assert schemas[body]["properties"]["allow_broken"]["type"] == "boolean"
