"""DiffusionGemma's MoE experts with 4-bit NF4 weights, as an experts implementation of transformers.

transformers dispatches every ``DiffusionGemmaTextExperts.forward`` through its experts interface
(``integrations/moe.py``: the class is decorated with ``use_experts_implementation``, and the
config's ``experts_implementation`` names the function). This module registers one more,
``diffgemma_nf4``, and quantizes the experts modules in place: their fused 3-D ``gate_up_proj``
(E, 2I, H) and ``down_proj`` (E, H, I), ~90% of the model's weights, become 4-bit codes and fp16
block scales (``quant4``'s format) held as buffers of the same module. transformers' own 4-bit
path (bitsandbytes) only replaces ``nn.Linear`` and leaves these tensors in bf16.

- Reference (CPU, or no Triton): for each expert some token routes to, dequantize that expert's
  two matrices and run the stock computation.
- Fused (CUDA + Triton): tokens are grouped by expert and ``moe4_triton`` runs two grouped GEMMs
  that dequantize the 4-bit tiles in registers; each expert's weights are read from memory once
  per step, at a quarter of the bf16 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffgemma.kernels.quant4 import DEFAULT_BLOCK, FORMAT_NAME, block_size_for, dequantize_nf4, quantize_nf4_rows

IMPLEMENTATION = "diffgemma_nf4"  # the name in transformers' ALL_EXPERTS_FUNCTIONS
FORMAT = FORMAT_NAME  # how the 4-bit expert tensors are laid out (quant4)
_BUFFERS = ("gate_up_q", "gate_up_absmax", "down_q", "down_absmax")


@dataclass(frozen=True)
class NF4Experts:
    """The 4-bit tensors of one experts module and what their shapes say."""

    gate_up_q: torch.Tensor  # (E, 2I, H/2) uint8, two codes per byte
    gate_up_absmax: torch.Tensor  # (E, 2I, H/b) fp16
    down_q: torch.Tensor  # (E, H, I/2) uint8
    down_absmax: torch.Tensor  # (E, H, I/b) fp16

    @property
    def num_experts(self) -> int:
        return int(self.gate_up_q.shape[0])

    @property
    def hidden_dim(self) -> int:
        return int(self.gate_up_q.shape[-1]) * 2

    @property
    def intermediate_dim(self) -> int:
        return int(self.down_q.shape[-1]) * 2

    @property
    def block_gate_up(self) -> int:
        return self.hidden_dim // int(self.gate_up_absmax.shape[-1])

    @property
    def block_down(self) -> int:
        return self.intermediate_dim // int(self.down_absmax.shape[-1])

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized (gate_up (2I, H), down (H, I)) of one expert."""
        gate_up = dequantize_nf4(self.gate_up_q[expert], self.gate_up_absmax[expert], self.block_gate_up, dtype)
        down = dequantize_nf4(self.down_q[expert], self.down_absmax[expert], self.block_down, dtype)
        return gate_up, down


def register() -> str:
    """Add the NF4 experts function to transformers' experts interface (idempotent); its name."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, nf4_experts_forward)
    return IMPLEMENTATION


def select(model: nn.Module) -> None:
    """Make ``model`` dispatch its experts to the NF4 function (after its experts are quantized)."""
    register()
    model.set_experts_implementation(IMPLEMENTATION)  # type: ignore[operator]


def is_experts(module: nn.Module) -> bool:
    """A transformers DiffusionGemma experts module (quantized or not)."""
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts

    return isinstance(module, DiffusionGemmaTextExperts)


def is_quantized(module: nn.Module) -> bool:
    return all(name in module._buffers for name in _BUFFERS)


def nf4_tensors(module: nn.Module) -> NF4Experts:
    if not is_quantized(module):
        raise RuntimeError(f"the experts implementation {IMPLEMENTATION!r} runs on 4-bit experts only; "
                           "this module holds unquantized weights")
    b = module._buffers
    return NF4Experts(gate_up_q=b["gate_up_q"], gate_up_absmax=b["gate_up_absmax"],  # type: ignore[arg-type]
                      down_q=b["down_q"], down_absmax=b["down_absmax"])  # type: ignore[arg-type]


def set_nf4_tensors(module: nn.Module, tensors: NF4Experts) -> None:
    """Hold ``tensors`` as the module's buffers in place of its 3-D weight parameters."""
    for name in ("gate_up_proj", "down_proj"):
        module._parameters.pop(name, None)
    for name in _BUFFERS:
        module._buffers[name] = getattr(tensors, name)


