"""The model side of bench_gpu_step.py: the real and toy configs, the model built with random 4-bit
weights in place, what one denoising step costs, and the device's measured ceilings.
(bench_memory.py builds its real-config model here too.)"""

from __future__ import annotations

import time
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
    hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=30.0,
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


def step_cost(model: Any, config: Any) -> dict[str, float]:
    """What one denoising step over one canvas must do at least: bytes of weights read (decoder
    layers, self-conditioning, the tied embedding twice: LM head and soft embeddings) and FLOPs of
    the weight matmuls (experts at top-k of E; attention scores over the prefix left out)."""
    from diffgemma.kernels import linear4, moe4
    from diffgemma.kernels.quantize import quantized_bytes

    dec = model.model.decoder
    embed = dec.embed_tokens.weight
    vocab, hidden = embed.shape
    embed_bytes = embed.numel() * embed.element_size()
    read = quantized_bytes(dec.layers) + quantized_bytes(dec.self_conditioning) + 2 * embed_bytes
    text = config.text_config
    share = text.top_k_experts / text.num_experts
    weights = 0.0
    for module in [*dec.layers.modules(), *dec.self_conditioning.modules()]:
        if moe4.is_experts(module):
            t = moe4.nf4_tensors(module)
            weights += 3 * t.num_experts * t.hidden_dim * t.intermediate_dim * share
        elif linear4.is_linear4(module) or type(module).__name__ == "Linear":
            weights += module.in_features * module.out_features
    canvas = int(config.canvas_length)
    flops = 2.0 * canvas * (weights + 2 * vocab * hidden)
    return {"bytes": float(read), "flops": flops, "canvas": canvas}


def measure_device(device: str) -> dict[str, float]:
    """The two ceilings, measured once: copy bandwidth (bytes read + written per second) and the rate
    of a large matmul in the model's dtype (bf16 on CUDA, float32 on CPU)."""
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n = (1 << 30) if cuda else (1 << 26)
    src = torch.randn(n // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync()
    bandwidth = 2 * n * 10 / (time.perf_counter() - t0)
    del src, dst
    size = 8192 if cuda else 512
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    sync()
    matmul = 2 * size**3 * 5 / (time.perf_counter() - t0)
    return {"bandwidth_bps": bandwidth, "matmul_flops": matmul}
