"""`diffgemma bench` runs both loops on the tiny checkpoint and prints the ratio table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PATHS = ["transformers generate", "engine generate", "engine infill (length batch)"]
STEPS = 2


def _rows(table: list[str]) -> dict[str, tuple[float, int, float, float]]:
    """name -> (ms/step, steps, total ms, ratio) from the table's rows, each number as printed."""
    rows = {}
    for line in table:
        name, ms, steps, total, ratio = line.rsplit(None, 4)
        assert ratio.endswith("x"), line
        rows[name] = (float(ms), int(steps), float(total), float(ratio.removesuffix("x")))
    return rows


def test_bench_prints_both_timings_and_their_ratio_for_every_path(tiny_model_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "diffgemma.cli.app", "bench", "--model", str(tiny_model_dir), "--repeats", "1",
         "--steps", str(STEPS), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    head, header, *table = proc.stdout.splitlines()
    assert head == f"model: {tiny_model_dir} on cpu"
    assert header.split() == ["path", "ms/step", "steps", "total", "ms", "vs", "generate"]
    rows = _rows(table)
    assert list(rows) == PATHS
    base_ms = rows["transformers generate"][0]
    for name, (ms, steps, total, ratio) in rows.items():
        assert ms > 0 and total > 0, name
        # Every path runs exactly the steps asked for: a confidence threshold nothing reaches.
        assert steps == STEPS, name
        # One repeat: the total is the per-step time times the steps, up to the printed rounding.
        assert total == pytest.approx(ms * steps, abs=0.05 + 0.005 * steps), name
        # The ratio is generate's ms/step over this path's, as printed (2 decimals each).
        assert ratio == pytest.approx(base_ms / ms, rel=1e-3, abs=0.006), name
    assert rows["transformers generate"][3] == 1.0


def test_bench_missing_model_is_one_line_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "diffgemma.cli.app", "bench", "--model", "/nonexistent/model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 6
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
