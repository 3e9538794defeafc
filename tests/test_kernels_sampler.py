"""The fused sampler against the stock DiffusionGemma sampling path (CPU torch, and Triton's interpreter)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffgemma.kernels.sampler import fused_sample, reference_sample, self_conditioning_embeddings

# chi-square critical value, 7 degrees of freedom, p = 0.001
CHI2_DF7_P001 = 24.32
SPECIAL = [3, 255, 256, 300, 511, 512, 599]


def _logits(batch: int, canvas: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, canvas, vocab, generator=g) * 4.0
    z[:, ::3, 11] += 25.0  # confident positions: entropy near zero
    logits = 30.0 * torch.tanh(z / 30.0)  # the model's final softcapping
    logits[0, 1, :] = float("-inf")  # a position forced to one token by a logits processor
    logits[0, 1, 5] = 3.0
    logits[-1, 2, vocab // 2 :] = float("-inf")  # half of the vocabulary masked
    return logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stats_match_reference(dtype: torch.dtype) -> None:
    # 3000 is not a multiple of the chunk (1000) nor of the 256-token blocks: padding is exercised
    logits = _logits(2, 12, 3000).to(dtype)
    temperature = torch.tensor([0.45, 0.8])
    before = logits.clone()
    fused = fused_sample(logits, temperature, torch.Generator().manual_seed(1), chunk=1000)
    assert torch.equal(logits, before)
    # the stock path divides in the logits' dtype; the fused one upcasts first, so compare it with
    # the reference on the same values in float32 (the model hands over float32 logits anyway)
    ref = reference_sample(logits.float(), temperature, torch.Generator().manual_seed(1))
    torch.testing.assert_close(fused.entropy, ref.entropy, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(fused.lse, ref.lse, atol=2e-4, rtol=1e-5)
    assert torch.equal(fused.argmax, ref.argmax)
    assert fused.tokens.dtype == torch.int64 and fused.tokens.shape == (2, 12)
    assert fused.tokens[0, 1].item() == 5  # the forced position can only draw its token
    assert (fused.tokens[-1, 2] < 1500).item()  # never a masked token
    assert fused.entropy[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_scalar_temperature_and_single_chunk() -> None:
    logits = _logits(1, 6, 700)
    fused = fused_sample(logits, 0.6)
    ref = reference_sample(logits, 0.6)
    torch.testing.assert_close(fused.entropy, ref.entropy, atol=2e-4, rtol=1e-4)
    assert torch.equal(fused.argmax, ref.argmax)


def test_bad_temperature_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        fused_sample(_logits(1, 3, 50), 0.0)
    with pytest.raises(ValueError, match="batch"):
        fused_sample(_logits(2, 3, 50), torch.tensor([0.5, 0.6, 0.7]))


def _chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square over the SPECIAL tokens plus one bin for all the rest."""
    n = tokens.numel()
    observed = [int((tokens == t).sum()) for t in SPECIAL]
    expected = [float(probs[t]) * n for t in SPECIAL]
    observed.append(n - sum(observed))
    expected.append(n - sum(expected))
    assert min(expected) > 20, "bins must be well populated for the chi-square approximation"
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def _peaked_row(vocab: int = 600) -> torch.Tensor:
    # a few likely tokens spread over several 256-token blocks (both levels of the draw matter)
    row = torch.full((vocab,), -3.0)
    row[: vocab : 7] = -1.0
    for tok, val in zip(SPECIAL, [1.0, 0.2, 0.6, -0.2, 1.3, 0.0, 0.4], strict=True):
        row[tok] = val
    return row


def test_samples_follow_the_reference_distribution() -> None:
    row = _peaked_row()
    temperature = 0.7
    logits = row.expand(1, 20_000, -1).contiguous()
    probs = torch.softmax(row / temperature, dim=-1)
    fused = fused_sample(logits, temperature, torch.Generator().manual_seed(1234), chunk=256)
    ref = reference_sample(logits, temperature, torch.Generator().manual_seed(1234))
    assert _chi_square(fused.tokens, probs) < CHI2_DF7_P001
    assert _chi_square(ref.tokens, probs) < CHI2_DF7_P001
    # a wrong distribution (no temperature) is told apart by the same test
    wrong = fused_sample(logits, 1.0, torch.Generator().manual_seed(1234), chunk=256)
    assert _chi_square(wrong.tokens, probs) > CHI2_DF7_P001


