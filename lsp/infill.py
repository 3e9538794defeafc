"""Pure pieces of ghost-text infill: the daemon request for a cursor, and the LSP items for an answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lsprotocol import types

from diffgemma.runtime.api import request_builder
from diffgemma.runtime.api.protocol import ExtraFile, InfillRequest

from .settings import Settings


def infill_request(
    text: str,
    offset: int,
    *,
    language: str | None,
    path: str | None,
    uri: str,
    settings: Settings,
    extra: Sequence[ExtraFile] = (),
) -> InfillRequest:
    """Cut a syntactic window around ``offset`` and wrap it as a daemon request.

    ``client`` is the document uri: the daemon lets a newer request of the same client supersede
    an older one, so two keystrokes never queue two full denoising runs.
    """
    completion = settings.completion
    # Keyed by document, the context module re-parses incrementally from this buffer's last tree.
    buffer = request_builder.Buffer(text=text, language=language, path=path, document=uri, extra=tuple(extra))
    sampling = request_builder.Sampling(max_tokens=completion.max_tokens, steps=completion.steps,
                                        model=settings.daemon.model, client=uri)
    return request_builder.infill_request(buffer, offset, completion.context_chars, sampling,
                                          alternatives=completion.alternatives,
                                          confidence=completion.confident_prefix is not None)


def answer_texts(result: Any, confident_prefix: float | None, request: Any = None) -> list[str]:
    """The texts to offer: the answer, then the other alternatives. With ``confident_prefix`` the
    answer stops before its first token under that confidence (the alternatives carry no tokens
    and are offered whole); a cut that would add a syntax error to ``request``'s window goes back
    to the longest head that adds none (the daemon's answer adds none; its cut must not either)."""
    text = result.text
    tokens = getattr(result, "tokens", None) or []
    if confident_prefix is not None and tokens:
        kept = []
        for token in tokens:
            if float(token.get("confidence", 0.0)) < confident_prefix:
                break
            kept.append(str(token.get("text", "")))
        text = "".join(kept)
        if text != result.text and request is not None and not getattr(request, "allow_broken", None):
            from diffgemma.context.syntax_gate import gate_fills

            text = gate_fills([request.prefix, request.suffix], [text], request.language).fills[0]
    others = [a for a in (getattr(result, "alternatives", None) or [])[1:] if a and a != text]
    return [t for t in (text, *others) if t] if text or others else []


def inline_items(text: str | Sequence[str], position: types.Position) -> list[types.InlineCompletionItem]:
    """One item per text (the answer first, then alternatives), each inserting at the cursor.

    The range is empty and sits on the cursor's line, as LSP 3.18 requires; ``text`` itself may
    span lines. The daemon ends the infill exactly at the suffix, so nothing after the cursor
    needs replacing.
    """
    texts = [text] if isinstance(text, str) else list(text)
    return [
        types.InlineCompletionItem(
            insert_text=t,
            range=types.Range(start=position, end=position),
        )
        for t in dict.fromkeys(texts) if t
    ]


def _label(text: str, width: int = 60) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
    return first if len(first) <= width else first[: width - 1] + "…"


def completion_list(
    text: str, position: types.Position, word_start: types.Position | None = None, word: str = ""
) -> types.CompletionList:
    """The fallback for clients without inline completion: one plain-text item, never a snippet.

    In the middle of a word (``    ret|``) the item replaces that word: its edit starts where the
    word does and its text, label and filterText begin with the word. Clients filter items by
    the word under the cursor (eglot, Neovim's built-in client), and an item that starts
    anywhere else would be filtered away. ``is_incomplete`` makes the client ask again as the
    user types rather than filter a stale answer.
    """
    if not text:
        return types.CompletionList(is_incomplete=True, items=[])
    start = word_start if word else position
    full = word + text
    item = types.CompletionItem(
        label=_label(full),
        kind=types.CompletionItemKind.Text,
        detail="diffgemma infill",
        documentation=text,  # a plain string: every client can show it
        insert_text=full,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start=start or position, end=position), new_text=full),
        filter_text=full,
        sort_text="0",
        preselect=True,
    )
    return types.CompletionList(is_incomplete=True, items=[item])
