"""The streaming head: from the decoder's hidden states to everything a denoising step needs,
in one pass over vocabulary chunks, without ever holding a (rows, canvas, vocab) tensor.

The stock step runs the tied LM head over the whole vocabulary, soft-caps the float32 logits,
divides by the temperature, takes a float32 softmax to sample, a Categorical for the entropy,
and hands the logits back to the decoder, which runs another float32 softmax for the
self-conditioning embeddings. At canvas 256 and vocabulary 262,144 each of those is 268 MB
per row. Here each chunk of ``chunk`` vocabulary rows is multiplied out, soft-capped, scaled
by 1/T and folded into running statistics (online log-sum-exp), then dropped:

- ``lse`` and ``entropy`` of softmax(logits / T), the distribution the sample comes from;
- ``argmax``, and a Gumbel-max ``tokens`` sample (exact: see ``_sample_in_chunk``);
- ``confidence``: the probability of the argmax token;
- ``self_cond``: softmax(logits / T) @ embeddings * scale, the next step's self-conditioning
  input, accumulated chunk by chunk and rescaled when the running max grows;
- ``held_logp``: at scored positions, log-softmax of the raw (T = 1) logits at the held token,
  the hole-length score.

Positions held by a clamp come out exactly as ``runtime.engine.steps.apply_clamp`` defines
them, without running the head for them: the held token as sample and argmax, entropy 0,
log-sum-exp 0, confidence 1, and a one-hot self-conditioning (the token's embedding row).

On CUDA with Triton the per-chunk statistics come from one kernel (``stream_head_triton``);
the chunk matmuls are cuBLAS either way. Memory: O(rows x chunk) for the chunk, plus
O(rows x hidden) for the self-conditioning accumulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Tokens per block of the CPU path's hierarchical Gumbel-max draw (see _sample_in_chunk).
_BLOCK = 256
# exp() of logits this far under the running max is exactly 0 in float32, and 0 * x stays 0
# for -inf inputs.
_NEG_CLAMP = -1.0e4
DEFAULT_CHUNK = 8192


@dataclass
class HeadStats:
    tokens: torch.Tensor  # (B, C) int64: a sample from softmax(logits / T)
    argmax: torch.Tensor  # (B, C) int64
    entropy: torch.Tensor  # (B, C) float32
    lse: torch.Tensor  # (B, C) float32: logsumexp(logits / T)
    confidence: torch.Tensor  # (B, C) float32: probability of the argmax token
    self_cond: torch.Tensor | None  # (B, C, H) in the embedding dtype, or None when not asked
    held_logp: torch.Tensor | None  # (B, C) float32, 0 outside the scored positions


@dataclass
class HeadInputs:
    """One step's head problem, flattened to rows (one row per canvas position)."""

    hidden: torch.Tensor  # (B, C, H) final decoder hidden states (after the final norm)
    weight: torch.Tensor  # (V, H) tied LM head / embedding matrix
    softcap: float | None  # final logit soft-cap (Gemma: 30.0)
    temperature: float | torch.Tensor  # scalar, or one value per batch row
    embed_scale: float  # the embedding's scale, for the self-conditioning input
    held_mask: torch.Tensor | None = None  # (B, C) bool: clamped positions
    held_tokens: torch.Tensor | None = None  # (B, C) int64 token at held positions (-1 elsewhere)
    score_mask: torch.Tensor | None = None  # (B, C) bool: held positions to score (subset of held)
    want_self_cond: bool = True


