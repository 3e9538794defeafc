"""Swap a DiffusionGemma model to 4-bit NF4 weights; write and load quantized checkpoints.

What is quantized: every ``DiffusionGemmaTextExperts`` (-> ``QuantizedExperts``) and the
bias-free ``nn.Linear`` projections of the text layers and self-conditioning block
(-> ``Linear4``). Embeddings (tied to the LM head), the router, norms and the vision tower
stay in the model dtype. The encoder and decoder share their layer weights in
DiffusionGemma; the swap keeps that sharing (one quantized module, two parents).

A quantized checkpoint directory holds ``config.json`` (the model config plus a
``diffgemma_quantization`` entry naming the quantized modules), ``model-nf4.safetensors``
(each shared tensor once; aliases in its metadata), the generation config and the
tokenizer files. Loading it builds the model on the meta device, swaps in empty quantized
modules and assigns the stored tensors straight onto the target device: no bf16 copy of
the experts ever exists.

Loading an unquantized safetensors checkpoint with quantization streams it: tensor by
tensor, each expert/linear weight is read, quantized on the target device and dropped, so
neither the GPU nor the CPU ever holds the bf16 model. (A checkpoint without safetensors
is read whole on the CPU by ``from_pretrained``, then quantized module by module.)

The offline step that converts a checkpoint found by name (`diffgemma quantize`) is
`training.quantize`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffgemma.kernels.moe4 import QuantizedExperts
from diffgemma.kernels.quant4 import DEFAULT_BLOCK, FORMAT_NAME, Linear4
from diffgemma.runtime.api.errors import DiffgemmaError

QUANT_KEY = "diffgemma_quantization"
_INFO_ATTR = "_diffgemma_quantization"  # the quantization entry, on a quantized model
WEIGHTS_FILE = "model-nf4.safetensors"
FORMAT_VERSION = 1
# Substrings of module names whose nn.Linear layers stay unquantized.
_KEEP_LINEAR = ("vision", "embed", "lm_head", "router")

Progress = Callable[[str], None] | None


class QuantizeError(DiffgemmaError, RuntimeError):
    """Quantizing or loading a quantized checkpoint failed; the message is one line."""


def _is_experts(module: nn.Module) -> bool:
    return type(module).__name__ == "DiffusionGemmaTextExperts"


def _linear_to_quantize(name: str, module: nn.Module, keep: tuple[str, ...]) -> bool:
    return (isinstance(module, nn.Linear) and module.bias is None and module.in_features % 2 == 0
            and not any(part in name for part in (*_KEEP_LINEAR, *keep)))


def _activation(model: nn.Module) -> str:
    config: Any = model.config  # a transformers PretrainedConfig
    return str(config.text_config.hidden_activation)


def _set_info(model: nn.Module, info: dict[str, Any]) -> None:
    """Record the quantization entry on the model (read by ``save_quantized``); a plain attribute,
    not a parameter, buffer or submodule."""
    model.__dict__[_INFO_ATTR] = info


def _place(model: nn.Module, name: str, t: torch.Tensor) -> None:
    """Put ``t`` where the parameter or buffer ``name`` is, replacing what is there."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(t, nn.Parameter):
        parent._parameters[leaf] = t
    else:
        parent._buffers[leaf] = t


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def quantize_model(model: nn.Module, device: torch.device | str | None = None, block: int = DEFAULT_BLOCK,
                   progress: Progress = None, keep: tuple[str, ...] = ()) -> nn.Module:
    """Replace experts and eligible linears with 4-bit modules, in place; returns ``model``.

    ``keep``: more name parts whose linears stay unquantized, e.g. ``("self_attn",)`` keeps the
    attention projections (~4% of the weights) in the model dtype.

    With ``device`` (e.g. "cuda"), each weight is moved there just before it is quantized and
    only its 4-bit form stays; the unquantized rest follows at the end. The bf16 originals are
    freed as soon as no module refers to them.
    """
    activation = _activation(model)
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
        if _is_experts(module):
            key = id(module.gate_up_proj)
            if key not in done:
                done[key] = QuantizedExperts.from_experts(module, activation, block, device)
                if progress is not None:
                    progress(f"quantized {name}")
            experts_names.append(name)
        elif isinstance(module, nn.Linear) and _linear_to_quantize(name, module, keep):
            key = id(module.weight)
            if key not in done:
                done[key] = Linear4.from_linear(module, block, device)
            linear_names.append(name)
        else:
            continue
        _swap(model, name, done[key])
    if not experts_names:
        raise QuantizeError("no DiffusionGemma expert layers found: is this a DiffusionGemma model?")
    if device is not None:
        model.to(device)
    _set_info(model, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "block": block,
                      "experts": experts_names, "linears": linear_names, "weights": WEIGHTS_FILE})
    return model


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def quantized_bytes(model: nn.Module) -> int:
    """Bytes of all distinct parameters and buffers (what the model holds in memory)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _, t in _named_tensors(model):
        # meta tensors have no storage: shared (tied) ones are the same object there
        key = (id(t), 0) if t.device.type == "meta" else (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def save_quantized(model: nn.Module, dst: str | Path) -> Path:
    """Write a quantized model (after ``quantize_model``) to the directory ``dst``."""
    from safetensors.torch import save_file

    info = getattr(model, _INFO_ATTR, None)
    if info is None:
        raise QuantizeError("model is not quantized: call quantize_model first")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, t in _named_tensors(model):
        key = (t.untyped_storage().data_ptr(), int(t.storage_offset()), tuple(t.shape), t.dtype)
        if key in owner:
            if owner[key] != name:
                aliases[name] = owner[key]
            continue
        owner[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"aliases": json.dumps(aliases), "format": FORMAT_NAME})
    model_config: Any = model.config  # a transformers PretrainedConfig
    config = model_config.to_dict()
    config[QUANT_KEY] = info
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(str(out))
    return out


def is_quantized_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a directory written by ``save_quantized`` (`diffgemma quantize`)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return QUANT_KEY in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def _read_quantized_config(path: Path) -> tuple[Any, dict[str, Any]]:
    from transformers import DiffusionGemmaConfig

    raw = json.loads((path / "config.json").read_text())
    info = raw.pop(QUANT_KEY)
    if info.get("format") != FORMAT_NAME or info.get("version") != FORMAT_VERSION:
        raise QuantizeError(f"{path} holds quantization format {info.get('format')!r} "
                            f"v{info.get('version')}; this diffgemma reads {FORMAT_NAME!r} v{FORMAT_VERSION}")
    return DiffusionGemmaConfig.from_dict(raw), info


def empty_quantized_structure(model: nn.Module, block: int = DEFAULT_BLOCK,
                              keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """On a meta-device model: swap in empty 4-bit modules where ``quantize_model`` would put them.

    For sizing the real model without its weights, and for building it with random 4-bit
    weights straight on a GPU (benchmarks). Returns the quantization entry.
    """
    experts = [n for n, m in model.named_modules(remove_duplicate=False) if _is_experts(m)]
    linears = [n for n, m in model.named_modules(remove_duplicate=False) if _linear_to_quantize(n, m, keep)]
    info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "block": block, "experts": experts,
            "linears": linears, "weights": WEIGHTS_FILE}
    _empty_quantized_structure(model, info)
    _set_info(model, info)
    return info


def _empty_quantized_structure(model: nn.Module, info: dict[str, Any]) -> None:
    """Swap in meta-device quantized modules where the checkpoint has them, keeping sharing."""
    activation = _activation(model)
    block = int(info["block"])
    done: dict[int, nn.Module] = {}
    for name in info["experts"]:
        old = model.get_submodule(name)
        key = id(old.gate_up_proj)
        if key not in done:
            e, two_i, h = old.get_parameter("gate_up_proj").shape
            done[key] = QuantizedExperts(e, h, two_i // 2, activation, block, device="meta")
        _swap(model, name, done[key])
    for name in info["linears"]:
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear):
            raise QuantizeError(f"the checkpoint quantizes {name}, which is not a linear layer in this model")
        key = id(old.weight)
        if key not in done:
            done[key] = Linear4(old.in_features, old.out_features, block, device="meta")
        _swap(model, name, done[key])


def load_quantized(path: str | Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Load a quantized checkpoint directory onto ``device``; unquantized weights in ``dtype``."""
    from safetensors import safe_open
    from transformers import DiffusionGemmaForBlockDiffusion

    src = Path(path)
    weights = src / WEIGHTS_FILE
    if not weights.is_file():
        raise QuantizeError(f"{src} has no {WEIGHTS_FILE}: not a complete quantized checkpoint")
    config, info = _read_quantized_config(src)
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    _empty_quantized_structure(model, info)
    dev = torch.device(device)
    persistent = set(model.state_dict().keys())
    quantized_prefixes = tuple(f"{n}." for n in (*info["experts"], *info["linears"]))
    made: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt", device=str(dev)) as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        stored = set(f.keys())
        for name, old in list(_named_tensors(model)):
            canonical = aliases.get(name, name)
            if canonical not in made:
                if canonical not in stored:
                    raise QuantizeError(f"{weights.name} lacks tensor {canonical}: checkpoint is incomplete")
                t = f.get_tensor(canonical)
                # the model dtype applies to weights and persistent float buffers; 4-bit codes, their
                # fp16 scales and non-persistent float32 tables (rotary frequencies) keep theirs
                if (t.is_floating_point() and name in persistent and not name.startswith(quantized_prefixes)):
                    t = t.to(dtype)
                if isinstance(old, nn.Parameter):
                    t = nn.Parameter(t, requires_grad=False)
                made[canonical] = t
            _place(model, name, made[canonical])
    model.eval()
    _set_info(model, info)
    gen_file = src / "generation_config.json"
    if gen_file.is_file():
        model.generation_config = type(model.generation_config).from_pretrained(str(src))
    return model