def test_generator_makes_draws_reproducible() -> None:
    logits = _logits(1, 64, 2000)
    a = fused_sample(logits, 0.8, torch.Generator().manual_seed(7)).tokens
    b = fused_sample(logits, 0.8, torch.Generator().manual_seed(7)).tokens
    c = fused_sample(logits, 0.8, torch.Generator().manual_seed(8)).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class _LargestAllocation(TorchDispatchMode):
    """Records the largest new storage any op creates while active (views of inputs do not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        seen = {a.untyped_storage().data_ptr() for a in inputs}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_no_full_vocabulary_float32_tensor_is_made() -> None:
    batch, canvas, vocab = 1, 64, 65_536
    logits = _logits(batch, canvas, vocab).to(torch.bfloat16)
    full_fp32 = batch * canvas * vocab * 4
    with _LargestAllocation() as fused_mode:
        fused_sample(logits, 0.6, torch.Generator().manual_seed(0), chunk=8192)
    with _LargestAllocation() as ref_mode:
        reference_sample(logits, 0.6, torch.Generator().manual_seed(0))
    assert ref_mode.largest >= full_fp32  # the stock path does make one (the check can see it)
    assert fused_mode.largest <= full_fp32 // 16

    weight = torch.randn(vocab, 32, dtype=torch.bfloat16)
    with _LargestAllocation() as sc_mode:
        self_conditioning_embeddings(logits, True, weight, 2.0, chunk=8192)
    assert sc_mode.largest <= full_fp32 // 8


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_self_conditioning_matches_stock(wdtype: torch.dtype) -> None:
    logits = _logits(2, 8, 1500)
    weight = (torch.randn(1500, 48) * 0.05).to(wdtype)
    scale = torch.tensor(48**0.5)
    stock = torch.matmul(logits.softmax(dim=-1, dtype=torch.float32).to(wdtype), weight) * scale.to(wdtype)
    before = logits.clone()
    fused = self_conditioning_embeddings(logits, True, weight, scale, chunk=400)
    assert torch.equal(logits, before)  # the caller's logits are left alone
    tol = dict(atol=1e-5, rtol=1e-4) if wdtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(fused, stock, **tol)
    # raw logits + temperature give the same as pre-scaled logits
    t = torch.tensor([0.5, 0.7])
    scaled = logits / t.view(-1, 1, 1)
    a = self_conditioning_embeddings(scaled, True, weight, scale, chunk=400)
    b = self_conditioning_embeddings(logits, False, weight, scale, chunk=400, temperature=t)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


_TRITON_MISSING = importlib.util.find_spec("triton") is None


@pytest.mark.skipif(_TRITON_MISSING, reason="triton is not installed (pip install triton)")
def test_triton_kernels_in_interpreter_mode(tmp_path: Path) -> None:
    """The Triton kernels run on CPU under TRITON_INTERPRET=1 (set before triton is imported)."""
    script = tmp_path / "triton_check.py"
    script.write_text(_TRITON_CHECK)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout


_TRITON_CHECK = r'''
import torch
from diffgemma.kernels.sampler import reference_sample
from diffgemma.kernels.sampler_triton import fused_sample_triton, self_conditioning_triton
from test_kernels_sampler import CHI2_DF7_P001, _chi_square, _logits, _peaked_row

logits = _logits(2, 6, 1000)
t = torch.tensor([0.45, 0.8])
fused = fused_sample_triton(logits, t, torch.Generator().manual_seed(0), block=256)
multi = fused_sample_triton(logits, t, torch.Generator().manual_seed(0), block=128, rows_per_program=4)
torch.testing.assert_close(multi.entropy, fused.entropy)
assert torch.equal(multi.argmax, fused.argmax)
ref = reference_sample(logits, t)
torch.testing.assert_close(fused.entropy, ref.entropy, atol=2e-4, rtol=1e-4)
torch.testing.assert_close(fused.lse, ref.lse, atol=2e-4, rtol=1e-5)
assert torch.equal(fused.argmax, ref.argmax)
assert fused.tokens[0, 1].item() == 5

row = _peaked_row()
probs = torch.softmax(row / 0.7, dim=-1)
many = fused_sample_triton(row.expand(1, 3000, -1).contiguous(), 0.7, torch.Generator().manual_seed(3),
                           block=1024, rows_per_program=256)
chi = _chi_square(many.tokens, probs)
assert chi < CHI2_DF7_P001, chi

weight = torch.randn(1000, 24) * 0.1
sc = self_conditioning_triton(logits, None, weight)
torch.testing.assert_close(sc, logits.softmax(-1) @ weight, atol=1e-5, rtol=1e-4)
print("ok")
'''
