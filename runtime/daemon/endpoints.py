"""Every route of the daemon, declared once: its path and method, its handler, the body it reads and the
answers it gives. The server builds its routes from this table (runtime.daemon.server) and
/openapi.json is generated from it (runtime.daemon.openapi), so adding an endpoint to both is adding a
row here.

A row's ``body`` is what the server reads and checks before the handler runs (a request class of
runtime.api.request_types, or a compatibility ``Body``); the handler gets what it built. ``answer`` and
``stream`` are the types the handler answers with; the errors a route can give follow from the row
(a body, a job on the model's worker, a request that may name its model or an id, the TCP guards).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from diffgemma.runtime.api.checks import Fields
from diffgemma.runtime.api.errors import ErrorCode
from diffgemma.runtime.api.next_edit import NextEditDraftLine, NextEditReply, NextEditRequest
from diffgemma.runtime.api.request_types import CancelRequest, EditRequest, InfillRequest
from diffgemma.runtime.api.results import CancelAnswer, DraftLine, ErrorLine, Health, Result
from diffgemma.runtime.api.status import DaemonStatus
from diffgemma.runtime.daemon.adapters import (
    CHAT_COMPLETION,
    COMPLETION,
    FIM_COMPLETION,
    LLAMA_COMPLETION,
    LLAMA_INFILL,
)
from diffgemma.runtime.daemon.compat_routes import (
    DETOKENIZE,
    TOKENIZE,
    CompatRoutes,
    Content,
    ModelCard,
    ModelList,
    Props,
    Tokens,
)
from diffgemma.runtime.daemon.llama_compat import LlamaEvent, LlamaReply
from diffgemma.runtime.daemon.native_routes import NativeRoutes
from diffgemma.runtime.daemon.openai_compat import ChatAnswer, ChatChunk, CompletionAnswer

Handler = Callable[..., Awaitable[Any]]


class BodyType(Protocol):
    """What a row's body is: its fields (for the document) and how a JSON body becomes what the
    handler takes (a one-line ProtocolError when it does not fit)."""

    def fields_spec(self) -> Fields: ...

    def from_json(self, data: Any) -> Any: ...


@dataclass(frozen=True)
class Tagged:
    """A stream item that is ``type`` with a ``"type": tag`` key added (the NDJSON result line)."""

    tag: str
    type: Any


@dataclass(frozen=True)
class Stream:
    """What a route sends when the request asks for a stream: NDJSON lines, or server-sent events whose
    ``data`` is JSON (``done``: the last one is ``[DONE]``, as OpenAI's)."""

    media_type: str
    items: tuple[Any, ...]
    done: bool = False


NDJSON = Stream("application/x-ndjson", (DraftLine, Tagged("result", Result), ErrorLine))


@dataclass(frozen=True)
class Endpoint:
    path: str
    method: str
    handler: Handler  # a method of NativeRoutes or CompatRoutes, called with the request (and its body)
    summary: str
    answer: Any  # the type of the JSON answer
    body: BodyType | None = None
    stream: Stream | None = None
    job: bool = False  # runs on the model's worker: a full queue, the model's loading and failures
    public: bool = False  # answers without the bearer token (TCP)
    errors: tuple[ErrorCode, ...] = ()  # what else it may answer
    aliases: tuple[str, ...] = ()  # more paths other clients call it by
    description: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.aliases)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/v1/infill", "POST", NativeRoutes.infill, "Fill the hole between prefix and suffix", Result,
             body=InfillRequest, stream=NDJSON, job=True,
             description="With stream: true, NDJSON: one draft line per denoising step (final: true once per "
                         "committed canvas; with holes, every hole's state), then the result line (or an error "
                         "line when it fails after the stream began)."),
    Endpoint("/v1/edit", "POST", NativeRoutes.edit, "Rewrite the selection between prefix and suffix", Result,
             body=EditRequest, stream=NDJSON, job=True),
    Endpoint("/v1/next-edit", "POST", NativeRoutes.next_edit,
             "Propose the edit that follows the recent edits, near the cursor", NextEditReply, body=NextEditRequest,
             stream=Stream("application/x-ndjson", (NextEditDraftLine, Tagged("result", NextEditReply), ErrorLine)),
             job=True, description="With stream: true, NDJSON: draft lines (the window's rewrite so far), then the "
                                   "result line."),
    Endpoint("/v1/cancel", "POST", NativeRoutes.cancel, "Cancel a queued or running request by id", CancelAnswer,
             body=CancelRequest),
    Endpoint("/v1/status", "GET", NativeRoutes.status,
             "Model, device, memory, load state, queue, counters, mean latency", DaemonStatus),
    Endpoint("/health", "GET", NativeRoutes.health, "Liveness (no token needed)", Health, public=True),
    Endpoint("/openapi.json", "GET", NativeRoutes.openapi, "This document", dict[str, Any]),
    Endpoint("/infill", "POST", CompatRoutes.llama_infill, "llama.cpp infill (llama.vim, llama.vscode)",
             LlamaReply, body=LLAMA_INFILL, stream=Stream("text/event-stream", (LlamaEvent,)), job=True),
    Endpoint("/completion", "POST", CompatRoutes.llama_completion,
             "llama.cpp completion: a prompt continued, or filled where it is a FIM template", LlamaReply,
             body=LLAMA_COMPLETION, stream=Stream("text/event-stream", (LlamaEvent,)), job=True,
             aliases=("/completions",)),
    Endpoint("/props", "GET", CompatRoutes.props, "llama.cpp server properties", Props, aliases=("/v1/props",)),
    Endpoint("/tokenize", "POST", CompatRoutes.tokenize, "llama.cpp: {content} -> {tokens}", Tokens,
             body=TOKENIZE, job=True),
    Endpoint("/detokenize", "POST", CompatRoutes.detokenize, "llama.cpp: {tokens} -> {content}", Content,
             body=DETOKENIZE, job=True),
    Endpoint("/v1/models", "GET", CompatRoutes.models, "OpenAI model list: the default, loaded and allowed models",
             ModelList, aliases=("/models",)),
    Endpoint("/v1/models/{model_id}", "GET", CompatRoutes.model, "One model of the list, by its id", ModelCard,
             errors=(ErrorCode.NOT_FOUND,)),
    Endpoint("/v1/completions", "POST", CompatRoutes.openai_completions,
             "OpenAI legacy completions with a suffix (Continue, Tabby)", CompletionAnswer, body=COMPLETION,
             stream=Stream("text/event-stream", (CompletionAnswer,), done=True), job=True),
    Endpoint("/v1/chat/completions", "POST", CompatRoutes.chat_completions,
             "OpenAI chat: the model's chat template, then plain generation", ChatAnswer, body=CHAT_COMPLETION,
             stream=Stream("text/event-stream", (ChatChunk,), done=True), job=True, aliases=("/chat/completions",)),
    Endpoint("/v1/fim/completions", "POST", CompatRoutes.fim_completions,
             "Mistral FIM: prompt + suffix, a chat-shaped answer", ChatAnswer, body=FIM_COMPLETION,
             stream=Stream("text/event-stream", (ChatChunk,), done=True), job=True),
)
