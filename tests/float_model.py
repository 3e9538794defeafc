"""The tiny checkpoint as a float32 model and one fixed decoder forward of it: what the 4-bit tests
measure a quantized model against."""

from __future__ import annotations

from pathlib import Path

import torch


def full_model(path: Path):
    """The checkpoint at ``path`` in float32, in eval mode."""
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(path), dtype=torch.float32).eval()


def decoder_logits(model, seed: int = 0) -> torch.Tensor:
    """The decoder's logits for a random prompt and canvas (two rows), the same for every model of a
    config at one ``seed``."""
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(3, vocab, (2, 24), generator=g)
    canvas = torch.randint(3, vocab, (2, model.config.canvas_length), generator=g)
    with torch.no_grad():
        cache = DynamicCache(config=model.config.text_config)
        return model(input_ids=ids, decoder_input_ids=canvas, past_key_values=cache).logits


def rel_err(base: torch.Tensor, other: torch.Tensor) -> float:
    """How far ``other`` is from ``base``, relative to ``base``'s norm."""
    return float((other - base).norm() / base.norm())
