"""Find and load a DiffusionGemma checkpoint: a local directory or a Hugging Face id in the local cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgemma.runtime.api.errors import DiffgemmaError, one_line
from diffgemma.runtime.engine.mini import MINI_DIR, MINI_NAME


class ModelLoadError(DiffgemmaError, RuntimeError):
    """The model could not be found or read; the message is one line that says what to do."""


@dataclass
class LoadedModel:
    model: Any  # DiffusionGemmaForBlockDiffusion
    tokenizer: Any  # a transformers tokenizer
    name: str  # what the user asked for
    path: Path  # where the files are
    device: str
    dtype: str


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        try:
            kind = torch.device(device)
        except (RuntimeError, ValueError):  # torch's own message lists every device type it knows
            raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
        if kind.type == "cuda":
            if not torch.cuda.is_available():
                raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available on this machine")
            if kind.index is not None and kind.index >= torch.cuda.device_count():
                raise ModelLoadError(f"device {device!r} asked for, but this machine has "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
        elif kind.type != "cpu":
            backend = getattr(torch, kind.type, None)
            available = getattr(backend, "is_available", None)
            if not callable(available) or not available():
                raise ModelLoadError(f"device {device!r} is not available on this machine; use cpu or cuda")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> Any:
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype and dtype != "auto":
        if dtype not in names:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(sorted(names))}")
        return names[dtype]
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def resolve_model_path(name: str) -> Path:
    """A local directory, or a Hugging Face id found in the local cache (no network is used)."""
    if name == MINI_NAME:
        name = str(MINI_DIR)
    candidate = Path(name).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelLoadError(f"model path {candidate} is not a directory holding a checkpoint")
        if not (candidate / "config.json").is_file():
            raise ModelLoadError(f"no config.json in {candidate}: not a DiffusionGemma checkpoint directory")
        return candidate
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model directory {name} does not exist")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id=name, local_files_only=True)
    except Exception:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and this tool never downloads; "
            f"fetch it with `huggingface-cli download {name}` or pass --model /path/to/checkpoint"
        ) from None
    return Path(path)


def load_model(name: str, device: str | None = None, dtype: str | None = None,
               quantize: str | None = None) -> LoadedModel:
    """Load model + tokenizer through the same ``from_pretrained`` path for real and tiny weights.

    A checkpoint written by `diffgemma quantize` loads as 4-bit; ``quantize="4bit"`` quantizes
    an unquantized checkpoint while loading, layer by layer, never holding it whole in bf16.
    """
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    hf_logging.disable_progress_bar()
    if quantize not in (None, "4bit"):
        raise ModelLoadError(f"unknown quantization {quantize!r}; use 4bit")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        from diffgemma.kernels.checkpoint import is_quantized_checkpoint, load_quantized_model
        from diffgemma.kernels.quantize import QuantizeError

        if quantize == "4bit" or is_quantized_checkpoint(path):
            try:
                model = load_quantized_model(path, device=dev, dtype=torch_dtype)
            except QuantizeError as exc:
                raise ModelLoadError(str(exc)) from None
        else:
            model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(path), dtype=torch_dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # a broken checkpoint must not become a traceback for the user
        raise ModelLoadError(f"could not load model from {path}: {one_line(exc)}") from exc
    model = model.to(dev).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, path=path, device=dev,
                       dtype=str(torch_dtype).removeprefix("torch."))
