"""The daemon's engine is on the streaming head by default, and `--sampler stock` selects the reference;
either way every answer reports the decoder rows it cost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffgemma.runtime.api.client import Client
from diffgemma.runtime.api.protocol import InfillRequest


@pytest.fixture()
def workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="dgs", dir="/tmp"))  # short: AF_UNIX paths are limited
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _serve(model: Path, work: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Client]:
    sock = work / "d.sock"
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(work / "state"), "DIFFGEMMA_RUNTIME_DIR": str(work)}
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 - the daemon writes it until it stops
    process = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model),
                                "--socket", str(sock), "--keep-alive", "-1", *extra],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    client = Client(socket=sock)
    deadline = time.monotonic() + 180
    while not (client.health() and client.status().get("state") == "ready"):
        assert process.poll() is None and time.monotonic() < deadline, (work / "daemon.log").read_text()
        time.sleep(0.1)
    return process, client


@pytest.mark.parametrize(("flags", "sampler"), [((), "stream"), (("--sampler", "stock"), "stock")])
def test_the_daemon_serves_on_the_streaming_head(tiny_model_dir: Path, workdir: Path, flags: tuple[str, ...],
                                                  sampler: str) -> None:
    process, client = _serve(tiny_model_dir, workdir, *flags)
    try:
        assert client.status()["sampler"] == sampler
        result = client.infill(InfillRequest(prefix="def f(x):\n    return ", suffix="\n\nprint(f(2))\n",
                                             steps=4, seed=0))
        timings = result.timings
        assert timings["decoder_tokens"] > 0 and timings["steps"] >= 1
        # the pruned search: never every candidate on every step
        assert timings["decoder_tokens"] < 8 * 32 * timings["steps"]
    finally:
        client.close()
        process.terminate()
        process.wait(30)
