"""Triton statistics for one vocabulary chunk of the streaming head (CUDA; CPU via TRITON_INTERPRET=1).

The chunk's logits come from a cuBLAS matmul (hidden @ W_chunk^T in the weight dtype). One kernel
then soft-caps and scales them and walks each row once for the online statistics (max, sum of
exp, sum of exp times logit, argmax, and the Gumbel-max winner with Philox noise drawn in
registers), and a second walk writes exp(x - max) once, in the weight dtype, for the
self-conditioning matmul (cuBLAS again). The merge across chunks is `stream_head._Running`, the
same as the torch reference's, so the two differ only in where the noise comes from.
"""

from __future__ import annotations

import functools

import torch

from diffgemma.kernels.stream_head import HeadInputs, _Running


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def chunk_kernel(logits_ptr, inv_t_ptr, probs_ptr, m_ptr, s_ptr, d_ptr, best_ptr, best_i_ptr,
                     key_ptr, tok_ptr, n_rows, width, stride_row, stride_out, softcap, seed, offset,
                     HAS_CAP: tl.constexpr, WANT_PROBS: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
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
        for start in range(0, width, BLOCK):
            idx = start + offs
            mask = row_ok[:, None] & (idx < width)
            x = tl.load(base + idx, mask=mask, other=0.0).to(tl.float32)
            if HAS_CAP:
                # tanh(y) = 2 sigmoid(2y) - 1, exact in float32 and available everywhere
                x = softcap * (2.0 * tl.sigmoid(2.0 * x / softcap) - 1.0)
            x = tl.where(mask, x * inv_t, float("-inf"))
            up = x > best_x  # strict: each lane keeps its earliest maximum
            best_x = tl.where(up, x, best_x)
            best_i = tl.where(up, idx, best_i)
            # Philox noise keyed by (seed, row, token): independent per element and per chunk
            u = tl.rand(seed, rows[:, None] * width + idx + offset)
            g = x - tl.log(-tl.log(u))
            gup = g > best_g
            best_g = tl.where(gup, g, best_g)
            best_gi = tl.where(gup, idx, best_gi)
            new_max = tl.maximum(run_max, x)
            alpha = tl.exp(run_max - new_max)
            xc = tl.maximum(x - new_max, -1.0e4)
            e = tl.exp(xc)
            run_dot = alpha * (run_dot + (run_max - new_max) * run_sum) + e * xc
            run_sum = alpha * run_sum + e
            run_max = new_max
        m = tl.max(run_max, axis=1)
        scale = tl.exp(run_max - m[:, None])
        total = tl.sum(run_sum * scale, axis=1)
        dot = tl.sum(scale * (run_dot + (run_max - m[:, None]) * run_sum), axis=1)
        tl.store(m_ptr + rows, m, mask=row_ok)
        tl.store(s_ptr + rows, total, mask=row_ok)
        tl.store(d_ptr + rows, dot, mask=row_ok)
        bx = tl.max(best_x, axis=1)
        tl.store(best_ptr + rows, bx, mask=row_ok)
        tl.store(best_i_ptr + rows, tl.min(tl.where(best_x == bx[:, None], best_i, width), axis=1).to(tl.int64),
                 mask=row_ok)
        bg = tl.max(best_g, axis=1)
        tl.store(key_ptr + rows, bg, mask=row_ok)
        tl.store(tok_ptr + rows, tl.min(tl.where(best_g == bg[:, None], best_gi, width), axis=1).to(tl.int64),
                 mask=row_ok)
        if WANT_PROBS:
            out = probs_ptr + rows.to(tl.int64)[:, None] * stride_out
            for start in range(0, width, BLOCK):
                idx = start + offs
                mask = row_ok[:, None] & (idx < width)
                x = tl.load(base + idx, mask=mask, other=0.0).to(tl.float32)
                if HAS_CAP:
                    x = softcap * (2.0 * tl.sigmoid(2.0 * x / softcap) - 1.0)
                e = tl.exp(tl.maximum(x * inv_t - m[:, None], -1.0e4))
                tl.store(out + idx, e.to(probs_ptr.dtype.element_ty), mask=mask)

    return chunk_kernel


def _seed(generator: torch.Generator | None, device: torch.device) -> int:
    where = generator.device if generator is not None else device
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=where).item())


def walk_triton(h: torch.Tensor, inv_t: torch.Tensor, inp: HeadInputs, run: _Running, chunk: int,
                generator: torch.Generator | None, rows_per_program: int | None = None, block: int = 1024) -> None:
    """The walk of `stream_head._walk_torch`, the per-chunk statistics from one kernel each."""
    if rows_per_program is None:
        # On CUDA one row per program already fills the GPU at the real vocabulary; in the CPU
        # interpreter each program is a Python-level loop, so rows are batched to keep it quick.
        rows_per_program = 1 if h.is_cuda else 32
    weight = inp.weight
    vocab = weight.shape[0]
    rows = h.shape[0]
    dev = h.device
    kernel = _kernel()
    seed = _seed(generator, dev)
    inv_t = inv_t.contiguous().float()
    stats = [torch.empty(rows, dtype=torch.float32, device=dev) for _ in range(3)]
    best = torch.empty(rows, dtype=torch.float32, device=dev)
    key = torch.empty(rows, dtype=torch.float32, device=dev)
    best_i = torch.empty(rows, dtype=torch.int64, device=dev)
    tok = torch.empty(rows, dtype=torch.int64, device=dev)
    want = run.acc is not None
    probs = torch.empty(rows, chunk, dtype=weight.dtype, device=dev) if want else best  # unused pointer
    grid = (-(-rows // rows_per_program),)
    for c0 in range(0, vocab, chunk):
        c1 = min(vocab, c0 + chunk)
        w = weight[c0:c1]
        logits = (h @ w.t()).contiguous()
        width = c1 - c0
        blk = min(block, max(16, 1 << (width - 1).bit_length()))
        kernel[grid](logits, inv_t, probs, stats[0], stats[1], stats[2], best, best_i, key, tok, rows, width,
                     logits.stride(0), probs.stride(0) if want else 0, float(inp.softcap or 0.0), seed, c0 * rows,
                     HAS_CAP=bool(inp.softcap), WANT_PROBS=want, ROWS=rows_per_program, BLOCK=blk)
        part = probs[:, :width] @ w if want else None
        run.merge(stats[0].clone(), stats[1].clone(), stats[2].clone(), best.clone(), best_i + c0, key.clone(),
                  tok + c0, part)
