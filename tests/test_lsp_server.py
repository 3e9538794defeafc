"""End to end: a real `diffgemma lsp` subprocess driven by pytest-lsp, against a real daemon serving
the tiny random-weight checkpoint on a temp socket. Random weights: assert structure, not content."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient, make_test_lsp_client

from diffgemma.runtime.api.client import Client
from diffgemma.runtime.api.protocol import MAX_STEPS

STARTUP_TIMEOUT_S = 180.0


def diffgemma_cmd() -> list[str]:
    script = Path(sys.executable).with_name("diffgemma")
    if script.exists():
        return [str(script)]
    found = shutil.which("diffgemma")
    return [found] if found else [sys.executable, "-c", "from diffgemma.cli.app import main; main()"]


@dataclass
class Daemon:
    socket: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def status(self) -> dict[str, Any]:
        with Client(socket=self.socket, timeout=30.0) as client:
            return client.status()


def _isolated_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("runtime", "state", "config"):
        (root / name).mkdir(exist_ok=True)
    env["DIFFGEMMA_RUNTIME_DIR"] = str(root / "runtime")
    env["DIFFGEMMA_STATE_DIR"] = str(root / "state")
    env["DIFFGEMMA_CONFIG_DIR"] = str(root / "config")
    env.pop("DIFFGEMMA_SOCKET", None)
    return env


@contextlib.contextmanager
def run_daemon(model_dir: Path, *args: str) -> Iterator[Daemon]:
    # a short directory: Unix socket paths are limited to ~100 bytes
    root = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    socket = root / "s.sock"
    env = _isolated_env(root)
    log = (root / "daemon.log").open("wb")
    process = subprocess.Popen(
        [*diffgemma_cmd(), "serve", "--model", str(model_dir), "--socket", str(socket), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with Client(socket=socket, timeout=10.0) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
                if client.health() and client.status().get("state") != "loading":
                    break
                if time.monotonic() > deadline:
                    pytest.fail("daemon did not become healthy")
                time.sleep(0.1)
        yield Daemon(socket=socket, env=env, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    with run_daemon(tiny_model_dir) as d:
        yield d


def plain(value: Any) -> Any:
    """pygls hands custom messages over as namedtuples: back to dicts/lists for asserting."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass
class Session:
    client: LanguageClient
    result: types.InitializeResult
    status: list[dict[str, Any]] = field(default_factory=list)
    applied: list[types.ApplyWorkspaceEditParams] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)  # diffgemma/rewriteDone notifications

    async def stats(self) -> dict[str, Any]:
        return plain(await self.client.protocol.send_request_async("diffgemma/stats", {}))

    async def context(self, uri: str, line: int, character: int) -> dict[str, Any]:
        params = {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}
        return plain(await self.client.protocol.send_request_async("diffgemma/context", params))

    def open(self, path: Path, text: str, language: str = "python", version: int = 1) -> str:
        uri = path.as_uri()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
            )
        )
        return uri

    async def inline(self, uri: str, line: int, character: int) -> types.InlineCompletionList | None:
        return await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            )
        )


def capabilities(
    *, inline: bool = True, document_changes: bool = True, code_action_literals: bool = True
) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(dynamic_registration=False),
            completion=types.CompletionClientCapabilities(),
            code_action=types.CodeActionClientCapabilities(
                code_action_literal_support=types.ClientCodeActionLiteralOptions(
                    code_action_kind=types.ClientCodeActionKindOptions(
                        value_set=[types.CodeActionKind.Refactor, types.CodeActionKind.RefactorRewrite]
                    )
                )
            )
            if code_action_literals
            else types.CodeActionClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities() if inline else None,
        ),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            configuration=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=document_changes),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
    )


