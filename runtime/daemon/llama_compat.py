"""llama.cpp ``POST /infill`` (llama.vim, llama.vscode) and ``POST /completion`` (Continue's
llama.cpp provider, llama.cpp's native API): bodies onto InfillRequest, results back (torch-free).

The bodies are declared field by field (``LLAMA_INFILL``, ``LLAMA_COMPLETION``) and the answers as types
(``LlamaAnswer``, ``LlamaChunk``): /openapi.json is generated from both."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NotRequired, cast

from typing_extensions import TypedDict

from diffgemma.runtime.api.checks import Checker, ExtraFile, Fields, keep_recent
from diffgemma.runtime.api.config import MAX_ALTERNATIVES
from diffgemma.runtime.api.request_types import InfillRequest
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.daemon import compat_fields as cf
from diffgemma.runtime.daemon.codec import Codec, sse
from diffgemma.runtime.daemon.fim import split_prompt


class LlamaTimings(TypedDict):
    """llama.cpp's timings (prompt_n: prompt tokens evaluated now, cache_n: reused), and ours: what a
    denoising step costs and how many tokens each forward pass settles."""

    cache_n: int
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float
    steps: int
    ms_per_step: float
    tokens_per_forward: float
    decoder_tokens: int


class LlamaSettings(TypedDict):
    n_predict: int


class LlamaAnswer(TypedDict, total=False):
    """llama.cpp's answer to /infill and /completion (one per candidate; the last event of a stream).
    Every key is there unless ``response_fields`` picked some: then only those, keyed by their path
    ("timings/prompt_n" for a nested one)."""

    index: int
    content: str
    id_slot: int
    stop: bool
    model: str
    tokens_predicted: int
    tokens_evaluated: int  # the prompt's tokens, as the model saw it
    generation_settings: LlamaSettings
    has_new_line: bool
    truncated: bool
    stop_type: Literal["word", "limit", "eos", "none"]
    stopping_word: str
    tokens_cached: int
    timings: LlamaTimings
    prompt: str  # /completion echoes its prompt


class LlamaChunk(TypedDict):
    """A streamed piece of a candidate's text (each committed canvas as soon as it exists)."""

    index: int
    content: str
    stop: Literal[False]
    id_slot: int
    model: NotRequired[str]


# n_cmpl > 1: an array, one per candidate.
LlamaReply = LlamaAnswer | list[LlamaAnswer]
LlamaEvent = LlamaChunk | LlamaAnswer


def _llama_timings(timings: dict[str, Any]) -> LlamaTimings:
    cached = int(timings.get("cached_tokens") or 0)
    prompt_n = max(0, int(timings.get("prompt_tokens") or 0) - cached)
    prompt_ms = float(timings.get("encode_ms") or 0.0)
    predicted_n = int(timings.get("generated_tokens") or 0)
    predicted_ms = max(0.0, float(timings.get("total_ms") or 0.0) - prompt_ms)
    return {
        "cache_n": cached,
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
        "ms_per_step": float(timings.get("ms_per_step") or 0.0),
        "tokens_per_forward": float(timings.get("tokens_per_forward") or 0.0),
        "decoder_tokens": int(timings.get("decoder_tokens") or 0),
    }


def _nested_fields(data: LlamaAnswer, paths: list[str]) -> LlamaAnswer:
    """llama.cpp's ``response_fields``: keep only these "a/b" paths, keyed by the path itself (none
    given: the whole answer, as llama.cpp does)."""
    if not paths:
        return data
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
    return cast(LlamaAnswer, out)