def quantize_experts(module: nn.Module, block: int = DEFAULT_BLOCK, device: torch.device | str | None = None) -> None:
    """Quantize an experts module in place, one slice of rows at a time (on ``device``)."""
    quantize_experts_from(module, module.get_parameter("gate_up_proj").detach(),
                          module.get_parameter("down_proj").detach(), block, device)


def quantize_experts_from(module: nn.Module, gate_up: torch.Tensor, down: torch.Tensor, block: int = DEFAULT_BLOCK,
                          device: torch.device | str | None = None) -> None:
    """Quantize the raw (E, 2I, H) and (E, H, I) tensors (e.g. read from a checkpoint) into ``module``."""
    e, two_i, h = gate_up.shape
    if tuple(down.shape) != (e, h, two_i // 2):
        raise ValueError(f"down_proj shape {tuple(down.shape)} does not fit gate_up_proj {tuple(gate_up.shape)}")
    dev = device if device is not None else gate_up.device
    gq, ga, _ = quantize_nf4_rows(gate_up, block, dev)
    dq, da, _ = quantize_nf4_rows(down, block, dev)
    set_nf4_tensors(module, NF4Experts(gate_up_q=gq, gate_up_absmax=ga, down_q=dq, down_absmax=da))


def empty_experts(module: nn.Module, block: int = DEFAULT_BLOCK) -> None:
    """Meta-device 4-bit buffers of the right shapes in place of the module's weights (for building
    the model before its stored tensors are assigned)."""
    experts: Any = module  # a DiffusionGemmaTextExperts: its sizes are plain int attributes
    e, h, i = int(experts.num_experts), int(experts.hidden_dim), int(experts.intermediate_dim)
    bg, bd = block_size_for(h, block), block_size_for(i, block)
    u8, f16, meta = torch.uint8, torch.float16, "meta"
    set_nf4_tensors(module, NF4Experts(
        gate_up_q=torch.empty(e, 2 * i, h // 2, dtype=u8, device=meta),
        gate_up_absmax=torch.empty(e, 2 * i, h // bg, dtype=f16, device=meta),
        down_q=torch.empty(e, h, i // 2, dtype=u8, device=meta),
        down_absmax=torch.empty(e, h, i // bd, dtype=f16, device=meta)))


def _fused_ready(module: Any, hidden_states: torch.Tensor) -> bool:
    if not hidden_states.is_cuda or getattr(module.config, "hidden_activation", None) != "gelu_pytorch_tanh":
        return False
    from diffgemma.kernels.moe4_triton import triton_ready

    return triton_ready()


def nf4_experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                        top_k_weights: torch.Tensor) -> torch.Tensor:
    """The experts forward of transformers' interface on 4-bit weights (``self``: the experts module)."""
    tensors = nf4_tensors(self)
    if _fused_ready(self, hidden_states):
        from diffgemma.kernels.moe4_triton import moe4_triton

        return moe4_triton(hidden_states, top_k_index, top_k_weights, tensors)
    return reference_forward(tensors, self.act_fn, hidden_states, top_k_index, top_k_weights)


def reference_forward(tensors: NF4Experts, act_fn: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                      top_k_weights: torch.Tensor) -> torch.Tensor:
    """The stock expert loop, on weights dequantized per routed expert."""
    final = torch.zeros_like(hidden_states)
    num_experts = tensors.num_experts
    with torch.no_grad():
        expert_mask = nn.functional.one_hot(top_k_index, num_classes=num_experts + 1).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
    for hit in expert_hit:
        expert = int(hit[0])
        if expert == num_experts:
            continue
        top_k_pos, token_idx = torch.where(expert_mask[expert])
        gate_up, down = tensors.expert_weights(expert, hidden_states.dtype)
        gate, up = nn.functional.linear(hidden_states[token_idx], gate_up).chunk(2, dim=-1)
        out = nn.functional.linear(act_fn(gate) * up, down)
        out = out * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, out.to(final.dtype))
    return final
