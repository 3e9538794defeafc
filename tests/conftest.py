"""Shared fixtures: the tiny random-weight DiffusionGemma checkpoint, built once per session."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DiffusionGemma checkpoint written by `python -m diffgemma.training.tiny` (seed 0)."""
    from diffgemma.training.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)


def grammars_missing() -> str | None:
    """Why no grammar loads, when that is the known offline limit of the 1.x language pack.

    tree-sitter-language-pack 1.x downloads grammars on first use, which cannot work without
    network access; 0.x ships them in the wheel (the project pins <1). Any other reason for a
    missing grammar fails the tests instead of skipping them.
    """
    from diffgemma.context.languages import has_grammar

    if has_grammar("python"):
        return None
    version = importlib.metadata.version("tree-sitter-language-pack")
    if int(version.split(".")[0]) >= 1:
        return f"tree-sitter-language-pack {version} downloads grammars at run time; install a 0.x release"
    return None


# The vLLM side (vLLM's own checks of request bodies, the stand-in vLLM server): tests/vllm_harness.py
from vllm_harness import standin_factory, vllm_checker, vllm_model_dir, vllm_standin  # noqa: E402, F401