def llama_stop_type(finish_reason: str | None, word: str | None) -> Literal["word", "limit", "eos", "none"]:
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

    def one(self, result: Result, text: str, word: str | None, index: int) -> LlamaAnswer:
        timings = _llama_timings(result.timings)
        data: LlamaAnswer = {
            "index": index,
            "content": text,
            "id_slot": 0,
            "stop": True,
            "model": result.model,
            "tokens_predicted": timings["predicted_n"],
            "tokens_evaluated": int(result.timings.get("prompt_tokens") or 0),
            "generation_settings": {"n_predict": self.n_predict if self.n_predict is not None else -1},
            "has_new_line": "\n" in text,
            "truncated": False,
            "stop_type": llama_stop_type(result.finish_reason, word),
            "stopping_word": word or "",
            "tokens_cached": timings["cache_n"],
            "timings": timings,
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        return _nested_fields(data, self.response_fields) if self.response_fields is not None else data

    def answer(self, result: Result) -> LlamaReply:
        """One result object, or (n_cmpl > 1) an array of them, as llama.cpp answers."""
        items = [self.one(result, text, word, i) for i, (text, word) in enumerate(self.texts(result))]
        return items if self.count > 1 else items[0]

    def event(self, text: str, request_id: str) -> bytes:
        chunk: LlamaChunk = {"index": 0, "content": text, "stop": False, "id_slot": 0, "model": self.model}
        return sse(chunk)

    def end(self, result: Result) -> bytes:
        out = []
        texts = self.texts(result)
        rest = self.take(result.text, done=True)
        if rest:
            out.append(self.event(rest, result.id))
        for i, (text, _) in enumerate(texts[1:], start=1):
            chunk: LlamaChunk = {"index": i, "content": text, "stop": False, "id_slot": 0}
            out.append(sse(chunk))
        for i, (_, word) in enumerate(texts):
            out.append(sse(self.one(result, "", self.word if i == 0 else word, i)))
        return b"".join(out)


@dataclass
class LlamaCall:
    request: InfillRequest
    codec: LlamaCodec
    stream: bool
    max_tokens: int | None  # 0: nothing to generate (a client warming its cache): answered at once


_COMMON: dict[str, Checker] = {
    "n_predict": cf.token_limit,
    "max_tokens": cf.token_limit,
    "stream": cf.flag,
    "cache_prompt": cf.flag,
    "response_fields": cf.strings,
    "n_cmpl": partial(cf.count, high=MAX_ALTERNATIVES),
    "stop": cf.stops,
    "t_max_predict_ms": cf.time_limit,
    "seed": cf.seed,
    **cf.IGNORED_SAMPLERS,
}
_DOCS = {
    "n_predict": "Most tokens to generate; -1: until done; 0: nothing (an empty answer at once, as llama.vim's "
                 "cache warm-ups expect).",
    "max_tokens": "Read when n_predict is not given.",
    "stream": "Server-sent events: each committed canvas as soon as it exists, then the final object(s).",
    "cache_prompt": "Accepted; the prefix cache is always on.",
    "response_fields": "Only these fields (\"a/b\" for nested ones), keyed by the path; empty: all.",
    "n_cmpl": "Candidates denoised as one batch; above 1 the answer is an array.",
    "stop": "Stop strings: the answer is cut before the first one.",
    "t_max_predict_ms": "Time budget: at its end the best draft so far is the answer; <= 0: none.",
    "seed": "Seed of the canvas noise; outside 0..2^63-1 (llama.cpp's -1): random.",
    "input_prefix": "Text before the cursor.",
    "input_suffix": "Text after the cursor.",
    "input_extra": "Chunks of other files ({filename, text}), oldest first; the newest that fit are used.",
    "prompt": "/infill: the text before the cursor on its line (appended to input_prefix); /completion: the "
              "prompt, maybe a fill-in-the-middle template (a string, or an array holding one).",
}
_IGNORED = "Sampler fields (temperature, top_k, ...) are accepted and ignored."


def _llama_call(values: dict[str, Any], prefix: str, suffix: str, extra: list[ExtraFile],
                prompt: str | None = None) -> LlamaCall:
    # llama.cpp reads n_predict, else max_tokens
    limit = values["n_predict"] if "n_predict" in values else values.get("max_tokens")
    count = values.get("n_cmpl", 1)
    stream = bool(values.get("stream"))
    request = InfillRequest(prefix=prefix, suffix=suffix, extra=extra, max_tokens=limit or None,
                            seed=values.get("seed"), stream=stream, time_limit_ms=values.get("t_max_predict_ms"),
                            alternatives=count if count > 1 else None)
    codec = LlamaCodec(stops=values.get("stop", []), count=count, n_predict=limit,
                       response_fields=values.get("response_fields"), prompt=prompt)
    return LlamaCall(request=request, codec=codec, stream=stream, max_tokens=limit)


def _infill(values: dict[str, Any]) -> LlamaCall:
    prefix, suffix = values.get("input_prefix") or "", values.get("input_suffix") or ""
    # llama.cpp puts `prompt` (the text before the cursor on its line) right after the prefix.
    return _llama_call(values, prefix + (values.get("prompt") or ""), suffix, values.get("input_extra", []))


def _completion(values: dict[str, Any]) -> LlamaCall:
    prompt = values.get("prompt", "")
    parts = split_prompt(prompt)
    return _llama_call(values, parts.prefix, parts.suffix, keep_recent(parts.extra), prompt=prompt)


LLAMA_INFILL: cf.Body[LlamaCall] = cf.Body(Fields(
    name="LlamaInfillRequest", kind="llama.cpp infill", strict=False, docs=_DOCS,
    description=f"llama.cpp /infill (llama.vim, llama.vscode). {_IGNORED}",
    checks={"input_prefix": cf.text, "input_suffix": cf.text, "prompt": cf.text, "input_extra": cf.input_extra,
            **_COMMON}), _infill)
LLAMA_COMPLETION: cf.Body[LlamaCall] = cf.Body(Fields(
    name="LlamaCompletionRequest", kind="llama.cpp completion", strict=False, docs=_DOCS,
    description=f"llama.cpp /completion: a prompt continued, or filled where it is a FIM template. {_IGNORED}",
    checks={"prompt": cf.prompt, **_COMMON}), _completion)

llama_infill_request = LLAMA_INFILL.from_json
llama_completion_request = LLAMA_COMPLETION.from_json
