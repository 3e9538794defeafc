"""How much of the project the CLI runs for the README's demo (`printf ... | diffgemma infill -`)
against a warm daemon: counted by benchmarks/count_cli_path.py (sys.setprofile over a real CLI
process and a real daemon with the tiny checkpoint), held at most 60 distinct project functions
in at most 14 files. The count is of calls, not time, so it cannot flake with the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "count_cli_path.py"
MAX_FUNCTIONS = 60
MAX_FILES = 14


def test_the_piped_infill_runs_few_project_functions(tiny_model_dir: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--list"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    row = re.search(r"^\| this tree \| (\d+) \| (\d+) \| (\d+) \|", done.stdout, re.MULTILINE)
    assert row, done.stdout[-2000:]
    functions, files = int(row.group(1)), int(row.group(2))
    listed = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(listed) == functions
    assert functions <= MAX_FUNCTIONS and files <= MAX_FILES, "\n".join(listed)
    # the request is built and sent: the builder, the client and the answer are on the path
    for name in ("infill_request", "Client.infill", "Result.from_json"):
        assert any(f" {name} x" in line for line in listed), name