@contextlib.asynccontextmanager
async def lsp_session(
    root: Path,
    options: Any,
    *,
    env: dict[str, str],
    caps: types.ClientCapabilities | None = None,
    apply_answer: types.ApplyWorkspaceEditResult | None = None,
) -> AsyncIterator[Session]:
    client = make_test_lsp_client()
    session_holder: list[Session] = []

    @client.feature("diffgemma/status")
    def on_status(params: Any) -> None:
        if session_holder:
            session_holder[0].status.append(plain(params))

    @client.feature("diffgemma/rewriteDone")
    def on_rewrite_done(params: Any) -> None:
        session_holder[0].done.append(plain(params))

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        session_holder[0].applied.append(params)
        return apply_answer or types.ApplyWorkspaceEditResult(applied=True)

    await client.start_io(sys.executable, "-m", "diffgemma.lsp", env=env)
    try:
        session = Session(client=client, result=None)  # type: ignore[arg-type]
        session_holder.append(session)
        session.result = await client.initialize_session(
            types.InitializeParams(
                capabilities=caps or capabilities(),
                root_uri=root.as_uri(),
                initialization_options=options,
            )
        )
        yield session
        await client.shutdown_session()
    finally:
        # after a failed assertion the server was never told to exit: stop() would wait forever
        process = client._server
        if process is not None and process.returncode is None:
            process.terminate()
        await client.stop()


def base_options(daemon: Daemon, **extra: Any) -> dict[str, Any]:
    return {"socket": str(daemon.socket), "autoStart": False, "debounceMs": 0, "maxTokens": 8, **extra}


async def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def assert_inline_items(result: types.InlineCompletionList | None, position: types.Position) -> list[str]:
    assert isinstance(result, types.InlineCompletionList)
    texts = []
    for item in result.items:
        assert isinstance(item.insert_text, str)
        assert item.range is not None
        # LSP 3.18: an inline completion range starts and ends on one line
        assert item.range.start.line == item.range.end.line == position.line
        assert item.range.start == position
        texts.append(item.insert_text)
    return texts


PY = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    \n"


async def code_actions(s: Session, uri: str, selection: types.Range) -> list[types.CodeAction | types.Command]:
    """textDocument/codeAction, structured by the LSP rule (a string ``command`` means a Command).

    lsprotocol's client-side hook reads every object with a ``command`` key as a Command, which
    misreads a CodeAction carrying one, so the raw answer is structured here instead.
    """
    proto = s.client.protocol
    original = proto.get_result_type
    proto.get_result_type = lambda method: None if method == types.TEXT_DOCUMENT_CODE_ACTION else original(method)
    try:
        raw = await proto.send_request_async(
            types.TEXT_DOCUMENT_CODE_ACTION,
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=selection,
                context=types.CodeActionContext(diagnostics=[]),
            ),
        )
    finally:
        proto.get_result_type = original
    items = plain(raw) or []
    return [
        proto._converter.structure(item, types.Command if isinstance(item.get("command"), str) else types.CodeAction)
        for item in items
    ]


# -- tests ------------------------------------------------------------------------------------


async def test_initialize_advertises_capabilities(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        caps = s.result.capabilities
        assert caps.inline_completion_provider
        assert caps.completion_provider is not None
        assert isinstance(caps.code_action_provider, types.CodeActionOptions)
        assert types.CodeActionKind.RefactorRewrite in (caps.code_action_provider.code_action_kinds or [])
        assert caps.execute_command_provider is not None
        assert "diffgemma.rewriteSelection" in caps.execute_command_provider.commands
        sync = caps.text_document_sync
        assert isinstance(sync, types.TextDocumentSyncOptions)
        assert sync.change == types.TextDocumentSyncKind.Incremental
        assert sync.open_close
        assert s.result.server_info is not None and s.result.server_info.name == "diffgemma"
        # the server connects to the daemon at start-up and says so
        await wait_for(lambda: any(st["state"] == "ready" for st in s.status), what="ready status")
        assert s.client.messages == []


async def test_incremental_and_full_changes_then_inline_completion(tmp_path: Path, daemon: Daemon) -> None:
    path = tmp_path / "calc.py"
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(path, PY)
        # incremental: type "return" on the empty body line of mul
        s.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=5, character=4), end=types.Position(5, 4)),
                        text="return ",
                    )
                ],
            )
        )
        ctx = await s.context(uri, 5, 11)
        assert ctx["version"] == 2
        assert ctx["prefix"].endswith("def mul(a, b):\n    return ")
        assert ctx["suffix"].startswith("\n")
        assert ctx["language"] == "python"

        position = types.Position(line=5, character=11)
        result = await s.inline(uri, 5, 11)
        assert_inline_items(result, position)

        # full: the client replaces the whole text
        text = "class Box:\n    def area(self):\n        return \n"
        s.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )
        ctx = await s.context(uri, 2, 15)
        assert ctx["version"] == 3
        assert ctx["prefix"].endswith("    def area(self):\n        return ")
        assert ctx["suffix"] == "\n"
        result = await s.inline(uri, 2, 15)
        assert_inline_items(result, types.Position(line=2, character=15))

        stats = await s.stats()
        assert stats["daemon_calls"] == 2
        assert stats["completed"] == 2
        assert stats["errors"] == 0
        # every answer reports its latency in the status notification
        ready = [st for st in s.status if st["state"] == "ready" and st["latencyMs"] is not None]
        assert ready and all(st["latencyMs"] > 0 for st in ready)


