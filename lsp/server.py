"""`diffgemma lsp`: ghost-text infill and "Rewrite selection" over the Language Server Protocol.

One DiffgemmaServer holds the state (settings, the daemon connection, in-flight work per
document); the handlers at the bottom are thin and async and call the pure modules (infill,
rewrite, settings). The model lives in the daemon: this process never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from diffgemma import __version__

from . import infill, rewrite
from .daemon_link import DaemonLink, DaemonUnavailableError
from .inflight import Inflight
from .jsonrpc import UINTEGER_MAX, DiffgemmaProtocol, invalid_params
from .positions import offset_to_position, position_to_offset
from .settings import SECTION, ParsedSettings, Settings, parse_settings, settings_to_json

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "diffgemma/status"  # server -> client: {state, message, latencyMs, model}
STATS_REQUEST = "diffgemma/stats"  # client -> server: counters, for status views and tests
# client -> server {textDocument: {uri}, position}: the window the model would see there
CONTEXT_REQUEST = "diffgemma/context"
# server -> client {job, uri, applied}: a rewrite job has finished (its edit applied or not)
REWRITE_DONE = "diffgemma/rewriteDone"
LOAD_POLL_S = 0.5  # how often a waiting request looks whether the daemon is loading its model


@dataclass
class Snapshot:
    """The document as it was when a request arrived; answers for another version are dropped."""

    uri: str
    version: int | None
    text: str
    language_id: str | None
    path: str | None


class _Progress:
    """One work-done progress bar in the client, when the client supports them.

    Creating the token is a request to the client; reports that arrive before it is answered
    are skipped (the status notification carries them too), and ending before then cancels it.
    """

    def __init__(self, server: DiffgemmaServer, message: str, on_cancel: Callable[[], None] | None = None) -> None:
        self.server = server
        self.token: str | None = None
        self.on_cancel = on_cancel  # given: the bar is cancellable, and this stops the work
        if server.supports_work_done_progress():
            self.token = f"diffgemma-{uuid.uuid4().hex[:12]}"
            server.background(self._begin(self.token, message))

    async def _begin(self, token: str, message: str) -> None:
        progress = self.server.work_done_progress
        try:
            await progress.create_async(token)
        except Exception:  # a client refusing progress must not stop the work
            log.debug("client refused work-done progress", exc_info=True)
            return
        if self.token != token:
            return
        cancellable = self.on_cancel is not None
        progress.begin(token, types.WorkDoneProgressBegin(title="diffgemma", message=message, cancellable=cancellable))
        future = progress.tokens.get(token)
        if cancellable and future is not None:
            # pygls cancels the token's future on window/workDoneProgress/cancel
            future.add_done_callback(self._cancelled)

    def _cancelled(self, future: Any) -> None:
        if future.cancelled() and self.token is not None and self.on_cancel is not None:
            self.on_cancel()

    def _ready(self) -> bool:
        return self.token is not None and self.token in self.server.work_done_progress.tokens

    def report(self, message: str) -> None:
        if self._ready():
            self.server.work_done_progress.report(self.token, types.WorkDoneProgressReport(message=message))

    def end(self, message: str) -> None:
        if self._ready():
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
        self.token = None


def loading_line(status: dict[str, Any]) -> str:
    line = f"loading model {status.get('loading_model') or status.get('model') or ''}…"
    progress = status.get("load_progress")
    return f"{line} {progress}" if progress else line


class _LinkEvents:
    """Turns daemon start-up into work-done progress, status notifications and messages."""

    def __init__(self, server: DiffgemmaServer) -> None:
        self.server = server
        self.bar: _Progress | None = None

    def connecting(self) -> None:
        self.server.send_status("starting", "connecting to the diffgemma daemon")
        self.bar = _Progress(self.server, "connecting to the daemon")

    def progress(self, line: str) -> None:
        self.server.send_status("loading", line)
        if self.bar is not None:
            self.bar.report(line)

    def _end(self, message: str) -> None:
        if self.bar is not None:
            self.bar.end(message)
        self.bar = None

    def connected(self, status: dict[str, Any]) -> None:
        model = status.get("model")
        self.server.model_name = model if isinstance(model, str) else None
        state = status.get("state")
        self._end("ready")
        self.server.send_status("ready" if state in (None, "ready", "unloaded") else str(state), "daemon ready")

    def failed(self, reason: str, first: bool) -> None:
        self._end(f"failed: {reason}")
        self.server.send_status("error", reason)
        if first:
            self.server.show(f"diffgemma: {reason}", types.MessageType.Error)


class DiffgemmaServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            name="diffgemma",
            version=__version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=DiffgemmaProtocol,
        )
        self.settings = Settings()
        self.inflight = Inflight()
        self.link = DaemonLink(_LinkEvents(self))
        self.model_name: str | None = None
        self.last_latency_ms: float | None = None
        self._pending_problems: tuple[str, ...] = ()
        self._background: set[asyncio.Future[Any]] = set()
        self.context_workspace: Any = None  # diffgemma.context.crossfile.Workspace, once started
        self._last_error: str | None = None  # the daemon error last shown to the user
        self.configuration_changes = 0  # didChangeConfiguration notifications handled

    # -- settings ----------------------------------------------------------------------------

    def apply_settings(self, raw: Any, *, defer_messages: bool = False) -> ParsedSettings:
        parsed = parse_settings(raw)
        self.settings = parsed.settings
        if defer_messages:
            self._pending_problems = parsed.problems
        else:
            self._show_problems(parsed.problems)
        return parsed

    def flush_setting_problems(self) -> None:
        problems, self._pending_problems = self._pending_problems, ()
        self._show_problems(problems)

    def _show_problems(self, problems: tuple[str, ...]) -> None:
        if problems:
            self.show("diffgemma: invalid settings: " + "; ".join(problems), types.MessageType.Warning)

    async def change_configuration(self, raw: Any) -> None:
        """Apply didChangeConfiguration settings, pulling our section when the client sent none."""
        if _empty(raw):
            # pull model: the client only says "something changed"; ask for our section
            workspace = self.client_capabilities.workspace
            if workspace and workspace.configuration:
                items = [types.ConfigurationItem(section=SECTION)]
                values = await self.workspace_configuration_async(types.ConfigurationParams(items=items))
                raw = values[0] if values else None
        if _empty(raw):
            # Nothing configured on the client's side (eglot sends {} right after connecting and
            # answers [null]): keep what initializationOptions (or a later change) set.
            return
        before = self.settings.daemon
        self.apply_settings(raw)
        if self.settings.daemon != before:
            await self.link.reset()
            self.background(self.warm_up())

    # -- messages to the client ----------------------------------------------------------------

    def show(self, message: str, kind: types.MessageType) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def send_status(self, state: str, message: str = "") -> None:
        self.protocol.notify(
            STATUS_NOTIFICATION,
            {"state": state, "message": message, "latencyMs": self.last_latency_ms, "model": self.model_name},
        )

    def supports_work_done_progress(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def supports_inline_completion(self) -> bool:
        text_document = self.client_capabilities.text_document
        return bool(text_document and text_document.inline_completion is not None)

    def supports_code_action_literals(self) -> bool:
        text_document = self.client_capabilities.text_document
        code_action = text_document.code_action if text_document else None
        return bool(code_action and code_action.code_action_literal_support)

    def supports_document_changes(self) -> bool:
        workspace = self.client_capabilities.workspace
        edit = workspace.workspace_edit if workspace else None
        return bool(edit and edit.document_changes)

    # -- documents -----------------------------------------------------------------------------

    def snapshot(self, uri: str) -> Snapshot:
        doc: TextDocument = self.workspace.get_text_document(uri)
        return Snapshot(uri=uri, version=doc.version, text=doc.source, language_id=doc.language_id, path=doc.path)

    def is_current(self, snap: Snapshot) -> bool:
        doc = self.workspace.text_documents.get(snap.uri)
        return doc is not None and doc.version == snap.version and doc.source == snap.text

    def offset_of(self, snap: Snapshot, position: types.Position) -> int:
        doc = self.workspace.get_text_document(snap.uri)
        return position_to_offset(doc, snap.text, position, self.workspace.position_encoding)

    def word_before(self, uri: str, position: types.Position) -> tuple[types.Position, str]:
        """(start, text) of the identifier that ends at ``position`` in the current document."""
        snap = self.snapshot(uri)
        offset = self.offset_of(snap, position)
        start = _word_before(snap.text, offset)
        doc = self.workspace.get_text_document(uri)
        return offset_to_position(doc, snap.text, start, self.workspace.position_encoding), snap.text[start:offset]

    def language_of(self, snap: Snapshot) -> str | None:
        from diffgemma.context.languages import detect_language

        # an editor's id we do not know (e.g. "plaintext") must not hide what the file name says
        return detect_language(None, snap.language_id) or detect_language(snap.path, None, content=snap.text)

    def extra_files(self, snap: Snapshot, language: str | None) -> list[Any]:
        """Snippets of related files (imports, recent edits) the model may read, within the budget."""
        if not self.settings.completion.cross_file or snap.path is None:
            return []
        workspace = self.context_workspace
        if workspace is None:
            return []
        from diffgemma.runtime.api.protocol import ExtraFile

        budget = self.settings.completion.context_chars // 2
        found = workspace.extra_for(snap.path, snap.text, budget, language=language)
        return [ExtraFile(path=str(path), text=text) for path, text in found]

    def start_context_workspace(self) -> None:
        """Watch the workspace root for recently changed files (runs in a worker thread)."""
        root = self.workspace.root_path
        if not root or self.context_workspace is not None:
            return
        from diffgemma.context.crossfile import Workspace

        workspace = Workspace(root)
        try:
            workspace.start()
        except Exception as exc:  # a root we cannot watch still gets import-based context
            log.warning("cannot watch %s: %s", root, exc)
        self.context_workspace = workspace

    def note_document(self, uri: str, *, opened: bool) -> None:
        """Tell the cross-file tracker about unsaved text (the file watcher cannot see it)."""
        workspace = self.context_workspace
        doc = self.workspace.text_documents.get(uri)
        if workspace is None or doc is None or doc.path is None:
            return
        text = doc.source
        record = workspace.remember if opened else workspace.note_change
        # locating the change diffs the old and new text: keep it off the event loop
        asyncio.get_running_loop().run_in_executor(None, record, doc.path, text)

    # -- model work ----------------------------------------------------------------------------

    async def infill_at(self, uri: str, position: types.Position) -> str | None:
        """The infill at ``position``, or None when disabled, superseded, stale or unavailable."""
        texts = await self.infill_texts_at(uri, position)
        return None if texts is None else (texts[0] if texts else "")

    async def infill_texts_at(self, uri: str, position: types.Position) -> list[str] | None:
        """The answer and its alternatives (``alternatives`` setting) at ``position``; None as above."""
        if uri not in self.workspace.text_documents:
            return None  # only open documents: their text is what the user sees
        snap = self.snapshot(uri)
        if not self.settings.completion.enabled_for(snap.language_id):
            return None
        return await self.inflight.run(uri, self._infill_work(snap, position))

    async def _infill_work(self, snap: Snapshot, position: types.Position) -> list[str] | None:
        settings = self.settings
        if settings.completion.debounce_ms:
            await asyncio.sleep(settings.completion.debounce_ms / 1000)
        if not self.is_current(snap):
            self.inflight.counters.stale += 1
            return None
        offset = self.offset_of(snap, position)
        language = self.language_of(snap)
        # tree-sitter parsing and the file scan are CPU work: keep them off the event loop
        request = await asyncio.to_thread(self.build_infill, snap, offset, language, settings)
        result = await self._ask_daemon("infill", request)
        if result is None:
            return None
        if not self.is_current(snap):
            self.inflight.counters.stale += 1
            return None
        self.inflight.counters.completed += 1
        return [editor_text(t) for t in infill.answer_texts(result, settings.completion.confident_prefix)]

    def build_infill(self, snap: Snapshot, offset: int, language: str | None, settings: Settings) -> Any:
        return infill.infill_request(
            snap.text,
            offset,
            language=language,
            path=snap.path,
            uri=snap.uri,
            settings=settings,
            extra=self.extra_files(snap, language),
        )

    @staticmethod
    async def _send(client: Any, kind: str, request: Any, watcher: asyncio.Future[None]) -> Any:
        try:
            return await (client.infill(request) if kind == "infill" else client.edit(request))
        finally:
            watcher.cancel()

    async def _watch_model_load(self, client: Any) -> None:
        """While a request waits for the daemon to (re)load its model, show that as progress."""
        from diffgemma.runtime.api.client import DaemonError

        bar: _Progress | None = None
        try:
            await asyncio.sleep(LOAD_POLL_S)  # most requests are answered before the first look
            while True:
                status = await client.status()
                if status.get("state") != "loading":
                    return
                line = loading_line(status)
                self.send_status("loading", line)
                if bar is None:
                    bar = _Progress(self, line)
                else:
                    bar.report(line)
                await asyncio.sleep(LOAD_POLL_S)
        except DaemonError:
            return  # the request itself reports what went wrong
        finally:
            if bar is not None:
                bar.end("model loaded")

    async def _ask_daemon(self, kind: str, request: Any) -> Any:
        """Send one request; None (with a status/message) when the daemon cannot answer."""
        from diffgemma.runtime.api.client import DaemonError, DaemonUnavailable

        try:
            client = await self.link.client(self.settings.daemon)
        except DaemonUnavailableError:
            return None
        counters = self.inflight.counters
        counters.daemon_calls += 1
        started = time.perf_counter()
        watcher = asyncio.ensure_future(self._watch_model_load(client))
        try:
            result = await self._send(client, kind, request, watcher)
        except asyncio.CancelledError:
            counters.daemon_cancelled += 1
            raise
        except DaemonUnavailable as exc:
            counters.errors += 1
            self.link.lost(f"the daemon went away: {exc}")
            return None
        except DaemonError as exc:
            counters.errors += 1
            self.send_status("error", str(exc))
            # a model that cannot load fails every keystroke: say it once, until something works
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                self.show(f"diffgemma: {exc}", types.MessageType.Error)
            return None
        if result.finish_reason == "cancelled":  # the daemon let a newer request win
            counters.daemon_cancelled += 1
            return None
        self._last_error = None
        self.last_latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self.model_name = result.model or self.model_name
        self.send_status("ready", f"{kind} {result.finish_reason}")
        return result

    def start_rewrite(self, uri: str, selection: types.Range, instruction: str | None) -> dict[str, Any]:
        """Start rewriting ``selection`` as a job of its own and answer at once.

        Clients such as eglot wait for workspace/executeCommand synchronously (with a timeout),
        and a rewrite takes as long as the model does: the answer only says the job started. The
        job shows work-done progress, sends workspace/applyEdit, and ends with a REWRITE_DONE
        notification carrying its id.
        """
        snap = self.snapshot(uri)
        start = self.offset_of(snap, selection.start)
        end = self.offset_of(snap, selection.end)
        if end <= start:
            self.show("diffgemma: select the code to rewrite first", types.MessageType.Info)
            return {"started": False}
        job = f"rewrite-{uuid.uuid4().hex[:12]}"
        self.background(self._rewrite_job(job, snap, selection, (start, end), instruction))
        return {"started": True, "job": job}

    async def _rewrite_job(self, job: str, snap: Snapshot, selection: types.Range, span: tuple[int, int],
                           instruction: str | None) -> None:
        applied = False
        try:
            work = self._rewrite_work(snap, selection, span, instruction)
            applied = bool(await self.inflight.run(f"{snap.uri}#rewrite", work))
        finally:
            self.protocol.notify(REWRITE_DONE, {"job": job, "uri": snap.uri, "applied": applied})

    async def _rewrite_work(self, snap: Snapshot, selection: types.Range, span: tuple[int, int],
                            instruction: str | None) -> bool:
        language = self.language_of(snap)
        settings = self.settings
        request = await asyncio.to_thread(
            lambda: rewrite.edit_request(
                snap.text, span[0], span[1], language=language, path=snap.path, uri=snap.uri,
                settings=settings, instruction=instruction, extra=self.extra_files(snap, language),
            )
        )
        # the user can stop a rewrite from its progress bar: that cancels the job like an edit does
        key = f"{snap.uri}#rewrite"
        bar = _Progress(self, "rewriting the selection", on_cancel=lambda: self.inflight.supersede(key))
        try:
            result = await self._ask_daemon("edit", request)
        finally:
            bar.end("done")
        if result is None:
            return False
        if not self.is_current(snap):
            self.inflight.counters.stale += 1
            self.show("diffgemma: the document changed during the rewrite; not applied", types.MessageType.Info)
            return False
        self.inflight.counters.completed += 1
        edit = rewrite.workspace_edit(
            snap.uri, snap.version, selection, editor_text(result.text),
            document_changes=self.supports_document_changes(),
        )
        return await self._apply(edit)

    async def _apply(self, edit: types.WorkspaceEdit) -> bool:
        """Send the edit; a client that rejects it (or fails) is told so in a message, not a crash."""
        from pygls.exceptions import JsonRpcException

        try:
            params = types.ApplyWorkspaceEditParams(edit=edit, label=rewrite.TITLE)
            answer = await self.workspace_apply_edit_async(params)
        except JsonRpcException as exc:
            self.show(f"diffgemma: the editor refused the rewrite: {exc.message}", types.MessageType.Warning)
            return False
        if answer is None or not answer.applied:
            reason = getattr(answer, "failure_reason", None) or "no reason given"
            self.show(f"diffgemma: the editor did not apply the rewrite ({reason})", types.MessageType.Warning)
            return False
        return True

    async def warm_up(self) -> None:
        """Connect (and start the daemon if allowed) before the first keystroke needs it."""
        with contextlib.suppress(DaemonUnavailableError):
            await self.link.client(self.settings.daemon)

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` without awaiting it, keeping a reference so it is not collected mid-way."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stats(self) -> dict[str, Any]:
        return {
            **self.inflight.counters.as_dict(),
            "active": self.inflight.active(),
            "connected": self.link.connected,
            "lastLatencyMs": self.last_latency_ms,
            "model": self.model_name,
            "settings": settings_to_json(self.settings),
            "configurationChanges": self.configuration_changes,
        }


def editor_text(text: str) -> str:
    """Model output as an editor can take it: without NUL characters.

    A NUL is never part of source code, and some clients reject the whole message that carries
    one (Emacs's JSON parser refuses "\u0000"), which would lose the answer and leave the
    request waiting until it times out.
    """
    return text.replace("\x00", "")


def _field(value: Any, name: str) -> Any:
    """A field of custom-request params: pygls hands them over as namedtuples, tests as dicts."""
    return value[name] if isinstance(value, dict) else getattr(value, name)


def _uinteger(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINTEGER_MAX:
        raise invalid_params(f"{what} must be an integer from 0 to {UINTEGER_MAX} (got {value!r})")
    return value


def _position_from(value: Any, what: str = "position") -> types.Position:
    try:
        line, character = _field(value, "line"), _field(value, "character")
    except (KeyError, AttributeError, TypeError):
        raise invalid_params(f"{what} must be {{line, character}}") from None
    return types.Position(line=_uinteger(line, f"{what}.line"), character=_uinteger(character, f"{what}.character"))


def _range_from(value: Any) -> types.Range:
    try:
        start, end = _field(value, "start"), _field(value, "end")
    except (KeyError, AttributeError, TypeError):
        raise invalid_params("range must be {start, end}") from None
    return types.Range(start=_position_from(start, "range.start"), end=_position_from(end, "range.end"))


def _rewrite_arguments(args: tuple[Any, ...]) -> tuple[str, types.Range, str | None]:
    """(uri, range, instruction) of the rewrite command; anything else is InvalidParams."""
    usage = f"{rewrite.COMMAND} takes (uri, range, optional instruction)"
    if len(args) not in (2, 3) or not isinstance(args[0], str):
        raise invalid_params(usage)
    if len(args) == 3 and args[2] is not None and not isinstance(args[2], str):
        raise invalid_params(f"{usage}: the instruction must be a string")
    instruction = args[2] if len(args) == 3 else None
    return args[0], _range_from(args[1]), instruction or None


def _word_before(text: str, offset: int) -> int:
    """Where the identifier that ends at ``offset`` starts (``offset`` itself when none does)."""
    start = offset
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return start


def _empty(raw: Any) -> bool:
    """No settings at all: null, {}, or {"diffgemma": null / {}}."""
    if isinstance(raw, dict) and set(raw) <= {SECTION}:
        return _empty(raw.get(SECTION)) if raw else True
    return raw is None


def create_server() -> DiffgemmaServer:
    server = DiffgemmaServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: DiffgemmaServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options, defer_messages=True)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: DiffgemmaServer, params: types.InitializedParams) -> None:
        ls.flush_setting_problems()
        ls.background(ls.warm_up())
        ls.background(asyncio.to_thread(ls.start_context_workspace))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: DiffgemmaServer, params: types.DidChangeConfigurationParams) -> None:
        try:
            await ls.change_configuration(params.settings)
        finally:
            ls.configuration_changes += 1  # handled (pulls answered): stats views and tests see it

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DiffgemmaServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.inflight.supersede(params.text_document.uri)
        ls.note_document(params.text_document.uri, opened=True)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DiffgemmaServer, params: types.DidChangeTextDocumentParams) -> None:
        # whatever was being computed is for a text that no longer exists
        ls.inflight.supersede(params.text_document.uri)
        ls.note_document(params.text_document.uri, opened=False)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DiffgemmaServer, params: Any) -> None:
        workspace, ls.context_workspace = ls.context_workspace, None
        if workspace is not None:
            workspace.stop()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DiffgemmaServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.inflight.supersede(params.text_document.uri)
        ls.inflight.supersede(f"{params.text_document.uri}#rewrite")

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: DiffgemmaServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        texts = await ls.infill_texts_at(params.text_document.uri, params.position)
        if texts is None:
            return None
        return types.InlineCompletionList(items=infill.inline_items(texts, params.position))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))
    async def completion(ls: DiffgemmaServer, params: types.CompletionParams) -> types.CompletionList | None:
        if ls.supports_inline_completion():
            # the client shows ghost text already; a second model run per keystroke would only
            # compete with it for the daemon
            return types.CompletionList(is_incomplete=True, items=[])
        text = await ls.infill_at(params.text_document.uri, params.position)
        if text is None:
            return None
        word_start, word = ls.word_before(params.text_document.uri, params.position)
        return infill.completion_list(text, params.position, word_start, word)

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )
    def code_action(ls: DiffgemmaServer, params: types.CodeActionParams) -> list[types.CodeAction | types.Command]:
        only = params.context.only
        if only and not any(types.CodeActionKind.RefactorRewrite.value.startswith(k) for k in only):
            return []
        actions = rewrite.code_actions(params.text_document.uri, params.range)
        if not ls.supports_code_action_literals():
            # older clients understand only bare commands here (LSP: codeActionLiteralSupport)
            return [action.command for action in actions if action.command is not None]  # type: ignore[misc]
        return actions

    @server.command(rewrite.COMMAND)
    def rewrite_selection(ls: DiffgemmaServer, *args: Any) -> dict[str, Any]:
        uri, selection, instruction = _rewrite_arguments(args)
        if uri not in ls.workspace.text_documents:
            raise invalid_params(f"{uri} is not open")
        return ls.start_rewrite(uri, selection, instruction)

    @server.feature(STATS_REQUEST)
    def stats(ls: DiffgemmaServer, params: Any) -> dict[str, Any]:
        return ls.stats()

    @server.feature(CONTEXT_REQUEST)
    async def context(ls: DiffgemmaServer, params: Any) -> dict[str, Any] | None:
        try:
            uri = _field(_field(params, "textDocument"), "uri")
            where = _field(params, "position")
        except (KeyError, AttributeError, TypeError):
            raise invalid_params(f"{CONTEXT_REQUEST} takes {{textDocument: {{uri}}, position}}") from None
        if not isinstance(uri, str):
            raise invalid_params("textDocument.uri must be a string")
        position = _position_from(where)
        if uri not in ls.workspace.text_documents:
            return None
        snap = ls.snapshot(uri)
        offset = ls.offset_of(snap, position)
        request = await asyncio.to_thread(ls.build_infill, snap, offset, ls.language_of(snap), ls.settings)
        return {
            "version": snap.version,
            "offset": offset,
            "prefix": request.prefix,
            "suffix": request.suffix,
            "language": request.language,
            "extra": [extra.path for extra in request.extra],
        }

    return server


def serve(*, tcp: bool = False, host: str = "127.0.0.1", port: int = 2087) -> None:
    server = create_server()
    if tcp:
        server.start_tcp(host, port)
    else:
        server.start_io()
