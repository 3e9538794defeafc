"""OpenAI legacy ``POST /v1/completions`` with ``prompt`` + ``suffix`` or a FIM template inside
``prompt`` (Continue, Tabby, llama.vscode's OpenAI mode), OpenAI ``POST /v1/chat/completions`` (the
SDK, the instruct features of llama.vim/llama.vscode) and Mistral-style ``POST /v1/fim/completions``
(Continue's FIM providers): bodies onto daemon requests, results back (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from diffgemma.runtime.api.checks import ProtocolError, keep_recent
from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.request_types import ChatRequest, InfillRequest, chat_messages
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.daemon.codec import Codec, sse
from diffgemma.runtime.daemon.compat_fields import (
    SAMPLER_NUMBERS,
    as_object,
    check_numbers,
    check_type,
    read_count,
    read_max_tokens,
    read_seed,
    read_stops,
    read_time_limit,
)
from diffgemma.runtime.daemon.fim import split_prompt


def openai_finish(finish_reason: str, word: str | None) -> str:
    # "time": the budget ran out; OpenAI's nearest is "length" (the answer was cut by a limit).
    # "syntax" (the syntax gate cut it) is an end as OpenAI's clients know it: "stop".
    if word is not None:
        return "stop"
    return "length" if finish_reason in ("length", "time") else "stop"


def _usage(timings: dict[str, Any]) -> dict[str, int]:
    prompt = int(timings.get("encoded_tokens") or 0) + int(timings.get("cached_tokens") or 0)
    completion = int(timings.get("generated_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class _OpenAICodec(Codec):
    """What OpenAI's two answer shapes share: the envelope, the order of a stream's chunks, the
    usage; a subclass says what one choice holds."""

    id_prefix: ClassVar[str]
    answer_object: ClassVar[str]
    chunk_object: ClassVar[str]

    def choice(self, text: str, index: int, reason: str) -> dict[str, Any]:
        """One candidate of the whole answer."""
        raise NotImplementedError

    def delta(self, text: str | None, index: int, reason: str | None) -> dict[str, Any]:
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

    def choice(self, text: str, index: int, reason: str) -> dict[str, Any]:
        return {"text": self.echo + text, "index": index, "finish_reason": reason, "logprobs": None}

    def delta(self, text: str | None, index: int, reason: str | None) -> dict[str, Any]:
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
    kind: str = "infill"


def _openai_common(body: dict[str, Any]) -> dict[str, Any]:
    stream = check_type(body, "stream", (bool,), "true or false") or False
    check_numbers(body, SAMPLER_NUMBERS)
    check_type(body, "model", (str,), "a string")
    check_type(body, "user", (str,), "a string")
    limit = body.get("max_tokens")
    if limit is None:
        limit = body.get("max_completion_tokens")
    return {"stream": stream, "count": read_count(body, "n"), "stops": read_stops(body), "seed": read_seed(body),
            "max_tokens": read_max_tokens(limit, "max_tokens"), "time_limit_ms": read_time_limit(body)}


def _prompt_string(body: dict[str, Any]) -> str:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):  # the API allows a batch; one prompt is all we take
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ProtocolError("prompt must be a string (or an array holding one string)")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProtocolError("prompt must be a string")
    return prompt


def _fill_request(common: dict[str, Any], prompt: str, suffix: str) -> InfillRequest:
    """prompt + suffix, or the FIM template inside prompt when no suffix came."""
    if suffix:
        prefix, extra = prompt, []
    else:
        parts = split_prompt(prompt)
        prefix, suffix, extra = parts.prefix, parts.suffix, keep_recent(parts.extra)
    count = common["count"]
    return InfillRequest(prefix=prefix, suffix=suffix, extra=extra, max_tokens=common["max_tokens"] or None,
                         seed=common["seed"], stream=common["stream"], time_limit_ms=common["time_limit_ms"],
                         alternatives=count if count > 1 else None)


def openai_completion_request(body: Any) -> OpenAICall:
    body = as_object(body)
    prompt = _prompt_string(body)
    suffix = check_type(body, "suffix", (str,), "a string") or ""
    echo = check_type(body, "echo", (bool,), "true or false") or False
    common = _openai_common(body)
    codec = CompletionCodec(stops=common["stops"], count=common["count"], echo=prompt if echo else "")
    return OpenAICall(request=_fill_request(common, prompt, suffix), codec=codec, stream=common["stream"])


def openai_completion_response(call: OpenAICall, result: Result) -> dict[str, Any]:
    return call.codec.answer(result)


# --- chat-shaped answers: /v1/chat/completions and Mistral's /v1/fim/completions ---------------


@dataclass
class ChatCodec(_OpenAICodec):
    id_prefix = "chatcmpl"
    answer_object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def choice(self, text: str, index: int, reason: str) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                "logprobs": None}

    def delta(self, text: str | None, index: int, reason: str | None) -> dict[str, Any]:
        delta = {} if text is None else {"role": "assistant", "content": text}
        return {"index": index, "delta": delta, "finish_reason": reason}


def fim_completion_request(body: Any) -> OpenAICall:
    """Mistral's ``/v1/fim/completions``: ``prompt`` (before the cursor) + ``suffix``; chat-shaped answer."""
    body = as_object(body)
    prompt = check_type(body, "prompt", (str,), "a string")
    if prompt is None:
        raise ProtocolError("fim completion request is missing the required field 'prompt'")
    suffix = check_type(body, "suffix", (str,), "a string") or ""
    check_type(body, "min_tokens", (int,), "an integer")
    common = _openai_common(body)
    codec = ChatCodec(stops=common["stops"], count=common["count"])
    return OpenAICall(request=_fill_request(common, prompt, suffix), codec=codec, stream=common["stream"])


def chat_completion_request(body: Any) -> OpenAICall:
    body = as_object(body)
    if "messages" not in body:
        raise ProtocolError("chat completion request is missing the required field 'messages'")
    messages = chat_messages(body["messages"])
    common = _openai_common(body)
    if common["count"] > 1:
        raise WireError(ErrorCode.INVALID_REQUEST, "n > 1 is supported for completions, not for chat")
    _n_predict = body.get("n_predict")  # llama.vim's instruct warm-up sends n_predict 0 here
    max_tokens = common["max_tokens"] if _n_predict is None else read_max_tokens(_n_predict, "n_predict")
    request = ChatRequest(messages=messages, max_tokens=max_tokens or None, seed=common["seed"],
                          stream=common["stream"], time_limit_ms=common["time_limit_ms"])
    return OpenAICall(request=request, codec=ChatCodec(stops=common["stops"]), stream=common["stream"],
                      kind="warmup" if max_tokens == 0 else "chat")


def empty_result(request_id: str, model: str) -> Result:
    """The answer to a request that asks for no tokens (a client warming a cache)."""
    return Result(text="", finish_reason="length", timings={}, id=request_id, model=model)