async def test_non_ascii_positions_use_utf16_columns(tmp_path: Path, daemon: Daemon) -> None:
    # "é" is one UTF-16 unit, "😀" two; the cursor after "😀 = " is UTF-16 column 13 on line 1
    line = "s = 'é😀'; x = "
    text = f"# café\n{line}\nprint(s)\n"
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "u.py", text)
        utf16_col = len(line.encode("utf-16-le")) // 2
        assert utf16_col == len(line) + 1
        ctx = await s.context(uri, 1, utf16_col)
        assert ctx["prefix"].endswith(line)
        assert ctx["suffix"].startswith("\nprint(s)")
        # a column inside the emoji's surrogate pair lands on the emoji's start, never splits it
        inside = len("s = 'é") + 1
        ctx = await s.context(uri, 1, inside)
        assert ctx["prefix"].endswith("s = 'é")
        assert ctx["suffix"].startswith("😀")
        result = await s.inline(uri, 1, utf16_col)
        assert_inline_items(result, types.Position(line=1, character=utf16_col))

    # a client that negotiates UTF-8 counts columns in bytes
    caps = capabilities()
    caps.general = types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf8])
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env, caps=caps) as s:
        assert s.result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        uri = s.open(tmp_path / "u.py", text)
        ctx = await s.context(uri, 1, len(line.encode("utf-8")))
        assert ctx["prefix"].endswith(line)
        assert ctx["suffix"].startswith("\nprint(s)")


async def test_completion_fallback_is_one_plain_text_item(tmp_path: Path, daemon: Daemon) -> None:
    caps = capabilities(inline=False)
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env, caps=caps) as s:
        uri = s.open(tmp_path / "f.py", PY)
        position = types.Position(line=5, character=4)
        result = await s.client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
        )
        assert isinstance(result, types.CompletionList)
        assert result.is_incomplete
        assert len(result.items) <= 1
        stats = await s.stats()
        assert stats["daemon_calls"] == 1 and stats["completed"] == 1
        for item in result.items:
            assert item.insert_text_format == types.InsertTextFormat.PlainText
            assert isinstance(item.text_edit, types.TextEdit)
            assert item.text_edit.range == types.Range(start=position, end=position)
            assert item.text_edit.new_text

    # a client with inline completion gets ghost text there, and no second model run here
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "f.py", PY)
        result = await s.client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
        )
        assert isinstance(result, types.CompletionList) and not result.items
        assert (await s.stats())["daemon_calls"] == 0


