"""``QuantizedExperts``: DiffusionGemma's MoE experts with 4-bit NF4 weights.

A drop-in for transformers' ``DiffusionGemmaTextExperts`` (same forward signature and
routing semantics). The fused 3-D ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I)
hold ~90% of the model's weights; transformers' bitsandbytes path leaves them in bf16.

- Reference path (CPU, or no Triton): for each expert some token routes to, dequantize
  that expert's two matrices and run the stock computation.
- Fused path (CUDA + Triton): tokens are grouped by expert and ``moe4_triton`` runs two
  grouped GEMMs that dequantize the 4-bit tiles in registers; each expert's weights are
  read from memory once per step, at a quarter of the bf16 bytes.
"""

from __future__ import annotations

import torch
from torch import nn

from diffgemma.kernels.quant4 import DEFAULT_BLOCK, block_size_for, dequantize_nf4, quantize_nf4_rows


class QuantizedExperts(nn.Module):
    """Collection of NF4-quantized expert weights; ``forward(hidden_states, top_k_index, top_k_weights)``."""

    # registered buffers: 4-bit codes (two per byte) and each block's absmax
    gate_up_q: torch.Tensor
    gate_up_absmax: torch.Tensor
    down_q: torch.Tensor
    down_absmax: torch.Tensor

    def __init__(self, num_experts: int, hidden_dim: int, intermediate_dim: int, activation: str,
                 block: int = DEFAULT_BLOCK, device: torch.device | str | None = None) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.act_fn = ACT2FN[activation]
        self.block_gate_up = block_size_for(hidden_dim, block)
        self.block_down = block_size_for(intermediate_dim, block)
        e, h, i = num_experts, hidden_dim, intermediate_dim
        u8, f16 = torch.uint8, torch.float16
        self.register_buffer("gate_up_q", torch.empty(e, 2 * i, h // 2, dtype=u8, device=device))
        self.register_buffer("gate_up_absmax", torch.empty(e, 2 * i, h // self.block_gate_up, dtype=f16,
                                                           device=device))
        self.register_buffer("down_q", torch.empty(e, h, i // 2, dtype=u8, device=device))
        self.register_buffer("down_absmax", torch.empty(e, h, i // self.block_down, dtype=f16, device=device))

    @classmethod
    def from_experts(cls, experts: nn.Module, activation: str, block: int = DEFAULT_BLOCK,
                     device: torch.device | str | None = None) -> QuantizedExperts:
        """Quantize a ``DiffusionGemmaTextExperts`` one expert slice at a time (on ``device``)."""
        return cls.from_tensors(experts.get_parameter("gate_up_proj").detach(),
                                experts.get_parameter("down_proj").detach(), activation, block, device)

    @classmethod
    def from_tensors(cls, gate_up: torch.Tensor, down: torch.Tensor, activation: str, block: int = DEFAULT_BLOCK,
                     device: torch.device | str | None = None) -> QuantizedExperts:
        """From the raw (E, 2I, H) and (E, H, I) tensors, e.g. read straight from a checkpoint."""
        e, two_i, h = gate_up.shape
        if tuple(down.shape) != (e, h, two_i // 2):
            raise ValueError(f"down_proj shape {tuple(down.shape)} does not fit gate_up_proj {tuple(gate_up.shape)}")
        dev = device if device is not None else gate_up.device
        mod = cls(e, h, two_i // 2, activation, block, device="meta")
        mod.gate_up_q, mod.gate_up_absmax, mod.block_gate_up = quantize_nf4_rows(gate_up, block, dev)
        mod.down_q, mod.down_absmax, mod.block_down = quantize_nf4_rows(down, block, dev)
        return mod

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized (gate_up (2I, H), down (H, I)) of one expert."""
        gate_up = dequantize_nf4(self.gate_up_q[expert], self.gate_up_absmax[expert], self.block_gate_up, dtype)
        down = dequantize_nf4(self.down_q[expert], self.down_absmax[expert], self.block_down, dtype)
        return gate_up, down

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        if hidden_states.is_cuda and self.activation == "gelu_pytorch_tanh":
            from diffgemma.kernels.moe4_triton import moe4_triton, triton_ready

            if triton_ready():
                return moe4_triton(hidden_states, top_k_index, top_k_weights, self)
        return self.reference_forward(hidden_states, top_k_index, top_k_weights)

    def reference_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                          top_k_weights: torch.Tensor) -> torch.Tensor:
        """The stock expert loop, on weights dequantized per routed expert."""
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for hit in expert_hit:
            expert = int(hit[0])
            if expert == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(expert_mask[expert])
            gate_up, down = self.expert_weights(expert, hidden_states.dtype)
            gate, up = nn.functional.linear(hidden_states[token_idx], gate_up).chunk(2, dim=-1)
            out = nn.functional.linear(self.act_fn(gate) * up, down)
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden_dim={self.hidden_dim}, "
                f"intermediate_dim={self.intermediate_dim}, nf4 blocks={self.block_gate_up}/{self.block_down}")
