"""Which models a request may use: the daemon's default, those allowed with --allow-model, or only
the fixed one (--fixed-model); and what a refused or failed request may be told about them.

Pure bookkeeping on the event loop's side (torch-free); the model slot loads what this allows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from diffgemma.runtime.api.errors import ErrorCode, WireError, one_line
from diffgemma.runtime.daemon.jobs import Limits, Outcome, model_key

log = logging.getLogger("diffgemma.daemon")

# One text for every model a request may not use: it must not tell a missing path from a file
# that exists, or a directory from a system file.
MODEL_REFUSED = "model not available: this daemon serves its default model and those allowed with --allow-model"
MODEL_FIXED = "this daemon serves a fixed model (--fixed-model): requests cannot load or unload models"
NO_MODEL = ("no model given and the daemon has no default; start it with --model or DIFFGEMMA_MODEL, "
            "or name one in the request's \"model\" field")


def _real_model_if_cached() -> str | None:
    try:
        from diffgemma.runtime.engine.mini import REAL_MODEL_ID, real_model_cached

        return REAL_MODEL_ID if real_model_cached() else None
    except Exception:  # a broken cache only means: not cached
        return None


def model_id(name: str) -> str:
    """A model's short id for /v1/models (clients put it in URLs: no slashes): the checkpoint folder's
    name, or the last part of a Hugging Face id."""
    path = Path(name)
    return path.name or path.resolve().name or "model"


def model_ids(names: list[str]) -> dict[str, str]:
    """Short id -> name for the listed models; a repeated short id gets a number (tiny, tiny-2)."""
    out: dict[str, str] = {}
    for name in names:
        base = model_id(name)
        key, n = base, 1
        while key in out:
            n += 1
            key = f"{base}-{n}"
        out[key] = name
    return out


class ModelPolicy:
    """The operator's rules on model names (``Limits``) around the daemon's default model."""

    def __init__(self, default_model: str | None, limits: Limits) -> None:
        self.default_model = default_model
        self.limits = limits
        self._allowed_keys: set[str] | None = None

    def resolve(self, requested: str | None) -> str:
        """The model a request runs on; a WireError for one it may not name."""
        if requested:
            # a client that read /v1/models may name a model by its short id
            requested = model_ids(self.listed(None)).get(requested, requested)
        name = requested or self.default_model
        if not name:
            raise WireError(ErrorCode.NO_MODEL, NO_MODEL)
        if not requested or requested == self.default_model:
            return name
        if self.limits.fixed_model:
            if self.default_model and model_key(requested) == model_key(self.default_model):
                return self.default_model
            raise WireError(ErrorCode.MODEL_LOCKED, MODEL_FIXED)
        if self.limits.restrict_models and model_key(requested) not in self._allowed():
            raise WireError(ErrorCode.MODEL_NOT_FOUND, MODEL_REFUSED)
        return name

    def _allowed(self) -> set[str]:
        # Computed on first use: the real model's cache lookup costs a file-system walk.
        if self._allowed_keys is None:
            names = [self.default_model, *self.limits.allowed_models, _real_model_if_cached()]
            self._allowed_keys = {model_key(n) for n in names if n}
        return self._allowed_keys

    def listed(self, loaded: str | None) -> list[str]:
        """The models requests may name, for /v1/models: default first, then loaded, then allowed."""
        seen: list[str] = []
        for name in (self.default_model, loaded, *self.limits.allowed_models):
            if name and name not in seen:
                seen.append(name)
        return seen

    def keep_alive(self, requested: float | None) -> float | None:
        """The request's keep_alive, unless the model is fixed (then it never unloads on request)."""
        return None if self.limits.fixed_model else requested

    def load_failed(self, model: str, exc: Exception) -> Outcome:
        """What a request hears when its model could not be loaded."""
        from diffgemma.runtime.engine.loading import ModelLoadError

        if self.limits.restrict_models:
            # Over TCP the reason could describe the operator's files: say only that it failed.
            log.error("could not load %s: %s", model, one_line(exc))
            return Outcome.failed(ErrorCode.MODEL_LOAD_FAILED, "the model could not be loaded; see the daemon's log")
        code = ErrorCode.MODEL_NOT_FOUND if isinstance(exc, ModelLoadError) else ErrorCode.MODEL_LOAD_FAILED
        return Outcome.failed(code, f"could not load model {model}: {one_line(exc)}")
