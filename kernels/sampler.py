"""One pass over a denoising step's logits: log-sum-exp, entropy, argmax and a sample.

The stock DiffusionGemma step (transformers' ``_denoising_step`` + ``EntropyBoundSampler``)
materializes ``softmax(logits / T)`` in float32 over the whole 262,144-token vocabulary,
draws with ``torch.multinomial``, then builds a ``Categorical`` for the entropy (another
log-softmax and product over the full vocabulary), and the next step's self-conditioning
runs a third float32 softmax. Here the vocabulary is walked in chunks with an online
(streaming) max / sum-of-exp / sum-of-exp-times-logit, so memory stays O(rows * chunk)
and every statistic comes out of the same walk.

Sampling is exact Gumbel-max. On CPU, drawing one Gumbel variate per vocabulary entry
costs more than the rest of the walk, so it is done hierarchically and still exactly:
pick a block of 256 tokens by Gumbel-max over the block masses (known from the walk), then
a token inside the chosen block by Gumbel-max over that block alone. P(token) = P(block) *
P(token | block) = p_token, with ~1/200 of the noise draws. The Triton kernel draws
per-token noise in registers, where it is free, in a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Logits at -inf (masked by a logits processor) are clamped to this after the max is
# subtracted, so exp() gives exactly 0 and 0 * logit stays 0 instead of NaN.
_NEG_CLAMP = -1.0e4
# Rows handled together in the CPU walk: 32 rows x 16384 tokens keeps a chunk's float32
# temporaries at 2 MB (cache-sized) while each op is big enough to be worth its threads.
_ROW_BLOCK = 32
# Tokens per block in the CPU walk's per-block max / mass tables (exact argmax and draw).
_BLOCK = 256


@dataclass
class StepStats:
    """What one denoising step needs from the logits of every canvas position.

    ``lse`` and ``entropy`` are of the temperature-scaled distribution ``softmax(logits / T)``,
    the one the tokens are drawn from.
    """

    tokens: torch.Tensor  # (B, C) int64, a sample from softmax(logits / T)
    argmax: torch.Tensor  # (B, C) int64
    entropy: torch.Tensor  # (B, C) float32
    lse: torch.Tensor  # (B, C) float32, logsumexp(logits / T)


def _inverse_temperature(temperature: float | torch.Tensor, batch: int, canvas: int,
                         device: torch.device) -> torch.Tensor:
    """1/T for every row of the flattened (B*C) logits, as a (B*C, 1) float32 column."""
    if isinstance(temperature, torch.Tensor):
        temp = temperature.to(device=device, dtype=torch.float32).reshape(-1)
        if temp.numel() == 1:
            temp = temp.expand(batch)
        if temp.numel() != batch:
            raise ValueError(f"temperature has {temp.numel()} values for a batch of {batch}")
    else:
        temp = torch.full((batch,), float(temperature), device=device, dtype=torch.float32)
    if bool((temp <= 0).any()):
        raise ValueError("temperature must be > 0")
    return (1.0 / temp).repeat_interleave(canvas).unsqueeze(1)


def _temperature_view(temperature: float | torch.Tensor, logits: torch.Tensor) -> float | torch.Tensor:
    if isinstance(temperature, torch.Tensor) and temperature.numel() > 1:
        return temperature.to(device=logits.device, dtype=logits.dtype).reshape(-1, 1, 1)
    return float(temperature)


def reference_sample(logits: torch.Tensor, temperature: float | torch.Tensor,
                     generator: torch.Generator | None = None) -> StepStats:
    """The stock path, as transformers' DiffusionGemma ``_denoising_step`` does it.

    Divide by the temperature, float32 softmax over the full vocabulary, ``torch.multinomial``,
    ``argmax``, and the ``Categorical`` entropy the ``EntropyBoundSampler`` computes.
    """
    batch, canvas, vocab = logits.shape
    processed = logits / _temperature_view(temperature, logits)
    probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
    tokens = torch.multinomial(probs.view(-1, vocab), num_samples=1, generator=generator).view(batch, canvas)
    argmax = torch.argmax(processed, dim=-1)
    entropy = torch.distributions.Categorical(logits=processed).entropy().float()
    lse = torch.logsumexp(processed.float(), dim=-1)
    return StepStats(tokens=tokens, argmax=argmax, entropy=entropy, lse=lse)


def _use_triton(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    from diffgemma.kernels.sampler_triton import triton_available

    return triton_available()


def fused_sample(logits: torch.Tensor, temperature: float | torch.Tensor,
                 generator: torch.Generator | None = None, chunk: int = 16384) -> StepStats:
    """All of a step's per-position statistics in one walk over the vocabulary (see module doc).

    ``logits`` (B, C, V) may be float32/bfloat16/float16; no (B, C, V) float32 tensor is made.
    ``temperature`` is a scalar or one value per batch row.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, canvas, vocab), got shape {tuple(logits.shape)}")
    if _use_triton(logits):
        from diffgemma.kernels.sampler_triton import fused_sample_triton

        return fused_sample_triton(logits, temperature, generator=generator)
    return _fused_sample_torch(logits, temperature, generator, chunk)


