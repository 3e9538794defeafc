"""The vLLM engine's requests, built and read back without a server: canvas layout, pins, scores,
ranking, routing. (What vLLM's own request model and validator say of these requests is checked
against the side venv's vLLM in tests/test_vllm_contract.py.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from diffgemma.runtime.engine.layout import hole_candidates
from diffgemma.runtime.engine.types import SamplingSettings, SettingsError
from diffgemma.runtime.engine.vllm.canvases import capped_scored, continued, hole_spec, rank
from diffgemma.runtime.engine.vllm.connect import VllmStartError, server_url
from diffgemma.runtime.engine.vllm.engine import request_steps
from diffgemma.runtime.engine.vllm.holes import layout
from diffgemma.runtime.engine.vllm.rewrite import rewrite_spec
from diffgemma.runtime.engine.vllm.servers import ranking
from diffgemma.runtime.engine.vllm.tokens import CheckpointTokenizer, read_checkpoint
from diffgemma.runtime.engine.vllm.wire import (
    MAX_LOGPROB_TOKEN_IDS,
    CanvasReply,
    CanvasSpec,
    ProtocolMismatch,
    completion_body,
    parse_reply,
)

W = 256
SUFFIX = list(range(1000, 1100))  # a held suffix longer than the canvas leaves room for


def test_a_hole_canvas_holds_the_suffix_head_right_after_the_hole() -> None:
    lengths, hold = hole_candidates(W, 4096, len(SUFFIX))
    assert hold == W // 4 and lengths[-1] == W - hold
    noise = [7] * W
    for n in lengths:
        spec = hole_spec(noise, n, SUFFIX, hold)
        assert spec.seed is not None and len(spec.seed) == W
        held = SUFFIX[: W - n]
        assert spec.pinned == list(range(n, n + len(held)))
        assert [spec.seed[p] for p in spec.pinned] == held
        assert spec.seed[:n] == noise[:n]  # the hole starts as noise
        assert spec.scored == spec.pinned[:hold]  # the first held tokens score it, as in the local engine


def test_the_request_body_is_a_read_only_canvas_of_canvas_length() -> None:
    spec = hole_spec([5] * W, 40, SUFFIX, 64).with_steps(2)
    body = completion_body("served", [2, 10, 11], spec, W)
    xargs = body["vllm_xargs"]
    assert body["max_tokens"] == W and body["prompt"] == [2, 10, 11] and body["stream"] is False
    assert body["temperature"] == 1.0 and "seed" not in body  # vLLM's diffusion sampler refuses both otherwise
    assert xargs["diffusion_read_only"] == 1 and xargs["diffusion_canvas_length"] == W
    assert xargs["diffusion_seed_canvas"] == spec.seed and xargs["diffusion_pinned"] == spec.pinned
    assert xargs["diffusion_max_steps"] == 2
    assert body["logprob_token_ids"] == sorted(set(SUFFIX[:64])) and body["logprobs"] == 0
    assert body["return_tokens_as_token_ids"] is True and body["return_token_ids"] is True
    plain = completion_body("served", [2], CanvasSpec(), W)
    assert "diffusion_seed_canvas" not in plain["vllm_xargs"] and "logprob_token_ids" not in plain


def test_scored_ids_never_exceed_what_vllm_takes() -> None:
    seed = list(range(W))  # every position a different token
    spans = [list(range(s, s + 60)) for s in (0, 64, 128, 192)]
    scored = capped_scored(seed, spans)
    assert len({seed[p] for p in scored}) == MAX_LOGPROB_TOKEN_IDS
    assert all(span[0] in scored for span in spans)  # every hole keeps its head scored
    with pytest.raises(ValueError):
        completion_body("m", [], CanvasSpec(seed=seed, pinned=list(range(W)), scored=list(range(W))), W)


def reply(tokens: list[int], held: dict[int, float]) -> CanvasReply:
    return CanvasReply(tokens=tokens, confidence=[1.0] * len(tokens), held_logp=held)


def test_a_canvas_that_drifts_from_its_pins_ranks_below_one_that_joins() -> None:
    specs = [hole_spec([3] * W, n, SUFFIX, 8) for n in (10, 20)]
    drifted = list(specs[0].seed or [])
    drifted[specs[0].pinned[-1]] += 1  # the model's own token at the last pin is not the held one
    replies: list[CanvasReply | None] = [reply(drifted, {p: -0.01 for p in specs[0].scored}),
                                         reply(list(specs[1].seed or []), {p: -3.0 for p in specs[1].scored})]
    assert replies[0] is not None and replies[1] is not None
    assert not replies[0].joins(specs[0]) and replies[0].mismatches(specs[0]) == 1
    assert replies[1].joins(specs[1])
    assert replies[0].score(specs[0]) > replies[1].score(specs[1])
    assert rank(specs, replies) == [1, 0]  # joining first, whatever the score
    assert rank(specs, [None, replies[1]]) == [1]  # unfinished candidates are not ranked


def test_scores_rank_candidates_that_join_alike() -> None:
    specs = [hole_spec([3] * W, n, SUFFIX, 8) for n in (10, 20, 30)]
    replies: list[CanvasReply | None] = [reply(list(s.seed or []), {p: lp for p in s.scored})
                                         for s, lp in zip(specs, (-2.0, -0.5, -0.5), strict=True)]
    assert rank(specs, replies) == [1, 2, 0]  # a tie goes to the shorter hole, as argmax does


def test_a_final_continues_from_its_scouted_canvas_with_the_pins_held_again() -> None:
    spec = hole_spec([3] * W, 10, SUFFIX, 8)
    scouted = [9] * W
    nxt = continued(spec, reply(scouted, {}))
    assert nxt.seed is not None and nxt.seed[:10] == [9] * 10
    assert [nxt.seed[p] for p in spec.pinned] == SUFFIX[: W - 10]
    assert nxt.pinned == spec.pinned and nxt.scored == spec.scored


def test_a_rewrite_is_seeded_from_the_selection_at_its_strength() -> None:
    orig = list(range(500, 540))
    rng = random.Random(0)
    kept = rewrite_spec([1] * W, 40, orig, SUFFIX, 0.0, 16, rng)
    assert kept.seed is not None and kept.seed[:40] == orig and kept.pinned[0] == 40
    fresh = rewrite_spec([1] * W, 40, orig, SUFFIX, 1.0, 16, rng)
    assert fresh.seed is not None and fresh.seed[:40] == [1] * 40
    half = rewrite_spec([1] * W, 40, orig, SUFFIX, 0.5, 16, random.Random(1))
    assert half.seed is not None and 5 < sum(a == b for a, b in zip(half.seed, orig, strict=False)) < 35


def test_several_holes_share_a_canvas_with_the_text_between_them_pinned() -> None:
    between = [[100, 101, 102], [200, 201]]
    lay = layout([5, 7], between, 32, 8)
    assert lay.holes == [(0, 5), (8, 7)]
    assert lay.held == {5: 100, 6: 101, 7: 102, 15: 200, 16: 201}
    assert lay.spans == [[5, 6, 7], [15, 16]]
    spec = lay.spec([0] * 32)
    assert spec.seed is not None and spec.pinned == [5, 6, 7, 15, 16] and spec.seed[15] == 200


def test_the_answer_is_read_from_token_ids_and_logprobs() -> None:
    spec = CanvasSpec(seed=[4, 5, 6, 7], pinned=[2, 3], scored=[2, 3])
    data = {"choices": [{"token_ids": [1, 2, 6, 8], "finish_reason": "length",
                         "logprobs": {"token_logprobs": [0.0, -1.0, -0.5, -2.0],
                                      "top_logprobs": [{}, {}, {"token_id:6": -0.5}, {"token_id:8": -2.0}]}}],
            "usage": {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}}
    got = parse_reply(data, spec)
    assert got.tokens == [1, 2, 6, 8] and got.held_logp == {2: -0.5, 3: -9999.0}
    assert got.confidence[0] == 1.0 and got.prompt_tokens == 3 and got.cached_tokens == 2
    assert got.mismatches(spec) == 1
    no_ids = {"choices": [{"logprobs": {"tokens": ["token_id:1", "token_id:2"], "token_logprobs": [0.0, 0.0]}}]}
    assert parse_reply(no_ids, CanvasSpec()).tokens == [1, 2]
    with pytest.raises(ProtocolMismatch):
        parse_reply({"object": "error"}, spec)


def test_routing_is_affine_and_moves_only_a_failed_servers_clients() -> None:
    urls = [f"http://gpu{i}:8000" for i in range(4)]
    keys = [f"client-{i}" for i in range(200)]
    first = {k: ranking(k, urls)[0] for k in keys}
    assert first == {k: ranking(k, urls)[0] for k in keys}  # the same key, the same server
    assert len(set(first.values())) == 4  # and the keys spread over all of them
    without = urls[:2] + urls[3:]  # gpu2 gone
    for k in keys:
        if urls[first[k]] != urls[2]:
            assert without[ranking(k, without)[0]] == urls[first[k]]


def test_server_urls_are_normalised_and_checked() -> None:
    assert server_url("http://gpu1:8000/v1/") == "http://gpu1:8000"
    assert server_url(" https://gpu1 ") == "https://gpu1"
    with pytest.raises(VllmStartError):
        server_url("gpu1:8000")


def test_what_vllm_cannot_take_is_refused() -> None:
    assert request_steps(None) is None and request_steps(SamplingSettings(steps=5)) == 5
    with pytest.raises(SettingsError, match="seed"):
        request_steps(SamplingSettings(seed=3))
    with pytest.raises(SettingsError, match="t_min"):
        request_steps(SamplingSettings(t_min=0.5))


@pytest.mark.parametrize("which", ["tiny", "mini"])
def test_the_checkpoint_tokenizer_tokenizes_as_the_local_engine(which: str, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from diffgemma.runtime.engine.mini import MINI_DIR

    path = tiny_model_dir if which == "tiny" else MINI_DIR
    ours, theirs = CheckpointTokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert ours.special_ids == set(theirs.all_special_ids) and ours.bos_id == theirs.bos_token_id
    for text in ("def f(x):\n    return x<eos> + 1\n", "  héllo wörld 😀\t\tx", "<|turn>user\nhi<turn|>\n", ""):
        ids = ours.encode_text(text)
        assert ids == theirs(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ours.encode_header(text) == theirs(text, add_special_tokens=False)["input_ids"]
        kept = [i for i in ours.encode_header(text) if i not in ours.special_ids]
        assert ours.decode(ours.encode_header(text)) == theirs.decode(kept, skip_special_tokens=True,
                                                                      clean_up_tokenization_spaces=False)
    facts = read_checkpoint(str(path))
    assert facts.vocab_size == theirs.vocab_size or facts.vocab_size >= len(theirs)
