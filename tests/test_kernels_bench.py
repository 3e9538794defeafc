"""The GPU step benchmark runs its whole code path at toy sizes on CPU, and exits cleanly without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu_step.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_cpu_small_runs_the_step_path() -> None:
    proc = _run("--cpu-small", "--steps", "1", "--prefix", "32")
    assert proc.returncode == 0, proc.stderr
    assert "denoising step, canvas 32" in proc.stdout
    assert "sampler on cpu" in proc.stdout and "ratio" in proc.stdout


def test_real_config_size_and_no_gpu_exit() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full benchmark would run")
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU present" in proc.stdout
    # the real config: ~25.4 B parameters, ~51 GB in bf16 and under 18 GB at 4 bits
    line = next(ln for ln in proc.stdout.splitlines() if "4-bit NF4" in ln)
    bf16_gb = float(line.split("bf16")[1].split("GB")[0])
    nf4_gb = float(line.split("NF4")[1].split("GB")[0])
    assert 45 < bf16_gb < 55 and nf4_gb < 18
