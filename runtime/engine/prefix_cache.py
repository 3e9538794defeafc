"""Reuse the encoder's KV cache across requests whose prompts share a prefix.

Someone typing at the cursor sends prompts that differ only in their last few tokens. The
cache keeps the token ids it has encoded; a new prompt crops the cache back to the longest
common prefix and encodes only the rest.

Sliding-window layers normally keep only the last ``window - 1`` positions, so cropping
them would lose positions the next tokens must see. We switch them to "record past" mode:
they keep every position since their last crop, and a crop is exact as long as it removes
no more than was added since then. A deeper crop re-encodes from scratch. The decoder
must see exactly ``window - 1`` positions of a sliding layer (as after a normal encode), so
`decoder_view` hands it trimmed views, expanded to the canvas batch.

A prompt is always encoded in the same pieces: blocks of ``block`` tokens at fixed positions
(0, block, 2 * block, ...), the last one partial. A reused cache keeps whole blocks only and
re-encodes from the start of the block where the prompts part. Encoding the same tokens in other
pieces gives other floating-point roundings (a token encoded alone is not bitwise the token encoded
in a batch of 300), and those flip samples: with fixed pieces a prompt's cache is bitwise the same
whatever was encoded before it, so a seeded request repeats its text on a warm daemon. A block of
one canvas (256 tokens for the real model, under the GPU's ridge point) costs about what a
one-token encode does: a step reads the weights once either way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class CacheUse:
    cache: Any  # DynamicCache covering the whole prompt
    cached_tokens: int  # prompt tokens reused
    encoded_tokens: int  # prompt tokens run through the encoder now
    encode_ms: float


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """One cached prompt (the last one); enough for a single typist per daemon. ``block``: the
    encoding pieces (default: the model's canvas length)."""

    def __init__(self, model: Any, enabled: bool = True, block: int | None = None) -> None:
        self.model = model
        self.enabled = enabled
        self.block = max(1, int(block or getattr(model.config, "canvas_length", 0) or 256))
        self.ids: list[int] = []
        self.cache: Any = None
        self.hits = 0

    def clear(self) -> None:
        self.ids, self.cache = [], None

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        for layer in cache.layers:
            if getattr(layer, "is_sliding", False) and hasattr(layer, "activate_past_recording"):
                layer.activate_past_recording()
        return cache

    def _crop_is_exact(self, remove: int) -> bool:
        for layer in self.cache.layers:
            if not getattr(layer, "is_sliding", False) or layer.keys is None or layer.keys.numel() == 0:
                continue
            held = layer.keys.shape[-2]
            if layer.get_seq_length() >= layer.sliding_window and held - remove < layer.sliding_window - 1:
                return False
        return True

    def prepare(self, ids: list[int]) -> CacheUse:
        """Return a cache holding ``ids`` (all but the canvas), encoding only what is new."""
        import time

        keep = common_prefix_len(self.ids, ids) if (self.enabled and self.cache is not None) else 0
        # Keep at least one token to encode: the encoder is never called with nothing, and the
        # canvas positions follow the last encoded token. Reuse whole blocks only.
        keep = (min(keep, len(ids) - 1) // self.block) * self.block
        remove = len(self.ids) - keep
        if keep > 0 and remove > 0 and not self._crop_is_exact(remove):
            keep = 0
        if keep == 0:
            self.cache, self.ids = self._new_cache(), []
        elif remove > 0:
            self.cache.crop(-remove)
            self.ids = self.ids[:keep]
        if keep > 0:
            self.hits += 1
        start = time.perf_counter()
        new = ids[keep:]
        for at in range(keep, len(ids), self.block):  # block-aligned: keep is a multiple of block
            encode(self.model, self.cache, ids[at: at + self.block], start_pos=at)
        self.ids = list(ids)
        return CacheUse(
            cache=self.cache,
            cached_tokens=keep,
            encoded_tokens=len(new),
            encode_ms=(time.perf_counter() - start) * 1000,
        )


def encode(model: Any, cache: Any, new_ids: list[int], start_pos: int) -> None:
    """Run the encoder over ``new_ids`` at positions ``start_pos...``, appending to ``cache``.

    Mirrors `DiffusionGemmaGenerationMixin.generate`: int32 positions and masks built by the
    encoder's own ``create_masks_for_generate``.
    """
    if not new_ids:
        return
    device = model.device
    input_ids = torch.tensor([new_ids], dtype=torch.long, device=device)
    encode_tensor(model, cache, input_ids, start_pos)


def encode_tensor(model: Any, cache: Any, input_ids: torch.Tensor, start_pos: int) -> None:
    batch, n = input_ids.shape
    device = input_ids.device
    position_ids = torch.arange(start_pos, start_pos + n, dtype=torch.int32, device=device).unsqueeze(0)
    attention_mask = torch.ones((batch, start_pos + n), dtype=torch.bool, device=device)
    dummy = torch.empty((batch, n, 0), dtype=model.dtype, device=device)
    encoder = model.model.encoder
    masks = encoder.create_masks_for_generate(
        config=model.config,
        inputs_embeds=dummy,
        attention_mask=attention_mask,
        past_key_values=cache,
        position_ids=position_ids,
    )
    encoder(input_ids=input_ids, attention_mask=masks, past_key_values=cache, position_ids=position_ids)


def decoder_view(cache: Any, batch: int) -> Any:
    """A read-only view of ``cache`` as the decoder expects it, repeated for ``batch`` canvases."""
    view = copy.copy(cache)
    layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        keys, values = layer.keys, layer.values
        if getattr(layer, "is_sliding", False) and keys is not None and keys.dim() == 4:
            keep = layer.sliding_window - 1
            if keys.shape[-2] > keep:
                keys, values = keys[:, :, -keep:, :], values[:, :, -keep:, :]
        if keys is not None and keys.dim() == 4 and keys.shape[0] != batch:
            keys = keys.expand(batch, *keys.shape[1:])
            values = values.expand(batch, *values.shape[1:])
        clone.keys, clone.values = keys, values
        layers.append(clone)
    view.layers = layers
    return view
