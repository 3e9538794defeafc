"""4-bit blockwise NF4 weights for the experts: quantize and dequantize.

Format (one per weight matrix, rows = output features, K = input features):
- blocks of ``block`` (64; smaller powers of two only when K is not a multiple of 64)
  consecutive input features per row, each with an fp16 absmax scale;
- codes index the NF4 codebook (QLoRA's normal-float levels, the same table bitsandbytes
  uses), so a weight is ``NF4[code] * absmax``;
- two codes per byte, paired *within a block by halves*: byte j of a block holds code j in
  its low nibble and code j + block/2 in its high nibble. The Triton kernel then reads the
  activations for a block as two contiguous half-block slices, one per nibble, instead of
  de-interleaving even/odd columns.

4 bits + 16/64 bits of scale = 4.25 bits per weight.
"""

from __future__ import annotations

import torch

NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)
DEFAULT_BLOCK = 64
FORMAT_NAME = "nf4-blockwise-halfpair"

_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def nf4_table(device: torch.device | str) -> torch.Tensor:
    """The 16 NF4 levels as float32 on ``device`` (cached)."""
    return _tables_for(torch.device(device))[0]


def _tables_for(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _tables:
        levels = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)
        _tables[device] = (levels, (levels[1:] + levels[:-1]) / 2)
    return _tables[device]


def block_size_for(k: int, block: int = DEFAULT_BLOCK) -> int:
    """``block`` if it divides ``k``, else the largest smaller power of two (>= 2) that does."""
    b = block
    while b >= 2:
        if k % b == 0:
            return b
        b //= 2
    raise ValueError(f"cannot quantize an input dimension of {k}: it must be even")


def quantize_nf4(weight: torch.Tensor, block: int = DEFAULT_BLOCK) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Quantize along the last dimension. Returns (packed uint8 (..., K/2), absmax fp16 (..., K/b), b)."""
    *lead, k = weight.shape
    b = block_size_for(k, block)
    bounds = _tables_for(weight.device)[1]
    x = weight.float().reshape(*lead, k // b, b)
    absmax = x.abs().amax(dim=-1).to(torch.float16)
    # normalize with the fp16 scale that will be stored, so dequantization sees the same scale
    x = x / absmax.float().clamp(min=torch.finfo(torch.float16).tiny).unsqueeze(-1)
    codes = torch.bucketize(x, bounds).to(torch.uint8)
    del x
    half = b // 2
    packed = codes[..., :half] | (codes[..., half:] << 4)
    return packed.reshape(*lead, k // 2), absmax, b


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, block: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of ``quantize_nf4``: (..., K/2) uint8 + (..., K/b) fp16 -> (..., K) in ``dtype``."""
    *lead, kh = packed.shape
    k = kh * 2
    levels = nf4_table(packed.device)
    p = packed.reshape(*lead, k // block, block // 2)
    codes = torch.cat([p & 15, p >> 4], dim=-1).long()
    values = levels[codes] * absmax.float().unsqueeze(-1)
    return values.reshape(*lead, k).to(dtype)


def quantize_nf4_rows(weight: torch.Tensor, block: int = DEFAULT_BLOCK, device: torch.device | str | None = None,
                      rows_per_step: int = 4096) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``quantize_nf4`` over the leading dims a slice at a time, so only a slice is ever upcast.

    Slices move to ``device`` (the GPU at load time) before quantizing; results stay there.
    """
    dev = torch.device(device) if device is not None else weight.device
    lead_shape = weight.shape[:-1]
    k = weight.shape[-1]
    flat = weight.reshape(-1, k)
    b = block_size_for(k, block)
    packed = torch.empty(flat.shape[0], k // 2, dtype=torch.uint8, device=dev)
    absmax = torch.empty(flat.shape[0], k // b, dtype=torch.float16, device=dev)
    for r0 in range(0, flat.shape[0], rows_per_step):
        r1 = min(flat.shape[0], r0 + rows_per_step)
        p, a, _ = quantize_nf4(flat[r0:r1].to(dev), b)
        packed[r0:r1] = p
        absmax[r0:r1] = a
    return packed.reshape(*lead_shape, k // 2), absmax.reshape(*lead_shape, k // b), b
