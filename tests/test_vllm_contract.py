"""Every request the vLLM engine sends, judged by vLLM's own code: its OpenAI ``CompletionRequest``,
``to_sampling_params``, ``SamplingParams.verify`` and ``validate_diffusion_sampling_params``, run
in the side venv (tests/vllm_harness.py's ``vllm_checker``), at the tiny checkpoint the stand-in
serves and at the real model's canvas and vocabulary.

The bodies are the engine's own, caught by the plumbing server (tests/vllm_plumbing.py) while the
engine serves infills, several holes, rewrites, alternatives and chats.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_plumbing import PlumbingServer

from diffgemma.runtime.engine.layout import hole_candidates, rewrite_lengths
from diffgemma.runtime.engine.types import SamplingSettings
from diffgemma.runtime.engine.vllm.canvases import hole_spec
from diffgemma.runtime.engine.vllm.engine import VllmEngine
from diffgemma.runtime.engine.vllm.holes import layout
from diffgemma.runtime.engine.vllm.rewrite import rewrite_spec
from diffgemma.runtime.engine.vllm.wire import completion_body

pytest.importorskip("vllm_harness", reason="the vLLM side harness (tests/vllm_harness.py) is not here")
from vllm_harness import STANDIN_NAME, VllmChecker


@pytest.fixture(scope="module")
def caught(vllm_model_dir: Path) -> Iterator[list[dict[str, Any]]]:
    """The bodies the engine sends while it serves one of everything."""
    server = PlumbingServer(vllm_model_dir, 32, 512).start()
    server.knobs.served_name = STANDIN_NAME
    engine = VllmEngine.connect(str(vllm_model_dir), [server.url])
    try:
        engine.infill("def f(x):\n    return ", "\n\nprint(f(2))\n")
        engine.infill("x = ", "", max_tokens=80)  # canvas after canvas, nothing held
        engine.infill("x = ", "\n" + "y = 1\n" * 40, max_tokens=200)  # a hole longer than a canvas
        engine.infill("a", "b", alternatives=3, settings=SamplingSettings(steps=3))
        engine.infill_holes(["a = ", "\nb = ", "\nc = ", "\n"], alternatives=2)
        engine.edit("def f(x):\n", "    return x + 1\n" * 3, "\nprint(1)\n", instruction="shorter", strength=0.3)
        engine.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], max_tokens=40)
        yield list(server.record.bodies)
    finally:
        engine.close()
        server.stop()


def test_vllm_accepts_every_request_the_engine_sends(caught: list[dict[str, Any]], vllm_checker: VllmChecker) -> None:
    assert len(caught) > 30
    verdicts = vllm_checker.check(caught)
    refused = [(v.status, v.message) for v in verdicts if not v.ok]
    assert not refused
    for body, verdict in zip(caught, verdicts, strict=True):
        params = verdict.params
        # a whole canvas comes back: read-only caps max_tokens at the canvas and ignores EOS
        assert params["max_tokens"] == 32 and params["ignore_eos"] is True and params["temperature"] == 1.0
        assert params["extra_args"]["diffusion_read_only"] == 1
        assert params["logprob_token_ids"] == body.get("logprob_token_ids")
        assert params["output_kind"] == "FINAL_ONLY"


def test_the_requests_hold_at_the_real_models_canvas_and_vocabulary(vllm_checker: VllmChecker) -> None:
    canvas, vocab = 256, 262_144
    rng = random.Random(0)

    def noise() -> list[int]:
        return [rng.randrange(vocab) for _ in range(canvas)]

    suffix = [rng.randrange(vocab) for _ in range(300)]
    lengths, hold = hole_candidates(canvas, 8192, len(suffix))
    specs = [hole_spec(noise(), n, suffix, hold) for n in lengths]
    selection = [rng.randrange(vocab) for _ in range(120)]
    specs += [rewrite_spec(noise(), m, selection, suffix, 0.5, 64, rng)
              for m in rewrite_lengths(canvas, selection, suffix, True, 8192)]
    between = [[rng.randrange(vocab) for _ in range(40)] for _ in range(3)]
    specs.append(layout([30, 30, 30], between, canvas, 64).spec(noise()))
    bodies = [completion_body(STANDIN_NAME, [2, 100, 200], s.with_steps(2), canvas) for s in specs]
    verdicts = vllm_checker.check(bodies, canvas=canvas, vocab=vocab)
    assert [v.message for v in verdicts if not v.ok] == []
    assert len(lengths) == 8 and all(len(v.params["logprob_token_ids"] or []) <= 128 for v in verdicts)


def test_the_checker_refuses_what_the_engine_must_not_send(vllm_checker: VllmChecker) -> None:
    spec = hole_spec([5] * 32, 8, list(range(100, 140)), 8)
    good = completion_body(STANDIN_NAME, [2, 3], spec, 32)
    short = {**good, "vllm_xargs": {**good["vllm_xargs"], "diffusion_seed_canvas": spec.seed[:31]}}  # type: ignore[index]
    seeded = {**good, "seed": 1}
    default_length = {key: value for key, value in good.items() if key != "max_tokens"}
    verdicts = vllm_checker.check([good, short, seeded, default_length])
    assert verdicts[0].ok and not verdicts[1].ok and "exactly 32" in verdicts[1].message
    assert not verdicts[2].ok
    assert verdicts[3].ok and verdicts[3].params["max_tokens"] == 16  # why the engine always sends max_tokens