async def test_rewrite_code_action_applies_a_workspace_edit(tmp_path: Path, daemon: Daemon) -> None:
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "r.py", PY)
        selection = types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=16))
        actions = await code_actions(s, uri, selection)
        assert actions is not None and len(actions) == 1
        action = actions[0]
        assert isinstance(action, types.CodeAction)
        assert action.title == "Rewrite selection"
        assert action.kind == types.CodeActionKind.RefactorRewrite
        assert action.command is not None and action.command.command == "diffgemma.rewriteSelection"

        # no action for an empty selection
        empty = types.Range(start=selection.start, end=selection.start)
        none = await code_actions(s, uri, empty)
        assert not none

        # run the command the action carries, the way an editor does (JSON arguments)
        arguments = s.client.protocol._converter.unstructure(action.command.arguments)
        outcome = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=action.command.command, arguments=[*arguments, "use a loop"])
        )
        # answered at once: the rewrite runs as its own job, and says when it is done
        assert outcome["started"] is True and outcome["job"]
        await wait_for(lambda: s.done, what="the rewrite job to finish", timeout=120)
        assert s.done == [{"job": outcome["job"], "uri": uri, "applied": True}]
        assert len(s.applied) == 1
        edit = s.applied[0].edit
        assert edit.document_changes is not None and len(edit.document_changes) == 1
        change = edit.document_changes[0]
        assert isinstance(change, types.TextDocumentEdit)
        assert change.text_document.uri == uri and change.text_document.version == 1
        assert len(change.edits) == 1
        assert change.edits[0].range == selection
        assert isinstance(change.edits[0].new_text, str)
        # the wait was shown as work-done progress
        bars = [r for r in s.client.progress_reports.values() if r and r[0].message == "rewriting the selection"]
        assert len(bars) == 1 and isinstance(bars[0][-1], types.WorkDoneProgressEnd)

        # bad arguments: an InvalidParams answer that names the command, and the server keeps going
        with pytest.raises(JsonRpcException) as caught:
            await s.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="diffgemma.rewriteSelection", arguments=[uri])
            )
        assert caught.value.code == -32602 and "rewriteSelection" in caught.value.message
        assert (await s.stats())["errors"] == 0


async def test_rewrite_for_older_clients_uses_commands_and_plain_changes(tmp_path: Path, daemon: Daemon) -> None:
    caps = capabilities(code_action_literals=False, document_changes=False)
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env, caps=caps) as s:
        uri = s.open(tmp_path / "o.py", PY)
        selection = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=1, character=16))
        actions = await code_actions(s, uri, selection)
        assert actions is not None and len(actions) == 1
        command = actions[0]
        assert isinstance(command, types.Command) and command.command == "diffgemma.rewriteSelection"
        arguments = s.client.protocol._converter.unstructure(command.arguments)
        outcome = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command.command, arguments=arguments)
        )
        assert outcome["started"] is True
        await wait_for(lambda: s.done, what="the rewrite job to finish", timeout=120)
        assert s.done[0]["applied"] is True
        edit = s.applied[0].edit
        assert edit.document_changes is None
        assert edit.changes is not None and list(edit.changes) == [uri]
        assert [e.range for e in edit.changes[uri]] == [selection]


async def test_a_rejected_edit_is_a_message_to_the_user(tmp_path: Path, daemon: Daemon) -> None:
    refusal = types.ApplyWorkspaceEditResult(applied=False, failure_reason="the buffer is read-only")
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env, apply_answer=refusal) as s:
        uri = s.open(tmp_path / "j.py", PY)
        selection = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=1, character=16))
        outcome = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="diffgemma.rewriteSelection", arguments=[uri, selection])
        )
        assert outcome["started"] is True
        await wait_for(lambda: s.done, what="the rewrite job to finish", timeout=120)
        assert s.done[0]["applied"] is False and len(s.applied) == 1
        warnings = [m for m in s.client.messages if m.type == types.MessageType.Warning]
        assert len(warnings) == 1 and "the buffer is read-only" in warnings[0].message
        assert not [m for m in s.client.messages if m.type == types.MessageType.Error]
        assert (await s.stats())["errors"] == 0


async def test_a_rewrite_can_be_cancelled_from_its_progress_bar(tmp_path: Path, daemon: Daemon) -> None:
    # the daemon's most steps, so the rewrite is still running when the cancel arrives
    async with lsp_session(tmp_path, base_options(daemon, maxTokens=256, steps=MAX_STEPS), env=daemon.env) as s:
        uri = s.open(tmp_path / "q.py", PY)
        selection = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=1, character=16))
        outcome = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="diffgemma.rewriteSelection", arguments=[uri, selection])
        )
        assert outcome["started"] is True
        await wait_for(lambda: _daemon_running(daemon), what="the rewrite to reach the daemon")
        await wait_for(lambda: _rewrite_bar(s), what="the rewrite's progress bar")
        token, begin = _rewrite_bar(s)
        assert begin.cancellable is True
        s.client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
        await wait_for(lambda: s.done, what="the rewrite job to finish")
        assert s.done[0]["applied"] is False and s.applied == []
        await wait_for(lambda: _daemon_idle(daemon), what="the daemon to drop the work")
        assert (await s.stats())["daemon_cancelled"] == 1


