"""llama.cpp ``POST /infill`` (llama.vim, llama.vscode) and ``POST /completion`` (Continue's
llama.cpp provider, llama.cpp's native API): bodies onto InfillRequest, results back (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffgemma.runtime.api.checks import ExtraFile, ProtocolError, keep_recent
from diffgemma.runtime.api.request_types import InfillRequest
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
    # "syntax": the answer ended where the syntax gate cut it; llama.cpp's clients know an end, not why
    return "eos" if finish_reason in ("stop", "syntax") else "none"


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
    n_predict = read_max_tokens(body.get("n_predict", body.get("max_tokens")), "n_predict")
    stream = check_type(body, "stream", (bool,), "true or false") or False
    fields_raw = body.get("response_fields")
    if fields_raw is not None and not (isinstance(fields_raw, list) and all(isinstance(f, str) for f in fields_raw)):
        raise ProtocolError("response_fields must be an array of strings")
    check_type(body, "cache_prompt", (bool,), "true or false")
    check_numbers(body, SAMPLER_NUMBERS)
    return {"n_predict": n_predict, "stream": stream, "response_fields": fields_raw,
            "count": read_count(body, "n_cmpl"), "stops": read_stops(body), "time_limit_ms": read_time_limit(body),
            "seed": read_seed(body)}


def _llama_extra(body: dict[str, Any]) -> list[ExtraFile]:
    extra_raw = check_type(body, "input_extra", (list,), "an array of {filename, text} objects") or []
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
    body = as_object(body)
    prefix = check_type(body, "input_prefix", (str,), "a string") or ""
    suffix = check_type(body, "input_suffix", (str,), "a string") or ""
    # llama.cpp puts `prompt` (the text before the cursor on its line) right after the prefix.
    prompt = check_type(body, "prompt", (str,), "a string") or ""
    return _llama_call(_llama_common(body), prefix + prompt, suffix, _llama_extra(body))


def llama_completion_request(body: Any) -> LlamaCall:
    """llama.cpp ``/completion``: a prompt (maybe a FIM template) continued; answer ``content``."""
    body = as_object(body)
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
