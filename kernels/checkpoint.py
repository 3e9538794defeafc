"""4-bit checkpoints: write a quantized model, load one (this version's format and the one before).

A quantized checkpoint directory holds ``config.json`` (the model config plus a
``diffgemma_quantization`` entry: format, version, the quantized modules), ``model-nf4.safetensors``
(each shared tensor once; aliases in its metadata), the generation config and the tokenizer files.
Loading builds the model on the meta device with empty 4-bit modules and assigns the stored
tensors straight onto the target device: no bf16 copy of the experts ever exists.

Versions of the entry (``format``, ``version``):

- ``diffgemma-nf4`` v2 (written now): experts as ``<name>.gate_up_q`` / ``gate_up_absmax`` /
  ``down_q`` / ``down_absmax`` (``quant4``'s layout); linears as bitsandbytes stores a
  ``Linear4bit``: ``<name>.weight`` and ``<name>.weight.absmax`` / ``.quant_map`` /
  ``.quant_state.bitsandbytes__nf4``.
- ``nf4-blockwise-halfpair`` v1: the same experts; linears as ``<name>.qweight`` / ``<name>.absmax``
  in ``quant4``'s layout. They load by repacking the codes for bitsandbytes (the same NF4 levels and
  row blocks, so the weights are exactly the stored ones); a layer whose blocks bitsandbytes does not
  take (under 32 weights) is refused with a message.

Any other entry is refused with a one-line message that says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffgemma.kernels import linear4
from diffgemma.kernels.quantize import (
    FORMAT_NAME,
    FORMAT_VERSION,
    QUANT_KEY,
    WEIGHTS_FILE,
    Progress,
    QuantizeError,
    Reader,
    empty_structure,
    get_info,
    named_tensors,
    place_meta_tensors,
    quantize_model,
    replace_shared,
    safetensors_files,
    set_info,
    stream_quantize,
)

V1 = ("nf4-blockwise-halfpair", 1)
_READS = f"this diffgemma reads {FORMAT_NAME!r} v{FORMAT_VERSION} and {V1[0]!r} v{V1[1]}"
_REQUANTIZE = "quantize the original checkpoint again with `diffgemma quantize`"


def _stored_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every tensor a checkpoint holds, by each of its names: parameters, buffers, and the quant
    state of each 4-bit linear (made once per layer, so shared layers share it)."""
    found = list(named_tensors(model))
    states: dict[int, dict[str, torch.Tensor]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if linear4.is_linear4(module):
            state = states.setdefault(id(module), linear4.state_tensors(module))
            found.extend((f"{name}.{key}", t) for key, t in state.items())
    return found


def save_quantized(model: nn.Module, dst: str | Path) -> Path:
    """Write a quantized model (after ``quantize_model``) to the directory ``dst``."""
    from safetensors.torch import save_file

    info = get_info(model)
    if info is None:
        raise QuantizeError("model is not quantized: call quantize_model first")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, t in _stored_tensors(model):
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
    found = (info.get("format"), info.get("version")) if isinstance(info, dict) else (None, None)
    if found not in ((FORMAT_NAME, FORMAT_VERSION), V1):
        newer = found[0] == FORMAT_NAME and isinstance(found[1], int) and found[1] > FORMAT_VERSION
        hint = "it was written by a newer diffgemma" if newer else _REQUANTIZE
        raise QuantizeError(f"{path} holds 4-bit format {found[0]!r} v{found[1]}; {_READS}: {hint}")
    return DiffusionGemmaConfig.from_dict(raw), info


def _checkpoint_reader(handle: Any, aliases: dict[str, str], weights: Path) -> Reader:
    stored = set(handle.keys())

    def read(name: str) -> torch.Tensor | None:
        canonical = aliases.get(name, name)
        return handle.get_tensor(canonical) if canonical in stored else None

    return read


def _linears(model: nn.Module, info: dict[str, Any], read: Reader, weights: Path, dtype: torch.dtype,
             dev: torch.device) -> None:
    """Fill the empty 4-bit linears from the checkpoint (either version), each once."""
    v1 = (info.get("format"), info.get("version")) == V1

    def need(name: str) -> torch.Tensor:
        t = read(name)
        if t is None:
            raise QuantizeError(f"{weights.name} lacks tensor {name}: checkpoint is incomplete")
        return t

    def make(name: str) -> nn.Module:
        try:
            if v1:
                return linear4.from_halfpair(need(f"{name}.qweight"), need(f"{name}.absmax"), dtype)
            stats = {key: need(f"{name}.weight.{key}") for key in linear4.STATE_KEYS}
            return linear4.stored_linear(need(f"{name}.weight"), stats, dtype, dev)
        except ValueError as exc:
            raise QuantizeError(f"{weights.parent}: cannot read 4-bit layer {name}: {exc}; {_REQUANTIZE}") from None

    replace_shared(model, info["linears"], make)


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
    empty_structure(model, info["experts"], info["linears"], int(info["block"]))
    dev = torch.device(device)
    with safe_open(str(weights), framework="pt", device=str(dev)) as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        read = _checkpoint_reader(f, aliases, weights)
        _linears(model, info, read, weights, dtype, dev)
        place_meta_tensors(model, read, src, dtype, dev, keep_dtype=tuple(info["experts"]))
    left = [name for name, t in named_tensors(model) if t.device.type == "meta"]
    if left:
        raise QuantizeError(f"{weights.name} lacks tensor {left[0]}: checkpoint is incomplete")
    model.eval()
    set_info(model, info)
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
