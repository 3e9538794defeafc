"""The engine on the 4-bit and fused-sampler paths (the CPU references of the GPU kernels)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffgemma.kernels import moe4
from diffgemma.runtime.engine.engine import Engine
from diffgemma.runtime.engine.loading import ModelLoadError, load_model
from diffgemma.runtime.engine.runner import CanvasView
from diffgemma.runtime.engine.types import SamplingSettings

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def _quantized_experts(engine: Engine) -> int:
    return sum(moe4.is_experts(m) and moe4.is_quantized(m) for m in engine.model.modules())


def test_load_time_quantization_serves_infill(tiny_model_dir: Path) -> None:
    seen: list[CanvasView] = []
    engine = Engine.load(str(tiny_model_dir), quantize="4bit", observer=seen.append)
    assert _quantized_experts(engine) >= 1
    result = engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=0, steps=4))
    assert result.hole_tokens > 0 and result.timings.steps >= 1
    assert seen and all(0 <= t < engine.vocab_size for t in seen[-1].tokens)


def test_offline_quantized_checkpoint_loads_as_4bit(tiny_model_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "tiny-4bit"
    proc = subprocess.run([sys.executable, "-m", "diffgemma.cli", "quantize", str(tiny_model_dir), str(dst), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    engine = Engine.load(str(dst))  # no flag: the checkpoint says it is quantized
    assert _quantized_experts(engine) >= 1
    assert engine.infill(PREFIX, SUFFIX, settings=SamplingSettings(seed=0, steps=3)).timings.steps >= 1


def test_unknown_quantization_is_rejected(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown quantization"):
        load_model(str(tiny_model_dir), quantize="3bit")


def test_fused_sampler_in_the_engine(tiny_model_dir: Path) -> None:
    seen: list[CanvasView] = []
    fused = Engine.load(str(tiny_model_dir), sampler="fused", observer=seen.append)
    settings = SamplingSettings(seed=4, steps=5)
    first = fused.infill(PREFIX, SUFFIX, settings=settings)
    again = fused.infill(PREFIX, SUFFIX, settings=settings)
    assert first.text == again.text  # seeded Gumbel-max draws are reproducible
    canvas, held = seen[-1].tokens, seen[-1].held
    suffix_ids = fused.encode_text(SUFFIX)
    assert [t for t, h in zip(canvas, held, strict=True) if h] == suffix_ids[: sum(held)]
