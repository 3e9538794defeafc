"""The VS Code extension builds, its unit tests pass, and it packages to a .vsix (needs node + npm)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None or shutil.which("node") is None,
    reason="node/npm not installed (editors/ci-setup.sh installs them)",
)


def npm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["npm", *args], cwd=EXTENSION, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed() -> None:
    # the lockfile pins every package; --prefer-offline reuses the npm cache when CI warmed it
    npm("ci", "--prefer-offline", "--no-audit", "--no-fund")


def test_build_and_unit_tests(installed: None) -> None:
    npm("run", "build")
    assert (EXTENSION / "out" / "extension.js").is_file()
    result = npm("test")
    assert "# fail 0" in result.stdout
    assert "# pass " in result.stdout


def node_major() -> int:
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    return int(version.strip().lstrip("v").split(".")[0])


def test_packages_to_vsix(installed: None, tmp_path: Path) -> None:
    if node_major() < 20:
        pytest.skip("@vscode/vsce needs Node.js 20 or newer")
    target = tmp_path / "diffgemma.vsix"
    npm("run", "package", "--", "--out", str(target))
    with zipfile.ZipFile(target) as vsix:
        names = set(vsix.namelist())
        manifest = json.loads(vsix.read("extension/package.json"))
    assert "extension/out/extension.js" in names
    # the runtime dependency ships inside; sources and tests do not
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)
    assert not any(n.startswith("extension/src/") or n.startswith("extension/out/test/") for n in names)
    properties = manifest["contributes"]["configuration"]["properties"]
    for key in ("model", "socket", "maxTokens", "steps", "debounceMs", "enable", "nextEdit.enable",
                "nextEdit.debounceMs", "nextEdit.threshold"):
        assert f"diffgemma.{key}" in properties
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    assert {"diffgemma.rewrite", "diffgemma.acceptNextEdit", "diffgemma.dismissNextEdit",
            "diffgemma.jumpToNextEdit"} <= commands
    # Tab and Escape act on a suggested edit only while one is shown, and never over ghost text
    keys = {(k["key"], k["command"]): k["when"] for k in manifest["contributes"]["keybindings"]}
    for key in (("tab", "diffgemma.acceptNextEdit"), ("escape", "diffgemma.dismissNextEdit")):
        assert "diffgemma.nextEditVisible" in keys[key] and "!inlineSuggestionVisible" in keys[key]
