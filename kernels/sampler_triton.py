"""Triton versions of the fused sampler and the self-conditioning softmax (CUDA; CPU via TRITON_INTERPRET=1).

Each program walks one (or a few) canvas positions' vocabulary rows once in ``BLOCK``-wide tiles,
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
                      n_rows, vocab, stride_row, seed, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < n_rows
        inv_t = tl.load(inv_t_ptr + rows, mask=row_ok, other=1.0)[:, None]
        base = logits_ptr + rows.to(tl.int64)[:, None] * stride_row
        offs = tl.arange(0, BLOCK)[None, :]
        run_max = tl.full([ROWS, BLOCK], -1.0e30, tl.float32)
        run_sum = tl.zeros([ROWS, BLOCK], tl.float32)
        run_dot = tl.zeros([ROWS, BLOCK], tl.float32)
        best_x = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)
        best_i = tl.zeros([ROWS, BLOCK], tl.int32)
        best_g = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)
        best_gi = tl.zeros([ROWS, BLOCK], tl.int32)
        for start in range(0, vocab, BLOCK):
            idx = start + offs
            mask = row_ok[:, None] & (idx < vocab)
            x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32) * inv_t
            up = x > best_x  # strict: each lane keeps its earliest maximum
            best_x = tl.where(up, x, best_x)
            best_i = tl.where(up, idx, best_i)
            # Philox noise keyed by (seed, row * vocab + token): independent per element
            u = tl.rand(seed, rows[:, None] * vocab + idx)
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
        m = tl.max(run_max, axis=1)
        scale = tl.exp(run_max - m[:, None])
        total = tl.sum(run_sum * scale, axis=1)
        dot = tl.sum(scale * (run_dot + (run_max - m[:, None]) * run_sum), axis=1)
        log_total = tl.log(total)
        tl.store(lse_ptr + rows, m + log_total, mask=row_ok)
        tl.store(entropy_ptr + rows, tl.maximum(log_total - dot / total, 0.0), mask=row_ok)
        bx = tl.max(best_x, axis=1)
        amax = tl.min(tl.where(best_x == bx[:, None], best_i, vocab), axis=1)
        tl.store(argmax_ptr + rows, amax.to(tl.int64), mask=row_ok)
        bg = tl.max(best_g, axis=1)
        tok = tl.min(tl.where(best_g == bg[:, None], best_gi, vocab), axis=1)
        tl.store(tokens_ptr + rows, tok.to(tl.int64), mask=row_ok)

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
                        generator: torch.Generator | None = None, block: int = 2048,
                        rows_per_program: int = 1) -> StepStats:
    """Same contract as ``diffgemma.kernels.sampler.fused_sample``; one kernel launch.

    At the real vocabulary one row per program already fills the GPU; several rows per
    program pay off for small vocabularies (and for the interpreter in tests).
    """
    if rows_per_program < 1 or rows_per_program & (rows_per_program - 1):
        raise ValueError(f"rows_per_program must be a power of two, got {rows_per_program}")
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
    grid = ((rows + rows_per_program - 1) // rows_per_program,)
    sample_kernel[grid](flat, inv_t, tokens, argmax, entropy, lse, rows, vocab, flat.stride(0),
                        _seed_from(generator, dev), ROWS=rows_per_program, BLOCK=block)
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
    t_arg = inv_t.reshape(rows).contiguous() if inv_t is not None else flat  # unused pointer when no temperature
    block = min(block, max(16, 1 << (vocab - 1).bit_length()))
    probs_kernel[(rows,)](flat, t_arg, probs, vocab, flat.stride(0), probs.stride(0), HAS_T=has_t, BLOCK=block)
    return probs.view(batch, canvas, vocab)


def self_conditioning_triton(logits: torch.Tensor, inv_t: torch.Tensor | None,
                             embed_weight: torch.Tensor) -> torch.Tensor:
    """softmax(logits [* inv_t]) @ embed_weight, the probabilities written once in the weight dtype."""
    probs = softmax_probs_triton(logits, inv_t, embed_weight.dtype)
    return torch.matmul(probs, embed_weight)
