"""Cross-file context: the workspace tracker that offers snippets of related files (imports,
recent edits) for a request, fed by the file watcher and by the editor's unsaved text."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .documents import Snapshot
    from .language_server import DiffgemmaServer

log = logging.getLogger(__name__)


def start(ls: DiffgemmaServer) -> None:
    """Watch the workspace root for recently changed files (runs in a worker thread)."""
    root = ls.workspace.root_path
    if not root or ls.context_workspace is not None:
        return
    from diffgemma.context.crossfile import Workspace

    workspace = Workspace(root)
    try:
        workspace.start()
    except Exception as exc:  # a root we cannot watch still gets import-based context
        log.warning("cannot watch %s: %s", root, exc)
    ls.context_workspace = workspace


def stop(ls: DiffgemmaServer) -> None:
    workspace, ls.context_workspace = ls.context_workspace, None
    if workspace is not None:
        workspace.stop()


def note_document(ls: DiffgemmaServer, uri: str, *, opened: bool) -> None:
    """Tell the cross-file tracker about unsaved text (the file watcher cannot see it)."""
    workspace = ls.context_workspace
    doc = ls.workspace.text_documents.get(uri)
    if workspace is None or doc is None or doc.path is None:
        return
    text = doc.source
    record = workspace.remember if opened else workspace.note_change
    # locating the change diffs the old and new text: keep it off the event loop
    asyncio.get_running_loop().run_in_executor(None, record, doc.path, text)


def extra_files(ls: DiffgemmaServer, snap: Snapshot, language: str | None) -> list[Any]:
    """Snippets of related files (imports, recent edits) the model may read, within the budget."""
    if not ls.settings.completion.cross_file or snap.path is None:
        return []
    workspace = ls.context_workspace
    if workspace is None:
        return []
    from diffgemma.runtime.api.request_builder import cross_file_context, extra_budget

    budget = extra_budget(ls.settings.completion.context_chars)
    return cross_file_context(snap.path, snap.text, budget, language, workspace)
