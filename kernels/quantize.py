"""Make a DiffusionGemma model 4-bit: in memory, or while reading an unquantized checkpoint.

What is quantized: every ``DiffusionGemmaTextExperts``, in place (``moe4``: its fused 3-D weights
become 4-bit buffers and the model's experts implementation becomes ``diffgemma_nf4``), and the
bias-free ``nn.Linear`` projections of the text layers and self-conditioning block, which become
bitsandbytes' NF4 ``Linear4bit`` (``linear4``). Embeddings (tied to the LM head), the router,
norms and the vision tower stay in the model dtype. The encoder and decoder share their layer
weights in DiffusionGemma; quantizing keeps that sharing (one 4-bit module, two parents).

Reading an unquantized safetensors checkpoint with quantization streams it: tensor by tensor,
each expert/linear weight is read, quantized on the target device and dropped, so neither the GPU
nor the CPU ever holds the bf16 model.

Writing and loading 4-bit checkpoints is ``kernels.checkpoint``; the offline step that converts
a checkpoint found by name (`diffgemma quantize`) is `training.quantize`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffgemma.kernels import linear4, moe4
from diffgemma.kernels.quant4 import DEFAULT_BLOCK
from diffgemma.runtime.api.errors import DiffgemmaError

QUANT_KEY = "diffgemma_quantization"  # the config.json entry of a 4-bit checkpoint
_INFO_ATTR = "_diffgemma_quantization"  # the quantization entry, on a quantized model
WEIGHTS_FILE = "model-nf4.safetensors"
FORMAT_NAME = "diffgemma-nf4"
FORMAT_VERSION = 2  # 1: linears in quant4's own layout; 2: linears are bitsandbytes' NF4
# Substrings of module names whose nn.Linear layers stay unquantized.
_KEEP_LINEAR = ("vision", "embed", "lm_head", "router")

Progress = Callable[[str], None] | None


class QuantizeError(DiffgemmaError, RuntimeError):
    """Quantizing or loading a quantized checkpoint failed; the message is one line."""


def _linear_to_quantize(name: str, module: nn.Module, keep: tuple[str, ...]) -> bool:
    return (isinstance(module, nn.Linear) and not linear4.is_linear4(module) and module.bias is None
            and module.in_features % 2 == 0 and not any(part in name for part in (*_KEEP_LINEAR, *keep)))


def new_info(block: int, experts: list[str], linears: list[str]) -> dict[str, Any]:
    """The quantization entry of a model quantized by this version."""
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "block": block, "experts": experts,
            "experts_format": moe4.FORMAT, "linears": linears, "linears_format": linear4.FORMAT,
            "weights": WEIGHTS_FILE}


def set_info(model: nn.Module, info: dict[str, Any]) -> None:
    """Record the quantization entry on the model (read by ``checkpoint.save_quantized``); a plain
    attribute, not a parameter, buffer or submodule."""
    model.__dict__[_INFO_ATTR] = info


def get_info(model: nn.Module) -> dict[str, Any] | None:
    return model.__dict__.get(_INFO_ATTR)


def place(model: nn.Module, name: str, t: torch.Tensor) -> None:
    """Put ``t`` where the parameter or buffer ``name`` is, replacing what is there."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(t, nn.Parameter):
        parent._parameters[leaf] = t
    else:
        parent._buffers[leaf] = t


def swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def quantize_model(model: nn.Module, device: torch.device | str | None = None, block: int = DEFAULT_BLOCK,
                   progress: Progress = None, keep: tuple[str, ...] = ()) -> nn.Module:
    """Quantize experts and eligible linears, in place; returns ``model``.

    ``keep``: more name parts whose linears stay unquantized, e.g. ``("self_attn",)`` keeps the
    attention projections (~4% of the weights) in the model dtype.

    With ``device`` (e.g. "cuda"), each weight is moved there just before it is quantized and
    only its 4-bit form stays; the unquantized rest follows at the end. The bf16 originals are
    freed as soon as no module refers to them.
    """
    done: dict[int, nn.Module] = {}
    experts_names: list[str] = []
    linear_names: list[str] = []
    # names only: holding the module objects would keep every bf16 original alive to the end
    names = [name for name, _ in model.named_modules(remove_duplicate=False)]
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:  # inside a module swapped out already
            continue
        if moe4.is_experts(module):
            if moe4.is_quantized(module):
                raise QuantizeError("the model is quantized already")
            key = id(module.gate_up_proj)
            if key not in done:
                moe4.quantize_experts(module, block, device)
                done[key] = module
                if progress is not None:
                    progress(f"quantized {name}")
            experts_names.append(name)
        elif _linear_to_quantize(name, module, keep):
            key = id(module.weight)
            if key not in done:
                done[key] = linear4.quantize_linear_module(module, device=device)
            linear_names.append(name)
        else:
            continue
        swap(model, name, done[key])
    if not experts_names:
        raise QuantizeError("no DiffusionGemma expert layers found: is this a DiffusionGemma model?")
    if device is not None:
        model.to(device)
    moe4.select(model)
    set_info(model, new_info(block, experts_names, linear_names))
    return model