class _Running:
    """Online statistics per row, merged chunk by chunk (all float32 except the indices)."""

    def __init__(self, rows: int, hidden: int, device: torch.device, self_cond: bool) -> None:
        self.max = torch.full((rows,), -1.0e30, dtype=torch.float32, device=device)
        self.sum = torch.zeros(rows, dtype=torch.float32, device=device)
        # sum of exp(x - max) * (x - max): the entropy without cancellation at low entropy
        self.dot = torch.zeros(rows, dtype=torch.float32, device=device)
        self.best = torch.full((rows,), float("-inf"), dtype=torch.float32, device=device)
        self.best_i = torch.zeros(rows, dtype=torch.int64, device=device)
        self.key = torch.full((rows,), float("-inf"), dtype=torch.float32, device=device)
        self.tok = torch.zeros(rows, dtype=torch.int64, device=device)
        self.acc = torch.zeros(rows, hidden, dtype=torch.float32, device=device) if self_cond else None

    def merge(self, m: torch.Tensor, s: torch.Tensor, d: torch.Tensor, best: torch.Tensor,
              best_i: torch.Tensor, key: torch.Tensor, tok: torch.Tensor,
              part: torch.Tensor | None) -> None:
        """Fold in one chunk: its max ``m``, sum ``s`` and dot ``d`` (relative to ``m``), its argmax,
        its Gumbel-max winner (``key`` is the winner's log-mass-plus-noise), and ``part`` =
        exp(x - m) @ W for the chunk."""
        new_max = torch.maximum(self.max, m)
        a_old = torch.exp(self.max - new_max)
        a_new = torch.exp(m - new_max)
        self.dot = a_old * (self.dot + (self.max - new_max) * self.sum) + a_new * (d + (m - new_max) * s)
        self.sum = a_old * self.sum + a_new * s
        self.max = new_max
        up = best > self.best  # strict: the earliest maximum wins, as torch.argmax
        self.best = torch.where(up, best, self.best)
        self.best_i = torch.where(up, best_i, self.best_i)
        kup = key > self.key
        self.key = torch.where(kup, key, self.key)
        self.tok = torch.where(kup, tok, self.tok)
        if self.acc is not None and part is not None:
            self.acc.mul_(a_old.unsqueeze(1)).add_(part.float() * a_new.unsqueeze(1))


