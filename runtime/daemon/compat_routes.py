"""The compatibility routes, so existing editor clients work unchanged: llama.cpp POST /infill,
/completion, /tokenize, /detokenize, GET /props; OpenAI GET /v1/models, /v1/models/{id}, POST
/v1/completions, /v1/chat/completions; Mistral POST /v1/fim/completions. Bodies and answers are mapped
by runtime.daemon.adapters; the server has read and checked a body before a handler runs."""

from __future__ import annotations

import time
from functools import partial
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from typing_extensions import TypedDict

from diffgemma.runtime.api import checks
from diffgemma.runtime.api.checks import Fields
from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.request_types import TokenizeRequest, token_ids
from diffgemma.runtime.daemon import adapters
from diffgemma.runtime.daemon import compat_fields as cf
from diffgemma.runtime.daemon.dispatch import API_VERSION, Dispatcher, answer
from diffgemma.runtime.daemon.jobs import Job, JobKind, JobRequest, Outcome
from diffgemma.runtime.daemon.policy import model_ids
from diffgemma.runtime.daemon.streaming import JobStream, outcome_error, sse_now
from diffgemma.runtime.engine.types import Draft


class ModelCard(TypedDict):
    """A model requests may use; ``id`` is a short name (no slashes), also accepted as a request's model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[ModelCard]


class PropsSettings(TypedDict):
    n_ctx: int
    n_predict: int
    model: str
    params: dict[str, int]


class Props(TypedDict):
    """llama.cpp's server properties (llama.vscode reads default_generation_settings.n_ctx)."""

    default_generation_settings: PropsSettings
    total_slots: int
    model_path: str
    chat_template: str
    modalities: dict[str, bool]
    build_info: str
    is_sleeping: bool


class Piece(TypedDict):
    id: int
    piece: str


class Tokens(TypedDict):
    tokens: list[int] | list[Piece]


class Content(TypedDict):
    content: str


TOKENIZE: cf.Body[TokenizeRequest] = cf.Body(Fields(
    name="TokenizeRequest", kind="tokenize", strict=False, required=("content",),
    description="llama.cpp /tokenize with the model's tokenizer (add_special and other fields are ignored).",
    checks={"content": checks.string, "with_pieces": cf.flag},
    docs={"with_pieces": "Answer {id, piece} for each token instead of the ids."}),
    lambda v: TokenizeRequest(content=v["content"], with_pieces=bool(v.get("with_pieces"))))
DETOKENIZE: cf.Body[TokenizeRequest] = cf.Body(Fields(
    name="DetokenizeRequest", kind="detokenize", strict=False, required=("tokens",),
    description="llama.cpp /detokenize: the text of token ids (each an id of the model's vocabulary).",
    checks={"tokens": partial(token_ids, optional=False)}),
    lambda v: TokenizeRequest(tokens=v["tokens"]))


class CompatRoutes:
    def __init__(self, dispatch: Dispatcher) -> None:
        self.dispatch = dispatch

    # Generation -----------------------------------------------------------------------------

    async def llama_infill(self, request: Request, call: adapters.LlamaCall) -> Response | JobStream:
        return await self._generate(request, "infill", call.request, call.codec, call.stream, call.max_tokens)

    async def llama_completion(self, request: Request, call: adapters.LlamaCall) -> Response | JobStream:
        return await self._generate(request, "infill", call.request, call.codec, call.stream, call.max_tokens)

    async def openai_completions(self, request: Request, call: adapters.OpenAICall) -> Response | JobStream:
        return await self._generate(request, call.kind, call.request, call.codec, call.stream, call.max_tokens)

    async def fim_completions(self, request: Request, call: adapters.OpenAICall) -> Response | JobStream:
        return await self._generate(request, call.kind, call.request, call.codec, call.stream, call.max_tokens)

    async def chat_completions(self, request: Request, call: adapters.OpenAICall) -> Response | JobStream:
        return await self._generate(request, call.kind, call.request, call.codec, call.stream, call.max_tokens)

    async def _generate(self, request: Request, kind: JobKind, req: JobRequest, codec: adapters.Codec,
                        stream: bool, max_tokens: int | None) -> Response | JobStream:
        """Run a compatibility request on the engine and answer in that client's wire shape. A request
        for no tokens (llama.vim and llama.vscode warm their cache with these while the user moves
        around) is answered at once, empty, on every endpoint alike, and keeps the worker free."""
        if max_tokens == 0:
            result = adapters.empty_result("warmup", self.dispatch.scheduler.default_model or "", codec.count)
            codec.model = result.model
            return sse_now(codec.end(result)) if stream else JSONResponse(codec.answer(result))
        job, bridge = self.dispatch.submit(kind, req, stream=stream)
        codec.model = job.model
        if stream:
            def draft(j: Job, d: Draft) -> bytes:
                return codec.draft(d, j.id)

            def end(j: Job, o: Outcome) -> bytes:
                return codec.end(o.result) if o.result is not None else codec.error(outcome_error(o))

            return JobStream(job, bridge, draft, end, "text/event-stream", self.dispatch.client_gone)
        outcome = await self.dispatch.await_outcome(request, job, bridge)
        return answer(outcome, lambda o: codec.answer(o.result) if o.result is not None else None)

    # Models, props, tokens ------------------------------------------------------------------

    def _cards(self) -> dict[str, ModelCard]:
        created = int(time.time())
        ids = model_ids(self.dispatch.scheduler.listed_models())
        return {i: {"id": i, "object": "model", "created": created, "owned_by": "diffgemma"} for i in ids}

    async def models(self, request: Request) -> Response:
        listing: ModelList = {"object": "list", "data": list(self._cards().values())}
        return JSONResponse(listing)

    async def model(self, request: Request) -> Response:
        wanted = str(request.path_params.get("model_id", ""))
        card = self._cards().get(wanted)
        if card is None:
            raise WireError(ErrorCode.NOT_FOUND, f"no model with id {wanted[:200]!r} (see /v1/models)")
        return JSONResponse(card)

    async def props(self, request: Request) -> Response:
        status = self.dispatch.scheduler.status()
        model = status.get("model") or status.get("default_model") or ""
        n_ctx = int(status.get("context_length") or 8192)
        props: Props = {
            "default_generation_settings": {"n_ctx": n_ctx, "n_predict": -1, "model": model,
                                            "params": {"n_predict": -1}},
            "total_slots": 1, "model_path": model, "chat_template": "", "modalities": {"vision": False},
            "build_info": f"diffgemma daemon (api {API_VERSION})", "is_sleeping": status.get("state") != "ready",
        }
        return JSONResponse(props)

    async def tokenize(self, request: Request, req: TokenizeRequest) -> Response:
        return await self._tokens(request, "tokenize", req)

    async def detokenize(self, request: Request, req: TokenizeRequest) -> Response:
        return await self._tokens(request, "detokenize", req)

    async def _tokens(self, request: Request, kind: JobKind, req: TokenizeRequest) -> Response:
        outcome = await self.dispatch.run(request, kind, req)
        return answer(outcome, lambda o: o.value if o.ok else None)
