"""The VS Code extension in a real VS Code: code-server 4.100.3 (VS Code 1.100.3) with the packaged
extension, driven by Chromium through Playwright (editors/vscode/e2e/run.sh), against a real daemon
serving the tiny checkpoint. A next-edit suggestion appears after a typed edit, Escape dismisses
it, the jump command and Tab go to it, Tab accepts it, and the saved file is exactly the old one
with the suggested edits applied; where ghost text is on, no suggestion shows with it, and one
comes once Escape hides the ghost text.

Skipped unless DIFFGEMMA_CODE_SERVER names a code-server executable (installed from npm, see
editors/vscode/README.md) and a python with Playwright is found (DIFFGEMMA_PLAYWRIGHT_PYTHON, or
this one); the browser is DIFFGEMMA_CHROMIUM (default /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "editors" / "vscode" / "e2e" / "run.sh"
CODE_SERVER = os.environ.get("DIFFGEMMA_CODE_SERVER", "")
CHROMIUM = os.environ.get("DIFFGEMMA_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT_PYTHON = os.environ.get("DIFFGEMMA_PLAYWRIGHT_PYTHON", sys.executable)


def _missing() -> str | None:
    if not CODE_SERVER or not os.access(CODE_SERVER, os.X_OK):
        return "set DIFFGEMMA_CODE_SERVER to a code-server executable (see editors/vscode/README.md)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no browser at {CHROMIUM} (apt-get install -y chromium, or set DIFFGEMMA_CHROMIUM)"
    if shutil.which("npm") is None:
        return "npm not installed (editors/ci-setup.sh installs it)"
    probe = subprocess.run([PLAYWRIGHT_PYTHON, "-c", "import playwright.sync_api"], capture_output=True)
    if probe.returncode != 0:
        return f"{PLAYWRIGHT_PYTHON} has no playwright (pip install playwright, or set DIFFGEMMA_PLAYWRIGHT_PYTHON)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def diffgemma_executable() -> str:
    script = Path(sys.executable).with_name("diffgemma")
    found = str(script) if script.exists() else shutil.which("diffgemma")
    assert found, "the diffgemma executable is not installed"
    return found


@pytest.mark.timeout(1800)
def test_next_edit_in_code_server(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "CODE_SERVER": CODE_SERVER, "PLAYWRIGHT_PYTHON": PLAYWRIGHT_PYTHON,
           "CHROMIUM": CHROMIUM, "DIFFGEMMA": diffgemma_executable(), "MODEL": str(tiny_model_dir)}
    done = subprocess.run([str(RUN), str(out)], env=env, capture_output=True, text=True, timeout=1700)
    result_file = out / "result.json"
    assert result_file.exists(), f"run.sh wrote no result (exit {done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    seen = json.loads(result_file.read_text())
    assert seen["ok"], f"{seen.get('error')} (screenshots in {out})"
    assert done.returncode == 0
    assert "next edit: line" in seen["suggestion_status"]
    assert seen["after_escape"] == {"drawn": [], "file_unchanged": True}
    second = seen["second_answer"]
    assert seen["jumped_to"] == seen["tab_went_to"] == second["edits"][0]["range"]["start"]["line"] + 1
    assert seen["jumped_to_next_place"] == second["next"]["line"] + 1
    assert seen["accepted_matches_the_suggestion"] is True
    # where ghost text is on, it holds the suggestion back until Escape hides it
    assert seen["ghost_text_held_suggestion_back"] is True
    assert seen["suggestion_after_ghost_text"] is True
    for name in seen["screenshots"]:
        assert (out / name).stat().st_size > 0