def _fused_sample_torch(logits: torch.Tensor, temperature: float | torch.Tensor,
                        generator: torch.Generator | None, chunk: int) -> StepStats:
    batch, canvas, vocab = logits.shape
    rows = batch * canvas
    flat = logits.reshape(rows, vocab)
    inv_t = _inverse_temperature(temperature, batch, canvas, logits.device)
    dev = logits.device
    blk = _BLOCK
    chunk = max(blk, min(chunk, vocab))
    chunk = (chunk + blk - 1) // blk * blk  # whole blocks; the last chunk is padded with -inf
    n_blocks = (vocab + blk - 1) // blk

    lse = torch.empty(rows, dtype=torch.float32, device=dev)
    entropy = torch.empty(rows, dtype=torch.float32, device=dev)
    # per block of _BLOCK tokens: the largest scaled logit and log of the block's mass,
    # for the exact argmax and the first level of the hierarchical Gumbel-max draw
    block_max = torch.empty(rows, n_blocks, dtype=torch.float32, device=dev)
    block_mass = torch.empty(rows, n_blocks, dtype=torch.float32, device=dev)

    row_block = _ROW_BLOCK
    buf = torch.empty(row_block, chunk, dtype=torch.float32, device=dev)
    ebuf = torch.empty_like(buf)
    for r0 in range(0, rows, row_block):
        r1 = min(rows, r0 + row_block)
        nr = r1 - r0
        it = inv_t[r0:r1]
        run_max = torch.full((nr,), -1.0e30, dtype=torch.float32, device=dev)
        run_sum = torch.zeros(nr, dtype=torch.float32, device=dev)
        # sum of exp(x - run_max) * (x - run_max): entropy without cancellation at low entropy
        run_dot = torch.zeros(nr, dtype=torch.float32, device=dev)
        for c0 in range(0, vocab, chunk):
            c1 = min(vocab, c0 + chunk)
            w = c1 - c0
            nb = (w + blk - 1) // blk
            b0 = c0 // blk
            x = buf[:nr, : nb * blk]
            src = flat[r0:r1, c0:c1]
            if src.dtype == torch.float32:
                torch.mul(src, it, out=x[:, :w])
            else:  # a mixed-dtype mul into a float32 out is a slow path; convert, then scale
                x[:, :w].copy_(src)
                x[:, :w].mul_(it)
            if nb * blk != w:
                x[:, w:].fill_(float("-inf"))
            bmax = torch.amax(x.view(nr, nb, blk), dim=2)
            block_max[r0:r1, b0 : b0 + nb] = bmax
            new_max = torch.maximum(run_max, bmax.amax(dim=1))
            alpha = torch.exp(run_max - new_max)
            x.sub_(new_max.unsqueeze(1)).clamp_(min=_NEG_CLAMP)
            e = torch.exp(x, out=ebuf[:nr, : nb * blk])
            bsum = e.view(nr, nb, blk).sum(dim=2)
            block_mass[r0:r1, b0 : b0 + nb] = torch.log(bsum).add_(new_max.unsqueeze(1))
            csum = bsum.sum(dim=1)
            cdot = e.mul_(x).sum(dim=1)
            run_dot = alpha * (run_dot + (run_max - new_max) * run_sum) + cdot
            run_sum = alpha * run_sum + csum
            run_max = new_max
        log_sum = torch.log(run_sum)
        lse[r0:r1] = run_max + log_sum
        entropy[r0:r1] = (log_sum - run_dot / run_sum).clamp_(min=0.0)

    argmax = _argmax_in_block(flat, inv_t, torch.argmax(block_max, dim=1), blk)
    pick = torch.argmax(block_mass + _gumbel_like(block_mass.shape, dev, generator), dim=1)
    tokens = _argmax_in_block(flat, inv_t, pick, blk, gumbel=True, generator=generator)
    shape = (batch, canvas)
    return StepStats(tokens=tokens.view(shape), argmax=argmax.view(shape), entropy=entropy.view(shape),
                     lse=lse.view(shape))


