"""OpenAI legacy ``POST /v1/completions`` with ``prompt`` + ``suffix`` or a FIM template inside
``prompt`` (Continue, Tabby, llama.vscode's OpenAI mode), OpenAI ``POST /v1/chat/completions`` (the
SDK, the instruct features of llama.vim/llama.vscode) and Mistral-style ``POST /v1/fim/completions``
(Continue's FIM providers): bodies onto daemon requests, results back (torch-free).

The bodies are declared field by field (``COMPLETION``, ``FIM_COMPLETION``, ``CHAT_COMPLETION``) and the
answers as types (``CompletionAnswer``, ``ChatAnswer`` and their stream chunks): /openapi.json is
generated from both."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, NotRequired

from typing_extensions import TypedDict

from diffgemma.runtime.api.checks import Checker, Fields, keep_recent
from diffgemma.runtime.api.config import MAX_ALTERNATIVES
from diffgemma.runtime.api.request_types import ChatRequest, InfillRequest, check_messages
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.daemon import compat_fields as cf
from diffgemma.runtime.daemon.codec import Codec, sse
from diffgemma.runtime.daemon.fim import split_prompt

OpenAIFinish = Literal["stop", "length"]


class Usage(TypedDict):
    """Tokens of the prompt as the model saw it, and of the answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(TypedDict):
    text: str
    index: int
    finish_reason: OpenAIFinish | None  # null in a stream chunk that carries text
    logprobs: None


class CompletionAnswer(TypedDict):
    """OpenAI's text completion (also each chunk of its stream, where usage comes with the last)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage]
    timings: NotRequired[dict[str, float]]


class ChatMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatChoice(TypedDict):
    index: int
    message: ChatMessage
    finish_reason: OpenAIFinish
    logprobs: None


class ChatAnswer(TypedDict):
    """OpenAI's chat completion (also Mistral's FIM answer)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: dict[str, float]


class ChatDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    finish_reason: OpenAIFinish | None


class ChatChunk(TypedDict):
    """One event of a streamed chat completion (usage comes with the last)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: NotRequired[Usage]


def openai_finish(finish_reason: str, word: str | None) -> OpenAIFinish:
    # "time": the budget ran out; OpenAI's nearest is "length" (the answer was cut by a limit).
    # "syntax" (the syntax gate cut it) is an end as OpenAI's clients know it: "stop".
    if word is not None:
        return "stop"
    return "length" if finish_reason in ("length", "time") else "stop"


def _usage(timings: dict[str, Any]) -> Usage:
    prompt = int(timings.get("prompt_tokens") or 0)
    completion = int(timings.get("generated_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class _OpenAICodec(Codec):
    """What OpenAI's two answer shapes share: the envelope, the order of a stream's chunks, the
    usage; a subclass says what one choice holds."""

    id_prefix: ClassVar[str]
    answer_object: ClassVar[str]
    chunk_object: ClassVar[str]

    def choice(self, text: str, index: int, reason: OpenAIFinish) -> Any:
        """One candidate of the whole answer."""
        raise NotImplementedError

    def delta(self, text: str | None, index: int, reason: OpenAIFinish | None) -> Any:
        """One candidate in a stream chunk: new ``text``, or (None) its closing ``reason``."""
        raise NotImplementedError

    def answer(self, result: Result) -> dict[str, Any]:
        choices = [self.choice(text, i, openai_finish(result.finish_reason, word))
                   for i, (text, word) in enumerate(self.texts(result))]
        return {"id": f"{self.id_prefix}-{result.id}", "object": self.answer_object, "created": self.created,
                "model": result.model, "choices": choices, "usage": _usage(result.timings),
                "timings": result.timings}

    def _chunk(self, request_id: str, model: str, choice: dict[str, Any], **more: Any) -> bytes:
        return sse({"id": f"{self.id_prefix}-{request_id}", "object": self.chunk_object, "created": self.created,
                    "model": model, "choices": [choice], **more})

    def event(self, text: str, request_id: str, model: str | None = None, index: int = 0) -> bytes:
        model = self.model if model is None else model
        return self._chunk(request_id, model, self.delta(text, index, None))

    def end(self, result: Result) -> bytes:
        texts = self.texts(result)
        rest = self.take(result.text, done=True)
        out = [self.event(rest, result.id, result.model)] if rest or self.unsent() else []
        for i, (text, _) in enumerate(texts[1:], start=1):
            out.append(self.event(text, result.id, result.model, index=i))
        for i, (_, word) in enumerate(texts):
            reason = openai_finish(result.finish_reason, self.word if i == 0 else word)
            more = {"usage": _usage(result.timings)} if i == len(texts) - 1 else {}
            out.append(self._chunk(result.id, result.model, self.delta(None, i, reason), **more))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def unsent(self) -> bool:
        """Whether the stream owes text beyond the answer's (it must send a chunk even for none)."""
        return False


