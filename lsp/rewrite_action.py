"""The "Rewrite selection" code action, its command, and the job that runs the rewrite and applies
it with workspace/applyEdit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from lsprotocol import types

from . import rewrite, workspace_context
from .daemon_calls import ask_daemon
from .documents import Snapshot, editor_text, is_current, is_open, language_of, offset_of, snapshot
from .jsonrpc import invalid_params
from .language_server import DiffgemmaServer
from .params import range_from
from .settings import Settings
from .status import Progress

# server -> client {job, uri, applied}: a rewrite job has finished (its edit applied or not)
REWRITE_DONE = "diffgemma/rewriteDone"

CODE_ACTION_OPTIONS = types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite])


def rewrite_arguments(args: tuple[Any, ...]) -> tuple[str, types.Range, str | None]:
    """(uri, range, instruction) of the rewrite command; anything else is InvalidParams."""
    usage = f"{rewrite.COMMAND} takes (uri, range, optional instruction)"
    if len(args) not in (2, 3) or not isinstance(args[0], str):
        raise invalid_params(usage)
    if len(args) == 3 and args[2] is not None and not isinstance(args[2], str):
        raise invalid_params(f"{usage}: the instruction must be a string")
    instruction = args[2] if len(args) == 3 else None
    return args[0], range_from(args[1]), instruction or None


def start_rewrite(ls: DiffgemmaServer, uri: str, selection: types.Range, instruction: str | None) -> dict[str, Any]:
    """Start rewriting ``selection`` as a job of its own and answer at once.

    Clients such as eglot wait for workspace/executeCommand synchronously (with a timeout),
    and a rewrite takes as long as the model does: the answer only says the job started. The
    job shows work-done progress, sends workspace/applyEdit, and ends with a REWRITE_DONE
    notification carrying its id.
    """
    snap = snapshot(ls, uri)
    start = offset_of(ls, snap, selection.start)
    end = offset_of(ls, snap, selection.end)
    if end <= start:
        ls.show("diffgemma: select the code to rewrite first", types.MessageType.Info)
        return {"started": False}
    job = f"rewrite-{uuid.uuid4().hex[:12]}"
    ls.background(_rewrite_job(ls, job, snap, selection, (start, end), instruction))
    return {"started": True, "job": job}


async def _rewrite_job(ls: DiffgemmaServer, job: str, snap: Snapshot, selection: types.Range,
                       span: tuple[int, int], instruction: str | None) -> None:
    applied = False
    try:
        work = _rewrite_work(ls, snap, selection, span, instruction)
        applied = bool(await ls.inflight.run(rewrite.rewrite_key(snap.uri), work))
    finally:
        ls.protocol.notify(REWRITE_DONE, {"job": job, "uri": snap.uri, "applied": applied})


def _edit_request(ls: DiffgemmaServer, snap: Snapshot, span: tuple[int, int], language: str | None,
                  settings: Settings, instruction: str | None) -> Any:
    """The daemon request for the selection ``span`` (CPU work: call it in a worker thread)."""
    return rewrite.edit_request(
        snap.text, span[0], span[1], language=language, path=snap.path, uri=snap.uri,
        settings=settings, instruction=instruction, extra=workspace_context.extra_files(ls, snap, language),
    )


async def _rewrite_work(ls: DiffgemmaServer, snap: Snapshot, selection: types.Range, span: tuple[int, int],
                        instruction: str | None) -> bool:
    language = language_of(snap)
    request = await asyncio.to_thread(_edit_request, ls, snap, span, language, ls.settings, instruction)
    # the user can stop a rewrite from its progress bar: that cancels the job like an edit does
    key = rewrite.rewrite_key(snap.uri)
    bar = Progress(ls, "rewriting the selection", on_cancel=lambda: ls.inflight.supersede(key))
    try:
        result = await ask_daemon(ls, "edit", request)
    finally:
        bar.end("done")
    if result is None:
        return False
    if not is_current(ls, snap):
        ls.inflight.counters.stale += 1
        ls.show("diffgemma: the document changed during the rewrite; not applied", types.MessageType.Info)
        return False
    ls.inflight.counters.completed += 1
    edit = rewrite.workspace_edit(
        snap.uri, snap.version, selection, editor_text(result.text),
        document_changes=ls.supports_document_changes(),
    )
    return await _apply(ls, edit)


async def _apply(ls: DiffgemmaServer, edit: types.WorkspaceEdit) -> bool:
    """Send the edit; a client that rejects it (or fails) is told so in a message, not a crash."""
    from pygls.exceptions import JsonRpcException

    try:
        params = types.ApplyWorkspaceEditParams(edit=edit, label=rewrite.TITLE)
        answer = await ls.workspace_apply_edit_async(params)
    except JsonRpcException as exc:
        ls.show(f"diffgemma: the editor refused the rewrite: {exc.message}", types.MessageType.Warning)
        return False
    if answer is None or not answer.applied:
        reason = getattr(answer, "failure_reason", None) or "no reason given"
        ls.show(f"diffgemma: the editor did not apply the rewrite ({reason})", types.MessageType.Warning)
        return False
    return True


# -- handlers ------------------------------------------------------------------------------------
# Plain functions: listing actions and starting a job are quick, and the job runs on its own.


def code_action(ls: DiffgemmaServer, params: types.CodeActionParams) -> Sequence[types.CodeAction | types.Command]:
    only = params.context.only
    if only and not any(types.CodeActionKind.RefactorRewrite.value.startswith(k) for k in only):
        return []
    actions = rewrite.code_actions(params.text_document.uri, params.range)
    if not ls.supports_code_action_literals():
        # older clients understand only bare commands here (LSP: codeActionLiteralSupport)
        return [action.command for action in actions if action.command is not None]
    return actions


def rewrite_selection(ls: DiffgemmaServer, *args: Any) -> dict[str, Any]:
    uri, selection, instruction = rewrite_arguments(args)
    if not is_open(ls, uri):
        raise invalid_params(f"{uri} is not open")
    return start_rewrite(ls, uri, selection, instruction)
