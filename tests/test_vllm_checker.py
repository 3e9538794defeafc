"""vLLM's own code judges /v1/completions bodies (tests/vllm_harness.py): it accepts a well-made
diffusion infill and refuses what a real vLLM server refuses, with its status and message."""

from __future__ import annotations

from typing import Any

import pytest
from vllm_harness import STANDIN_NAME

pytestmark = pytest.mark.timeout(300)

CANVAS, VOCAB = 32, 512  # the tiny checkpoint's
REAL_CANVAS, REAL_VOCAB = 256, 262_144


def infill(canvas: int = CANVAS, **changes: Any) -> dict[str, Any]:
    """A read-only infill canvas: the hole's noise, then the held suffix's ids pinned."""
    seed = [(7 * i + 3) % 500 for i in range(canvas)]
    pins = list(range(canvas - 4, canvas))
    body: dict[str, Any] = {
        "model": STANDIN_NAME, "prompt": [2, 105, 48, 77], "max_tokens": canvas, "logprobs": 1,
        "logprob_token_ids": sorted({seed[p] for p in pins}), "return_tokens_as_token_ids": True,
        "vllm_xargs": {"diffusion_seed_canvas": seed, "diffusion_pinned": pins, "diffusion_read_only": True,
                       "diffusion_max_steps": 8},
    }
    xargs = changes.pop("xargs", {})
    body["vllm_xargs"] = {k: v for k, v in {**body["vllm_xargs"], **xargs}.items() if v is not None}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_a_read_only_infill_is_accepted_as_sent(vllm_checker) -> None:
    (verdict,) = vllm_checker.check([infill()])
    assert verdict.ok, verdict.error
    params = verdict.params
    assert params["max_tokens"] == CANVAS and params["ignore_eos"] is True and params["temperature"] == 1.0
    assert params["logprob_token_ids"] == infill()["logprob_token_ids"]
    assert params["num_logprobs"] == 4 and params["logprobs"] is None  # the ids replace the top-k
    assert params["extra_args"]["diffusion_seed_canvas"] == infill()["vllm_xargs"]["diffusion_seed_canvas"]
    assert params["extra_args"]["diffusion_read_only"] == 1  # JSON true arrives as the integer 1
    assert verdict.prompts[0]["prompt_tokens"] == 4


def test_bad_canvases_are_refused_as_vllm_refuses_them(vllm_checker) -> None:
    seed = infill()["vllm_xargs"]["diffusion_seed_canvas"]
    cases = {
        "diffusion_seed_canvas must hold exactly 32 ids, got 31": infill(xargs={"diffusion_seed_canvas": seed[:-1]}),
        "diffusion_pinned needs a diffusion_seed_canvas": infill(xargs={"diffusion_seed_canvas": None}),
        "diffusion_seed_canvas must be a list of token ids": infill(
            xargs={"diffusion_seed_canvas": [float(t) for t in seed]}),
        "ids must be in [0, 512)": infill(xargs={"diffusion_seed_canvas": [VOCAB, *seed[1:]]}),
        "positions must lie inside the canvas": infill(xargs={"diffusion_pinned": [CANVAS]}),
        "diffusion_max_steps": infill(xargs={"diffusion_max_steps": 0}),
        "no larger than the served canvas": infill(xargs={"diffusion_canvas_length": CANVAS + 1}),
    }
    verdicts = vllm_checker.check(list(cases.values()))
    for expected, verdict in zip(cases, verdicts, strict=True):
        assert not verdict.ok and verdict.status == 400, (expected, verdict)
        assert expected in verdict.message, (expected, verdict.message)
        assert verdict.error["param"] == "extra_args" and verdict.error["type"] == "BadRequestError"


def test_request_level_refusals(vllm_checker) -> None:
    temperature, no_logprobs, unknown, nested, big_id = vllm_checker.check([
        infill(temperature=0.7),
        infill(logprobs=None),
        infill(model="some-other-model"),
        infill(xargs={"diffusion_seed_canvas": [infill()["vllm_xargs"]["diffusion_seed_canvas"]]}),
        infill(prompt=[2, VOCAB + 5]),
    ])
    assert "not yet supported with diffusion models" in temperature.message
    assert no_logprobs.error["param"] == "logprob_token_ids" and "`logprobs` must be set" in no_logprobs.message
    assert unknown.status == 404 and unknown.error["type"] == "NotFoundError"
    assert f"Valid aliases: {STANDIN_NAME}" in unknown.message
    assert nested.status == 400 and "validation error" in nested.message  # pydantic, before any vLLM check
    assert big_id.status == 400 and f"Token id {VOCAB + 5} is out of vocabulary" in big_id.message


def test_the_default_max_tokens_truncates_a_canvas_visibly(vllm_checker) -> None:
    """OpenAI's default max_tokens is 16: a read-only canvas sent without it comes back 16 long."""
    without, plain = vllm_checker.check([infill(max_tokens=None),
                                         infill(max_tokens=None, xargs={"diffusion_read_only": None})])
    assert without.ok and without.params["max_tokens"] == 16 and without.params["ignore_eos"] is True
    assert plain.ok and plain.params["max_tokens"] == 16 and plain.params["ignore_eos"] is False


def test_a_narrower_canvas_and_text_prompts(vllm_checker) -> None:
    narrow = infill(canvas=16, xargs={"diffusion_canvas_length": 16})
    ok_narrow, wide_seed, text = vllm_checker.check([
        narrow,
        infill(xargs={"diffusion_canvas_length": 16}),  # a seed of 32 for a 16-wide canvas
        infill(prompt="def add(a, b):\n    return "),
    ])
    assert ok_narrow.ok and ok_narrow.params["max_tokens"] == 16
    assert not wide_seed.ok and "must hold exactly 16 ids, got 32" in wide_seed.message
    assert text.ok and text.prompts[0]["prompt_tokens"] > 3


def test_the_real_canvas_and_vocabulary_without_a_checkpoint(vllm_checker) -> None:
    good, short, big = vllm_checker.check(
        [infill(REAL_CANVAS), infill(REAL_CANVAS, xargs={"diffusion_seed_canvas": list(range(255))}),
         infill(REAL_CANVAS, xargs={"diffusion_seed_canvas": [REAL_VOCAB] * REAL_CANVAS})],
        canvas=REAL_CANVAS, vocab=REAL_VOCAB)
    assert good.ok, good.error
    assert good.params["max_tokens"] == REAL_CANVAS and good.params["ignore_eos"] is True
    assert "must hold exactly 256 ids, got 255" in short.message
    assert "ids must be in [0, 262144)" in big.message