def _gumbel(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    # -log(E), E ~ Exp(1), is a standard Gumbel variate. A generator on another device (a CPU
    # generator for CUDA tensors) draws where it lives; the draws are small.
    where = generator.device if generator is not None else device
    e = torch.empty(shape, dtype=torch.float32, device=where).exponential_(generator=generator)
    return e.log_().neg_().to(device)


def _sample_in_chunk(x: torch.Tensor, e: torch.Tensor, m: torch.Tensor,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """An exact draw from softmax over one chunk, and its Gumbel key for the merge across chunks.

    Hierarchical Gumbel-max: a block of _BLOCK tokens by Gumbel-max over the block masses, then a
    token inside it by Gumbel-max over its scaled logits; the chunk's key is log(chunk mass) plus
    fresh noise, so the chunk with the largest key wins. P(token) = P(chunk) P(block | chunk)
    P(token | block) = p_token, drawing ~1/100 of the noise a per-token draw would.
    """
    rows, width = x.shape
    nb = width // _BLOCK
    mass = e.view(rows, nb, _BLOCK).sum(dim=2)
    log_mass = torch.log(mass)
    block = torch.argmax(log_mass + _gumbel((rows, nb), x.device, generator), dim=1)
    start = block * _BLOCK
    index = start.unsqueeze(1) + torch.arange(_BLOCK, device=x.device).unsqueeze(0)
    inner = torch.gather(x, 1, index) + _gumbel((rows, _BLOCK), x.device, generator)
    token = start + torch.argmax(inner, dim=1)
    key = m + torch.log(mass.sum(dim=1)) + _gumbel((rows,), x.device, generator)
    return token, key


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """The LM head on one chunk, as the model computes it: matmul in the weight dtype, then float32
    and the soft-cap."""
    logits = (h @ w.t()).float()
    if softcap:
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


def _walk_torch(h: torch.Tensor, inv_t: torch.Tensor, inp: HeadInputs, run: _Running, chunk: int,
                generator: torch.Generator | None) -> None:
    """The CPU/torch walk over the vocabulary for the free rows ``h`` (rows, H)."""
    weight = inp.weight
    vocab = weight.shape[0]
    for c0 in range(0, vocab, chunk):
        c1 = min(vocab, c0 + chunk)
        w = weight[c0:c1]
        x = _chunk_logits(h, w, inp.softcap).mul_(inv_t.unsqueeze(1))
        width = c1 - c0
        padded = -(-width // _BLOCK) * _BLOCK
        if padded != width:  # whole blocks for the draw; padding has zero mass
            x = torch.nn.functional.pad(x, (0, padded - width), value=float("-inf"))
        best, best_i = torch.max(x, dim=1)
        m = best
        xc = (x - m.unsqueeze(1)).clamp_(min=_NEG_CLAMP)
        e = torch.exp(xc)
        s = e.sum(dim=1)
        d = (e * xc).sum(dim=1)
        tok, key = _sample_in_chunk(x, e, m, generator)
        part = e[:, :width].to(w.dtype) @ w if run.acc is not None else None
        run.merge(m, s, d, best, best_i + c0, key, tok.clamp(max=width - 1) + c0, part)


def _held_logp(h: torch.Tensor, tokens: torch.Tensor, inp: HeadInputs, chunk: int) -> torch.Tensor:
    """log softmax(raw logits)[token] for the scored rows ``h`` (T = 1, before any clamp)."""
    weight = inp.weight
    vocab = weight.shape[0]
    run_max = torch.full((h.shape[0],), -1.0e30, dtype=torch.float32, device=h.device)
    run_sum = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    held = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    for c0 in range(0, vocab, chunk):
        c1 = min(vocab, c0 + chunk)
        x = _chunk_logits(h, weight[c0:c1], inp.softcap)
        new_max = torch.maximum(run_max, x.amax(dim=1))
        run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(x - new_max.unsqueeze(1)).sum(dim=1)
        run_max = new_max
        inside = (tokens >= c0) & (tokens < c1)
        local = (tokens - c0).clamp(min=0, max=c1 - c0 - 1)
        held = torch.where(inside, x.gather(1, local.unsqueeze(1)).squeeze(1), held)
    return held - (run_max + torch.log(run_sum))


def _inverse_temperature_rows(temperature: float | torch.Tensor, batch: int, canvas: int,
                              device: torch.device) -> torch.Tensor:
    """1/T for every row of the flattened (B*C) positions (the fused sampler's, as a flat vector)."""
    from diffgemma.kernels.sampler import _inverse_temperature

    return _inverse_temperature(temperature, batch, canvas, device).reshape(-1)


def _use_triton(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    from diffgemma.kernels.sampler_triton import triton_available

    return triton_available()


def stream_head(inp: HeadInputs, generator: torch.Generator | None = None, chunk: int = DEFAULT_CHUNK,
                backend: str = "auto") -> HeadStats:
    """Every statistic of one denoising step from the hidden states (see the module doc).

    ``backend``: "torch" (the reference, any device), "triton" (CUDA, or CPU under
    TRITON_INTERPRET=1), or "auto" (Triton on CUDA when available).
    """
    hidden, weight = inp.hidden, inp.weight
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, canvas, hidden), got shape {tuple(hidden.shape)}")
    batch, canvas, size = hidden.shape
    if weight.shape[1] != size:
        raise ValueError(f"weight has width {weight.shape[1]} for hidden size {size}")
    rows = batch * canvas
    dev = hidden.device
    flat = hidden.reshape(rows, size).to(weight.dtype)
    inv_t = _inverse_temperature_rows(inp.temperature, batch, canvas, dev)
    held = inp.held_mask.reshape(rows) if inp.held_mask is not None else torch.zeros(rows, dtype=torch.bool,
                                                                                     device=dev)
    free = torch.nonzero(~held).squeeze(1)
    chunk = max(_BLOCK, min(chunk, weight.shape[0]))
    chunk = -(-chunk // _BLOCK) * _BLOCK
    run = _Running(int(free.numel()), size, dev, inp.want_self_cond)
    if free.numel():
        use_triton = backend == "triton" or (backend == "auto" and _use_triton(hidden))
        if use_triton:
            from diffgemma.kernels.stream_head_triton import walk_triton

            walk_triton(flat[free], inv_t[free], inp, run, chunk, generator)
        else:
            _walk_torch(flat[free], inv_t[free], inp, run, chunk, generator)
    return _assemble(inp, run, free, held, flat, rows, chunk)


def _assemble(inp: HeadInputs, run: _Running, free: torch.Tensor, held: torch.Tensor, flat: torch.Tensor,
              rows: int, chunk: int) -> HeadStats:
    """Scatter the free rows' statistics back and fill the held rows as the clamp defines them."""
    batch, canvas, size = inp.hidden.shape
    dev = flat.device
    held_tok = (inp.held_tokens.reshape(rows).clamp(min=0) if inp.held_tokens is not None
                else torch.zeros(rows, dtype=torch.int64, device=dev))
    tokens = held_tok.clone()
    argmax = held_tok.clone()
    entropy = torch.zeros(rows, dtype=torch.float32, device=dev)
    lse = torch.zeros(rows, dtype=torch.float32, device=dev)
    confidence = torch.ones(rows, dtype=torch.float32, device=dev)
    if free.numel():
        log_sum = torch.log(run.sum)
        tokens[free] = run.tok
        argmax[free] = run.best_i
        lse[free] = run.max + log_sum
        entropy[free] = (log_sum - run.dot / run.sum).clamp_(min=0.0)
        confidence[free] = torch.exp(run.best - lse[free])
    self_cond = None
    if inp.want_self_cond:
        # held positions: the one-hot's softmax is exactly the token's embedding row
        emb = inp.weight[held_tok].float()
        if free.numel() and run.acc is not None:
            emb[free] = run.acc / run.sum.unsqueeze(1)
        self_cond = (emb.to(inp.weight.dtype) * inp.embed_scale).view(batch, canvas, size)
    held_logp = None
    if inp.score_mask is not None:
        scored = torch.nonzero(inp.score_mask.reshape(rows)).squeeze(1)
        held_logp = torch.zeros(rows, dtype=torch.float32, device=dev)
        if scored.numel():
            held_logp[scored] = _held_logp(flat[scored], held_tok[scored], inp, chunk)
        held_logp = held_logp.view(batch, canvas)
    shape = (batch, canvas)
    return HeadStats(tokens=tokens.view(shape), argmax=argmax.view(shape), entropy=entropy.view(shape),
                     lse=lse.view(shape), confidence=confidence.view(shape), self_cond=self_cond,
                     held_logp=held_logp)


def reference_head(inp: HeadInputs, generator: torch.Generator | None = None) -> HeadStats:
    """The same statistics the stock way, over full-vocabulary tensors (tests only)."""
    from diffgemma.kernels.sampler import reference_sample

    batch, canvas, _ = inp.hidden.shape
    logits = (inp.hidden.to(inp.weight.dtype) @ inp.weight.t()).float()
    if inp.softcap:
        logits = torch.tanh(logits / inp.softcap) * inp.softcap
    temp = inp.temperature
    processed = logits / (temp.reshape(-1, 1, 1) if isinstance(temp, torch.Tensor) else temp)
    held_logp = None
    if inp.score_mask is not None and inp.held_tokens is not None:
        logp = torch.log_softmax(logits, dim=-1)
        held = logp.gather(-1, inp.held_tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        held_logp = torch.where(inp.score_mask, held, torch.zeros_like(held))
    if inp.held_mask is not None and inp.held_tokens is not None:
        forced = torch.full_like(processed, -1.0e4)
        forced.scatter_(-1, inp.held_tokens.clamp(min=0).unsqueeze(-1), 0.0)
        processed = torch.where(inp.held_mask.unsqueeze(-1), forced, processed)
    ref = reference_sample(processed, 1.0, generator)
    probs = torch.softmax(processed, dim=-1)
    confidence = probs.gather(-1, ref.argmax.unsqueeze(-1)).squeeze(-1)
    self_cond = (probs.to(inp.weight.dtype) @ inp.weight) * inp.embed_scale
    return HeadStats(tokens=ref.tokens, argmax=ref.argmax, entropy=ref.entropy, lse=ref.lse,
                     confidence=confidence, self_cond=self_cond.view(batch, canvas, -1), held_logp=held_logp)
