"""With no model named, the daemon serves the embedded diffgemma-mini and says why, naming the
real model and how to get it; front ends pass that notice on."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffgemma.runtime.api.autostart import stop_daemon
from diffgemma.runtime.api.client import ensure_daemon
from diffgemma.runtime.api.daemon_config import DaemonConfig
from diffgemma.runtime.api.protocol import InfillRequest
from diffgemma.runtime.engine.mini import MINI_DIR, REAL_MODEL_ID, mini_available

pytestmark = pytest.mark.skipif(not mini_available(), reason="diffgemma-mini checkpoint not built")


@pytest.fixture
def private(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dgm", dir="/tmp"))
    monkeypatch.setenv("DIFFGEMMA_STATE_DIR", str(path / "state"))
    monkeypatch.setenv("DIFFGEMMA_RUNTIME_DIR", str(path))
    monkeypatch.setenv("HF_HOME", str(path / "hf"))  # an empty cache: the real model is not there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("DIFFGEMMA_MODEL", "DIFFGEMMA_SOCKET", "DIFFGEMMA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_model_named_serves_mini_with_a_notice(private: Path) -> None:
    sock = private / "s.sock"
    lines: list[str] = []
    client = ensure_daemon(model=None, socket=sock, on_progress=lines.append, timeout=240)
    try:
        status = client.status()
        assert status["state"] == "ready"
        assert Path(status["model"]).resolve() == MINI_DIR.resolve()
        notice = status["notice"]
        assert REAL_MODEL_ID in notice and "diffgemma-mini" in notice
        assert notice in lines and "\n" not in notice
        result = client.infill(InfillRequest(prefix="def add(a, b):\n    ", suffix="\n", steps=4, seed=0))
        assert result.timings["steps"] >= 1
    finally:
        client.close()
        stop_daemon(DaemonConfig(socket=sock))


def test_a_named_model_wins_and_has_no_notice(private: Path, tiny_model_dir: Path) -> None:
    sock = private / "s.sock"
    lines: list[str] = []
    client = ensure_daemon(model=str(tiny_model_dir), socket=sock, on_progress=lines.append, timeout=240)
    try:
        status = client.status()
        assert Path(status["model"]).resolve() == tiny_model_dir.resolve()
        assert status["notice"] is None
        assert not any(REAL_MODEL_ID in line for line in lines)
    finally:
        client.close()
        stop_daemon(DaemonConfig(socket=sock))
