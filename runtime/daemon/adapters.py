"""Wire adapters so existing editor clients work unchanged (torch-free).

- llama.cpp ``POST /infill`` (llama.vim, llama.vscode) and ``POST /completion`` (Continue's
  llama.cpp provider, llama.cpp's native API).
- OpenAI legacy ``POST /v1/completions`` with ``prompt`` + ``suffix``, or a FIM template inside
  ``prompt`` (Continue, Tabby, llama.vscode's OpenAI mode).
- Mistral-style ``POST /v1/fim/completions`` (Continue's FIM providers).
- OpenAI ``POST /v1/chat/completions`` (the SDK, the instruct features of llama.vim/llama.vscode).

Each maps a body onto a daemon request and the result back through a Codec. They are lenient the
way the servers they imitate are: fields we have no use for (samplers, top_k, n_indent, id_slot,
...) are accepted and ignored, but a field we do use must have the right type. The client's
``model`` is its own label for this server, not a checkpoint we could load: the daemon's model
answers.

Streaming: these clients concatenate the text of every event, which suits a left-to-right
decoder. A committed diffusion canvas only ever extends the answer (``Draft.final``), so each
committed canvas is sent as soon as it exists, then the closing event. The text a stop string
could still start is held back until it is known not to.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.protocol import (
    MAX_ALTERNATIVES,
    MAX_TIME_LIMIT_MS,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    ExtraFile,
    InfillRequest,
    ProtocolError,
    Result,
    chat_messages,
    keep_recent,
)
from diffgemma.runtime.daemon.fim import split_prompt
from diffgemma.runtime.engine.types import Draft

# Far beyond any useful answer, but still a number: larger values are refused, smaller ones capped.
_MAX_TOKENS_ACCEPTED = 2**31 - 1


def _check_type(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{key} must be {what} (got boolean)")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{key} must be {what}")
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    return body


def _stop_strings(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise ProtocolError("stop must be a string or an array of strings")


def apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string, as AR servers do; returns (text, the word hit)."""
    cut, word = len(text), None
    for stop in stops:
        at = text.find(stop)
        if 0 <= at < cut:
            cut, word = at, stop
    return text[:cut], word


def _max_tokens(value: Any, key: str) -> int | None:
    # llama.cpp: n_predict -1 means "until done"; both treat a missing value as the server default.
    # A large value is capped (Continue sends 4096), the scheduler caps it again to the daemon's limit.
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{key} must be an integer")
    if value < 0 or value > _MAX_TOKENS_ACCEPTED:
        raise ProtocolError(f"{key} must be between 0 and {_MAX_TOKENS_ACCEPTED} (got {value})")
    return min(value, MAX_TOKENS_LIMIT)


def _seed(body: dict[str, Any]) -> int | None:
    seed = _check_type(body, "seed", (int,), "an integer")
    if seed is None or seed < 0 or seed >= 2**63:  # llama.cpp: -1 is "random"
        return None
    return seed


def _count(body: dict[str, Any], key: str) -> int:
    """OpenAI ``n`` / llama.cpp ``n_cmpl``: how many candidates, 1..MAX_ALTERNATIVES."""
    value = _check_type(body, key, (int,), "an integer")
    if value is None:
        return 1
    if not 1 <= value <= MAX_ALTERNATIVES:
        # llama.vscode recognises llama.cpp's own wording for n_cmpl and adds its setting's name.
        raise ProtocolError(f"Field '{key}': Value must be between 1 <= value <= {MAX_ALTERNATIVES}, but got {value}")
    return value


def _time_limit(body: dict[str, Any]) -> int | None:
    """llama.cpp's ``t_max_predict_ms`` (also read on the OpenAI endpoints); <= 0 means none."""
    value = _check_type(body, "t_max_predict_ms", (int, float), "a number")
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return int(min(max(1.0, float(value)), MAX_TIME_LIMIT_MS))


def _ignored_numbers(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        _check_type(body, key, (int, float), "a number")


_SAMPLER_NUMBERS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                    "repeat_penalty", "n_indent", "t_max_prompt_ms", "typical_p", "mirostat")


# --- streaming text --------------------------------------------------------------------------


