"""The real DiffusionGemma at 4 bits on a GPU: VRAM, prefix encode, ms per denoising step, roofline.

    python benchmarks/bench_gpu_step.py                # CUDA: the real config, random NF4 weights
    python benchmarks/bench_gpu_step.py --cpu-small    # the same code path at toy sizes on CPU

The model is built on the meta device, its experts and linears swapped for empty 4-bit
modules, and every tensor then allocated with random values directly on the GPU: no bf16
copy of the experts ever exists. Speed does not depend on weight values (routing with a
random router spreads tokens over experts roughly evenly, as a canvas does).

Reports: model size (bf16 vs 4-bit, from the meta model, printed everywhere), VRAM in use,
prefix encode ms for 2,048 tokens, ms per denoising step at canvas 256 (decoder forward
with self-conditioning + fused sampler), bytes of weights read per step and that over the
measured HBM bandwidth as a fraction of the step time, and the stock vs fused sampler.
Without CUDA (and without --cpu-small) it prints the size table, says no GPU is present,
and exits 0.

Real config used (Gemma 4 26B-A4B text backbone as published with the model and in
transformers' DiffusionGemmaTextConfig docs/defaults): 30 layers (5 sliding : 1 full),
hidden 2816, 16 heads, 8 KV heads (2 on full-attention layers), head_dim 256 (512 on
full layers), dense MLP 2112, 128 experts top-8 of width 704, vocab 262,144, sliding
window 1024, final softcap 30, canvas 256, and the default Gemma 4 vision tower.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REAL_TEXT = dict(
    vocab_size=262_144, hidden_size=2816, intermediate_size=2112, num_hidden_layers=30,
    num_attention_heads=16, num_key_value_heads=8, num_global_key_value_heads=2, head_dim=256,
    global_head_dim=512, moe_intermediate_size=704, num_experts=128, top_k_experts=8,
    sliding_window=1024, enable_moe_block=True, max_position_embeddings=131_072,
    hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=30.0,
)
SMALL_TEXT = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, num_global_key_value_heads=1, head_dim=64, global_head_dim=64,
    moe_intermediate_size=64, num_experts=8, top_k_experts=2, sliding_window=64, enable_moe_block=True,
    max_position_embeddings=4096, layer_types=["sliding_attention", "full_attention"],
)
SMALL_VISION = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2, head_dim=8)


def make_config(small: bool) -> Any:
    from transformers import DiffusionGemmaConfig

    if small:
        return DiffusionGemmaConfig(text_config=SMALL_TEXT, vision_config=SMALL_VISION, canvas_length=32,
                                    boi_token_id=7, eoi_token_id=8, image_token_id=9)
    return DiffusionGemmaConfig(text_config=REAL_TEXT, vision_config=dict(model_type="gemma4_vision"),
                                canvas_length=256)


def size_table(config: Any) -> dict[str, float]:
    """Parameter count and bytes in bf16 vs 4-bit, from meta-device models (nothing allocated)."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    from diffgemma.kernels.quantize import empty_quantized_structure, quantized_bytes

    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config).to(torch.bfloat16)
    seen: set[int] = set()
    params = experts = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        if ".experts." in name:
            experts += p.numel()
    bf16 = quantized_bytes(model)
    empty_quantized_structure(model)
    q4 = quantized_bytes(model)
    return {"params": params, "expert_params": experts, "bf16_bytes": bf16, "nf4_bytes": q4}


def build_random_quantized(config: Any, device: str, dtype: Any) -> Any:
    """The model with random 4-bit weights allocated straight on ``device`` (tied tensors stay tied)."""
    import torch
    from torch import nn
    from transformers import DiffusionGemmaForBlockDiffusion

    from diffgemma.kernels.quantize import empty_quantized_structure, rebuild_computed_tables

    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    empty_quantized_structure(model)
    _random_linears(model, device, dtype)
    persistent = set(model.state_dict().keys())
    made: dict[int, torch.Tensor] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, old in named:
        if old.device.type != "meta":
            continue  # a 4-bit linear, made above
        if id(old) not in made:
            shape = tuple(old.shape)
            if old.dtype == torch.uint8:  # 4-bit codes
                t = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
            elif old.dtype == torch.float16:  # block scales: weights of ~0.01 std
                t = torch.empty(shape, dtype=torch.float16, device=device).uniform_(0.02, 0.04)
            elif not old.is_floating_point():
                t = torch.zeros(shape, dtype=old.dtype, device=device)
            elif isinstance(old, nn.Parameter) and old.dim() >= 2:
                t = torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02)
            else:  # norm weights, scales, layer scalars; tables fixed below
                t = torch.ones(shape, dtype=dtype if name in persistent else torch.float32, device=device)
            made[id(old)] = nn.Parameter(t, requires_grad=False) if isinstance(old, nn.Parameter) else t
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if leaf in parent._parameters:
            parent._parameters[leaf] = made[id(old)]
        else:
            parent._buffers[leaf] = made[id(old)]
    rebuild_computed_tables(model, device)  # rotary frequencies, embedding scale
    return model.eval()


