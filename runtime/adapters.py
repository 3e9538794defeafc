"""Wire adapters so existing editor clients work unchanged (torch-free).

- llama.cpp ``POST /infill`` as llama.vim and llama.vscode send it.
- OpenAI legacy ``POST /v1/completions`` with ``prompt`` + ``suffix`` as Continue and Tabby send it.

Both map onto an InfillRequest and map the Result back. They are lenient the way the servers they
imitate are: fields we have no use for (samplers, top_k, n_indent, id_slot, ...) are accepted and
ignored, but a field we do use must have the right type.

Streaming: those clients concatenate the ``content``/``text`` of every chunk, which suits a
left-to-right decoder. A denoising draft replaces the previous one instead of extending it, so we
send the finished text as one chunk followed by the closing chunk: same framing, correct text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from diffgemma.runtime.protocol import (
    MAX_EXTRA_FILES,
    MAX_TOKENS_LIMIT,
    ExtraFile,
    InfillRequest,
    ProtocolError,
    Result,
)


def _check_type(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{key} must be {what} (got boolean)")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{key} must be {what}")
    return value


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
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{key} must be an integer")
    if value < 0 or value > MAX_TOKENS_LIMIT:
        raise ProtocolError(f"{key} must be between 0 and {MAX_TOKENS_LIMIT} (got {value})")
    return value


def _seed(body: dict[str, Any]) -> int | None:
    seed = _check_type(body, "seed", (int,), "an integer")
    if seed is None or seed < 0:  # llama.cpp: -1 is "random"
        return None
    return seed


# --- llama.cpp /infill ----------------------------------------------------------------------


@dataclass
class LlamaInfill:
    request: InfillRequest
    n_predict: int | None
    stream: bool
    stops: list[str] = field(default_factory=list)
    response_fields: list[str] | None = None


def llama_infill_request(body: Any) -> LlamaInfill:
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    prefix = _check_type(body, "input_prefix", (str,), "a string") or ""
    suffix = _check_type(body, "input_suffix", (str,), "a string") or ""
    # llama.cpp puts `prompt` (the text before the cursor on its line) right after the prefix.
    prompt = _check_type(body, "prompt", (str,), "a string") or ""
    extra_raw = _check_type(body, "input_extra", (list,), "an array of {filename, text} objects") or []
    if len(extra_raw) > MAX_EXTRA_FILES:
        raise ProtocolError(f"input_extra holds {len(extra_raw)} chunks; at most {MAX_EXTRA_FILES} are allowed")
    extra = []
    for i, chunk in enumerate(extra_raw):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise ProtocolError(f"input_extra[{i}] must be an object with a string text")
        name = chunk.get("filename", "")
        if not isinstance(name, str):
            raise ProtocolError(f"input_extra[{i}].filename must be a string")
        extra.append(ExtraFile(path=name, text=chunk["text"]))
    n_predict = _max_tokens(body.get("n_predict", body.get("max_tokens")), "n_predict")
    stream = _check_type(body, "stream", (bool,), "true or false") or False
    fields_raw = body.get("response_fields")
    if fields_raw is not None and not (isinstance(fields_raw, list) and all(isinstance(f, str) for f in fields_raw)):
        raise ProtocolError("response_fields must be an array of strings")
    for key in ("cache_prompt",):
        _check_type(body, key, (bool,), "true or false")
    for key in ("t_max_predict_ms", "t_max_prompt_ms", "temperature", "top_k", "top_p", "n_indent"):
        _check_type(body, key, (int, float), "a number")
    request = InfillRequest(prefix=prefix + prompt, suffix=suffix, extra=extra, max_tokens=n_predict or None,
                            seed=_seed(body), stream=stream)
    return LlamaInfill(request=request, n_predict=n_predict, stream=stream, stops=_stop_strings(body),
                       response_fields=fields_raw)


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


def llama_infill_response(call: LlamaInfill, result: Result | None) -> dict[str, Any]:
    """The final /infill answer. ``result`` is None for a prompt-only (n_predict 0) warm-up."""
    text, word = apply_stop(result.text, call.stops) if result else ("", None)
    timings = _llama_timings(result.timings if result else {})
    if word is not None:
        stop_type = "word"
    elif result is not None and result.finish_reason == "length":
        stop_type = "limit"
    else:
        stop_type = "eos" if result is not None else "limit"
    data = {
        "index": 0,
        "content": text,
        "id_slot": 0,
        "stop": True,
        "model": result.model if result else "",
        "tokens_predicted": timings["predicted_n"],
        "tokens_evaluated": timings["prompt_n"] + timings["cache_n"],
        "generation_settings": {"n_predict": call.n_predict if call.n_predict is not None else -1},
        "has_new_line": "\n" in text,
        "truncated": False,
        "stop_type": stop_type,
        "stopping_word": word or "",
        "tokens_cached": timings["cache_n"],
        "timings": timings,
    }
    if call.response_fields is not None:
        return _nested_fields(data, call.response_fields)
    return data


def llama_stream_chunks(call: LlamaInfill, result: Result | None) -> list[bytes]:
    """SSE ``data: {...}`` events as llama.cpp streams them: the content, then the closing event."""
    final = llama_infill_response(LlamaInfill(call.request, call.n_predict, call.stream, call.stops), result)
    events = []
    if final["content"]:
        events.append({"index": 0, "content": final["content"], "stop": False, "id_slot": 0,
                       "tokens_predicted": final["tokens_predicted"],
                       "tokens_evaluated": final["tokens_evaluated"]})
    final["content"] = ""
    if call.response_fields is not None:
        final = _nested_fields(final, call.response_fields)
    events.append(final)
    return [sse(e) for e in events]


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --- OpenAI legacy /v1/completions ------------------------------------------------------------


@dataclass
class OpenAICompletion:
    request: InfillRequest
    stream: bool
    echo: bool
    prompt: str
    stops: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))


def openai_completion_request(body: Any) -> OpenAICompletion:
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):  # the API allows a batch; one prompt is all we take
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ProtocolError("prompt must be a string (or an array holding one string)")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProtocolError("prompt must be a string")
    suffix = _check_type(body, "suffix", (str,), "a string") or ""
    n = _check_type(body, "n", (int,), "an integer")
    if n is not None and n != 1:
        raise ProtocolError("only n = 1 is supported")
    stream = _check_type(body, "stream", (bool,), "true or false") or False
    echo = _check_type(body, "echo", (bool,), "true or false") or False
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_type(body, key, (int, float), "a number")
    _check_type(body, "model", (str,), "a string")
    max_tokens = _max_tokens(body.get("max_tokens"), "max_tokens")
    # The client's `model` is its own label for this server (e.g. "diffgemma"), not a checkpoint
    # we could load, so the daemon's configured model answers.
    request = InfillRequest(prefix=prompt, suffix=suffix, max_tokens=max_tokens or None, seed=_seed(body),
                            stream=stream)
    return OpenAICompletion(request=request, stream=stream, echo=echo, prompt=prompt, stops=_stop_strings(body))


def _openai_usage(timings: dict[str, Any]) -> dict[str, int]:
    prompt = int(timings.get("encoded_tokens") or 0) + int(timings.get("cached_tokens") or 0)
    completion = int(timings.get("generated_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_finish(call: OpenAICompletion, result: Result) -> tuple[str, str]:
    text, word = apply_stop(result.text, call.stops)
    reason = "stop" if word is not None or result.finish_reason != "length" else "length"
    if call.echo:
        text = call.prompt + text
    return text, reason


def openai_completion_response(call: OpenAICompletion, result: Result) -> dict[str, Any]:
    text, reason = _openai_finish(call, result)
    return {
        "id": f"cmpl-{result.id}",
        "object": "text_completion",
        "created": call.created,
        "model": result.model,
        "choices": [{"text": text, "index": 0, "finish_reason": reason, "logprobs": None}],
        "usage": _openai_usage(result.timings),
        "timings": result.timings,
    }


def openai_stream_chunks(call: OpenAICompletion, result: Result) -> list[bytes]:
    text, reason = _openai_finish(call, result)
    head = {"id": f"cmpl-{result.id}", "object": "text_completion", "created": call.created,
            "model": result.model}
    events = []
    if text:
        events.append(sse({**head, "choices": [{"text": text, "index": 0, "finish_reason": None,
                                                 "logprobs": None}]}))
    events.append(sse({**head, "choices": [{"text": "", "index": 0, "finish_reason": reason, "logprobs": None}],
                       "usage": _openai_usage(result.timings)}))
    events.append(b"data: [DONE]\n\n")
    return events