@dataclass
class Codec:
    """One client protocol: how a result is answered, and how a stream sends committed text."""

    stops: list[str] = field(default_factory=list)
    count: int = 1  # candidates asked for (n / n_cmpl)
    created: int = field(default_factory=lambda: int(time.time()))
    sent: str = ""
    word: str | None = None  # the stop string hit while streaming
    model: str = ""  # the model answering, for stream events sent before the result exists

    def take(self, text: str, done: bool) -> str:
        """The part of the committed ``text`` not sent yet (minus what a stop string could start)."""
        if self.word is not None:
            return ""
        visible, word = apply_stop(text, self.stops)
        if word is not None:
            self.word = word
        elif not done and self.stops:
            hold = max(len(s) for s in self.stops) - 1
            visible = text[: max(len(self.sent), len(text) - hold)]
        if not visible.startswith(self.sent):
            return ""  # a committed canvas never shrinks; if it did, what was sent stands
        new = visible[len(self.sent):]
        self.sent = visible
        return new

    def texts(self, result: Result) -> list[tuple[str, str | None]]:
        """(text, stop word) for each candidate, stop strings applied."""
        texts = result.alternatives[: self.count] if result.alternatives else [result.text]
        return [apply_stop(t, self.stops) for t in texts]

    # Overridden per protocol:
    def answer(self, result: Result) -> Any:
        raise NotImplementedError

    def draft(self, draft: Draft, request_id: str) -> bytes:
        """The event for a committed canvas (nothing for a step's draft: those clients append)."""
        if not draft.final:
            return b""
        new = self.take(draft.text, done=False)
        return self.event(new, request_id) if new else b""

    def event(self, text: str, request_id: str) -> bytes:
        raise NotImplementedError

    def end(self, result: Result) -> bytes:
        raise NotImplementedError

    def error(self, error: WireError) -> bytes:
        return sse(error.body())


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --- llama.cpp /infill and /completion -------------------------------------------------------


def _llama_timings(timings: dict[str, Any]) -> dict[str, Any]:
    prompt_n = int(timings.get("encoded_tokens") or 0)
    prompt_ms = float(timings.get("encode_ms") or 0.0)
    predicted_n = int(timings.get("generated_tokens") or 0)
    predicted_ms = max(0.0, float(timings.get("total_ms") or 0.0) - prompt_ms)
    return {
        "cache_n": int(timings.get("cached_tokens") or 0),
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n * 1000 / prompt_ms, 3) if prompt_ms else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted_n, 3) if predicted_n else 0.0,
        "predicted_per_second": round(predicted_n * 1000 / predicted_ms, 3) if predicted_ms else 0.0,
        # Ours: what a denoising step costs and how many tokens each forward pass settles.
        "steps": int(timings.get("steps") or 0),
        "ms_per_step": timings.get("ms_per_step", 0.0),
        "tokens_per_forward": timings.get("tokens_per_forward", 0.0),
        "decoder_tokens": int(timings.get("decoder_tokens") or 0),
    }


