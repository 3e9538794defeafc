"""The stand-in vLLM server (benchmarks/vllm_side/standin.py) answers as vLLM's OpenAI server,
with the tiny checkpoint's real canvases: checked against transformers' model run here, and against
the shapes a real vLLM server was seen to send."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from vllm_harness import STANDIN_NAME

pytestmark = pytest.mark.timeout(600)

CANVAS = 32
PROMPT = [2, 105, 48, 77, 301]
SEED = [(11 * i + 5) % 500 for i in range(CANVAS)]
PINS = list(range(CANVAS - 6, CANVAS))


def infill(**changes: Any) -> dict[str, Any]:
    xargs = {"diffusion_seed_canvas": SEED, "diffusion_pinned": PINS, "diffusion_read_only": True,
             **changes.pop("xargs", {})}
    body = {"model": STANDIN_NAME, "prompt": PROMPT, "max_tokens": CANVAS, "logprobs": 1,
            "logprob_token_ids": sorted({SEED[p] for p in PINS}), "return_tokens_as_token_ids": True,
            "return_token_ids": True, "vllm_xargs": xargs, **changes}
    return {k: v for k, v in body.items() if v is not None}


def post(server, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("timeout", 120)
    return httpx.post(f"{server.url}/v1/completions", json=body, **kwargs)


def sse(response: httpx.Response) -> list[Any]:
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def first_step(model_dir, prompt: list[int], canvas: list[int]):
    """transformers' DiffusionGemma over ``canvas`` after ``prompt``, as a first denoise step sees it
    (no self-conditioning yet): the (canvas, vocab) logits."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    with torch.no_grad():
        model.model.encoder(input_ids=torch.tensor([prompt]), past_key_values=cache,
                            position_ids=torch.arange(len(prompt)).unsqueeze(0))
        positions = torch.arange(len(prompt), len(prompt) + len(canvas)).unsqueeze(0)
        return model(decoder_input_ids=torch.tensor([canvas]), past_key_values=cache,
                     decoder_position_ids=positions).logits[0].float()


def test_models_tokenize_and_version(vllm_standin) -> None:
    from transformers import AutoTokenizer

    models = httpx.get(f"{vllm_standin.url}/v1/models").json()
    (card,) = models["data"]
    assert card["id"] == STANDIN_NAME and card["root"] == str(vllm_standin.model_dir.resolve())
    assert card["owned_by"] == "vllm" and card["max_model_len"] == 8192
    text = "def add(a, b):\n    return a + b<eos>"
    tokens = httpx.post(f"{vllm_standin.url}/tokenize", json={"model": STANDIN_NAME, "prompt": text,
                                                              "add_special_tokens": False}).json()
    local = AutoTokenizer.from_pretrained(str(vllm_standin.model_dir))
    assert tokens["tokens"] == local.encode(text, add_special_tokens=False) and tokens["count"] == len(tokens["tokens"])
    back = httpx.post(f"{vllm_standin.url}/detokenize", json={"model": STANDIN_NAME, "tokens": tokens["tokens"]})
    assert back.json() == {"prompt": local.decode(tokens["tokens"])}
    assert httpx.get(f"{vllm_standin.url}/version").json() == {"version": "0.32.0"}
    assert httpx.get(f"{vllm_standin.url}/health").status_code == 200