@dataclass
class CompletionCodec(_OpenAICodec):
    id_prefix = "cmpl"
    answer_object = chunk_object = "text_completion"
    echo: str = ""  # the prompt, when the client asked for echo

    def choice(self, text: str, index: int, reason: OpenAIFinish) -> CompletionChoice:
        return {"text": self.echo + text, "index": index, "finish_reason": reason, "logprobs": None}

    def delta(self, text: str | None, index: int, reason: OpenAIFinish | None) -> CompletionChoice:
        return {"text": text or "", "index": index, "finish_reason": reason, "logprobs": None}

    def event(self, text: str, request_id: str, model: str | None = None, index: int = 0) -> bytes:
        if self.echo:  # the first text sent carries the echoed prompt
            text, self.echo = self.echo + text, ""
        return super().event(text, request_id, model, index)

    def unsent(self) -> bool:
        return bool(self.echo)


@dataclass
class OpenAICall:
    request: InfillRequest | ChatRequest
    codec: Codec
    stream: bool
    max_tokens: int | None  # 0: nothing to generate (a client warming its cache): answered at once
    kind: Literal["infill", "chat"] = "infill"


_COMMON: dict[str, Checker] = {
    "stream": cf.flag,
    "n": partial(cf.count, high=MAX_ALTERNATIVES),
    "stop": cf.stops,
    "seed": cf.seed,
    "max_tokens": cf.token_limit,
    "max_completion_tokens": cf.token_limit,
    "t_max_predict_ms": cf.time_limit,
    "model": cf.text,
    "user": cf.text,
    **cf.IGNORED_SAMPLERS,
}
_DOCS = {
    "stream": "Server-sent events: each committed canvas as soon as it exists, then the closing chunk and [DONE].",
    "n": "Candidates denoised as one batch (choices[index]).",
    "stop": "Stop strings: the answer is cut before the first one.",
    "seed": "Seed of the canvas noise; outside 0..2^63-1: random.",
    "max_tokens": "Most tokens to generate; null or -1: until done; 0: nothing (an empty answer at once).",
    "max_completion_tokens": "Read when max_tokens is not given.",
    "t_max_predict_ms": "Time budget (llama.cpp's name): at its end the best draft so far is the answer.",
    "model": "The client's label for this server; the daemon's model answers.",
    "prompt": "The text before the cursor; without a suffix, maybe a fill-in-the-middle template.",
    "suffix": "The text after the cursor.",
    "echo": "Put the prompt before the answer's text.",
    "messages": "The conversation: [{role, content}], content a string or text parts.",
    "n_predict": "llama.vim's name for max_tokens (it wins).",
}
_IGNORED = "Sampler fields (temperature, top_p, ...) are accepted and ignored."


