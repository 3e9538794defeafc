"""Triton versions of the fused sampler and the self-conditioning softmax (CUDA; CPU via TRITON_INTERPRET=1).

One program per canvas position walks its vocabulary row once in ``BLOCK``-wide tiles,
keeping per-lane online statistics (max, sum of exp, sum of exp * logit, argmax, and the
Gumbel-max winner with Philox noise drawn in registers), then reduces the lanes. Only
five numbers per row are written.

Self-conditioning needs ``softmax(logits) @ embeddings``: the kernel here writes the
probabilities once, already in the embedding dtype (bf16 on GPU), from a two-pass row
walk (log-sum-exp, then exp(x - lse)); the matmul is cuBLAS. That removes the float32
softmax and the separate cast the stock path makes, the only full-vocabulary tensors left
being the logits themselves and one bf16 probability tensor.
"""

from __future__ import annotations

import functools
import os

import torch

from diffgemma.kernels.sampler import StepStats, _inverse_temperature


@functools.cache
def triton_available() -> bool:
    """Triton is importable and there is a device for it (CUDA, or the CPU interpreter)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def sample_kernel(logits_ptr, inv_t_ptr, tokens_ptr, argmax_ptr, entropy_ptr, lse_ptr,
                      vocab, stride_row, seed, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        inv_t = tl.load(inv_t_ptr + row)
        base = logits_ptr + row.to(tl.int64) * stride_row
        offs = tl.arange(0, BLOCK)
        run_max = tl.full([BLOCK], -1.0e30, tl.float32)
        run_sum = tl.zeros([BLOCK], tl.float32)
        run_dot = tl.zeros([BLOCK], tl.float32)
        best_x = tl.full([BLOCK], float("-inf"), tl.float32)
        best_i = tl.zeros([BLOCK], tl.int32)
        best_g = tl.full([BLOCK], float("-inf"), tl.float32)
        best_gi = tl.zeros([BLOCK], tl.int32)
        for start in range(0, vocab, BLOCK):
            idx = start + offs
            mask = idx < vocab
            x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32) * inv_t
            up = x > best_x  # strict: each lane keeps its earliest maximum
            best_x = tl.where(up, x, best_x)
            best_i = tl.where(up, idx, best_i)
            u = tl.rand(seed + row, idx)
            g = x - tl.log(-tl.log(u))
            gup = g > best_g
            best_g = tl.where(gup, g, best_g)
            best_gi = tl.where(gup, idx, best_gi)
            new_max = tl.maximum(run_max, x)
            alpha = tl.exp(run_max - new_max)
            xc = tl.maximum(x - new_max, -1.0e4)  # -inf logits: exp gives 0, 0 * xc stays 0
            e = tl.exp(xc)
            run_dot = alpha * (run_dot + (run_max - new_max) * run_sum) + e * xc
            run_sum = alpha * run_sum + e
            run_max = new_max
        m = tl.max(run_max, axis=0)
        scale = tl.exp(run_max - m)
        total = tl.sum(run_sum * scale, axis=0)
        dot = tl.sum(scale * (run_dot + (run_max - m) * run_sum), axis=0)
        log_total = tl.log(total)
        tl.store(lse_ptr + row, m + log_total)
        tl.store(entropy_ptr + row, tl.maximum(log_total - dot / total, 0.0))
        bx = tl.max(best_x, axis=0)
        tl.store(argmax_ptr + row, tl.min(tl.where(best_x == bx, best_i, vocab), axis=0).to(tl.int64))
        bg = tl.max(best_g, axis=0)
        tl.store(tokens_ptr + row, tl.min(tl.where(best_g == bg, best_gi, vocab), axis=0).to(tl.int64))

    @triton.jit
    def probs_kernel(logits_ptr, inv_t_ptr, probs_ptr, vocab, stride_row, stride_out,
                     HAS_T: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        inv_t = tl.load(inv_t_ptr + row) if HAS_T else 1.0
        base = logits_ptr + row.to(tl.int64) * stride_row
        out = probs_ptr + row.to(tl.int64) * stride_out
        offs = tl.arange(0, BLOCK)
        run_max = tl.full([BLOCK], -1.0e30, tl.float32)
        run_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            idx = start + offs
            x = tl.load(base + idx, mask=idx < vocab, other=float("-inf")).to(tl.float32) * inv_t
            new_max = tl.maximum(run_max, x)
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.exp(x - new_max)
            run_max = new_max
        m = tl.max(run_max, axis=0)
        lse = m + tl.log(tl.sum(run_sum * tl.exp(run_max - m), axis=0))
        for start in range(0, vocab, BLOCK):
            idx = start + offs
            mask = idx < vocab
            x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32) * inv_t
            tl.store(out + idx, tl.exp(x - lse).to(probs_ptr.dtype.element_ty), mask=mask)

    return sample_kernel, probs_kernel


def _seed_from(generator: torch.Generator | None, device: torch.device) -> int:
    gen_device = generator.device if generator is not None else device
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device).item())


def fused_sample_triton(logits: torch.Tensor, temperature: float | torch.Tensor,
                        generator: torch.Generator | None = None, block: int = 2048) -> StepStats:
    """Same contract as ``diffgemma.kernels.sampler.fused_sample``; one kernel launch."""
    batch, canvas, vocab = logits.shape
    rows = batch * canvas
    flat = logits.reshape(rows, vocab)
    if flat.stride(1) != 1:
        flat = flat.contiguous()
    dev = logits.device
    inv_t = _inverse_temperature(temperature, batch, canvas, dev).reshape(rows).contiguous()
    tokens = torch.empty(rows, dtype=torch.int64, device=dev)
    argmax = torch.empty(rows, dtype=torch.int64, device=dev)
    entropy = torch.empty(rows, dtype=torch.float32, device=dev)
    lse = torch.empty(rows, dtype=torch.float32, device=dev)
    sample_kernel, _ = _kernels()
    block = min(block, max(16, 1 << (vocab - 1).bit_length()))
    sample_kernel[(rows,)](flat, inv_t, tokens, argmax, entropy, lse, vocab, flat.stride(0),
                           _seed_from(generator, dev), BLOCK=block)
    shape = (batch, canvas)
    return StepStats(tokens=tokens.view(shape), argmax=argmax.view(shape), entropy=entropy.view(shape),
                     lse=lse.view(shape))


def softmax_probs_triton(logits: torch.Tensor, inv_t: torch.Tensor | None, dtype: torch.dtype,
                         block: int = 2048) -> torch.Tensor:
    """softmax(logits * inv_t) written once in ``dtype`` (no float32 copy)."""
    batch, canvas, vocab = logits.shape
    rows = batch * canvas
    flat = logits.reshape(rows, vocab)
    if flat.stride(1) != 1:
        flat = flat.contiguous()
    probs = torch.empty(rows, vocab, dtype=dtype, device=logits.device)
    _, probs_kernel = _kernels()
    has_t = inv_t is not None
    t_arg = inv_t.reshape(rows).contiguous() if has_t else flat  # unused pointer when no temperature
    block = min(block, max(16, 1 << (vocab - 1).bit_length()))
    probs_kernel[(rows,)](flat, t_arg, probs, vocab, flat.stride(0), probs.stride(0), HAS_T=has_t, BLOCK=block)
    return probs.view(batch, canvas, vocab)


def self_conditioning_triton(logits: torch.Tensor, inv_t: torch.Tensor | None,
                             embed_weight: torch.Tensor) -> torch.Tensor:
    """softmax(logits [* inv_t]) @ embed_weight, the probabilities written once in the weight dtype."""
    probs = softmax_probs_triton(logits, inv_t, embed_weight.dtype)
    return torch.matmul(probs, embed_weight)
