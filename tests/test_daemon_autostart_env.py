"""A daemon that a front end starts by itself honours every DIFFGEMMA_* variable `diffgemma serve` reads.

Each case runs `diffgemma infill -` with no daemon running, so the front end starts one in the
background, then reads what that daemon resolved from its /v1/status (`diffgemma status --json`)
and from where its files landed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffgemma.runtime.api import config

DIFFGEMMA = str(Path(sys.executable).with_name("diffgemma"))
SOURCE = "x = <FILL>\n"


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dge", dir="/tmp"))  # short: socket paths have a length limit
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path, model: Path, **values: str | Path) -> dict[str, str]:
    """No DIFFGEMMA_* of the caller's; the runtime and state folders under ``tmp``, ``model``, and ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    values = {config.ENV_RUNTIME_DIR: tmp / "run", config.ENV_STATE_DIR: tmp / "state",
              config.ENV_MODEL: model, **values}
    env.update({name: str(value) for name, value in values.items()})
    return env


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DIFFGEMMA, *args], input=stdin, capture_output=True, text=True, timeout=300, env=env)


def _infill(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run(env, "infill", "-", "--steps", "2", "--max-tokens", "4", stdin=SOURCE)


def _status(env: dict[str, str]) -> dict[str, Any]:
    done = _run(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


@pytest.fixture
def stop_after() -> Iterator[list[dict[str, str]]]:
    """Environments whose daemon is stopped when the test ends, whatever happened."""
    envs: list[dict[str, str]] = []
    yield envs
    for env in envs:
        _run(env, "daemon", "stop")


def test_model_device_keep_alive_runtime_and_state_dirs(tmp: Path, tiny_model_dir: Path,
                                                        stop_after: list[dict[str, str]]) -> None:
    env = _env(tmp, tiny_model_dir, **{config.ENV_DEVICE: "cpu", config.ENV_KEEP_ALIVE: "123"})
    stop_after.append(env)
    done = _infill(env)
    assert done.returncode == 0, done.stderr
    assert "starting daemon" in done.stderr
    status = _status(env)
    assert status["socket"] == str(tmp / "run" / "daemon.sock")  # DIFFGEMMA_RUNTIME_DIR
    assert status["model"] == str(tiny_model_dir) and status["state"] == "ready"  # DIFFGEMMA_MODEL
    assert status["device"] == "cpu"  # DIFFGEMMA_DEVICE
    assert status["keep_alive"] == 123.0  # DIFFGEMMA_KEEP_ALIVE
    # DIFFGEMMA_STATE_DIR: the pid file and the log of the default socket's daemon
    assert int((tmp / "state" / "daemon.pid").read_text()) == status["pid"]
    assert (tmp / "state" / "daemon.log").is_file()
    assert not list((tmp / "state").glob("*.start-*"))  # the start report is cleaned up


def test_socket_and_quantize(tmp: Path, tiny_model_dir: Path, stop_after: list[dict[str, str]]) -> None:
    plain = _env(tmp, tiny_model_dir, **{config.ENV_SOCKET: tmp / "plain.sock"})
    packed = _env(tmp, tiny_model_dir, **{config.ENV_SOCKET: tmp / "packed.sock", config.ENV_QUANTIZE: "4bit"})
    stop_after.extend([plain, packed])
    for env in (plain, packed):
        done = _infill(env)
        assert done.returncode == 0, done.stderr
    plain_status, packed_status = _status(plain), _status(packed)
    assert plain_status["socket"] == str(tmp / "plain.sock")  # DIFFGEMMA_SOCKET
    assert packed_status["socket"] == str(tmp / "packed.sock")
    assert not (tmp / "run" / "daemon.sock").exists()
    # DIFFGEMMA_QUANTIZE: the same checkpoint, loaded as 4-bit, holds fewer and smaller parameters.
    assert packed_status["model"] == plain_status["model"] == str(tiny_model_dir)
    assert packed_status["parameters"] < plain_status["parameters"]
    assert packed_status["memory_bytes"] < plain_status["memory_bytes"]


def test_an_invalid_device_is_a_clear_error(tmp: Path, tiny_model_dir: Path,
                                            stop_after: list[dict[str, str]]) -> None:
    env = _env(tmp, tiny_model_dir, **{config.ENV_DEVICE: "bogus"})
    stop_after.append(env)
    done = _infill(env)
    assert done.returncode == 6, done.stderr  # the model failed to load
    error = done.stderr.strip().splitlines()[-1]
    assert error == "diffgemma: error: the model failed to load: unknown device 'bogus'; use cpu, cuda or cuda:N"
    assert "Traceback" not in done.stderr
    # the daemon that could not load its model did not stay behind (holding its memory)
    assert _run(env, "status").returncode == 5


def test_an_invalid_quantization_is_a_clear_error(tmp: Path, tiny_model_dir: Path,
                                                  stop_after: list[dict[str, str]]) -> None:
    env = _env(tmp, tiny_model_dir, **{config.ENV_QUANTIZE: "2bit"})
    stop_after.append(env)
    done = _infill(env)
    assert done.returncode == 5, done.stderr  # no daemon could be started
    assert done.stderr.strip().splitlines()[-1] == (
        "diffgemma: error: the daemon did not start: unknown quantization '2bit' for --quantize; use 4bit")
    assert _run(env, "status").returncode == 5
