"""Grouped GEMM over NF4 expert weights, dequantized in registers (Triton; CPU via TRITON_INTERPRET=1).

The (token, expert) pairs of a step are sorted by expert; a schedule lists row blocks of
at most ``BM`` pairs that share one expert. Each program takes one row block and ``BN``
output features and walks K one quantization block at a time: it loads the packed bytes
and fp16 scales of that tile, turns nibbles into weights through the 16-entry NF4 table,
and feeds two ``tl.dot``s (low nibbles against the first half of the block's activations,
high nibbles against the second half; see ``quant4`` for the layout). Nothing is written
back in bf16.

Kernel 1 (``GATED``) computes gelu_tanh(x W_gate^T) * (x W_up^T) for the expert's gate and
up halves in the same pass over x; kernel 2 is the down projection. The router weights
and the scatter back to tokens are one ``index_add_``.
"""

from __future__ import annotations

import functools
import os

import torch

from diffgemma.kernels.moe4 import NF4Experts
from diffgemma.kernels.quant4 import nf4_table

BN = 64


def _rows_per_program(avg_rows: float) -> int:
    # one canvas step (256 x top-8 over 128 experts) is ~16 pairs per expert: one row block,
    # so each expert's weights are read once; long prefixes get larger blocks
    return 16 if avg_rows <= 16 else 32 if avg_rows <= 32 else 64


@functools.cache
def triton_ready() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def dq_gemm(x_ptr, x_rows_ptr, w_ptr, s_ptr, lut_ptr, out_ptr,
                blk_expert_ptr, blk_start_ptr, blk_end_ptr,
                n_out, k_blocks, stride_x, stride_we, stride_wn, stride_se, stride_sn, stride_o,
                GATED: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, QB: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        expert = tl.load(blk_expert_ptr + pid_m).to(tl.int64)
        r0 = tl.load(blk_start_ptr + pid_m)
        r1 = tl.load(blk_end_ptr + pid_m)
        offs_m = r0 + tl.arange(0, BM)
        m_ok = offs_m < r1
        src = tl.load(x_rows_ptr + offs_m, mask=m_ok, other=0).to(tl.int64)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < n_out
        half: tl.constexpr = QB // 2
        offs_h = tl.arange(0, half)
        x_rows = x_ptr + src[:, None] * stride_x
        w_rows = w_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn
        s_rows = s_ptr + expert * stride_se + offs_n.to(tl.int64) * stride_sn
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        if GATED:
            w_up = w_ptr + expert * stride_we + (offs_n + n_out).to(tl.int64)[:, None] * stride_wn
            s_up = s_ptr + expert * stride_se + (offs_n + n_out).to(tl.int64) * stride_sn
            acc_up = tl.zeros([BM, BN], dtype=tl.float32)
        for kb in range(0, k_blocks):
            k0 = kb * QB
            xa = tl.load(x_rows + (k0 + offs_h)[None, :], mask=m_ok[:, None], other=0.0)
            xb = tl.load(x_rows + (k0 + half + offs_h)[None, :], mask=m_ok[:, None], other=0.0)
            byte = tl.load(w_rows + (kb * half + offs_h)[None, :], mask=n_ok[:, None], other=0).to(tl.int32)
            scale = tl.load(s_rows + kb, mask=n_ok, other=0.0).to(tl.float32)[:, None]
            w_lo = (tl.load(lut_ptr + (byte & 15)) * scale).to(xa.dtype)
            w_hi = (tl.load(lut_ptr + (byte >> 4)) * scale).to(xa.dtype)
            acc += tl.dot(xa, tl.trans(w_lo)) + tl.dot(xb, tl.trans(w_hi))
            if GATED:
                byte_u = tl.load(w_up + (kb * half + offs_h)[None, :], mask=n_ok[:, None], other=0).to(tl.int32)
                scale_u = tl.load(s_up + kb, mask=n_ok, other=0.0).to(tl.float32)[:, None]
                u_lo = (tl.load(lut_ptr + (byte_u & 15)) * scale_u).to(xa.dtype)
                u_hi = (tl.load(lut_ptr + (byte_u >> 4)) * scale_u).to(xa.dtype)
                acc_up += tl.dot(xa, tl.trans(u_lo)) + tl.dot(xb, tl.trans(u_hi))
        if GATED:
            # gelu with the tanh approximation (gelu_pytorch_tanh), tanh(z) = 2 sigmoid(2z) - 1
            inner = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
            acc = 0.5 * acc * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0)) * acc_up
        out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_o + offs_n[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    return dq_gemm


def _schedule(counts: torch.Tensor, bm: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row blocks of at most ``bm`` sorted rows sharing one group: (group, start, end) per block."""
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    n_blocks = (counts + bm - 1) // bm
    groups = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), n_blocks)
    first_block = torch.cumsum(n_blocks, 0) - n_blocks
    within = torch.arange(groups.numel(), device=counts.device) - first_block[groups]
    blk_start = starts[groups] + within * bm
    blk_end = torch.minimum(blk_start + bm, ends[groups])
    return groups.to(torch.int32), blk_start.to(torch.int32), blk_end.to(torch.int32)


def _launch(x: torch.Tensor, x_rows: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, block: int,
            schedule: tuple[torch.Tensor, torch.Tensor, torch.Tensor], out: torch.Tensor, n_out: int,
            gated: bool, bm: int) -> None:
    groups, blk_start, blk_end = schedule
    if groups.numel() == 0:
        return
    k = packed.shape[-1] * 2
    grid = (groups.numel(), (n_out + BN - 1) // BN)
    _kernel()[grid](x, x_rows, packed, absmax, nf4_table(x.device), out, groups, blk_start, blk_end,
                    n_out, k // block, x.stride(0), packed.stride(0), packed.stride(1),
                    absmax.stride(0), absmax.stride(1), out.stride(0),
                    GATED=gated, BM=bm, BN=BN, QB=block)


def moe4_triton(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                experts: NF4Experts) -> torch.Tensor:
    """The experts' forward on the fused path; same result as ``moe4.reference_forward``."""
    x = hidden_states.contiguous()
    tokens, top_k = top_k_index.shape
    flat_expert = top_k_index.reshape(-1)
    order = torch.argsort(flat_expert, stable=True)
    src_token = (order // top_k).to(torch.int32)
    counts = torch.bincount(flat_expert, minlength=experts.num_experts)[: experts.num_experts]
    pairs = tokens * top_k
    bm = _rows_per_program(pairs / max(1, int((counts > 0).sum())))
    schedule = _schedule(counts, bm)
    inter = experts.intermediate_dim
    hidden = experts.hidden_dim
    h_mid = torch.empty(pairs, inter, dtype=x.dtype, device=x.device)
    _launch(x, src_token, experts.gate_up_q, experts.gate_up_absmax, experts.block_gate_up, schedule, h_mid,
            inter, gated=True, bm=bm)
    y = torch.empty(pairs, hidden, dtype=x.dtype, device=x.device)
    identity = torch.arange(pairs, dtype=torch.int32, device=x.device)
    _launch(h_mid, identity, experts.down_q, experts.down_absmax, experts.block_down, schedule, y, hidden,
            gated=False, bm=bm)
    weights = top_k_weights.reshape(-1)[order].to(y.dtype)
    final = torch.zeros_like(x)
    final.index_add_(0, src_token.long(), y * weights[:, None])
    return final
