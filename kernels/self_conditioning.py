"""Route DiffusionGemma's self-conditioning through the fused softmax @ embeddings.

The decoder computes ``softmax(self_conditioning_logits, fp32).to(dtype) @ embed * scale``
inline in its forward, a float32 probability tensor over the full vocabulary per step.
The forward cannot be told to do otherwise, but with ``self_conditioning_logits=None`` it
passes cheap zeros to its ``self_conditioning`` block; a forward pre-hook on that block
swaps the zeros for ``self_conditioning_embeddings`` of the logits stashed here.

    hook = FusedSelfConditioning(model)
    hook.logits = processed                      # before each decoder forward (None: first step)
    out = model(decoder_input_ids=..., self_conditioning_logits=None, past_key_values=...)
    hook.remove()
"""

from __future__ import annotations

from typing import Any

import torch

from diffgemma.kernels.sampler import self_conditioning_embeddings


class FusedSelfConditioning:
    """Forward pre-hook that feeds the decoder fused self-conditioning embeddings."""

    def __init__(self, model: Any, chunk: int = 16384) -> None:
        decoder = model.model.decoder
        self._embed = decoder.embed_tokens
        self.chunk = chunk
        # (batch, canvas, vocab) logits for the next forward, already temperature-scaled
        # unless ``temperature`` is set (then they are raw and divided chunk by chunk)
        self.logits: torch.Tensor | None = None
        self.temperature: float | torch.Tensor | None = None
        self._handle = decoder.self_conditioning.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.logits is None:
            return None
        inputs_embeds = args[0]
        scale = self._embed.embed_scale.to(inputs_embeds.dtype)
        soft = self_conditioning_embeddings(self.logits, self.temperature is None, self._embed.weight, scale,
                                            self.chunk, temperature=self.temperature)
        return (inputs_embeds, soft.to(inputs_embeds.dtype), *args[2:])

    def remove(self) -> None:
        self._handle.remove()
