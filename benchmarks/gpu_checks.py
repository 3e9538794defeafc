"""Kernel outputs against their CPU references, on the model bench_gpu_step.py built (its real shapes).

Each check runs one kernel the way the daemon runs it and the same computation as the CPU
reference defines it (float32, on the CPU), on fresh random inputs, and reports one error measure
against a bound:

- ``experts``: decoder layer 0's 4-bit experts through transformers' experts interface (the
  registered ``diffgemma_nf4``: the Triton grouped GEMM on CUDA) against ``moe4.reference_forward``
  (dequantize, then the stock expert loop), for one canvas of tokens routed top-k;
- ``linear`` (a canvas of rows) and ``linear-1row``: layer 0's bitsandbytes NF4 ``q_proj`` against
  float32 ``F.linear`` on its dequantized weight;
- ``head-*``: the streaming head (Triton statistics kernel on CUDA) at the real vocabulary against
  ``stream_head.reference_head``, the stock step over full-vocabulary float32 tensors (and the
  float32 logits themselves, for how far the kernel's argmax is from the top).

On CUDA the kernels compute with bfloat16 operands (bounds of 1e-2-ish, as bf16 rounding allows);
with ``interpret`` (``--cpu-small``) the Triton kernels run in Triton's interpreter on float32 CPU
tensors, and the bounds are float32's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# (bfloat16 operands, float32 operands) for each measure
BOUNDS = {
    "experts": (3e-2, 1e-4),  # relative error of the layer output
    "linear": (2e-2, 1e-5),  # relative error
    "head-lse": (5e-2, 1e-3),  # max |difference| of log-sum-exp (logits / T)
    "head-entropy": (5e-2, 1e-3),  # max |difference|
    # the reference's top logit over the one at the kernel's argmax (logits / T), at most: bf16
    # logits round by up to 2^-9 of their size, so near-ties may swap (the stock bf16 head does too)
    "head-argmax-gap": (0.1, 1e-4),
    "head-self-cond": (3e-2, 1e-3),  # relative error of the self-conditioning embeddings
    "head-held-logp": (5e-2, 1e-3),  # max |difference| at scored held positions
}


@dataclass
class Check:
    name: str
    value: float
    bound: float
    lower: bool = False  # the bound is a minimum
    note: str = ""

    @property
    def ok(self) -> bool:
        import math

        if math.isnan(self.value):
            return False
        return self.value >= self.bound if self.lower else self.value <= self.bound

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _bound(name: str, bf16: bool) -> float:
    return BOUNDS[name][0 if bf16 else 1]


def _rel(a: Any, b: Any) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm())


def _routing(rows: int, experts: int, top_k: int, g: Any, device: str) -> tuple[Any, Any]:
    """Distinct top-k experts per token (as a router picks them) and normalized positive weights."""
    import torch

    scores = torch.rand(rows, experts, generator=g)
    index = scores.topk(top_k, dim=1).indices
    weights = torch.rand(rows, top_k, generator=g) + 0.1
    return index.to(device), (weights / weights.sum(1, keepdim=True)).to(device)


def check_experts(model: Any, rows: int, interpret: bool, g: Any) -> Check:
    import torch

    from diffgemma.kernels import moe4

    layer = model.model.decoder.layers[0].experts
    tensors = moe4.nf4_tensors(layer)
    dev = tensors.gate_up_q.device
    dtype = model.model.decoder.embed_tokens.weight.dtype
    x = torch.randn(rows, tensors.hidden_dim, generator=g).to(dev, dtype)
    index, weights = _routing(rows, tensors.num_experts, int(model.config.text_config.top_k_experts), g, str(dev))
    with torch.no_grad():
        if interpret:  # on CPU the module runs the reference itself: run the Triton kernel explicitly
            from diffgemma.kernels.moe4_triton import moe4_triton

            out = moe4_triton(x, index, weights.to(dtype), tensors)
        else:
            out = layer(x, index, weights.to(dtype))  # transformers' dispatch to diffgemma_nf4
        cpu = moe4.NF4Experts(*(t.cpu() for t in (tensors.gate_up_q, tensors.gate_up_absmax, tensors.down_q,
                                                  tensors.down_absmax)))
        ref = moe4.reference_forward(cpu, layer.act_fn, x.float().cpu(), index.cpu(), weights.float().cpu())
    bf16 = dtype == torch.bfloat16
    return Check("experts", _rel(out, ref), _bound("experts", bf16),
                 note=f"{rows} tokens, top-{index.shape[1]} of {tensors.num_experts}, H {tensors.hidden_dim}, "
                      f"I {tensors.intermediate_dim}")


def check_linears(model: Any, rows: int, g: Any) -> list[Check]:
    import torch

    from diffgemma.kernels import linear4

    layer = model.model.decoder.layers[0].self_attn.q_proj
    dev = layer.weight.device
    dtype = model.model.decoder.embed_tokens.weight.dtype
    weight = linear4.dequantized(layer, torch.float32).cpu()
    checks = []
    for name, n in (("linear", rows), ("linear-1row", 1)):
        x = torch.randn(n, layer.in_features, generator=g).to(dev, dtype)
        with torch.no_grad():
            out = layer(x)
        ref = torch.nn.functional.linear(x.float().cpu(), weight)
        checks.append(Check(name, _rel(out, ref), _bound("linear", dtype == torch.bfloat16),
                            note=f"{n} x ({layer.in_features} -> {layer.out_features})"))
    return checks


def _head_inputs(model: Any, canvas: int, held: int, g: Any, device: Any, dtype: Any, weight: Any) -> Any:
    import torch

    from diffgemma.kernels.stream_head import HeadInputs

    text = model.config.text_config
    vocab, size = weight.shape
    hidden = torch.randn(1, canvas, size, generator=g)
    held_mask = torch.zeros(1, canvas, dtype=torch.bool)
    held_mask[:, canvas - held:] = True
    held_tokens = torch.full((1, canvas), -1, dtype=torch.long)
    held_tokens[:, canvas - held:] = torch.randint(3, vocab, (held,), generator=g)
    score = held_mask.clone()
    score[:, -1] = False
    embed = model.model.decoder.embed_tokens
    return HeadInputs(hidden=hidden.to(device, dtype), weight=weight, softcap=text.final_logit_softcapping,
                      temperature=0.6, embed_scale=float(embed.scalar_embed_scale), held_mask=held_mask.to(device),
                      held_tokens=held_tokens.to(device), score_mask=score.to(device))


def check_head(model: Any, canvas: int, interpret: bool, g: Any) -> list[Check]:
    """The streaming head as the denoising loop calls it, against the stock full-vocabulary step."""
    import dataclasses

    import torch

    from diffgemma.kernels.stream_head import reference_head, stream_head

    weight = model.lm_head.weight
    dev, dtype = weight.device, weight.dtype
    inp = _head_inputs(model, canvas, max(2, canvas // 16), g, dev, dtype, weight)
    gen = torch.Generator(device=dev).manual_seed(0)
    with torch.no_grad():
        out = stream_head(inp, gen, backend="triton" if interpret else "auto")
        cpu = dataclasses.replace(inp, hidden=inp.hidden.float().cpu(), weight=weight.float().cpu(),
                                  held_mask=inp.held_mask.cpu(), held_tokens=inp.held_tokens.cpu(),
                                  score_mask=inp.score_mask.cpu())
        ref = reference_head(cpu, torch.Generator().manual_seed(0))
        logits = torch.tanh((cpu.hidden @ cpu.weight.t()) / inp.softcap) * inp.softcap / float(inp.temperature)
        gap = logits.amax(-1) - logits.gather(-1, out.argmax.cpu().unsqueeze(-1)).squeeze(-1)
    free = ~cpu.held_mask
    scored = cpu.score_mask
    bf16 = dtype == torch.bfloat16
    note = f"canvas {canvas}, vocab {weight.shape[0]:,}, hidden {weight.shape[1]}"
    held_ok = bool(torch.equal(out.tokens.cpu()[cpu.held_mask], cpu.held_tokens[cpu.held_mask]))
    assert out.self_cond is not None and ref.self_cond is not None
    assert out.held_logp is not None and ref.held_logp is not None
    return [
        Check("head-lse", float((out.lse.cpu() - ref.lse)[free].abs().max()), _bound("head-lse", bf16), note=note),
        Check("head-entropy", float((out.entropy.cpu() - ref.entropy)[free].abs().max()),
              _bound("head-entropy", bf16)),
        Check("head-argmax-gap", float(gap[free].max()), _bound("head-argmax-gap", bf16),
              note=f"same argmax at {float((out.argmax.cpu() == ref.argmax)[free].float().mean()):.1%} of positions"),
        Check("head-self-cond", _rel(out.self_cond, ref.self_cond), _bound("head-self-cond", bf16)),
        Check("head-held-logp", float((out.held_logp.cpu() - ref.held_logp)[scored].abs().max()),
              _bound("head-held-logp", bf16), note="held tokens sampled as held" if held_ok else "HELD TOKENS MOVED"),
        Check("head-held-tokens", 1.0 if held_ok else 0.0, 1.0, lower=True),
    ]


def run_checks(model: Any, canvas: int, interpret: bool) -> list[Check]:
    """Every check, on fresh random inputs (a fixed seed, so a rerun sees the same ones)."""
    import warnings

    import torch

    if interpret:  # numpy warns on exp(-inf) inside Triton's interpreter; the kernels mask those lanes
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    g = torch.Generator().manual_seed(1234)
    checks = [check_experts(model, canvas, interpret, g), *check_linears(model, canvas, g)]
    return [*checks, *check_head(model, canvas, interpret, g)]
