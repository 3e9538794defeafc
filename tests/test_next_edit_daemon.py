"""POST /v1/next-edit end to end: a real daemon process serving the tiny checkpoint on a temp socket.

The answer's shape and its edits applied to the document, the threshold, the syntax rule, the
NDJSON stream, cancellation and supersession, and bad bodies answered 400 while the daemon keeps
serving. Nothing is timed.
"""

from __future__ import annotations

import ast
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_api import BUSY, Daemon, in_thread, wait_for
from test_next_edit_engine import DIFF, DOC  # the engine contract's document and rename

from diffgemma.context.line_edits import split_lines
from diffgemma.runtime.api.client import DaemonError
from diffgemma.runtime.api.errors import ErrorCode
from diffgemma.runtime.api.protocol import Cursor, NextEditRequest, NextEditResult, RecentEdit


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgn", dir="/tmp"))
    d = Daemon(tmp, tiny_model_dir, "--max-request-seconds", "0", "--max-steps", "1024")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def request(**fields: Any) -> NextEditRequest:
    base: dict[str, Any] = {"text": DOC, "cursor": Cursor(3, 11), "edits": [RecentEdit("m.py", DIFF)],
                            "path": "m.py", "seed": 0, "steps": 4}
    return NextEditRequest(**{**base, **fields})


def applied(text: str, result: NextEditResult) -> str:
    lines = split_lines(text)
    for edit in sorted(result.edits, key=lambda e: e.start_line, reverse=True):
        lines[edit.start_line:edit.end_line] = [edit.text]
    return "".join(lines)


def test_the_answer_proposes_line_edits_that_apply_to_the_document(daemon: Daemon) -> None:
    # No grammar (no language, no path suffix): every change the model makes is a candidate.
    result = daemon.client.next_edit(request(threshold=0.0, path=None))
    assert isinstance(result, NextEditResult) and result.finish_reason in ("stop", "length")
    assert result.threshold == 0.0 and result.reason is None and result.edits
    window = result.window
    assert window is not None and window["start_line"] <= 3 < window["end_line"]
    previous_end = -1
    for edit in result.edits:
        assert window["start_line"] <= edit.start_line <= edit.end_line <= window["end_line"]
        assert edit.start_line >= previous_end and 0.0 < edit.confidence <= 1.0
        assert edit.text == "" or edit.text.endswith("\n")
        previous_end = edit.end_line
    new = applied(DOC, result)
    lines = split_lines(new)
    assert "".join(lines[window["start_line"]: window["end_line"] + len(lines) - len(split_lines(DOC))]) \
        == result.text
    assert result.timings["decoder_tokens"] > 0 and result.timings["steps"] > 0
    # `width` is still used on lines 5 and 10: the next place is the first after the window (wrapping)
    outside = [n for n in (5, 10) if not window["start_line"] <= n < window["end_line"]]
    assert outside and result.next_line == next((n for n in outside if n >= window["end_line"]), outside[0])


def test_nothing_is_proposed_over_a_threshold_of_one(daemon: Daemon) -> None:
    result = daemon.client.next_edit(request(threshold=1.0, path=None))
    assert result.edits == [] and result.threshold == 1.0
    assert result.reason is not None and "\n" not in result.reason
    assert result.text == "" and result.next_line in (5, 10)


def test_a_proposal_never_adds_a_syntax_error(daemon: Daemon) -> None:
    gated = 0
    for seed in range(3):
        result = daemon.client.next_edit(request(threshold=0.0, language="python", seed=seed))
        ast.parse(applied(DOC, result))  # the document parses, so it must still parse
        if not result.edits:
            assert result.reason is not None
            gated += "syntax error" in result.reason
    assert gated or result.edits  # the random model's rewrites were judged, not skipped


def test_stream_sends_drafts_with_the_window_then_the_result(daemon: Daemon) -> None:
    body = {**request(threshold=0.0, path=None).to_json(), "stream": True}
    with daemon.http() as http, http.stream("POST", "/v1/next-edit", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    drafts, end = lines[:-1], lines[-1]
    assert drafts and all(d["type"] == "draft" and isinstance(d["edits"], list) for d in drafts)
    assert {(d["window"]["start_line"], d["window"]["end_line"]) for d in drafts} == {
        (end["window"]["start_line"], end["window"]["end_line"])}
    assert end["type"] == "result" and "edits" in end and "next_line" in end and end["threshold"] == 0.0
    drafted: list[dict[str, Any]] = []
    result = daemon.client.next_edit(request(threshold=0.0, path=None), on_draft=drafted.append)
    assert drafted and isinstance(result, NextEditResult)


def test_cancel_and_supersession_end_a_running_next_edit(daemon: Daemon) -> None:
    busy = request(id="ne-busy", client="editor-9", **{k: v for k, v in BUSY.items() if k != "max_tokens"})
    thread, box = in_thread(lambda: daemon.client.next_edit(busy))
    wait_for(lambda: daemon.status()["running"] == "ne-busy", "the next-edit to start")
    before = daemon.status()["superseded"]
    newer = daemon.client.next_edit(request(id="ne-new", client="editor-9", threshold=1.0))
    thread.join(120)
    assert box["value"].finish_reason == "cancelled" and box["value"].edits == []
    assert newer.id == "ne-new" and newer.finish_reason in ("stop", "length")
    assert daemon.status()["superseded"] == before + 1
    thread, box = in_thread(lambda: daemon.client.next_edit(request(id="ne-cancel", **{
        k: v for k, v in BUSY.items() if k != "max_tokens"})))
    wait_for(lambda: daemon.status()["running"] == "ne-cancel", "the next-edit to start")
    assert daemon.client.cancel("ne-cancel")
    thread.join(120)
    assert box["value"].finish_reason == "cancelled"


BAD = [
    ({"text": "x"}, "missing the required field 'cursor'"),
    ({"text": "a", "cursor": {"line": 0, "col": 0}, "edits": "diff"}, "edits must be an array"),
    ({"text": "a", "cursor": {"line": 0, "col": 0}, "edits": [{"path": "p"}]}, "edits[0] is missing 'diff'"),
    ({"text": "a", "cursor": {"line": 0, "col": 0}, "threshold": 2}, "threshold must be in [0, 1]"),
    ({"text": "a", "cursor": {"line": 0, "col": 0}, "prefix": ""}, "unknown field 'prefix'"),
]


@pytest.mark.parametrize(("body", "reason"), BAD, ids=[r for _, r in BAD])
def test_bad_bodies_are_a_400_and_the_daemon_keeps_serving(daemon: Daemon, body: dict[str, Any],
                                                           reason: str) -> None:
    with daemon.http() as http:
        response = http.post("/v1/next-edit", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and reason in error["message"] and "\n" not in error["message"]
        good = http.post("/v1/next-edit", json={"text": "x = 1\n", "cursor": {"line": 0, "col": 0}, "steps": 2,
                                                "threshold": 1.0})
        assert good.status_code == 200 and good.json()["edits"] == []


def test_the_client_raises_the_daemon_s_one_line_error(daemon: Daemon) -> None:
    with pytest.raises(DaemonError) as info:
        daemon.client.next_edit(request(model="/nonexistent/ckpt"))
    assert info.value.code == ErrorCode.MODEL_NOT_FOUND and "\n" not in str(info.value)