def _rewrite_bar(s: Session) -> tuple[Any, types.WorkDoneProgressBegin] | None:
    for token, reports in s.client.progress_reports.items():
        first = reports[0] if reports else None
        if isinstance(first, types.WorkDoneProgressBegin) and first.message == "rewriting the selection":
            return token, first
    return None


async def test_mid_word_completion_replaces_the_word(tmp_path: Path, daemon: Daemon) -> None:
    caps = capabilities(inline=False)
    text = "def add(a, b):\n    total = a + b\n    ret\n"
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env, caps=caps) as s:
        uri = s.open(tmp_path / "w.py", text)
        for line, character, word in ((2, 7, "ret"), (2, 6, "re"), (1, 9, "total")):
            position = types.Position(line=line, character=character)
            result = await s.client.text_document_completion_async(
                types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
            )
            assert isinstance(result, types.CompletionList)
            for item in result.items:
                assert isinstance(item.text_edit, types.TextEdit)
                start = types.Position(line=line, character=character - len(word))
                assert item.text_edit.range == types.Range(start=start, end=position)
                assert item.text_edit.new_text.startswith(word) and len(item.text_edit.new_text) > len(word)
                assert item.filter_text is not None and item.filter_text.startswith(word)
                assert item.label.startswith(word) and item.insert_text == item.text_edit.new_text
        assert (await s.stats())["daemon_calls"] == 3


async def test_empty_configuration_keeps_the_initialization_options(tmp_path: Path, daemon: Daemon) -> None:
    # what eglot does: initializationOptions, then didChangeConfiguration {settings: {}}, and
    # [null] when asked for the section
    options = {**base_options(daemon), "enable": {"python": False}, "contextChars": 777}
    async with lsp_session(tmp_path, options, env=daemon.env) as s:
        s.client.set_configuration(None, section="diffgemma")
        for settings in ({}, None, {"diffgemma": None}, {"diffgemma": {}}):
            s.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=settings))
        await wait_for(lambda: _configuration_changes(s, 4), what="the four changes (and their pulls) handled")
        stats = await s.stats()
        assert stats["settings"]["contextChars"] == 777 and await _python_disabled(s)
        uri = s.open(tmp_path / "k.py", PY)
        assert await s.inline(uri, 5, 4) is None
        assert (await s.stats())["daemon_calls"] == 0
        assert s.client.messages == []


async def test_cancel_request_stops_daemon_work(tmp_path: Path, daemon: Daemon) -> None:
    # enough tokens and steps that the request is still running when the cancel arrives
    options = base_options(daemon, maxTokens=512, steps=MAX_STEPS)
    async with lsp_session(tmp_path, options, env=daemon.env) as s:
        uri = s.open(tmp_path / "c.py", PY)
        before = daemon.status()
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=5, character=4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
        pending = asyncio.ensure_future(
            s.client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me")
        )
        await wait_for(lambda: _daemon_running(daemon), what="the request to reach the daemon")
        s.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
        with pytest.raises(JsonRpcRequestCancelled):
            await pending
        stats = await s.stats()
        assert stats["cancelled"] == 1
        assert stats["daemon_cancelled"] == 1
        assert stats["completed"] == 0
        # the daemon dropped the work: nothing queued or running, and it never answered it
        await wait_for(lambda: _daemon_idle(daemon), what="the daemon to go idle")
        after = daemon.status()
        assert after["requests_served"] == before["requests_served"]
        assert after["cancelled"] == before["cancelled"] + 1
        # the daemon is free again: a short request goes through
        s.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=base_options(daemon)))
        assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))


def _daemon_running(daemon: Daemon) -> bool:
    return daemon.status().get("running") is not None


def _daemon_idle(daemon: Daemon) -> bool:
    status = daemon.status()
    return status["queue_length"] == 0 and status["running"] is None


