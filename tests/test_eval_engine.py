"""The side-by-side evaluation through the real engine (tiny random-weight checkpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from diffgemma.evals import evaluate


def test_run_eval_scores_every_system_on_its_suites(tiny_model_dir: Path) -> None:
    report = evaluate.run_eval(
        str(tiny_model_dir), suites=["line", "humaneval", "rewrite"], groups=["baselines", "model", "strength"],
        limit=2, strategy_limit=1, seed=0,
    )
    assert report["tasks"] == {"line": 2, "humaneval": 2, "rewrite": 2}
    names = [s["name"] for s in report["systems"]]
    assert names[0] == "baseline: empty fill" and any(n.startswith("model (length search") for n in names)
    by_name = {s["name"]: s["scores"] for s in report["systems"]}
    model = next(v for k, v in by_name.items() if k.startswith("model (length search"))
    assert model["line"]["n"] == 2 and model["humaneval"]["n"] == 2
    assert model["line"]["hole_tokens"] > 0
    strength = by_name["model rewrite, strength=0.5"]["rewrite"]
    assert strength["n"] == 1  # strategy rows use --strategy-limit
    # A random-weight model fails HumanEval; the empty baseline fails it too.
    assert by_name["baseline: empty fill"]["humaneval"]["pass@1"] == 0.0
    table = evaluate.format_markdown(report)
    assert table.count("\n| ") == len(names) + 1 and "line exact" in table and "humaneval pass@1" in table


def test_eval_cli_writes_table_and_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    out, raw = tmp_path / "table.md", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "diffgemma.cli.app", "eval", "--model", str(tiny_model_dir), "--limit", "1",
         "--suites", "line", "--groups", "baselines,model", "--out", str(out), "--json", str(raw)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| baseline: empty fill |" in proc.stdout
    assert out.read_text() in proc.stdout + "\n"
    assert json.loads(raw.read_text())["tasks"] == {"line": 1}


def test_eval_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, needle in (
        (["--suites", "nope"], "unknown suite"),
        (["--model", str(tmp_path / "missing"), "--suites", "line", "--limit", "1"], "does not exist"),
    ):
        proc = subprocess.run([sys.executable, "-m", "diffgemma.cli.app", "eval", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
