"""`diffgemma bench` runs both loops on the tiny checkpoint and prints the ratio table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_bench_prints_both_paths_and_ratio(tiny_model_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "diffgemma.cli.app", "bench", "--model", str(tiny_model_dir), "--repeats", "1",
         "--steps", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "transformers generate" in proc.stdout and "engine generate" in proc.stdout
    assert "x" in proc.stdout.splitlines()[-1]


def test_bench_missing_model_is_one_line_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "diffgemma.cli.app", "bench", "--model", "/nonexistent/model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 6
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
