"""Pure pieces of "Rewrite selection": the daemon request for a range and the workspace edit."""

from __future__ import annotations

from collections.abc import Sequence

from lsprotocol import types

from diffgemma.runtime.api import request_builder
from diffgemma.runtime.api.protocol import EditRequest, ExtraFile

from .settings import Settings

COMMAND = "diffgemma.rewriteSelection"
TITLE = "Rewrite selection"


def rewrite_key(uri: str) -> str:
    """A document's rewrite key, both in flight here and as the daemon's supersession key: a
    rewrite and the ghost text of the same document do not cancel each other."""
    return f"{uri}#rewrite"


def edit_request(
    text: str,
    start: int,
    end: int,
    *,
    language: str | None,
    path: str | None,
    uri: str,
    settings: Settings,
    instruction: str | None = None,
    extra: Sequence[ExtraFile] = (),
) -> EditRequest:
    buffer = request_builder.Buffer(text=text, language=language, path=path, document=uri, extra=tuple(extra))
    completion = settings.completion
    sampling = request_builder.Sampling(max_tokens=completion.max_tokens, steps=completion.steps,
                                        model=settings.daemon.model, client=rewrite_key(uri))
    return request_builder.edit_request(buffer, start, end, completion.context_chars, sampling,
                                        instruction=instruction)


def code_actions(uri: str, selection: types.Range) -> list[types.CodeAction]:
    """The rewrite action for a non-empty selection.

    It carries a command rather than an edit: the model runs only when the user picks it, not
    every time the editor asks which actions exist.
    """
    if selection.start == selection.end:
        return []
    return [
        types.CodeAction(
            title=TITLE,
            kind=types.CodeActionKind.RefactorRewrite,
            command=types.Command(title=TITLE, command=COMMAND, arguments=[uri, selection]),
        )
    ]


def workspace_edit(
    uri: str, version: int | None, selection: types.Range, new_text: str, *, document_changes: bool
) -> types.WorkspaceEdit:
    """Replace ``selection`` with ``new_text``.

    With ``documentChanges`` the edit names the document version it was computed for, so the
    client refuses it if the user typed meanwhile instead of clobbering their text.
    """
    edit = types.TextEdit(range=selection, new_text=new_text)
    if document_changes:
        return types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                    edits=[edit],
                )
            ]
        )
    return types.WorkspaceEdit(changes={uri: [edit]})
