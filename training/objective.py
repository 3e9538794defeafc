"""The training objective DiffusionGemma's sampler expects: clean prefixes for the encoder,
uniformly noised canvases for the decoder, and the cross-entropy against the clean canvas.

Torch is imported inside each function, so the training program's argument parsing stays light.
"""

from __future__ import annotations

from typing import Any

from diffgemma.training.tokenizer_build import BOS_ID, EOS_ID


def encode_stream(tokenizer: Any, texts: list[str]) -> Any:
    """One token stream: ``<bos> file <eos>`` for every file, so windows also start at file starts."""
    import torch

    ids: list[int] = []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for doc in encoded:
        ids.append(BOS_ID)
        ids.extend(doc)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(stream: Any, batch: int, prefix_len: int, canvas: int, gen: Any) -> tuple[Any, Any]:
    """Random windows: ``prefix_len`` clean prefix tokens, then the ``canvas`` tokens that follow."""
    import torch

    span = prefix_len + canvas
    starts = torch.randint(0, stream.numel() - span, (batch,), generator=gen)
    windows = torch.stack([stream[s : s + span] for s in starts.tolist()])
    return windows[:, :prefix_len], windows[:, prefix_len:]


def noise_canvas(clean: Any, vocab_size: int, gen: Any, infill_prob: float = 0.0) -> Any:
    """Replace each token by a uniform random token with probability t, t ~ U(0, 1) per example.

    With probability ``infill_prob`` an example is shaped like the engine's infill canvas instead:
    a hole of random length h (1..canvas-1) at the start takes the noise, and the tokens after it
    stay clean, as the held suffix head does at inference.
    """
    import torch

    batch, length = clean.shape
    t = torch.rand(batch, 1, generator=gen)
    replace_mask = torch.rand(clean.shape, generator=gen) < t
    if infill_prob > 0:
        holes = torch.randint(1, length, (batch, 1), generator=gen)
        shaped = torch.rand(batch, 1, generator=gen) < infill_prob
        in_hole = torch.arange(length).unsqueeze(0) < holes
        replace_mask = torch.where(shaped, replace_mask & in_hole, replace_mask)
    random_tokens = torch.randint(0, vocab_size, clean.shape, generator=gen)
    return torch.where(replace_mask, random_tokens, clean)


def diffusion_loss(
    model: Any, prefix: Any, clean: Any, noisy: Any, self_condition: bool, positions: str = "all"
) -> Any:
    """Cross-entropy of the decoder's canvas logits against the clean canvas.

    ``positions="all"`` scores every canvas position: with uniform-token noise the model cannot
    tell which tokens were replaced, and the sampler reads every position each step. A small
    model trained so learns to copy its input token far too often (noise included: at t = 0.5 it
    copied the noise token at 43% of the noised positions). ``positions="noised"`` scores only
    the replaced tokens, so the model predicts every position from its context and never learns
    to copy; the held suffix tokens the engine scores hole lengths with are then predicted, not
    copied, which is what that score needs.
    """
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config())
    model.model.encoder(input_ids=prefix, past_key_values=cache, use_cache=True)
    sc_logits = None
    if self_condition:
        with torch.no_grad():
            sc_logits = model(past_key_values=cache, decoder_input_ids=noisy).logits.detach()
    logits = model(past_key_values=cache, decoder_input_ids=noisy, self_conditioning_logits=sc_logits).logits
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), clean.reshape(-1), reduction="none")
    if positions == "noised":
        weights = (noisy != clean).reshape(-1).to(losses.dtype)
        return (losses * weights).sum() / weights.sum().clamp(min=1.0)
    return losses.mean()
