"""The offline quantization step behind `diffgemma quantize`: an unquantized DiffusionGemma
checkpoint in, a 4-bit (NF4) checkpoint directory out. The 4-bit modules, their checkpoint format
and the streaming reader are `kernels.quantize`; this finds the source checkpoint the way the
engine does and writes the result so that it appears only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path

from diffgemma.kernels.checkpoint import is_quantized_checkpoint, save_quantized
from diffgemma.kernels.quantize import (
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    Progress,
    QuantizeError,
    quantize_model,
    safetensors_files,
    stream_quantize,
)
from diffgemma.runtime.api.errors import one_line
from diffgemma.runtime.engine.loading import ModelLoadError, resolve_model_path

# QuantizeError is what quantize_checkpoint raises; its callers import it from here.
__all__ = ["QuantizeError", "quantize_checkpoint", "quantized_size_line"]

# Files of the source checkpoint that are not copied next to the 4-bit weights.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _destination(src_path: Path, dst: str) -> Path:
    out = Path(dst).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuantizeError(f"destination {out} already exists and is not empty")
    if out.resolve() == src_path.resolve():
        raise QuantizeError("destination must differ from the source checkpoint")
    return out


def quantize_checkpoint(src: str, dst: str, progress: Progress = None, keep: tuple[str, ...] = ()) -> Path:
    """Read an unquantized DiffusionGemma checkpoint, write a 4-bit one to ``dst``.

    ``src`` is a directory or a Hugging Face id in the local cache. ``dst`` must not exist (or be
    empty); it appears only when complete (written beside it, then renamed).
    """
    try:
        src_path = resolve_model_path(src)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from None
    if is_quantized_checkpoint(src_path):
        raise QuantizeError(f"{src_path} is already a quantized checkpoint")
    out = _destination(src_path, dst)
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    say = progress or (lambda _msg: None)
    say(f"reading {src_path}")
    try:
        if safetensors_files(src_path):
            model = stream_quantize(src_path, "cpu", None, progress=progress, keep=keep)
        else:
            model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(src_path), dtype="auto")
            quantize_model(model, progress=progress, keep=keep)
    except QuantizeError:
        raise
    except Exception as exc:  # a broken checkpoint is a user error, not a traceback
        raise QuantizeError(f"could not load {src_path}: {one_line(exc)}") from exc
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    say(f"writing {out}")
    save_quantized(model, partial)
    for item in src_path.iterdir():
        if (item.is_file() and item.name not in ("config.json", "generation_config.json", *_WEIGHT_INDEXES)
                and not item.name.endswith(_WEIGHT_SUFFIXES)):
            shutil.copy2(item, partial / item.name)
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out


def quantized_size_line(path: str | Path) -> str:
    """A short description of a quantized checkpoint's weight file, for messages."""
    weights = Path(path) / WEIGHTS_FILE
    size = weights.stat().st_size if weights.is_file() else 0
    return f"{size / 2**20:.1f} MiB of weights, {FORMAT_NAME} v{FORMAT_VERSION}"
