"""diffgemma-mini, the small checkpoint shipped inside the package, and the default-model choice.

The real DiffusionGemma needs its weights in the local Hugging Face cache and a CUDA GPU. When
neither the user nor ``DIFFGEMMA_MODEL`` names a model and that is not at hand, the runtime falls
back to diffgemma-mini so that a fresh machine still does something useful, and says so once.
Torch-free at import time.
"""

from __future__ import annotations

from pathlib import Path

REAL_MODEL_ID = "google/diffusiongemma-26B-A4B-it"
MINI_NAME = "diffgemma-mini"
MINI_DIR: Path = Path(__file__).resolve().parent / "models" / MINI_NAME
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def mini_available() -> bool:
    """True when the shipped checkpoint is complete on disk."""
    return all((MINI_DIR / name).is_file() for name in _REQUIRED_FILES)


def real_model_cached() -> bool:
    """True when the real checkpoint's config is in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(REAL_MODEL_ID, "config.json")
    except Exception:  # a malformed cache must not stop the fallback
        return False
    return isinstance(found, str)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def default_model(requested: str | None) -> tuple[str, str | None]:
    """(model name or path to load, optional one-line notice for stderr).

    ``requested`` is what ``--model`` or ``DIFFGEMMA_MODEL`` said, if anything; it always wins
    (the name ``diffgemma-mini`` maps to the shipped checkpoint). With nothing requested, the real
    model is used when it is cached and a CUDA GPU is present, diffgemma-mini otherwise.
    """
    if requested is not None and requested.strip():
        name = requested.strip()
        if name == MINI_NAME:
            return str(MINI_DIR), None
        return name, None
    if not mini_available():
        return REAL_MODEL_ID, None  # nothing to fall back to; loading reports what is missing
    cached = real_model_cached()
    if cached and cuda_available():
        return REAL_MODEL_ID, None
    if cached:
        notice = (
            f"no CUDA GPU found: using the small demo model {MINI_NAME} instead of {REAL_MODEL_ID} "
            f"(pass --model {REAL_MODEL_ID} to run the real one anyway)"
        )
    else:
        notice = (
            f"{REAL_MODEL_ID} is not in the local Hugging Face cache: using the small demo model {MINI_NAME} "
            f"(get the real one with `huggingface-cli download {REAL_MODEL_ID}`, then pass --model or set "
            f"DIFFGEMMA_MODEL)"
        )
    return str(MINI_DIR), notice