def _limit(values: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` the body gave (their checker already read -1 and null as None)."""
    for key in keys:
        if values.get(key) is not None:
            return int(values[key])
    return None


def _fill_request(values: dict[str, Any], prompt: str, suffix: str, limit: int | None) -> InfillRequest:
    """prompt + suffix, or the FIM template inside prompt when no suffix came."""
    if suffix:
        prefix, extra = prompt, []
    else:
        parts = split_prompt(prompt)
        prefix, suffix, extra = parts.prefix, parts.suffix, keep_recent(parts.extra)
    count = values.get("n", 1)
    return InfillRequest(prefix=prefix, suffix=suffix, extra=extra, max_tokens=limit or None, seed=values.get("seed"),
                         stream=bool(values.get("stream")), time_limit_ms=values.get("t_max_predict_ms"),
                         alternatives=count if count > 1 else None)


def _completion(values: dict[str, Any]) -> OpenAICall:
    prompt, suffix = values.get("prompt", ""), values.get("suffix") or ""
    codec = CompletionCodec(stops=values.get("stop", []), count=values.get("n", 1),
                            echo=prompt if values.get("echo") else "")
    limit = _limit(values, "max_tokens", "max_completion_tokens")
    return OpenAICall(request=_fill_request(values, prompt, suffix, limit), codec=codec,
                      stream=bool(values.get("stream")), max_tokens=limit)


COMPLETION: cf.Body[OpenAICall] = cf.Body(Fields(
    name="CompletionRequest", kind="completion", strict=False, docs=_DOCS,
    description=f"OpenAI legacy completions with a suffix, or a FIM template in the prompt. {_IGNORED}",
    checks={"prompt": cf.prompt, "suffix": cf.text, "echo": cf.flag, **_COMMON}), _completion)
openai_completion_request = COMPLETION.from_json


def openai_completion_response(call: OpenAICall, result: Result) -> dict[str, Any]:
    return call.codec.answer(result)


# --- chat-shaped answers: /v1/chat/completions and Mistral's /v1/fim/completions ---------------


@dataclass
class ChatCodec(_OpenAICodec):
    id_prefix = "chatcmpl"
    answer_object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def choice(self, text: str, index: int, reason: OpenAIFinish) -> ChatChoice:
        return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                "logprobs": None}

    def delta(self, text: str | None, index: int, reason: OpenAIFinish | None) -> ChatChunkChoice:
        delta: ChatDelta = {} if text is None else {"role": "assistant", "content": text}
        return {"index": index, "delta": delta, "finish_reason": reason}


def _fim(values: dict[str, Any]) -> OpenAICall:
    codec = ChatCodec(stops=values.get("stop", []), count=values.get("n", 1))
    limit = _limit(values, "max_tokens", "max_completion_tokens")
    return OpenAICall(request=_fill_request(values, values["prompt"], values.get("suffix") or "", limit),
                      codec=codec, stream=bool(values.get("stream")), max_tokens=limit)


FIM_COMPLETION: cf.Body[OpenAICall] = cf.Body(Fields(
    name="FimCompletionRequest", kind="fim completion", strict=False, required=("prompt",), docs=_DOCS,
    description=f"Mistral's FIM: prompt (before the cursor) + suffix, a chat-shaped answer. {_IGNORED}",
    checks={"prompt": cf.prompt, "suffix": cf.text, "min_tokens": cf.any_integer, **_COMMON}), _fim)
fim_completion_request = FIM_COMPLETION.from_json


def _chat(values: dict[str, Any]) -> OpenAICall:
    limit = _limit(values, "n_predict", "max_tokens", "max_completion_tokens")  # llama.vim sends n_predict
    stream = bool(values.get("stream"))
    request = ChatRequest(messages=values["messages"], max_tokens=limit or None, seed=values.get("seed"),
                          stream=stream, time_limit_ms=values.get("t_max_predict_ms"))
    return OpenAICall(request=request, codec=ChatCodec(stops=values.get("stop", [])), stream=stream,
                      max_tokens=limit, kind="chat")


CHAT_COMPLETION: cf.Body[OpenAICall] = cf.Body(Fields(
    name="ChatCompletionRequest", kind="chat completion", strict=False, required=("messages",), docs=_DOCS,
    description=f"OpenAI chat: the model's chat template, then plain generation. {_IGNORED}",
    checks={"messages": check_messages, **_COMMON, "n": partial(cf.count, high=1), "n_predict": cf.token_limit}),
    _chat)
chat_completion_request = CHAT_COMPLETION.from_json


def empty_result(request_id: str, model: str, count: int = 1) -> Result:
    """The answer to a request that asks for no tokens (a client warming a cache): empty, finish_reason
    "length", one empty text per candidate asked for."""
    return Result(text="", finish_reason="length", timings={}, id=request_id, model=model,
                  alternatives=[""] * count if count > 1 else [])
