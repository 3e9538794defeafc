"""Next-edit suggestions end to end: a real `diffgemma lsp` (pytest-lsp) records the user's edits
from didChange and asks a real daemon (the tiny random-weight checkpoint on a temp socket) for the
edit that follows. Random weights: assert the answer's shape and when the server asks at all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from test_lsp_server import (  # same folder: pytest puts it on sys.path
    Daemon,
    Session,
    base_options,
    lsp_session,
    plain,
    run_daemon,
)

SOURCE = "def scale(value, factor):\n    total = value * factor\n    return total + value\n"
NOTES = "shopping list\n- apples\n- pears\n- plums\n"


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def options(daemon: Daemon, **next_edit: Any) -> dict[str, Any]:
    return base_options(daemon, nextEdit={"debounceMs": 0, **next_edit})


def change(s: Session, uri: str, version: int, line: int, start: int, end: int, text: str) -> None:
    s.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(line, start), end=types.Position(line, end)), text=text
                )
            ],
        )
    )


def rename_parameter(s: Session, uri: str) -> None:
    """``value`` -> ``amount`` in the signature, as typed: the word deleted, then one key at a time."""
    change(s, uri, 2, 0, 10, 15, "")
    for i, _ in enumerate("amount"):
        change(s, uri, 3 + i, 0, 10 + i, 10 + i, "amount"[i])


async def next_edit(s: Session, uri: str, line: int, character: int) -> Any:
    params = {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
    return plain(await s.client.protocol.send_request_async("diffgemma/nextEdit", params))


async def recent_edits(s: Session) -> list[dict[str, str]]:
    answer = plain(await s.client.protocol.send_request_async("diffgemma/recentEdits", {}))
    edits: list[dict[str, str]] = answer["edits"]
    return edits


def assert_answer_shape(answer: Any, lines: int) -> None:
    assert isinstance(answer, dict)
    assert set(answer) == {"edits", "next", "reason", "threshold"}
    assert isinstance(answer["edits"], list)
    for edit in answer["edits"]:
        assert set(edit) == {"range", "newText", "confidence"}
        start, end = edit["range"]["start"], edit["range"]["end"]
        assert start["character"] == 0  # whole lines
        assert 0 <= start["line"] <= end["line"] <= lines
        assert isinstance(edit["newText"], str)
        assert 0.0 <= edit["confidence"] <= 1.0
    if answer["edits"]:
        assert answer["reason"] is None
    else:
        assert isinstance(answer["reason"], str) and answer["reason"] and "\n" not in answer["reason"]
    if answer["next"] is not None:
        assert 0 <= answer["next"]["line"] <= lines


async def test_a_renamed_parameter_is_recorded_and_a_suggestion_answers(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "scale.py", SOURCE)
        assert await recent_edits(s) == []
        assert await next_edit(s, uri, 0, 16) == {"edits": [], "next": None, "reason": "no recent edits",
                                                  "threshold": None}
        rename_parameter(s, uri)
        edits = await recent_edits(s)
        assert len(edits) == 1, edits  # seven keystrokes, one edit
        assert edits[0]["path"] == "scale.py"
        assert "-def scale(value, factor):\n+def scale(amount, factor):\n" in edits[0]["diff"]
        before = (await s.stats())["daemon_calls"]
        answer = await next_edit(s, uri, 0, 16)
        assert_answer_shape(answer, SOURCE.count("\n"))
        stats = await s.stats()
        assert stats["daemon_calls"] == before + 1 and stats["errors"] == 0
        assert s.client.messages == []


async def test_a_low_threshold_proposes_edits_that_apply(tmp_path: Path, daemon: Daemon) -> None:
    # plain text has no grammar to hold a random model back; threshold 0 lets any change through
    async with lsp_session(tmp_path, options(daemon, threshold=0.0), env=daemon.env) as s:
        uri = s.open(tmp_path / "notes.txt", NOTES, language="plaintext")
        change(s, uri, 2, 1, 2, 8, "bananas")
        answer = await next_edit(s, uri, 1, 9)
        lines = NOTES.replace("apples", "bananas").count("\n")
        assert_answer_shape(answer, lines)
        assert answer["edits"], answer["reason"]
        assert answer["threshold"] == 0.0


async def test_nothing_is_asked_when_the_setting_is_off(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, options(daemon, enable=False), env=daemon.env) as s:
        uri = s.open(tmp_path / "scale.py", SOURCE)
        rename_parameter(s, uri)
        assert await next_edit(s, uri, 0, 16) is None
        assert (await s.stats())["daemon_calls"] == 0
        assert len(await recent_edits(s)) == 1  # still recorded: turning it on finds them


async def test_no_suggestion_while_ghost_text_is_showing(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "scale.py", SOURCE)
        rename_parameter(s, uri)
        shown = None
        for line, character in ((2, 24), (1, 26), (2, 4)):  # random weights may fill with nothing
            result = await s.inline(uri, line, character)
            if result is not None and result.items:
                shown = (line, character)
                break
        assert shown is not None, "no place gave ghost text"
        assert (await s.stats())["ghostText"] == [uri]
        before = await s.stats()
        assert await next_edit(s, uri, *shown) is None
        after = await s.stats()
        assert after["suppressed"] == before["suppressed"] + 1
        assert after["daemon_calls"] == before["daemon_calls"]
        # the editor says the ghost text is gone (Escape): suggestions resume
        s.client.protocol.notify("diffgemma/ghostText", {"textDocument": {"uri": uri}, "visible": False})
        assert_answer_shape(await next_edit(s, uri, *shown), SOURCE.count("\n"))
        assert (await s.stats())["ghostText"] == []


async def test_ghost_text_being_computed_goes_first(tmp_path: Path, daemon: Daemon) -> None:
    # the suggestion is asked while the ghost text for the same document is still being computed:
    # it waits for it, and answers nothing when ghost text came
    async with lsp_session(tmp_path, base_options(daemon, debounceMs=500, nextEdit={"debounceMs": 0}),
                           env=daemon.env) as s:
        uri = s.open(tmp_path / "scale.py", SOURCE)
        rename_parameter(s, uri)
        for line, character in ((2, 24), (1, 26), (2, 4)):
            inline = asyncio.ensure_future(s.inline(uri, line, character))
            await asyncio.sleep(0.1)
            suggestion = await next_edit(s, uri, line, character)
            result = await inline
            if result is not None and result.items:
                assert suggestion is None
                return
            assert_answer_shape(suggestion, SOURCE.count("\n"))
        pytest.fail("no place gave ghost text")


async def interrupted(tmp_path: Path, daemon: Daemon,
                      interrupt: Callable[[Any, str], Awaitable[Any]]) -> dict[str, Any]:
    """A suggestion asked for and waiting out a long debounce, then ``interrupt(session, uri)``: the
    suggestion answers nothing. The server's stats after."""
    async with lsp_session(tmp_path, options(daemon, debounceMs=3000), env=daemon.env) as s:
        uri = s.open(tmp_path / "scale.py", SOURCE)
        rename_parameter(s, uri)
        pending = asyncio.ensure_future(next_edit(s, uri, 0, 16))
        await asyncio.sleep(0.2)
        await interrupt(s, uri)
        assert await pending is None
        return await s.stats()