def load_quantized_model(path: str | Path, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.bfloat16, progress: Progress = None,
                         keep: tuple[str, ...] = ()) -> nn.Module:
    """A 4-bit model from ``path``: a quantized checkpoint, or an unquantized one quantized now.

    The unquantized case streams the checkpoint tensor by tensor (``stream_quantize``): neither
    the GPU nor the CPU ever holds the bf16 model. A checkpoint without safetensors files is read
    whole on the CPU by ``from_pretrained`` instead, then quantized module by module onto ``device``.
    """
    src = Path(path)
    if is_quantized_checkpoint(src):
        return load_quantized(src, device, dtype)
    if safetensors_files(src):
        return stream_quantize(src, device, dtype, progress=progress, keep=keep)
    from transformers import DiffusionGemmaForBlockDiffusion

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(src), dtype=dtype)
    quantize_model(model, device=device, progress=progress, keep=keep)
    return model.eval()


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
            _swap(model, name, fresh)
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
    _quantize_streamed(model, info, read, src, block, dev, progress)
    _place_streamed(model, read, src, dtype, dev)
    rebuild_computed_tables(model, dev)
    left = [name for name, t in _named_tensors(model) if t.device.type == "meta"]
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


def _quantize_streamed(model: nn.Module, info: dict[str, Any], read: Reader, src: Path, block: int,
                       dev: torch.device, progress: Progress) -> None:
    """Fill the empty 4-bit modules from the stored weights, quantizing each on ``dev``."""
    activation = _activation(model)

    def need(name: str) -> torch.Tensor:
        t = read(name)
        if t is None:
            raise QuantizeError(f"{src} lacks tensor {name}: checkpoint is incomplete")
        return t

    done: dict[int, nn.Module] = {}
    for name in info["experts"]:
        old = model.get_submodule(name)
        if id(old) not in done:
            done[id(old)] = QuantizedExperts.from_tensors(need(f"{name}.gate_up_proj"), need(f"{name}.down_proj"),
                                                          activation, block, dev)
            if progress is not None:
                progress(f"quantized {name}")
        _swap(model, name, done[id(old)])
    for name in info["linears"]:
        old = model.get_submodule(name)
        if id(old) not in done:
            done[id(old)] = Linear4.from_weight(need(f"{name}.weight"), block, dev)
        _swap(model, name, done[id(old)])


def _place_streamed(model: nn.Module, read: Reader, src: Path, dtype: torch.dtype | None, dev: torch.device) -> None:
    """Every tensor still on the meta device, read once and placed on ``dev`` (in ``dtype``)."""
    persistent = set(model.state_dict().keys())
    made: dict[int, torch.Tensor] = {}
    for name, old in list(_named_tensors(model)):
        if old.device.type != "meta":
            continue  # a quantized module's buffer, already on the device
        if id(old) not in made:
            t = read(name)
            if t is None:
                if name not in persistent:
                    continue  # a computed table, rebuilt afterwards
                raise QuantizeError(f"{src} lacks tensor {name}: checkpoint is incomplete")
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            t = t.to(dev)
            made[id(old)] = nn.Parameter(t, requires_grad=False) if isinstance(old, nn.Parameter) else t
        _place(model, name, made[id(old)])