def _random_linears(model: Any, device: str, dtype: Any) -> None:
    """Random codes and block scales for every 4-bit linear (bitsandbytes keeps its scales outside
    the module's buffers), built on ``device``; shared layers stay shared."""
    import torch

    from diffgemma.kernels import linear4
    from diffgemma.kernels.quantize import replace_shared

    def make(name: str) -> Any:
        old = model.get_submodule(name)
        n = old.out_features * old.in_features
        packed = torch.randint(0, 256, (n // 2,), dtype=torch.uint8, device=device)
        absmax = torch.empty(-(-n // linear4.BLOCK), dtype=torch.float32, device=device).uniform_(0.02, 0.04)
        return linear4.packed_linear(packed, absmax, old.out_features, old.in_features, dtype)

    replace_shared(model, [n for n, m in model.named_modules(remove_duplicate=False) if linear4.is_linear4(m)], make)


def decoder_weight_bytes(model: Any) -> dict[str, int]:
    """Bytes one denoising step reads: decoder layers + self-conditioning + LM head + soft embeddings."""
    from diffgemma.kernels.quantize import quantized_bytes

    dec = model.model.decoder
    embed = dec.embed_tokens.weight
    embed_bytes = embed.numel() * embed.element_size()
    return {
        "layers": quantized_bytes(dec.layers),
        "self_conditioning": quantized_bytes(dec.self_conditioning),
        "lm_head": embed_bytes,  # tied to the embeddings, read once for the logits
        "soft_embeddings": embed_bytes,  # softmax(prev logits) @ embeddings reads it again
    }


def measure_bandwidth(device: str) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), a practical HBM roofline."""
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * n * 10 / (time.perf_counter() - t0)


def _timed(fn: Callable[[], object], sync: Callable[[], None], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


GB = 1e9


def _print_sizes(config: Any, small: bool) -> None:
    sizes = size_table(config)
    print(f"model: {'small (CPU exercise of the code path)' if small else 'real DiffusionGemma 26B-A4B config'}")
    print(f"  parameters {sizes['params'] / 1e9:.3f} B, experts {sizes['expert_params'] / sizes['params']:.1%}")
    print(f"  bf16 {sizes['bf16_bytes'] / GB:.3f} GB ({sizes['bf16_bytes'] / 2**30:.2f} GiB)   "
          f"4-bit NF4 {sizes['nf4_bytes'] / GB:.3f} GB ({sizes['nf4_bytes'] / 2**30:.2f} GiB)")


def _build(config: Any, device: str, dtype: Any, sync: Callable[[], None]) -> Any:
    """The random 4-bit model on ``device``, seeded, with its build time and VRAM printed."""
    import torch

    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}")
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random_quantized(config, device, dtype)
    sync()
    print(f"built random 4-bit model on {device} in {time.perf_counter() - t0:.1f}s")
    if device == "cuda":
        print(f"  VRAM in use {torch.cuda.memory_allocated() / GB:.2f} GB "
              f"(peak while building {torch.cuda.max_memory_allocated() / GB:.2f} GB)")
    return model


def _time_encode(model: Any, config: Any, prefix_len: int, device: str,
                 sync: Callable[[], None]) -> tuple[list[float], Any]:
    """(ms of each timed prefix encode, a KV cache of that prefix for the steps)."""
    import torch
    from transformers import DynamicCache

    text = config.text_config
    ids = torch.randint(3, text.vocab_size, (1, prefix_len), device=device)

    def encode() -> Any:
        cache = DynamicCache(config=text)
        with torch.no_grad():
            model.model.encoder(input_ids=ids, past_key_values=cache, use_cache=True)
        return cache

    encode()  # warm-up (kernels, Triton compilation)
    enc_ms = _timed(encode, sync, 3)
    return enc_ms, encode()


def _time_steps(model: Any, cache: Any, config: Any, device: str, sync: Callable[[], None],
                steps: int) -> dict[str, float]:
    """Median ms per denoising step, ``stock`` (transformers' step) and ``fused`` (our kernels)."""
    import torch

    from diffgemma.kernels.sampler import fused_sample, reference_sample
    from diffgemma.kernels.self_conditioning import FusedSelfConditioning

    canvas = torch.randint(3, config.text_config.vocab_size, (1, config.canvas_length), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    embed_dtype = model.model.decoder.embed_tokens.weight.dtype
    temperature = 0.6

    def stock_steps() -> Callable[[], None]:
        """transformers' step: self-conditioning softmax inside the decoder, stock sampler."""
        state: dict[str, Any] = {"sc": None}

        def step() -> None:
            with torch.no_grad():
                out = model(decoder_input_ids=canvas, past_key_values=cache, self_conditioning_logits=state["sc"])
            stats = reference_sample(out.logits, temperature, gen)
            canvas.copy_(stats.tokens)
            state["sc"] = (out.logits / temperature).to(embed_dtype)

        return step

    def fused_steps(hook: FusedSelfConditioning) -> Callable[[], None]:
        """Fused self-conditioning (hook) and fused sampler; the raw logits carry over."""
        hook.logits, hook.temperature = None, temperature

        def step() -> None:
            with torch.no_grad():
                out = model(decoder_input_ids=canvas, past_key_values=cache)
            stats = fused_sample(out.logits, temperature, gen)
            canvas.copy_(stats.tokens)
            hook.logits = out.logits

        return step

    timings: dict[str, float] = {}
    for label in ("stock", "fused"):
        hook = FusedSelfConditioning(model) if label == "fused" else None
        try:
            step = fused_steps(hook) if hook is not None else stock_steps()
            step()
            step()  # warm-up with self-conditioning present
            timings[label] = statistics.median(_timed(step, sync, steps))
        finally:
            if hook is not None:
                hook.remove()
    return timings


def _print_roofline(model: Any, device: str, step_med: float) -> None:
    """VRAM after the runs, the weight bytes one step reads, and the step time against the copy bandwidth."""
    import torch

    print(f"  VRAM in use after the runs {torch.cuda.memory_allocated() / GB:.2f} GB, "
          f"peak {torch.cuda.max_memory_allocated() / GB:.2f} GB")
    parts = decoder_weight_bytes(model)
    total = sum(parts.values())
    bandwidth = measure_bandwidth(device)
    floor_ms = total / bandwidth * 1000.0
    print("weights read per step: " + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in parts.items())
          + f" = {total / GB:.2f} GB")
    print(f"measured copy bandwidth {bandwidth / 1e12:.2f} TB/s -> roofline {floor_ms:.1f} ms/step; "
          f"step time is {floor_ms / step_med:.1%} of the roofline speed")


def _print_sampler(config: Any, device: str) -> None:
    """The sampler alone at this model's vocab and canvas (benchmarks/bench_sampler.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sampler import run as bench_sampler

    text, canvas_len = config.text_config, config.canvas_length
    vocab = text.vocab_size
    res = bench_sampler(vocab=vocab, canvas=canvas_len, batch=1, repeats=3, device=device, dtype="float32",
                        self_conditioning=True, hidden=text.hidden_size)
    print("sampler alone (benchmarks/bench_sampler.py):")
    print(f"sampler on {device}, canvas {canvas_len}, vocab {vocab:,}: stock {res['stock_ms']:.2f} ms, "
          f"fused {res['fused_ms']:.2f} ms, ratio {res['stock_ms'] / res['fused_ms']:.2f}x")
    print(f"self-conditioning softmax @ embeddings: stock {res['stock_selfcond_ms']:.2f} ms, "
          f"fused {res['fused_selfcond_ms']:.2f} ms, ratio {res['stock_selfcond_ms'] / res['fused_selfcond_ms']:.2f}x")


def run(small: bool, prefix_len: int, steps: int) -> int:
    import torch

    config = make_config(small)
    _print_sizes(config, small)
    cuda = torch.cuda.is_available()
    if not small and not cuda:
        print("no CUDA GPU present: the GPU measurements were not run (use --cpu-small to exercise the path)")
        return 0
    device = "cpu" if small else "cuda"
    dtype = torch.float32 if small else torch.bfloat16
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = _build(config, device, dtype, sync)
    enc_ms, cache = _time_encode(model, config, prefix_len, device, sync)
    timings = _time_steps(model, cache, config, device, sync, steps)
    enc_med, step_med = statistics.median(enc_ms), timings["fused"]
    print(f"prefix encode, {prefix_len} tokens: {enc_med:.1f} ms (median of {len(enc_ms)})")
    print(f"denoising step, canvas {config.canvas_length} (median of {steps}): {step_med:.1f} ms with fused "
          f"self-conditioning and sampler; {timings['stock']:.1f} ms stock; ratio {timings['stock'] / step_med:.2f}x")
    if device == "cuda":
        _print_roofline(model, device, step_med)
    _print_sampler(config, device)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-small", action="store_true", help="run the same code path at toy sizes on CPU")
    parser.add_argument("--prefix", type=int, default=None, help="prefix tokens to encode (default 2048; 128 small)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps to time (default 10; 3 small)")
    args = parser.parse_args(argv)
    prefix = args.prefix or (128 if args.cpu_small else 2048)
    steps = args.steps or (3 if args.cpu_small else 10)
    return run(args.cpu_small, prefix, steps)


if __name__ == "__main__":
    raise SystemExit(main())
