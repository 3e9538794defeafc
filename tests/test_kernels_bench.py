"""The GPU benchmark runs its whole product path at toy sizes on CPU: the 4-bit model built in place,
its kernels against the CPU references (Triton in its interpreter), a real daemon serving an infill
with a held suffix and the hole-length search, and a plain generation; without a GPU the real config
is sized and the script exits cleanly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu_step.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=500)


@pytest.mark.timeout(560)
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install triton)")
def test_cpu_small_runs_the_product_path() -> None:
    proc = _run("--cpu-small")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["mode"] == "cpu-small" and report["failed"] == []
    assert list(report["phases"]) == ["sizes", "build", "kernels", "checkpoint", "daemon"]
    checks = {c["name"]: c for c in report["checks"]}
    assert {"experts", "linear", "linear-1row", "head-lse", "head-self-cond", "head-held-logp"} <= set(checks)
    assert all(c["ok"] for c in checks.values()), checks
    canvas = report["step_cost"]["canvas"]
    infill = report["daemon"]["infill"]
    # the prefix was encoded for this request, and several hole lengths shared the first step
    assert infill["encoded_tokens"] >= 100 and infill["steps"] == 2
    assert infill["decoder_tokens"] > infill["steps"] * canvas
    assert 0 < infill["generated_tokens"] < canvas  # the hole ends where the held suffix starts
    gen = report["daemon"]["generation"]
    assert gen["generated_tokens"] == 64 and gen["decoder_tokens"] == gen["steps"] * canvas  # one row a step
    assert report["daemon"]["tokens_per_s"] > 0 and report["daemon"]["peak_added_rss_gb"] > 0
    assert 0 < report["roofline"]["fraction"] < 1
    text = proc.stdout
    assert "summary" in text and "tokens/s" in text and "of the roofline speed" in text
    assert "[phase daemon:" in text


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
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mode"] == "no-gpu"