def _nested_fields(data: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """llama.cpp's ``response_fields``: keep only these "a/b" paths, keyed by the path itself."""
    out: dict[str, Any] = {}
    for path in paths:
        node: Any = data
        for part in path.split("/"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                break
        else:
            out[path] = node
    return out


def llama_stop_type(finish_reason: str | None, word: str | None) -> str:
    if word is not None:
        return "word"
    if finish_reason in ("length", "time"):  # llama.cpp has no "time": its budget stop is a limit
        return "limit"
    return "eos" if finish_reason == "stop" else "none"


@dataclass
class LlamaCodec(Codec):
    n_predict: int | None = None
    response_fields: list[str] | None = None
    prompt: str | None = None  # /completion echoes its prompt

    def one(self, result: Result | None, text: str, word: str | None, index: int) -> dict[str, Any]:
        timings = _llama_timings(result.timings if result else {})
        data: dict[str, Any] = {
            "index": index,
            "content": text,
            "id_slot": 0,
            "stop": True,
            "model": result.model if result else "",
            "tokens_predicted": timings["predicted_n"],
            "tokens_evaluated": timings["prompt_n"] + timings["cache_n"],
            "generation_settings": {"n_predict": self.n_predict if self.n_predict is not None else -1},
            "has_new_line": "\n" in text,
            "truncated": False,
            "stop_type": llama_stop_type(result.finish_reason if result else None, word),
            "stopping_word": word or "",
            "tokens_cached": timings["cache_n"],
            "timings": timings,
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        return _nested_fields(data, self.response_fields) if self.response_fields is not None else data

    def answer(self, result: Result | None) -> Any:
        """One result object, or (n_cmpl > 1) an array of them, as llama.cpp answers."""
        if result is None:  # a prompt-only warm-up (n_predict 0)
            return self.one(None, "", None, 0)
        items = [self.one(result, text, word, i) for i, (text, word) in enumerate(self.texts(result))]
        return items if self.count > 1 else items[0]

    def event(self, text: str, request_id: str) -> bytes:
        return sse({"index": 0, "content": text, "stop": False, "id_slot": 0, "model": self.model})

    def end(self, result: Result | None) -> bytes:
        out = []
        if result is not None:
            texts = self.texts(result)
            rest = self.take(result.text, done=True)
            if rest:
                out.append(self.event(rest, result.id))
            for i, (text, _) in enumerate(texts[1:], start=1):
                out.append(sse({"index": i, "content": text, "stop": False, "id_slot": 0}))
            for i, (_, word) in enumerate(texts):
                final = self.one(result, "", self.word if i == 0 else word, i)
                out.append(sse(final))
        else:
            out.append(sse(self.one(None, "", None, 0)))
        return b"".join(out)


@dataclass
class LlamaCall:
    request: InfillRequest
    codec: LlamaCodec
    stream: bool
    n_predict: int | None


def _llama_common(body: dict[str, Any]) -> dict[str, Any]:
    n_predict = _max_tokens(body.get("n_predict", body.get("max_tokens")), "n_predict")
    stream = _check_type(body, "stream", (bool,), "true or false") or False
    fields_raw = body.get("response_fields")
    if fields_raw is not None and not (isinstance(fields_raw, list) and all(isinstance(f, str) for f in fields_raw)):
        raise ProtocolError("response_fields must be an array of strings")
    _check_type(body, "cache_prompt", (bool,), "true or false")
    _ignored_numbers(body, _SAMPLER_NUMBERS)
    return {"n_predict": n_predict, "stream": stream, "response_fields": fields_raw, "count": _count(body, "n_cmpl"),
            "stops": _stop_strings(body), "time_limit_ms": _time_limit(body), "seed": _seed(body)}


def _llama_extra(body: dict[str, Any]) -> list[ExtraFile]:
    extra_raw = _check_type(body, "input_extra", (list,), "an array of {filename, text} objects") or []
    extra = []
    for i, chunk in enumerate(extra_raw):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise ProtocolError(f"input_extra[{i}] must be an object with a string text")
        name = chunk.get("filename", "")
        if not isinstance(name, str):
            raise ProtocolError(f"input_extra[{i}].filename must be a string")
        extra.append(ExtraFile(path=name, text=chunk["text"]))
    return keep_recent(extra)  # llama.vim's ring may hold more than we use: the newest win


def _llama_call(common: dict[str, Any], prefix: str, suffix: str, extra: list[ExtraFile],
                prompt: str | None = None) -> LlamaCall:
    n_predict = common["n_predict"]
    request = InfillRequest(prefix=prefix, suffix=suffix, extra=extra, max_tokens=n_predict or None,
                            seed=common["seed"], stream=common["stream"], time_limit_ms=common["time_limit_ms"],
                            alternatives=common["count"] if common["count"] > 1 else None)
    codec = LlamaCodec(stops=common["stops"], count=common["count"], n_predict=n_predict,
                       response_fields=common["response_fields"], prompt=prompt)
    return LlamaCall(request=request, codec=codec, stream=common["stream"], n_predict=n_predict)


def llama_infill_request(body: Any) -> LlamaCall:
    body = _object(body)
    prefix = _check_type(body, "input_prefix", (str,), "a string") or ""
    suffix = _check_type(body, "input_suffix", (str,), "a string") or ""
    # llama.cpp puts `prompt` (the text before the cursor on its line) right after the prefix.
    prompt = _check_type(body, "prompt", (str,), "a string") or ""
    return _llama_call(_llama_common(body), prefix + prompt, suffix, _llama_extra(body))


def llama_completion_request(body: Any) -> LlamaCall:
    """llama.cpp ``/completion``: a prompt (maybe a FIM template) continued; answer ``content``."""
    body = _object(body)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProtocolError("prompt must be a string")
    parts = split_prompt(prompt)
    return _llama_call(_llama_common(body), parts.prefix, parts.suffix, keep_recent(parts.extra), prompt=prompt)


def llama_infill_response(call: LlamaCall, result: Result | None) -> Any:
    """The final /infill answer. ``result`` is None for a prompt-only (n_predict 0) warm-up."""
    return call.codec.answer(result)


# --- OpenAI legacy /v1/completions -----------------------------------------------------------


def openai_finish(finish_reason: str, word: str | None) -> str:
    # "time": the budget ran out; OpenAI's nearest is "length" (the answer was cut by a limit).
    if word is not None:
        return "stop"
    return "length" if finish_reason in ("length", "time") else "stop"


def _usage(timings: dict[str, Any]) -> dict[str, int]:
    prompt = int(timings.get("encoded_tokens") or 0) + int(timings.get("cached_tokens") or 0)
    completion = int(timings.get("generated_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass
class CompletionCodec(Codec):
    echo: str = ""  # the prompt, when the client asked for echo

    def answer(self, result: Result) -> dict[str, Any]:
        choices = [{"text": self.echo + text, "index": i, "finish_reason": openai_finish(result.finish_reason, word),
                    "logprobs": None} for i, (text, word) in enumerate(self.texts(result))]
        return {"id": f"cmpl-{result.id}", "object": "text_completion", "created": self.created,
                "model": result.model, "choices": choices, "usage": _usage(result.timings),
                "timings": result.timings}

    def _chunk(self, request_id: str, model: str, choice: dict[str, Any], **more: Any) -> bytes:
        return sse({"id": f"cmpl-{request_id}", "object": "text_completion", "created": self.created,
                    "model": model, "choices": [choice], **more})

    def event(self, text: str, request_id: str, model: str | None = None, index: int = 0) -> bytes:
        model = self.model if model is None else model
        if self.echo:  # the first text sent carries the echoed prompt
            text, self.echo = self.echo + text, ""
        return self._chunk(request_id, model, {"text": text, "index": index, "finish_reason": None, "logprobs": None})

    def end(self, result: Result) -> bytes:
        texts = self.texts(result)
        rest = self.take(result.text, done=True)
        out = [self.event(rest, result.id, result.model)] if rest or self.echo else []
        for i, (text, _) in enumerate(texts[1:], start=1):
            out.append(self._chunk(result.id, result.model,
                                   {"text": text, "index": i, "finish_reason": None, "logprobs": None}))
        for i, (_, word) in enumerate(texts):
            reason = openai_finish(result.finish_reason, self.word if i == 0 else word)
            more = {"usage": _usage(result.timings)} if i == len(texts) - 1 else {}
            out.append(self._chunk(result.id, result.model,
                                   {"text": "", "index": i, "finish_reason": reason, "logprobs": None}, **more))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)


@dataclass
class OpenAICall:
    request: InfillRequest | ChatRequest
    codec: Codec
    stream: bool
    kind: str = "infill"


def _openai_common(body: dict[str, Any]) -> dict[str, Any]:
    stream = _check_type(body, "stream", (bool,), "true or false") or False
    _ignored_numbers(body, _SAMPLER_NUMBERS)
    _check_type(body, "model", (str,), "a string")
    _check_type(body, "user", (str,), "a string")
    limit = body.get("max_tokens")
    if limit is None:
        limit = body.get("max_completion_tokens")
    return {"stream": stream, "count": _count(body, "n"), "stops": _stop_strings(body), "seed": _seed(body),
            "max_tokens": _max_tokens(limit, "max_tokens"), "time_limit_ms": _time_limit(body)}


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
    body = _object(body)
    prompt = _prompt_string(body)
    suffix = _check_type(body, "suffix", (str,), "a string") or ""
    echo = _check_type(body, "echo", (bool,), "true or false") or False
    common = _openai_common(body)
    codec = CompletionCodec(stops=common["stops"], count=common["count"], echo=prompt if echo else "")
    return OpenAICall(request=_fill_request(common, prompt, suffix), codec=codec, stream=common["stream"])


def openai_completion_response(call: OpenAICall, result: Result) -> dict[str, Any]:
    return call.codec.answer(result)


# --- chat-shaped answers: /v1/chat/completions and Mistral's /v1/fim/completions ---------------


@dataclass
class ChatCodec(Codec):
    def answer(self, result: Result) -> dict[str, Any]:
        choices = [{"index": i, "message": {"role": "assistant", "content": text},
                    "finish_reason": openai_finish(result.finish_reason, word), "logprobs": None}
                   for i, (text, word) in enumerate(self.texts(result))]
        return {"id": f"chatcmpl-{result.id}", "object": "chat.completion", "created": self.created,
                "model": result.model, "choices": choices, "usage": _usage(result.timings),
                "timings": result.timings}

    def _chunk(self, request_id: str, model: str, choice: dict[str, Any], **more: Any) -> bytes:
        return sse({"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": self.created,
                    "model": model, "choices": [choice], **more})

    def event(self, text: str, request_id: str, model: str | None = None, index: int = 0) -> bytes:
        model = self.model if model is None else model
        delta = {"role": "assistant", "content": text}
        return self._chunk(request_id, model, {"index": index, "delta": delta, "finish_reason": None})

    def end(self, result: Result) -> bytes:
        texts = self.texts(result)
        rest = self.take(result.text, done=True)
        out = [self.event(rest, result.id, result.model)] if rest else []
        for i, (text, _) in enumerate(texts[1:], start=1):
            out.append(self.event(text, result.id, result.model, index=i))
        for i, (_, word) in enumerate(texts):
            reason = openai_finish(result.finish_reason, self.word if i == 0 else word)
            more = {"usage": _usage(result.timings)} if i == len(texts) - 1 else {}
            out.append(self._chunk(result.id, result.model, {"index": i, "delta": {}, "finish_reason": reason},
                                   **more))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)


def fim_completion_request(body: Any) -> OpenAICall:
    """Mistral's ``/v1/fim/completions``: ``prompt`` (before the cursor) + ``suffix``; chat-shaped answer."""
    body = _object(body)
    prompt = _check_type(body, "prompt", (str,), "a string")
    if prompt is None:
        raise ProtocolError("fim completion request is missing the required field 'prompt'")
    suffix = _check_type(body, "suffix", (str,), "a string") or ""
    _check_type(body, "min_tokens", (int,), "an integer")
    common = _openai_common(body)
    codec = ChatCodec(stops=common["stops"], count=common["count"])
    return OpenAICall(request=_fill_request(common, prompt, suffix), codec=codec, stream=common["stream"])


def chat_completion_request(body: Any) -> OpenAICall:
    body = _object(body)
    if "messages" not in body:
        raise ProtocolError("chat completion request is missing the required field 'messages'")
    messages = chat_messages(body["messages"])
    common = _openai_common(body)
    if common["count"] > 1:
        raise WireError(ErrorCode.INVALID_REQUEST, "n > 1 is supported for completions, not for chat")
    _n_predict = body.get("n_predict")  # llama.vim's instruct warm-up sends n_predict 0 here
    max_tokens = common["max_tokens"] if _n_predict is None else _max_tokens(_n_predict, "n_predict")
    request = ChatRequest(messages=messages, max_tokens=max_tokens or None, seed=common["seed"],
                          stream=common["stream"], time_limit_ms=common["time_limit_ms"])
    call = OpenAICall(request=request, codec=ChatCodec(stops=common["stops"]), stream=common["stream"], kind="chat")
    if max_tokens == 0:
        call.kind = "warmup"
    return call


def empty_result(request_id: str, model: str) -> Result:
    """The answer to a request that asks for no tokens (a client warming a cache)."""
    return Result(text="", finish_reason="length", timings={}, id=request_id, model=model)