def named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer by each of its names (shared ones under every parent)."""
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    # meta tensors have no storage: shared (tied) ones are the same object there
    return (id(t), 0) if t.device.type == "meta" else (t.untyped_storage().data_ptr(), int(t.storage_offset()))


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of all distinct parameters, buffers and 4-bit block scales (what the model holds)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _, t in named_tensors(model):
        key = _storage_key(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    layers = {id(m): m for m in model.modules() if linear4.is_linear4(m)}
    return total + sum(linear4.scale_bytes(layer) for layer in layers.values())


def empty_quantized_structure(model: nn.Module, block: int = DEFAULT_BLOCK,
                              keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """On a meta-device model: empty 4-bit experts and linears where ``quantize_model`` would put them.

    For sizing the real model without its weights, for reading a checkpoint into it, and for
    building it with random 4-bit weights straight on a GPU (benchmarks). Returns the quantization
    entry.
    """
    experts = [n for n, m in model.named_modules(remove_duplicate=False) if moe4.is_experts(m)]
    linears = [n for n, m in model.named_modules(remove_duplicate=False) if _linear_to_quantize(n, m, keep)]
    info = new_info(block, experts, linears)
    empty_structure(model, experts, linears, block)
    set_info(model, info)
    return info


def empty_structure(model: nn.Module, experts: list[str], linears: list[str], block: int = DEFAULT_BLOCK) -> None:
    """Empty (meta-device) 4-bit experts and linears at these names, keeping sharing."""
    done: dict[int, nn.Module] = {}
    for name in experts:
        old = model.get_submodule(name)
        if not moe4.is_experts(old):
            raise QuantizeError(f"the checkpoint quantizes {name}, which is not an experts layer in this model")
        key = id(old.gate_up_proj)
        if key not in done:
            moe4.empty_experts(old, block)
            done[key] = old
        swap(model, name, done[key])
    for name in linears:
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear):
            raise QuantizeError(f"the checkpoint quantizes {name}, which is not a linear layer in this model")
        key = id(old.weight)
        if key not in done:
            done[key] = linear4.empty_linear(old.in_features, old.out_features, old.weight.dtype)
        swap(model, name, done[key])
    moe4.select(model)


def safetensors_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors weight files (by its index when sharded); none: not safetensors."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return sorted({path / name for name in weight_map.values()})
    single = path / "model.safetensors"
    return [single] if single.is_file() else []


def rebuild_computed_tables(model: nn.Module, device: torch.device | str) -> None:
    """Fill the non-persistent tables a meta-built model lacks: rotary frequencies, embedding scale.

    Rotary modules compute their frequencies at construction, so they are rebuilt on ``device``.
    """
    for name, module in list(model.named_modules(remove_duplicate=False)):
        kind = type(module).__name__
        if "RotaryEmbedding" in kind:
            with torch.device(device):
                fresh = type(module)(module.config)
            swap(model, name, fresh)
        elif kind.endswith("ScaledWordEmbedding"):
            module._buffers["embed_scale"] = torch.tensor(float(module.scalar_embed_scale), device=device)


def stream_quantize(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    progress: Progress = None, keep: tuple[str, ...] = (), block: int = DEFAULT_BLOCK) -> nn.Module:
    """Quantize an unquantized safetensors checkpoint while reading it, one tensor at a time.

    The model is built on the meta device with empty 4-bit modules; each expert/linear weight is
    read, moved to ``device``, quantized there and dropped, and every other tensor is read once
    (tied ones through transformers' tie map) and placed on ``device``. ``dtype`` None keeps the
    stored dtype of unquantized weights.
    """
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    src = Path(path)
    files = safetensors_files(src)
    if not files:
        raise QuantizeError(f"no safetensors weights in {src}")
    config = DiffusionGemmaConfig.from_pretrained(str(src))
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    # target name -> the name it is tied to (stored once in the checkpoint)
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    info = empty_quantized_structure(model, block, keep)
    dev = torch.device(device)
    read = _reader(files, tied)
    _quantize_streamed(model, info, read, src, block, dtype, dev, progress)
    place_meta_tensors(model, read, src, dtype, dev)
    rebuild_computed_tables(model, dev)
    left = [name for name, t in named_tensors(model) if t.device.type == "meta"]
    if left:
        raise QuantizeError(f"{src} left {len(left)} tensors unset, first {left[0]}")
    if (src / "generation_config.json").is_file():
        model.generation_config = type(model.generation_config).from_pretrained(str(src))
    model.eval()
    return model


Reader = Callable[[str], torch.Tensor | None]


def _reader(files: list[Path], tied: dict[str, str]) -> Reader:
    """name -> the stored tensor (or the one it is tied to), read from ``files``; None if absent."""
    from safetensors import safe_open

    handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]
    where = {key: h for h in handles for key in h.keys()}  # noqa: SIM118 - safe_open is not iterable

    def read(name: str) -> torch.Tensor | None:
        for key in (name, tied.get(name)):
            if key is not None and key in where:
                return where[key].get_tensor(key)
        return None

    return read


def replace_shared(model: nn.Module, names: list[str], make: Callable[[str], nn.Module]) -> None:
    """For each distinct module at ``names`` (shared ones once), ``make(name)`` replaces it under
    every name it has."""
    made: dict[int, nn.Module] = {}
    for name in names:
        old = model.get_submodule(name)
        if id(old) not in made:
            made[id(old)] = make(name)
        swap(model, name, made[id(old)])


def _quantize_streamed(model: nn.Module, info: dict[str, Any], read: Reader, src: Path, block: int,
                       dtype: torch.dtype | None, dev: torch.device, progress: Progress) -> None:
    """Fill the empty 4-bit modules from the stored weights, quantizing each on ``dev``."""

    def need(name: str) -> torch.Tensor:
        t = read(name)
        if t is None:
            raise QuantizeError(f"{src} lacks tensor {name}: checkpoint is incomplete")
        return t

    done: set[int] = set()
    for name in info["experts"]:
        experts = model.get_submodule(name)  # encoder and decoder share it (empty_quantized_structure)
        if id(experts) not in done:
            moe4.quantize_experts_from(experts, need(f"{name}.gate_up_proj"), need(f"{name}.down_proj"), block, dev)
            done.add(id(experts))
            if progress is not None:
                progress(f"quantized {name}")

    def linear(name: str) -> nn.Module:
        weight = need(f"{name}.weight")
        return linear4.quantize_linear(weight, dtype or weight.dtype, dev, linear4.BLOCK)

    replace_shared(model, info["linears"], linear)


def place_meta_tensors(model: nn.Module, read: Reader, src: Path, dtype: torch.dtype | None,
                       dev: torch.device, keep_dtype: tuple[str, ...] = ()) -> None:
    """Every tensor still on the meta device, read once and placed on ``dev``.

    Floating tensors take ``dtype`` (None: as stored), except non-persistent ones (computed
    tables) and those under the module names in ``keep_dtype`` (4-bit scales)."""
    persistent = set(model.state_dict().keys())
    kept = tuple(f"{n}." for n in keep_dtype)
    made: dict[int, torch.Tensor] = {}
    for name, old in list(named_tensors(model)):
        if old.device.type != "meta":
            continue  # a quantized module's tensor, already on the device
        if id(old) not in made:
            t = read(name)
            if t is None:
                if name not in persistent:
                    continue  # a computed table, rebuilt afterwards
                raise QuantizeError(f"{src} lacks tensor {name}: checkpoint is incomplete")
            if dtype is not None and t.is_floating_point() and name in persistent and not name.startswith(kept):
                t = t.to(dtype)
            t = t.to(dev)
            made[id(old)] = nn.Parameter(t, requires_grad=False) if isinstance(old, nn.Parameter) else t
        place(model, name, made[id(old)])
