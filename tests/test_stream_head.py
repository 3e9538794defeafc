"""The streaming head against the stock step (full-vocabulary tensors), on CPU torch and Triton's interpreter."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffgemma.kernels.stream_head import HeadInputs, reference_head, stream_head

# chi-square critical value, 7 degrees of freedom, p = 0.001
CHI2_DF7_P001 = 24.32


def _problem(batch: int = 2, canvas: int = 10, vocab: int = 1500, size: int = 24, seed: int = 0,
             held: bool = True, dtype: torch.dtype = torch.float32) -> HeadInputs:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, canvas, size, generator=g)
    weight = torch.randn(vocab, size, generator=g) * 0.6
    hidden[:, ::4] += 6.0 * weight[7]  # confident positions: near-zero entropy
    held_mask = held_tokens = score_mask = None
    if held:
        held_mask = torch.zeros(batch, canvas, dtype=torch.bool)
        held_mask[:, canvas - 3:] = True
        held_tokens = torch.full((batch, canvas), -1, dtype=torch.long)
        held_tokens[:, canvas - 3:] = torch.tensor([3, vocab - 1, 300])
        score_mask = torch.zeros(batch, canvas, dtype=torch.bool)
        score_mask[:, canvas - 3: canvas - 1] = True
    return HeadInputs(hidden=hidden.to(dtype), weight=weight.to(dtype), softcap=30.0,
                      temperature=torch.tensor([0.45, 0.8][:batch]), embed_scale=size ** 0.5,
                      held_mask=held_mask, held_tokens=held_tokens, score_mask=score_mask)


def _compare(inp: HeadInputs, chunk: int, backend: str = "torch") -> None:
    out = stream_head(inp, torch.Generator().manual_seed(1), chunk=chunk, backend=backend)
    ref = reference_head(inp, torch.Generator().manual_seed(1))
    assert torch.equal(out.argmax, ref.argmax)
    torch.testing.assert_close(out.entropy, ref.entropy, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out.lse, ref.lse, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(out.confidence, ref.confidence, atol=1e-5, rtol=1e-4)
    assert out.self_cond is not None and ref.self_cond is not None
    torch.testing.assert_close(out.self_cond.float(), ref.self_cond.float(), atol=2e-4, rtol=1e-3)
    if inp.score_mask is not None:
        assert out.held_logp is not None and ref.held_logp is not None
        torch.testing.assert_close(out.held_logp, ref.held_logp, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [256, 700, 4096])
def test_statistics_match_the_stock_step(chunk: int) -> None:
    # 1500 is not a multiple of the chunk nor of the 256-token blocks: padding is exercised
    _compare(_problem(), chunk)


def test_held_positions_are_exactly_the_clamp() -> None:
    inp = _problem()
    out = stream_head(inp, torch.Generator().manual_seed(0), chunk=512)
    assert inp.held_mask is not None and inp.held_tokens is not None
    held = inp.held_mask
    assert torch.equal(out.tokens[held], inp.held_tokens[held])
    assert torch.equal(out.argmax[held], inp.held_tokens[held])
    assert torch.all(out.entropy[held] == 0) and torch.all(out.lse[held] == 0)
    assert out.self_cond is not None
    one_hot = inp.weight[inp.held_tokens[held]] * inp.embed_scale
    assert torch.equal(out.self_cond[held], one_hot)
    assert out.held_logp is not None and torch.all(out.held_logp[~inp.score_mask] == 0)


def test_bfloat16_weights() -> None:
    inp = _problem(dtype=torch.bfloat16)
    out = stream_head(inp, torch.Generator().manual_seed(1), chunk=512)
    ref = reference_head(inp, torch.Generator().manual_seed(1))
    assert torch.equal(out.argmax, ref.argmax)
    torch.testing.assert_close(out.entropy, ref.entropy, atol=2e-3, rtol=1e-3)
    assert out.self_cond is not None and out.self_cond.dtype == torch.bfloat16


def test_no_full_vocabulary_tensor_is_made() -> None:
    """The largest tensor any op makes is a chunk's, never (rows x vocab)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    inp = _problem(batch=1, canvas=8, vocab=8192, held=True)
    largest = 0

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            nonlocal largest
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    largest = max(largest, t.numel())
            return out

    with Watch():
        stream_head(inp, torch.Generator().manual_seed(0), chunk=1024)
    rows, size = 8, 24
    # a chunk of logits (rows x chunk) or of the weight (chunk x hidden), never rows x vocab
    assert largest <= max(rows, size) * 1024, largest
    assert largest < rows * 8192


def _peaked(vocab: int = 1024, size: int = 16) -> HeadInputs:
    """One hidden state whose distribution has 8 likely tokens in different chunks."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(vocab, size, generator=g) * 0.01
    hidden = torch.zeros(1, 1, size)
    hidden[0, 0, 0] = 1.0
    for k, tok in enumerate([3, 200, 255, 256, 511, 700, 900, 1023]):
        weight[tok, 0] = 9.0 + 0.3 * k
    return HeadInputs(hidden=hidden.expand(1, 4000, size).contiguous(), weight=weight, softcap=None,
                      temperature=0.7, embed_scale=1.0, want_self_cond=False)


def _chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    top = torch.topk(probs, 8).indices
    counts = torch.stack([(tokens == t).sum() for t in top]).float()
    expected = probs[top] / probs[top].sum() * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_samples_follow_the_stock_distribution() -> None:
    inp = _peaked()
    logits = (inp.hidden[0, 0] @ inp.weight.t()) / 0.7
    probs = torch.softmax(logits, dim=-1)
    out = stream_head(inp, torch.Generator().manual_seed(3), chunk=256)
    assert probs[torch.topk(probs, 8).indices].sum() > 0.99
    assert _chi_square(out.tokens.flatten(), probs) < CHI2_DF7_P001


_TRITON_MISSING = importlib.util.find_spec("triton") is None


@pytest.mark.skipif(_TRITON_MISSING, reason="triton is not installed (pip install triton)")
def test_triton_walk_in_interpreter_mode(tmp_path: Path) -> None:
    """The Triton chunk kernel under TRITON_INTERPRET=1 against the same reference."""
    script = tmp_path / "stream_check.py"
    script.write_text(_TRITON_CHECK)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout


_TRITON_CHECK = r'''
import torch
from diffgemma.kernels.stream_head import stream_head
from test_stream_head import CHI2_DF7_P001, _chi_square, _compare, _peaked, _problem

_compare(_problem(batch=2, canvas=6, vocab=900), chunk=512, backend="triton")
inp = _peaked()
inp.hidden = inp.hidden[:, :1500].contiguous()
logits = (inp.hidden[0, 0] @ inp.weight.t()) / 0.7
out = stream_head(inp, torch.Generator().manual_seed(3), chunk=512, backend="triton")
assert _chi_square(out.tokens.flatten(), torch.softmax(logits, -1)) < CHI2_DF7_P001
print("ok")
'''
