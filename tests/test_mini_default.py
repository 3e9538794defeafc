"""Choosing the default model: diffgemma-mini when the real checkpoint or a GPU is missing."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from diffgemma.runtime.engine import mini
from diffgemma.runtime.engine.mini import REAL_MODEL_ID


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_real_model(cache: Path) -> None:
    repo = cache / ("models--" + REAL_MODEL_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def test_mini_dir_is_inside_the_package() -> None:
    assert mini.MINI_DIR.parent.name == "models"
    assert mini.MINI_DIR.parent.parent == Path(mini.__file__).resolve().parent


def test_real_model_cached_reads_the_local_cache(hf_cache: Path) -> None:
    assert mini.real_model_cached() is False
    _cache_real_model(hf_cache)
    assert mini.real_model_cached() is True


def test_requested_model_always_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mini, "real_model_cached", lambda: False)
    monkeypatch.setattr(mini, "cuda_available", lambda: False)
    assert mini.default_model("/some/checkpoint") == ("/some/checkpoint", None)
    assert mini.default_model(REAL_MODEL_ID) == (REAL_MODEL_ID, None)
    assert mini.default_model("diffgemma-mini") == (str(mini.MINI_DIR), None)


def test_falls_back_to_mini_when_the_real_model_is_not_cached(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mini, "mini_available", lambda: True)
    monkeypatch.setattr(mini, "cuda_available", lambda: True)
    name, notice = mini.default_model(None)
    assert name == str(mini.MINI_DIR)
    assert notice is not None and "\n" not in notice
    assert REAL_MODEL_ID in notice and "huggingface-cli download" in notice
    assert mini.default_model("  ")[0] == str(mini.MINI_DIR)  # blank DIFFGEMMA_MODEL means unset


def test_falls_back_to_mini_without_a_gpu(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_real_model(hf_cache)
    monkeypatch.setattr(mini, "mini_available", lambda: True)
    monkeypatch.setattr(mini, "cuda_available", lambda: False)
    name, notice = mini.default_model(None)
    assert name == str(mini.MINI_DIR)
    assert notice is not None and "GPU" in notice and REAL_MODEL_ID in notice


def test_real_model_when_cached_and_a_gpu_is_present(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_real_model(hf_cache)
    monkeypatch.setattr(mini, "mini_available", lambda: True)
    monkeypatch.setattr(mini, "cuda_available", lambda: True)
    assert mini.default_model(None) == (REAL_MODEL_ID, None)


def test_without_the_shipped_checkpoint_the_real_id_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mini, "MINI_DIR", tmp_path / "missing")
    assert mini.mini_available() is False
    assert mini.default_model(None) == (REAL_MODEL_ID, None)
