"""Issue 13, the language server: every malformed request gets a prompt JSON-RPC error, and a
cancelled request answers RequestCancelled. A real `diffgemma lsp` driven by pytest-lsp, against a
real daemon serving the tiny random-weight checkpoint; the malformed messages are written raw,
as a broken or hostile client would send them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from test_lsp_server import PY, Daemon, base_options, lsp_session, run_daemon, wait_for

from diffgemma.runtime.api.protocol import MAX_STEPS

INVALID_PARAMS = -32602
REQUEST_CANCELLED = -32800
_ids = itertools.count(1)
_MISSING = object()


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


async def raw_request(client: Any, method: str, params: Any = _MISSING, msg_id: Any = None,
                      timeout: float = 60.0) -> Any:
    """Send a request exactly as given (no client-side checking); its result, or its error raised.

    The timeout only turns "no answer at all" (the failure this file is about) into a failed test
    instead of a hung one; no assertion depends on how fast the answer comes.
    """
    proto = client.protocol
    msg_id = f"raw-{next(_ids)}" if msg_id is None else msg_id
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    proto._request_futures[msg_id] = future
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not _MISSING:
        message["params"] = params
    proto._send_data(message)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        pytest.fail(f"no answer to {method} with params {params!r}")


async def error_code(client: Any, method: str, params: Any = _MISSING, **kwargs: Any) -> int:
    with pytest.raises(JsonRpcException) as caught:
        await raw_request(client, method, params, **kwargs)
    return caught.value.code


def inline_params(uri: str, line: Any, character: Any) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 1}}


BAD_POSITIONS = [(-1, 0), (0, -1), (1.5, 0), (0, "3"), (2**31, 0), (0, 2**31), (None, 0), (True, 0), (0, 10**400)]


async def test_malformed_inline_completion_params_get_invalid_params(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "h.py", PY)
        method = types.TEXT_DOCUMENT_INLINE_COMPLETION
        assert await error_code(s.client, method, 5) == INVALID_PARAMS
        assert await error_code(s.client, method) == INVALID_PARAMS
        assert await error_code(s.client, method, None) == INVALID_PARAMS
        assert await error_code(s.client, method, [uri]) == INVALID_PARAMS
        assert await error_code(s.client, method, {"textDocument": {"uri": uri}}) == INVALID_PARAMS
        for line, character in BAD_POSITIONS:
            code = await error_code(s.client, method, inline_params(uri, line, character))
            assert code == INVALID_PARAMS, (line, character)
        for method in (types.TEXT_DOCUMENT_COMPLETION, types.TEXT_DOCUMENT_CODE_ACTION):
            assert await error_code(s.client, method, 5) == INVALID_PARAMS
            assert await error_code(s.client, method, {"textDocument": {"uri": uri},
                                                       "position": {"line": -1, "character": 0}}) == INVALID_PARAMS
        # the server is still there and still answers a good request
        result = await raw_request(s.client, types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 5, 4))
        assert result is None or "items" in str(result)
        assert (await s.stats())["errors"] == 0


async def test_malformed_custom_requests_get_invalid_params(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "c.py", PY)
        for params in (5, None, {"textDocument": {"uri": uri}}, {"textDocument": {"uri": uri},
                                                                 "position": {"line": -1, "character": 0}},
                       {"textDocument": {"uri": uri}, "position": {"line": 2**31, "character": 0}}):
            assert await error_code(s.client, "diffgemma/context", params) == INVALID_PARAMS, params


BAD_COMMANDS: list[Any] = [
    5,
    None,
    {},
    {"command": 5},
    {"command": "diffgemma.rewriteSelection", "arguments": 5},
    {"command": "no.such.command", "arguments": []},
    {"command": "diffgemma.rewriteSelection"},
    {"command": "diffgemma.rewriteSelection", "arguments": ["file:///x.py"]},
    {"command": "diffgemma.rewriteSelection", "arguments": ["URI", {"start": {"line": 0}}]},
    {"command": "diffgemma.rewriteSelection",
     "arguments": ["URI", {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 2}}]},
    {"command": "diffgemma.rewriteSelection",
     "arguments": ["URI", {"start": {"line": 0, "character": 0}, "end": {"line": 2**31, "character": 2}}]},
    {"command": "diffgemma.rewriteSelection",
     "arguments": ["URI", {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}, 7]},
]


async def test_bad_execute_command_gets_invalid_params(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "e.py", PY)
        for params in BAD_COMMANDS:
            if isinstance(params, dict) and isinstance(params.get("arguments"), list):
                params = {**params, "arguments": [uri if a == "URI" else a for a in params["arguments"]]}
            code = await error_code(s.client, types.WORKSPACE_EXECUTE_COMMAND, params)
            assert code == INVALID_PARAMS, params
        assert s.applied == []


async def test_cancelled_requests_answer_request_cancelled(tmp_path: Path, daemon: Daemon) -> None:
    options = base_options(daemon, maxTokens=256, steps=MAX_STEPS)
    async with lsp_session(tmp_path, options, env=daemon.env) as s:
        uri = s.open(tmp_path / "x.py", PY)
        # while the daemon works on it
        pending = asyncio.ensure_future(raw_request(s.client, types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                    inline_params(uri, 5, 4), msg_id=101))
        await wait_for(lambda: daemon.status().get("running") is not None, what="the request to reach the daemon")
        s.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=101))
        with pytest.raises(JsonRpcException) as caught:
            await pending
        assert caught.value.code == REQUEST_CANCELLED
        # while it still waits for its debounce (before any daemon work), with a string id
        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={**options, "debounceMs": 5000}))
        pending = asyncio.ensure_future(raw_request(s.client, types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                    inline_params(uri, 5, 4), msg_id="cancel-me"))
        await asyncio.sleep(0)
        s.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
        with pytest.raises(JsonRpcException) as caught:
            await pending
        assert caught.value.code == REQUEST_CANCELLED
        stats = await s.stats()
        assert stats["cancelled"] >= 1 and stats["completed"] == 0
