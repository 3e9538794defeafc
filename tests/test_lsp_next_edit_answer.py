"""The language server's pure next-edit pieces: the daemon's line edits as LSP edits (UTF-16
columns, the end of a document without a newline), the window of a long document, the request."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from diffgemma.context.positions import offset_to_utf16_position
from diffgemma.lsp.next_edit import lsp_answer, next_edit_key, next_edit_request, text_window
from diffgemma.lsp.settings import NextEditSettings, Settings
from diffgemma.runtime.api.next_edit import LineEdit, NextEditResult

TEXT = "def f(a):\n    return a  # é😀\n\n\nx = f(1)"  # no newline at the end


def position_at(text: str) -> Any:
    def at(offset: int) -> types.Position:
        line, character = offset_to_utf16_position(text, offset)
        return types.Position(line=line, character=character)

    return at


def result(*edits: LineEdit, next_line: int | None = None, reason: str | None = None) -> NextEditResult:
    return NextEditResult(text="", finish_reason="stop", timings={}, id="1", model="m", edits=list(edits),
                          next_line=next_line, threshold=0.5, reason=reason)


def test_line_edits_become_whole_line_ranges() -> None:
    answer = lsp_answer(result(LineEdit(0, 1, "def f(b):\n", 0.9), next_line=1), TEXT, position_at(TEXT))
    assert answer == {
        "edits": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
                   "newText": "def f(b):\n", "confidence": 0.9}],
        "next": {"line": 1, "character": 4},  # the line's first non-blank character
        "reason": None,
        "threshold": 0.5,
    }


def test_an_edit_to_the_last_line_keeps_it_without_a_newline() -> None:
    answer = lsp_answer(result(LineEdit(4, 5, "x = f(2)\n", 0.8)), TEXT, position_at(TEXT))
    edit = answer["edits"][0]
    assert edit["range"] == {"start": {"line": 4, "character": 0}, "end": {"line": 4, "character": 8}}
    assert edit["newText"] == "x = f(2)"


def test_unchanged_and_out_of_range_edits_are_left_out() -> None:
    answer = lsp_answer(result(LineEdit(0, 1, "def f(a):\n", 0.9), LineEdit(7, 9, "y\n", 0.9),
                               reason=None), TEXT, position_at(TEXT))
    assert answer["edits"] == [] and answer["reason"] == "no change proposed"
    said = lsp_answer(result(reason="no confident change"), TEXT, position_at(TEXT))
    assert said["reason"] == "no confident change" and said["next"] is None


def test_text_window_keeps_whole_lines_around_the_cursor() -> None:
    text = "".join(f"line {i:03d}\n" for i in range(100))  # 9 characters a line
    assert text_window(text, 50, limit=len(text)) == (text, 0)
    window, first = text_window(text, 50, limit=95)
    assert window.split("\n")[50 - first] == "line 050"
    assert len(window) <= 95 and 45 <= first <= 50
    window, first = text_window(text, 0, limit=95)  # at the top: all of it after the cursor
    assert first == 0 and window.startswith("line 000") and len(window.split("\n")) >= 9


def test_the_request_carries_the_recent_edits_and_the_settings() -> None:
    settings = Settings(next_edit=NextEditSettings(threshold=0.25))
    edits = [{"path": "calc.py", "diff": f"--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-a{i}\n+b{i}\n"}
             for i in range(20)]
    request = next_edit_request(TEXT, 1, 4, language="python", path="/w/calc.py", uri="file:///w/calc.py",
                                edits=edits, settings=settings)
    body = request.to_json()
    assert body["cursor"] == {"line": 1, "col": 4} and body["threshold"] == 0.25
    assert body["client"] == next_edit_key("file:///w/calc.py") != "file:///w/calc.py"
    assert body["edits"][-1]["diff"].endswith("+b19\n")  # the newest kept, last
    assert len(body["edits"]) <= 16