async def test_a_keystroke_cancels_a_waiting_suggestion(tmp_path: Path, daemon: Daemon) -> None:
    async def keystroke(s: Any, uri: str) -> None:
        change(s, uri, 20, 1, 4, 4, "#")

    stats = await interrupted(tmp_path, daemon, keystroke)
    assert stats["superseded"] >= 1 and stats["daemon_calls"] == 0


async def test_a_ghost_text_request_cancels_a_suggestion_in_the_works(tmp_path: Path, daemon: Daemon) -> None:
    # ghost text goes first: asking for it cancels the document's suggestion, which it would hold
    # back anyway, so the daemon is free for it
    stats = await interrupted(tmp_path, daemon, lambda s, uri: s.inline(uri, 2, 24))
    assert stats["superseded"] >= 1


async def test_malformed_params_are_invalid_params(tmp_path: Path, daemon: Daemon) -> None:
    from pygls.exceptions import JsonRpcException

    async with lsp_session(tmp_path, options(daemon), env=daemon.env) as s:
        for params in ({}, {"textDocument": {"uri": 5}, "position": {"line": 0, "character": 0}},
                       {"textDocument": {"uri": "file:///x.py"}, "position": {"line": -1, "character": 0}}):
            with pytest.raises(JsonRpcException) as caught:
                await s.client.protocol.send_request_async("diffgemma/nextEdit", params)
            assert caught.value.code == -32602
        # a malformed notification is ignored; the server keeps answering
        s.client.protocol.notify("diffgemma/ghostText", {"visible": "no"})
        assert await next_edit(s, "file:///not-open.py", 0, 0) is None
