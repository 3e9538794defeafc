"""4-bit NF4 linear layers: bitsandbytes' ``Linear4bit``, built from float, stored or random weights.

The plain ``nn.Linear`` projections (attention, dense MLP, self-conditioning) are bitsandbytes'
NF4 layers: blocks of 64 consecutive weights (row-major over the (out, in) matrix) with a float32
absmax each, two codes per byte (the first weight in the high nibble), bitsandbytes' own kernels
on CUDA and CPU. A checkpoint stores what bitsandbytes' ``state_dict`` holds for the layer:
``weight`` (the packed codes) and ``weight.absmax``, ``weight.quant_map``,
``weight.quant_state.bitsandbytes__nf4`` (its quant state), read back by ``Params4bit.from_prequantized``.

On a CPU with AVX512-BF16, bitsandbytes would repack a layer's weight on its first forward and
compute it in bfloat16; it is kept on the dequantize-then-matmul path instead, so a float32 model
computes in float32 and its results do not depend on the CPU's instruction set.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn

from diffgemma.kernels.quant4 import NF4_LEVELS

BLOCK = 64
FORMAT = "bitsandbytes-nf4"
# what bitsandbytes' state_dict holds beside a 4-bit layer's ``weight``, as ``weight.<key>``
STATE_KEYS = ("absmax", "quant_map", "quant_state.bitsandbytes__nf4")
# bitsandbytes' blockwise 4-bit kernels take these block sizes
_BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


@functools.cache
def bnb() -> Any:
    """bitsandbytes, imported once. Its CPU backend logs a warning when an optional kernel package
    is missing; that is not ours to show (the layers run without it)."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def is_linear4(module: object) -> bool:
    return isinstance(module, bnb().nn.Linear4bit)


def _layer(in_features: int, out_features: int, dtype: torch.dtype) -> nn.Module:
    layer = bnb().nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=dtype, quant_type="nf4",
                                compress_statistics=False, device="meta")
    layer.support_avx512bf16_for_cpu = False  # see the module doc
    return layer


def _attach(layer: nn.Module, packed: torch.Tensor, state: Any) -> nn.Module:
    param = bnb().nn.Params4bit(packed, requires_grad=False, quant_state=state, blocksize=state.blocksize,
                                compress_statistics=False, quant_type="nf4", quant_storage=torch.uint8,
                                module=layer, bnb_quantized=True)
    layer._parameters["weight"] = param
    layer.quant_state = state
    return layer


def quantize_linear(weight: torch.Tensor, dtype: torch.dtype, device: torch.device | str | None = None,
                    block: int = BLOCK) -> nn.Module:
    """An NF4 layer from an (out, in) float weight, quantized on ``device``; it computes in ``dtype``."""
    out_features, in_features = weight.shape
    dev = torch.device(device) if device is not None else weight.device
    packed, state = bnb().functional.quantize_4bit(weight.detach().to(dev).contiguous(), blocksize=block,
                                                   compress_statistics=False, quant_type="nf4")
    state.dtype = dtype
    return _attach(_layer(in_features, out_features, dtype), packed, state)


def quantize_linear_module(linear: nn.Module, dtype: torch.dtype | None = None,
                           device: torch.device | str | None = None, block: int = BLOCK) -> nn.Module:
    """An NF4 layer from a bias-free ``nn.Linear``; it computes in ``dtype`` (default: the weight's)."""
    if getattr(linear, "bias", None) is not None:
        raise ValueError("only bias-free projections are quantized")
    weight = linear.get_parameter("weight")
    return quantize_linear(weight, dtype or weight.dtype, device, block)


