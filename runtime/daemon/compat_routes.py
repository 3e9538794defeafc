"""The compatibility routes, so existing editor clients work unchanged: llama.cpp POST /infill,
/completion, /tokenize, /detokenize, GET /props; OpenAI GET /v1/models, POST /v1/completions,
/v1/chat/completions; Mistral POST /v1/fim/completions. Bodies and answers are mapped by
runtime.daemon.adapters."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.request_types import TokenizeRequest
from diffgemma.runtime.daemon import adapters
from diffgemma.runtime.daemon.dispatch import API_VERSION, Dispatcher, answer
from diffgemma.runtime.daemon.jobs import Job, JobKind, JobRequest, Outcome
from diffgemma.runtime.daemon.streaming import JobStream, outcome_error, sse_now
from diffgemma.runtime.engine.types import Draft


class CompatRoutes:
    def __init__(self, dispatch: Dispatcher) -> None:
        self.dispatch = dispatch

    # Generation -----------------------------------------------------------------------------

    async def llama_infill(self, request: Request) -> Response | JobStream:
        return await self._llama(request, adapters.llama_infill_request(await self.dispatch.body(request)))

    async def llama_completion(self, request: Request) -> Response | JobStream:
        return await self._llama(request, adapters.llama_completion_request(await self.dispatch.body(request)))

    async def _llama(self, request: Request, call: adapters.LlamaCall) -> Response | JobStream:
        if call.n_predict == 0:
            # A prompt-only request (llama.vim/llama.vscode warm the cache with these while the
            # user moves around): nothing to generate, so answer at once and keep the worker free.
            if call.stream:
                return sse_now(call.codec.end(None))
            return JSONResponse(call.codec.answer(None))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def openai_completions(self, request: Request) -> Response | JobStream:
        call = adapters.openai_completion_request(await self.dispatch.body(request))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def fim_completions(self, request: Request) -> Response | JobStream:
        call = adapters.fim_completion_request(await self.dispatch.body(request))
        return await self._adapted(request, "infill", call.request, call.codec, call.stream)

    async def chat_completions(self, request: Request) -> Response | JobStream:
        call = adapters.chat_completion_request(await self.dispatch.body(request))
        if call.kind == "warmup":  # n_predict 0: llama.vim warming the cache while the user types
            result = adapters.empty_result("warmup", self.dispatch.scheduler.default_model or "")
            return sse_now(call.codec.end(result)) if call.stream else JSONResponse(call.codec.answer(result))
        return await self._adapted(request, "chat", call.request, call.codec, call.stream)

    async def _adapted(self, request: Request, kind: JobKind, req: JobRequest, codec: adapters.Codec,
                       stream: bool) -> Response | JobStream:
        """Run a compatibility request on the engine and answer in that client's wire shape."""
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

    async def models(self, request: Request) -> Response:
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "diffgemma"}
                for name in self.dispatch.scheduler.listed_models()]
        return JSONResponse({"object": "list", "data": data})

    async def props(self, request: Request) -> Response:
        status = self.dispatch.scheduler.status()
        model = status.get("model") or status.get("default_model") or ""
        n_ctx = int(status.get("context_length") or 8192)
        return JSONResponse({
            "default_generation_settings": {"n_ctx": n_ctx, "n_predict": -1, "model": model,
                                            "params": {"n_predict": -1}},
            "total_slots": 1, "model_path": model, "chat_template": "", "modalities": {"vision": False},
            "build_info": f"diffgemma daemon (api {API_VERSION})", "is_sleeping": status.get("state") != "ready",
        })

    async def tokenize(self, request: Request) -> Response:
        body = _token_body(await self.dispatch.body(request), "content")
        content = body.get("content")
        if not isinstance(content, str):
            raise WireError(ErrorCode.INVALID_REQUEST, "content must be a string")
        with_pieces = body.get("with_pieces", False)
        if not isinstance(with_pieces, bool):
            raise WireError(ErrorCode.INVALID_REQUEST, "with_pieces must be true or false")
        return await self._tokens(request, "tokenize", TokenizeRequest(content=content, with_pieces=with_pieces))

    async def detokenize(self, request: Request) -> Response:
        tokens = _token_body(await self.dispatch.body(request), "tokens").get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise WireError(ErrorCode.INVALID_REQUEST, "tokens must be an array of integers")
        return await self._tokens(request, "detokenize", TokenizeRequest(tokens=tokens))

    async def _tokens(self, request: Request, kind: JobKind, req: TokenizeRequest) -> Response:
        outcome = await self.dispatch.run(request, kind, req)
        return answer(outcome, lambda o: o.value if o.ok else None)


def _token_body(body: Any, required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError(ErrorCode.INVALID_REQUEST, "request body must be a JSON object")
    if required not in body:
        raise WireError(ErrorCode.INVALID_REQUEST, f"the request is missing the required field {required!r}")
    return body
