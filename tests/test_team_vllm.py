"""benchmarks/team_vllm.py, briefly: typists through a daemon in front of the stand-in vLLM server,
then the same load on the local engine; its JSON lines hold together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_harness import need_side_python

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "team_vllm.py"


@pytest.mark.timeout(1200)
def test_the_team_benchmark_runs_both_engines(tiny_model_dir: Path) -> None:
    pytest.importorskip("diffgemma.runtime.engine.vllm", reason="this tree has no `serve --engine vllm`")
    need_side_python()
    run = subprocess.run([sys.executable, str(BENCH), "--model", str(tiny_model_dir), "--stand-in",
                          "--typists", "2", "--seconds", "5", "--steps", "2"],
                         capture_output=True, text=True, timeout=1150)
    assert run.returncode == 0, run.stderr[-3000:]
    vllm, local, ratio = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert vllm["engine"] == "vllm" and "stand-in" in vllm["backend"]
    assert local["engine"] == "local"
    for row in (vllm, local):
        assert row["typists"] == 2 and row["requests"] >= 2, row
        assert 1 <= row["completed"] <= row["requests"], row
        assert row["completed"] + row["superseded"] + row["errors"] == row["requests"], row
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"], row
        assert row["exact_joins"] is None or 0 <= row["exact_joins"] <= row["completed"], row
    # every completed infill through vLLM sent it at least one canvas request; the local engine none
    assert vllm["vllm_requests"] >= vllm["completed"]
    assert local["vllm_requests"] is None or local["vllm_requests"] == 0
    assert ratio["ratio"] == "vllm/local"
    assert ratio["p50_ms"] == round(vllm["p50_ms"] / local["p50_ms"], 3)