def test_one_step_canvas_is_the_models_argmax_pins_included(vllm_standin) -> None:
    """With one step, the emitted canvas is the model's argmax over the seeded canvas at every
    position (a pin holds the input, not the output), and the held ids' log-probabilities are the
    model's at temperature 1."""
    import torch

    response = post(vllm_standin, infill(xargs={"diffusion_max_steps": 1}), headers={"X-Request-Id": "pin-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    (choice,) = body["choices"]
    logits = first_step(vllm_standin.model_dir, PROMPT, SEED)
    assert choice["token_ids"] == logits.argmax(-1).tolist()
    assert body["id"] == "cmpl-pin-1" and choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(PROMPT), "total_tokens": len(PROMPT) + CANVAS,
                             "completion_tokens": CANVAS, "prompt_tokens_details": None,
                             "completion_tokens_details": None}
    logp = torch.log_softmax(logits, -1)
    top = choice["logprobs"]["top_logprobs"]
    assert len(top) == CANVAS and choice["logprobs"]["tokens"][0] == f"token_id:{choice['token_ids'][0]}"
    for p in PINS:
        got = top[p][f"token_id:{SEED[p]}"]
        assert got == pytest.approx(float(logp[p, SEED[p]]), abs=1e-3)


def test_a_denoised_infill_and_its_stream(vllm_standin) -> None:
    whole = post(vllm_standin, infill(xargs={"diffusion_max_steps": 6}))
    assert whole.status_code == 200
    (choice,) = whole.json()["choices"]
    assert len(choice["token_ids"]) == CANVAS and choice["finish_reason"] == "length"
    assert set(choice["logprobs"]["top_logprobs"][0]) >= {f"token_id:{SEED[p]}" for p in PINS}
    stream = post(vllm_standin, infill(stream=True, stream_options={"include_usage": True}, logprobs=None,
                                       logprob_token_ids=None, xargs={"diffusion_max_steps": 6}))
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    *chunks, usage = sse(stream)
    assert len(chunks) == 1  # one chunk per emitted canvas: no per-step drafts
    (delta,) = chunks[0]["choices"]
    assert len(delta["token_ids"]) == CANVAS and delta["finish_reason"] == "length"
    assert delta["prompt_token_ids"] == PROMPT
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == CANVAS
    assert usage["system_fingerprint"].startswith("vllm-0.32.0-")


def test_without_read_only_the_canvases_continue_block_by_block(vllm_standin) -> None:
    body = {"model": STANDIN_NAME, "prompt": PROMPT, "max_tokens": 2 * CANVAS + 5, "ignore_eos": True,
            "stream": True, "vllm_xargs": {"diffusion_max_steps": 3}}
    chunks = sse(post(vllm_standin, body))
    sizes = [len(c["choices"][0]["text"]) > 0 for c in chunks]
    assert len(chunks) == 3 and all(sizes)  # two whole canvases, then the last cut at max_tokens
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_errors_as_vllm_answers_them(vllm_standin) -> None:
    bad = infill(xargs={"diffusion_seed_canvas": SEED[:-1]})
    refused = post(vllm_standin, bad)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "diffusion_seed_canvas must hold exactly 32 ids, got 31. (parameter=extra_args)",
        "type": "BadRequestError", "param": "extra_args", "code": 400}
    streamed = post(vllm_standin, {**bad, "stream": True})
    assert streamed.status_code == 200  # the stream has started: the error is an event
    (event,) = sse(streamed)
    assert event["error"]["param"] == "extra_args" and "exactly 32 ids" in event["error"]["message"]
    for unsupported in (infill(xargs={"diffusion_constrained": True}), infill(n=2)):
        answer = post(vllm_standin, unsupported)  # vLLM does these; the stand-in says it does not
        assert answer.status_code == 400 and "not supported by the stand-in" in answer.json()["error"]["message"]
    unknown = post(vllm_standin, infill(model="nope"))
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFoundError"
    not_json = httpx.post(f"{vllm_standin.url}/v1/completions", content=b"{", timeout=30,
                          headers={"content-type": "application/json"})
    assert not_json.status_code == 400


def test_a_disconnect_aborts_and_concurrent_requests_finish(vllm_standin) -> None:
    long = {"model": STANDIN_NAME, "prompt": PROMPT, "max_tokens": 8000, "ignore_eos": True}
    before = vllm_standin.counts()
    with pytest.raises(httpx.ReadTimeout):
        post(vllm_standin, long, timeout=1.0)  # non-stream: the closed connection aborts it
    with httpx.stream("POST", f"{vllm_standin.url}/v1/completions", json={**long, "stream": True}, timeout=60) as r:
        next(line for line in r.iter_lines() if line.startswith("data: "))  # a canvas, then hang up
    deadline = time.monotonic() + 30
    while (now := vllm_standin.counts())["aborted"] < before["aborted"] + 2 or now["running"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    assert now["finished"] == before["finished"]  # as in vLLM: an abort is not a finished request
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(post(vllm_standin, infill(
        prompt=[*PROMPT, i], xargs={"diffusion_max_steps": 4})).status_code)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = vllm_standin.counts()
    assert results == [200] * 4 and after["finished"] == now["finished"] + 4
    assert after["received"] >= before["received"] + 6


def test_a_checkpoint_without_the_sampler_config_is_refused(tiny_model_dir, tmp_path) -> None:
    from vllm_harness import need_side_python
    from vllm_side.launch import start_standin

    with pytest.raises(RuntimeError, match="requires an EntropyBound sampler_config"):
        start_standin(need_side_python(), tiny_model_dir, tmp_path)


def test_one_sequence_at_a_time_queues_and_a_restart_keeps_the_port(standin_factory) -> None:
    server = standin_factory(max_num_seqs=1)
    long = {"model": STANDIN_NAME, "prompt": PROMPT, "max_tokens": 8000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{server.url}/v1/completions", json=long), \
            client.stream("POST", f"{server.url}/v1/completions", json=long):
        deadline = time.monotonic() + 30
        while (counts := server.counts())["waiting"] < 1:
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)
        assert counts["running"] == 1
    port = server.url.rsplit(":", 1)[1]
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health")
    again = standin_factory(port=int(port))
    assert again.url == server.url
    assert post(again, infill(xargs={"diffusion_max_steps": 2})).status_code == 200