async def test_superseded_and_stale_answers_are_dropped(tmp_path: Path, daemon: Daemon) -> None:
    # The debounce holds each request far longer than the client takes to send the next message,
    # even on a busy machine: no request reaches the daemon before it is superseded.
    async with lsp_session(tmp_path, base_options(daemon, debounceMs=3000), env=daemon.env) as s:
        uri = s.open(tmp_path / "s.py", PY)
        # an edit while the request waits: the answer would be for text that is gone
        first = asyncio.ensure_future(s.inline(uri, 5, 4))
        await asyncio.sleep(0)  # let the request go out before the edit
        s.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(5, 4), end=types.Position(5, 4)), text="r"
                    )
                ],
            )
        )
        assert await first is None
        # a newer request for the same document supersedes the older one
        older = asyncio.ensure_future(s.inline(uri, 5, 5))
        await asyncio.sleep(0)
        newer = await s.inline(uri, 5, 5)
        assert await older is None
        assert_inline_items(newer, types.Position(line=5, character=5))
        stats = await s.stats()
        assert stats["superseded"] >= 2
        assert stats["daemon_calls"] == 1 and stats["completed"] == 1


async def test_edit_during_daemon_work_cancels_it_and_drops_the_answer(tmp_path: Path, daemon: Daemon) -> None:
    # the document changes while the daemon is working on the old text: the work is cancelled
    # (the HTTP request closed) and the client gets no answer for the old version
    # the daemon's most steps, so the work is still running however slow the machine is
    async with lsp_session(tmp_path, base_options(daemon, maxTokens=256, steps=MAX_STEPS), env=daemon.env) as s:
        uri = s.open(tmp_path / "v.py", PY)
        pending = asyncio.ensure_future(s.inline(uri, 5, 4))
        await wait_for(lambda: _daemon_running(daemon), what="the request to reach the daemon")
        s.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=PY + "# more\n")],
            )
        )
        assert await pending is None
        stats = await s.stats()
        assert stats["completed"] == 0
        assert stats["superseded"] == 1
        assert stats["daemon_cancelled"] == 1
        await wait_for(lambda: _daemon_idle(daemon), what="the daemon to go idle")


async def test_invalid_settings_are_survived(tmp_path: Path, daemon: Daemon) -> None:
    options = {**base_options(daemon), "maxTokens": "lots", "debounceMs": -5, "colour": "blue"}
    async with lsp_session(tmp_path, options, env=daemon.env) as s:
        await wait_for(lambda: s.client.messages, what="a message about the settings")
        message = s.client.messages[0]
        assert message.type == types.MessageType.Warning
        for name in ("maxTokens", "debounceMs", "colour"):
            assert name in message.message
        uri = s.open(tmp_path / "i.py", PY)
        assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))

        # and again through didChangeConfiguration (nested the way VS Code sends it)
        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"diffgemma": {**base_options(daemon), "steps": "many"}})
        )
        await wait_for(lambda: len(s.client.messages) >= 2, what="a second message")
        assert "steps" in s.client.messages[1].message
        assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))

        # disabling a language turns ghost text off without a daemon call
        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={**base_options(daemon), "enable": {"python": False}})
        )
        calls = (await s.stats())["daemon_calls"]
        await asyncio.sleep(0.1)
        assert await s.inline(uri, 5, 4) is None
        assert (await s.stats())["daemon_calls"] == calls


async def test_pull_configuration_when_the_client_sends_none(tmp_path: Path, daemon: Daemon) -> None:
    # clients that only say "configuration changed" get asked for the diffgemma section
    async with lsp_session(tmp_path, base_options(daemon), env=daemon.env) as s:
        uri = s.open(tmp_path / "p.py", PY)
        s.client.set_configuration({**base_options(daemon), "enable": {"python": False}}, section="diffgemma")
        s.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await wait_for(lambda: _python_disabled(s), what="the pulled settings", timeout=30)
        assert await s.inline(uri, 5, 4) is None
        assert (await s.stats())["daemon_calls"] == 0
        assert s.client.messages == []


async def _configuration_changes(s: Session, count: int) -> bool:
    return (await s.stats())["configurationChanges"] >= count