def packed_linear(packed: torch.Tensor, absmax: torch.Tensor, out_features: int, in_features: int,
                  dtype: torch.dtype, block: int = BLOCK) -> nn.Module:
    """An NF4 layer over already packed codes ((out * in / 2, 1) uint8) and float32 block scales."""
    if block not in _BLOCKS:
        raise ValueError(f"bitsandbytes takes 4-bit blocks of {', '.join(map(str, _BLOCKS))} weights, not {block}")
    if packed.numel() * 2 != out_features * in_features or absmax.numel() != -(-out_features * in_features // block):
        raise ValueError(f"4-bit tensors of {packed.numel()} bytes and {absmax.numel()} scales do not make an "
                         f"({out_features}, {in_features}) weight in blocks of {block}")
    F = bnb().functional
    state = F.QuantState(absmax=absmax.float().reshape(-1), shape=torch.Size((out_features, in_features)),
                         code=F.get_4bit_type("nf4", device=packed.device), blocksize=block, quant_type="nf4",
                         dtype=dtype)
    return _attach(_layer(in_features, out_features, dtype), packed.reshape(-1, 1), state)


def empty_linear(in_features: int, out_features: int, dtype: torch.dtype, block: int = BLOCK) -> nn.Module:
    """A meta-device NF4 layer of the right shapes (for sizing, or filling in place)."""
    n = out_features * in_features
    return packed_linear(torch.empty(n // 2, 1, dtype=torch.uint8, device="meta"),
                         torch.empty(-(-n // block), dtype=torch.float32, device="meta"),
                         out_features, in_features, dtype, block)


def stored_linear(weight: torch.Tensor, stats: dict[str, torch.Tensor], dtype: torch.dtype,
                  device: torch.device | str) -> nn.Module:
    """An NF4 layer from what a checkpoint stores for it: ``weight`` and its ``weight.*`` quant state."""
    param = bnb().nn.Params4bit.from_prequantized(weight, stats, requires_grad=False, device=device)
    state = param.quant_state
    if state.quant_type != "nf4" or state.nested:
        raise ValueError(f"stored 4-bit layer is {state.quant_type}{' (nested)' if state.nested else ''}, not nf4")
    state.dtype = dtype
    out_features, in_features = state.shape
    return _attach(_layer(in_features, out_features, dtype), param.data, state)


def state_tensors(layer: Any) -> dict[str, torch.Tensor]:
    """The quant-state tensors a checkpoint stores beside ``weight``, keyed ``weight.<name>``."""
    state = layer.weight.quant_state
    return {f"weight.{key}": value for key, value in state.as_dict(packed=True).items()}


def stored_bytes(layer: Any) -> int:
    """Bytes the layer holds: packed codes and block scales."""
    weight = layer.weight
    return weight.numel() * weight.element_size() + scale_bytes(layer)


def scale_bytes(layer: Any) -> int:
    """Bytes of the layer's block scales (kept in its quant state, not as a buffer)."""
    absmax = layer.weight.quant_state.absmax
    return int(absmax.numel() * absmax.element_size())


def dequantized(layer: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The layer's (out, in) weight as the 4-bit codes and scales say."""
    weight = layer.weight
    return bnb().functional.dequantize_4bit(weight.data, weight.quant_state).to(dtype)


def from_halfpair(qweight: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype) -> nn.Module:
    """An NF4 layer from a version-1 checkpoint's layer (``quant4``'s halves-paired codes, fp16 scales).

    Both use the NF4 levels and blocks along each row, so this only repacks the nibbles: the
    dequantized weight is exactly the stored one."""
    _check_levels()
    out_features, half = qweight.shape
    in_features = half * 2
    block = in_features // absmax.shape[-1]
    if block not in _BLOCKS:
        raise ValueError(f"its {in_features}-wide layers use {block}-weight blocks, which bitsandbytes does not take")
    p = qweight.reshape(out_features, in_features // block, block // 2)
    codes = torch.cat([p & 15, p >> 4], dim=-1).reshape(out_features, in_features)
    pairs = codes.reshape(-1, 2)
    packed = (pairs[:, 0] << 4) | pairs[:, 1]
    return packed_linear(packed, absmax.float(), out_features, in_features, dtype, block)


@functools.cache
def _check_levels() -> None:
    """bitsandbytes' NF4 table is ``quant4``'s: the same codes mean the same weights in both."""
    table = bnb().functional.get_4bit_type("nf4", device="cpu")
    if not torch.equal(table.float(), torch.tensor(NF4_LEVELS, dtype=torch.float32)):
        raise RuntimeError("bitsandbytes' NF4 levels differ from diffgemma's")
