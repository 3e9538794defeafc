"""Shared fixtures: the tiny random-weight DiffusionGemma checkpoint, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DiffusionGemma checkpoint written by `python -m diffgemma.runtime.tiny` (seed 0)."""
    from diffgemma.runtime.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)
