"""The shipped diffgemma-mini checkpoint: small, complete, loads, and infills through the engine."""

from __future__ import annotations

import json

import pytest

from diffgemma.runtime.engine.mini import MINI_DIR, mini_available

pytestmark = pytest.mark.skipif(not mini_available(), reason="diffgemma-mini checkpoint not built")


def test_checkpoint_is_small_and_documented() -> None:
    total = sum(p.stat().st_size for p in MINI_DIR.rglob("*") if p.is_file())
    assert total < 40 * 1024 * 1024
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "MODEL_CARD.md"):
        assert (MINI_DIR / name).is_file(), name
    # The training record stays in the source tree, out of the shipped model's folder.
    assert not (MINI_DIR / "training_log.csv").exists()
    config = json.loads((MINI_DIR / "config.json").read_text())
    assert config["architectures"] == ["DiffusionGemmaForBlockDiffusion"]
    card = (MINI_DIR / "MODEL_CARD.md").read_text()
    assert "demo-quality" in card


def test_loads_and_infills_through_the_engine() -> None:
    from diffgemma.runtime.engine.engine import Engine
    from diffgemma.runtime.engine.types import SamplingSettings

    engine = Engine.load(str(MINI_DIR), device="cpu")
    try:
        info = engine.info()
        assert info["canvas_length"] == 32 and info["parameters"] > 1_000_000
        prefix = "import os\n\n\ndef read(path):\n    with open(path) as handle:\n        "
        result = engine.infill(prefix, "\n\n\ndef write(path, data):\n    pass\n",
                               settings=SamplingSettings(seed=0))
        assert result.finish_reason in ("stop", "length")
        assert result.hole_tokens > 0 and isinstance(result.text, str)
        assert result.timings.steps > 0
    finally:
        engine.close()