def _gumbel_like(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    # -log(E) with E ~ Exp(1) is a standard Gumbel variate (one log instead of two). A generator
    # on another device (a CPU generator for CUDA logits) draws where it lives; the draws are small.
    where = generator.device if generator is not None else device
    e = torch.empty(shape, dtype=torch.float32, device=where).exponential_(generator=generator)
    return e.log_().neg_().to(device)


def _argmax_in_block(flat: torch.Tensor, inv_t: torch.Tensor, block: torch.Tensor, blk: int,
                     gumbel: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Argmax of the scaled logits (plus Gumbel noise when ``gumbel``) inside one block per row.

    With noise this is the second level of the exact hierarchical draw: given block b (chosen
    with probability mass_b / total), Gumbel-max inside b picks token i with p_i / mass_b.
    """
    vocab = flat.shape[1]
    start = block * blk
    index = start.unsqueeze(1) + torch.arange(blk, device=flat.device).unsqueeze(0)
    valid = index < vocab  # the last block may be short
    x = torch.gather(flat, 1, index.clamp(max=vocab - 1)).float().mul_(inv_t)
    x.masked_fill_(~valid, float("-inf"))
    if gumbel:
        x.add_(_gumbel_like(x.shape, flat.device, generator))
    return (start + torch.argmax(x, dim=1)).clamp_(max=vocab - 1)


def self_conditioning_embeddings(logits: torch.Tensor, temperature_scaled: bool, embed_weight: torch.Tensor,
                                 embed_scale: float | torch.Tensor, chunk: int = 16384, *,
                                 temperature: float | torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(logits, fp32).to(w.dtype) @ w * scale`` without a full-vocabulary float32 softmax.

    This is the decoder's self-conditioning input (``DiffusionGemmaDecoderModel.forward``), built
    with an online softmax: each vocabulary chunk's ``exp(x - running_max)`` is multiplied into the
    embedding rows and the accumulator is rescaled when the running max grows.

    ``temperature_scaled``: whether ``logits`` already carry the step's temperature (the stock loop
    feeds back the processed logits). When False and ``temperature`` is given, the division happens
    here, chunk by chunk, so the caller can pass raw logits and skip a full-vocabulary divide.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (batch, canvas, vocab), got shape {tuple(logits.shape)}")
    batch, canvas, vocab = logits.shape
    if embed_weight.shape[0] != vocab:
        raise ValueError(f"embedding has {embed_weight.shape[0]} rows for a vocabulary of {vocab}")
    if not temperature_scaled and temperature is not None:
        inv_t = _inverse_temperature(temperature, batch, canvas, logits.device)
    else:
        inv_t = None
    scale = embed_scale.to(embed_weight.dtype) if isinstance(embed_scale, torch.Tensor) else embed_scale
    if logits.is_cuda and _use_triton(logits):
        from diffgemma.kernels.sampler_triton import self_conditioning_triton

        out = self_conditioning_triton(logits, inv_t, embed_weight)
        return (out * scale).to(embed_weight.dtype)

    rows = batch * canvas
    flat = logits.reshape(rows, vocab)
    hidden = embed_weight.shape[1]
    acc = torch.zeros(rows, hidden, dtype=torch.float32, device=logits.device)
    run_max = torch.full((rows, 1), -1.0e30, dtype=torch.float32, device=logits.device)
    run_sum = torch.zeros(rows, 1, dtype=torch.float32, device=logits.device)
    chunk = max(1, min(chunk, vocab))
    for c0 in range(0, vocab, chunk):
        c1 = min(vocab, c0 + chunk)
        # a fresh float32 copy of the chunk: the in-place ops below must never touch the caller's logits
        x = torch.mul(flat[:, c0:c1], inv_t) if inv_t is not None else flat[:, c0:c1].to(torch.float32, copy=True)
        cmax = x.amax(dim=1, keepdim=True)
        new_max = torch.maximum(run_max, cmax)
        alpha = torch.exp(run_max - new_max)
        p = x.sub_(new_max).exp_()
        run_sum = alpha * run_sum + p.sum(dim=1, keepdim=True)
        # products in the embedding dtype, as the stock matmul does; the sum is kept in float32
        part = p.to(embed_weight.dtype) @ embed_weight[c0:c1]
        acc.mul_(alpha).add_(part.float())
        run_max = new_max
    out = (acc / run_sum).to(embed_weight.dtype) * scale
    return out.view(batch, canvas, hidden)
