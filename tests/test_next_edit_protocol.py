"""The next-edit wire: request validation, the recent edits' bounds, the answer's shape (pure, fast)."""

from __future__ import annotations

import json

import pytest

from diffgemma.runtime.api import config
from diffgemma.runtime.api.protocol import (
    Cursor,
    LineEdit,
    NextEditRequest,
    NextEditResult,
    ProtocolError,
    RecentEdit,
    Result,
)

DIFF = "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-def f(a):\n+def f(b):\n"


def test_request_round_trip_and_defaults_left_out() -> None:
    req = NextEditRequest(text="def f(b):\n    return a\n", cursor=Cursor(0, 7), edits=[RecentEdit("m.py", DIFF)],
                          path="m.py", language="python", threshold=0.25, stream=True, client="ed", seed=1)
    data = req.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["cursor"] == {"line": 0, "col": 7}
    assert data["edits"] == [{"path": "m.py", "diff": DIFF}]
    assert "first_line" not in data
    assert NextEditRequest.from_json(data) == req
    assert NextEditRequest(text="x", cursor=Cursor(0, 0)).to_json() == {"text": "x", "cursor": {"line": 0, "col": 0}}
    assert NextEditRequest(text="x", cursor=Cursor(0, 0)).resolved_threshold == config.DEFAULT_NEXT_EDIT_THRESHOLD


def test_a_window_of_a_document_counts_lines_from_first_line() -> None:
    req = NextEditRequest.from_json({"text": "a\nbb\n", "first_line": 10, "cursor": {"line": 11, "col": 2}})
    assert req.cursor == Cursor(11, 2) and req.first_line == 10
    assert req.validate() == req


@pytest.mark.parametrize(("body", "reason"), [
    ({"cursor": {"line": 0, "col": 0}}, "missing the required field 'text'"),
    ({"text": "x"}, "missing the required field 'cursor'"),
    ({"text": "x", "cursor": [0, 0]}, "cursor must be an object"),
    ({"text": "x", "cursor": {"line": 0}}, "cursor is missing 'col'"),
    ({"text": "x", "cursor": {"line": 0, "col": 0, "x": 1}}, "cursor has unknown field 'x'"),
    ({"text": "x", "cursor": {"line": -1, "col": 0}}, "cursor.line must be between"),
    ({"text": "x", "cursor": {"line": True, "col": 0}}, "cursor.line must be an integer"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "first_line": -1}, "first_line must be between"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": {}}, "edits must be an array"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": ["d"]}, "edits[0] must be an object"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": [{"path": "p"}]}, "edits[0] is missing 'diff'"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": [{"path": "p", "diff": 1}]}, "edits[0].diff must be"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": [{"path": "p", "diff": "", "x": 0}]},
     "edits[0] has unknown field 'x'"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "threshold": 1.5}, "threshold must be in [0, 1]"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "threshold": "high"}, "threshold must be a number"),
    ({"text": "x", "cursor": {"line": 0, "col": 0}, "selection": "x"}, "unknown field 'selection'"),
    ("text", "request body must be a JSON object"),
])
def test_bad_requests_are_refused_in_one_line(body: object, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        NextEditRequest.from_json(body)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_the_newest_edits_within_the_bounds_are_kept() -> None:
    many = [{"path": f"f{i}.py", "diff": DIFF} for i in range(config.MAX_NEXT_EDITS + 5)]
    req = NextEditRequest.from_json({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": many})
    assert [e.path for e in req.edits] == [f"f{i}.py" for i in range(5, config.MAX_NEXT_EDITS + 5)]
    big = "x" * (config.MAX_NEXT_EDIT_DIFF_CHARS // 2)
    sized = [{"path": "old.py", "diff": big}, {"path": "mid.py", "diff": big}, {"path": "new.py", "diff": "d"}]
    req = NextEditRequest.from_json({"text": "x", "cursor": {"line": 0, "col": 0}, "edits": sized})
    assert [e.path for e in req.edits] == ["mid.py", "new.py"]


def test_result_round_trip_and_a_cancelled_answer_reads_as_no_edits() -> None:
    result = NextEditResult(text="def f(b):\n    return b\n", finish_reason="stop", timings={"total_ms": 1.0},
                            id="r", model="m", edits=[LineEdit(1, 2, "    return b\n", 0.91234)], next_line=7,
                            threshold=0.5, reason=None, window={"start_line": 0, "end_line": 2})
    data = result.to_json()
    assert set(data) >= {"edits", "next_line", "threshold", "reason", "finish_reason", "timings", "id", "model"}
    assert data["edits"] == [{"start_line": 1, "end_line": 2, "text": "    return b\n", "confidence": 0.9123}]
    back = NextEditResult.from_json(json.loads(json.dumps(data)))
    assert back.edits == [LineEdit(1, 2, "    return b\n", 0.9123)] and back.next_line == 7
    assert back.window == {"start_line": 0, "end_line": 2} and back.reason is None
    cancelled = Result(text="", finish_reason="cancelled", timings={}, id="r", model="m").to_json()
    plain = NextEditResult.from_json(cancelled)
    assert plain.edits == [] and plain.next_line is None and plain.finish_reason == "cancelled"
    for bad in ({**data, "edits": [{"start_line": 2, "end_line": 1, "text": "", "confidence": 1}]},
                {**data, "next_line": "3"}, {**data, "edits": {"x": 1}}):
        with pytest.raises(ProtocolError):
            NextEditResult.from_json(bad)


def test_a_cursor_past_the_text_is_its_nearest_position() -> None:
    # an editor's position can be a keystroke stale; JSON Schema cannot bound it by the text's lines
    for cursor, first_line, nearest in (({"line": 2, "col": 0}, 0, (1, 0)), ({"line": 0, "col": 0}, 5, (5, 0)),
                                        ({"line": 0, "col": 2}, 0, (0, 1)), ({"line": 9, "col": 9}, 0, (1, 0))):
        req = NextEditRequest.from_json({"text": "x\n", "cursor": cursor, "first_line": first_line})
        assert (req.cursor.line, req.cursor.col) == nearest


def test_request_schema_names_every_field() -> None:
    schema = NextEditRequest.json_schema()
    assert schema["required"] == ["text", "cursor"] and schema["additionalProperties"] is False
    assert {"text", "cursor", "first_line", "edits", "threshold"} <= set(schema["properties"])
    assert schema["properties"]["cursor"]["required"] == ["line", "col"]
    assert {"max_tokens", "seed", "stream", "client", "time_limit_ms", "path", "language"} <= set(schema["properties"])