async def _python_disabled(s: Session) -> bool:
    # (pygls hands custom answers over as namedtuples, which rename a "*" key)
    return (await s.stats())["settings"]["enable"].get("python") is False


async def test_missing_daemon_gives_a_clear_message_and_server_keeps_answering(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgm", dir="/tmp"))
    try:
        options = {"socket": str(root / "none.sock"), "autoStart": False, "debounceMs": 0}
        async with lsp_session(tmp_path, options, env=_isolated_env(root)) as s:
            await wait_for(lambda: s.client.messages, what="an error message")
            assert s.client.messages[0].type == types.MessageType.Error
            assert "daemon" in s.client.messages[0].message
            assert str(root / "none.sock") in s.client.messages[0].message
            assert any(st["state"] == "error" for st in s.status)
            uri = s.open(tmp_path / "m.py", PY)
            assert await s.inline(uri, 5, 4) is None
            actions = await code_actions(s, uri, types.Range(start=types.Position(0, 0), end=types.Position(1, 0)))
            assert actions and actions[0].title == "Rewrite selection"
            # one message, not one per keystroke
            assert len([m for m in s.client.messages if m.type == types.MessageType.Error]) == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_auto_start_reports_work_done_progress(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dga", dir="/tmp"))
    env = _isolated_env(root)
    socket = root / "auto.sock"
    try:
        options = {"socket": str(socket), "model": str(tiny_model_dir), "autoStart": True, "debounceMs": 0}
        options["maxTokens"] = 8
        async with lsp_session(tmp_path, options, env=env) as s:
            uri = s.open(tmp_path / "a.py", PY)
            # the first request waits for the start-up the server began at initialize
            assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))
            assert s.client.messages == []
            reports = [r for token, rs in s.client.progress_reports.items() if "diffgemma" in str(token) for r in rs]
            assert isinstance(reports[0], types.WorkDoneProgressBegin)
            assert isinstance(reports[-1], types.WorkDoneProgressEnd)
            messages = [r.message for r in reports if isinstance(r, types.WorkDoneProgressReport)]
            assert any("starting daemon" in (m or "") for m in messages)
            states = [st["state"] for st in s.status]
            assert states[0] == "starting" and "loading" in states and states[-1] == "ready"
    finally:
        subprocess.run(
            [*diffgemma_cmd(), "daemon", "stop", "--socket", str(socket)], env=env, capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


async def test_model_load_during_a_request_shows_progress(tmp_path: Path, tiny_model_dir: Path) -> None:
    # a daemon that loads its model on the first request (and unloads it after each one)
    with run_daemon(tiny_model_dir, "--no-preload", "--keep-alive", "0") as cold:
        assert cold.status()["state"] == "unloaded"
        async with lsp_session(tmp_path, base_options(cold), env=cold.env) as s:
            uri = s.open(tmp_path / "l.py", PY)
            assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))
            loading = [st for st in s.status if st["state"] == "loading"]
            assert loading and all("loading model" in st["message"] for st in loading)
            assert s.status[-1]["state"] == "ready"
            bars = [
                reports
                for reports in s.client.progress_reports.values()
                if reports
                and isinstance(reports[0], types.WorkDoneProgressBegin)
                and "loading model" in (reports[0].message or "")
            ]
            assert len(bars) == 1
            assert isinstance(bars[0][-1], types.WorkDoneProgressEnd)


async def test_daemon_error_is_shown_once_and_cleared_by_success(tmp_path: Path, daemon: Daemon) -> None:
    # last in the module: asking for a model that is not there may make the daemon drop its model
    missing = str(tmp_path / "no-such-model")
    async with lsp_session(tmp_path, base_options(daemon, model=missing), env=daemon.env) as s:
        uri = s.open(tmp_path / "e.py", PY)
        assert await s.inline(uri, 5, 4) is None
        assert await s.inline(uri, 5, 4) is None
        errors = [m for m in s.client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1 and missing in errors[0].message
        assert s.status[-1]["state"] == "error"
        assert (await s.stats())["errors"] == 2
        # back to the daemon's own model: answers again, and the status says so
        s.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=base_options(daemon)))
        assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))
        assert s.status[-1]["state"] == "ready"
