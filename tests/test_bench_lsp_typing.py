"""The language server typing benchmark runs end to end, briefly (a real daemon and `diffgemma lsp`):
its table has every row, with no timing asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lsp_typing.py"


def test_the_typing_benchmark_reports_both_files_side_by_side(tiny_model_dir: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--keys", "2", "--megabytes", "0.3", "--model",
                           str(tiny_model_dir)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    rows = [line.split() for line in lines[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [("context", "20"), ("context", "0.3"), ("answer", "20"),
                                            ("answer", "0.3")]
    assert all(r[-4] == "2" and all(float(x) > 0 for x in r[-3:]) for r in rows)
    assert re.fullmatch(r"big / small: context: p50 [\d.]+x, p95 [\d.]+x; answer: p50 [\d.]+x, p95 [\d.]+x", lines[-1])
