"""Starting, failing and losing daemons, through the real CLI and real daemon processes on temporary
sockets: the first TCP start, a daemon whose model does not load (it leaves nothing running), a
daemon stopped with SIGSTOP (named at once), a daemon killed mid-request (the request goes to a new
one), the start report a killed front end left (swept by the next start), and the demo model's notice
(once per start)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_commands import cli_command, isolated_env

from diffgemma.runtime.api import paths


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dgf", dir="/tmp"))  # AF_UNIX paths must stay short
    yield path
    for lock in path.rglob("*.lock"):  # whatever a test left running on these sockets
        pid = paths.read_pid(lock)
        if pid:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
    shutil.rmtree(path, ignore_errors=True)


def run(args: list[str], env: dict[str, str], stdin: bytes = b"", timeout: float = 300,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*cli_command(), *args], input=stdin, env=env, capture_output=True, timeout=timeout,
                          cwd=cwd)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def serving(word: str) -> list[int]:
    """Pids of `diffgemma serve` processes whose command line names ``word`` (our temporary folder)."""
    out = subprocess.run(["pgrep", "-f", f"diffgemma.cli serve .*{word}"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_the_first_tcp_start_on_a_fresh_state_directory_works(base: Path, tiny_model_dir: Path) -> None:
    from test_daemon_lifecycle import free_port

    env = {**isolated_env(base), "DIFFGEMMA_STATE_DIR": str(base / "fresh")}
    port = str(free_port())
    started = run(["daemon", "start", "--port", port, "--model", str(tiny_model_dir)], env)
    try:
        assert started.returncode == 0, started.stderr  # the token file did not exist when it started
        assert started.stdout.startswith("daemon running (pid ")
        status = run(["status", "--port", port, "--json"], env)
        assert status.returncode == 0 and json.loads(status.stdout)["state"] == "ready"
    finally:
        assert run(["daemon", "stop", "--port", port], env).returncode == 0


def test_a_model_that_does_not_load_leaves_nothing_running(base: Path) -> None:
    env = isolated_env(base)
    (base / "f.py").write_text("x = 1\n")
    state = base / "state"
    state.mkdir()
    orphan = state / "daemon-x.start-999999-0a1b2c3d.json"  # a front end killed while it waited
    orphan.write_text('{"code": "start_failed"}\n')
    done = run(["infill", "f.py:1", "--model", "./nonexistent", "--socket", "./y.sock"], env, cwd=base)
    assert done.returncode == 6, done.stderr
    assert last_line(done) == "diffgemma: error: the model failed to load: model directory ./nonexistent does not exist"
    assert not serving(str(base)) and not (base / "y.sock").exists() and not (base / "y.sock.lock").exists()
    assert not list(state.glob("*.start-*.json"))  # its own report read and removed; the orphan swept


def test_serve_with_an_unusable_device_exits_with_its_error(base: Path, tiny_model_dir: Path) -> None:
    env = isolated_env(base)
    done = run(["serve", "--model", str(tiny_model_dir), "--socket", str(base / "s.sock"), "--device", "tpu"], env)
    assert done.returncode == 6
    assert last_line(done) == ("diffgemma: error: the model failed to load: "
                               "unknown device 'tpu'; use cpu, cuda or cuda:N")
    assert not (base / "s.sock").exists()


def test_bench_maps_its_errors_like_the_other_commands(base: Path) -> None:
    done = run(["bench", "--device", "tpu", "--repeats", "1", "--steps", "1"], isolated_env(base))
    assert done.returncode == 6
    assert last_line(done) == "diffgemma: error: unknown device 'tpu'; use cpu, cuda or cuda:N"


def test_a_stopped_daemon_is_named_at_once(base: Path, tiny_model_dir: Path) -> None:
    env = {**isolated_env(base), "DIFFGEMMA_MODEL": str(tiny_model_dir)}
    sock = str(base / "d.sock")
    assert run(["daemon", "start", "--socket", sock], env).returncode == 0
    pid = paths.read_pid(Path(sock + ".lock"))
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = run(["infill", "-", "--socket", sock], env, stdin=b"x = <FILL>\n")
        assert done.returncode == 5 and time.monotonic() - started < 30, done.stderr
        assert last_line(done).startswith(f"diffgemma: error: daemon pid {pid} does not answer on {sock} "
                                          f"(it is stopped: `kill -CONT {pid}` resumes it")
        status = run(["daemon", "status", "--socket", sock], env)
        assert status.returncode == 5 and f"daemon pid {pid} does not answer" in status.stderr
        assert "not running" not in status.stderr
        assert json.loads(run(["status", "--socket", sock, "--json"], env).stdout)["stopped"] is True
        stopped = run(["daemon", "stop", "--socket", sock], env)  # SIGTERM, and SIGCONT so it handles it
        assert stopped.returncode == 0 and f"(pid {pid}) stopped" in stopped.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_daemon_killed_mid_request_is_replaced_and_the_request_sent_again(base: Path,
                                                                             tiny_model_dir: Path) -> None:
    from diffgemma.runtime.api.client import Client
    from diffgemma.runtime.api.protocol import MAX_STEPS

    env = {**isolated_env(base), "DIFFGEMMA_MODEL": str(tiny_model_dir), "DIFFGEMMA_STEPS": str(MAX_STEPS),
           "DIFFGEMMA_MAX_TOKENS": "48"}
    sock = base / "d.sock"
    assert run(["daemon", "start", "--socket", str(sock)], env).returncode == 0
    first = paths.read_pid(Path(f"{sock}.lock"))
    killed = threading.Event()

    def kill_once_running() -> None:
        with Client(socket=sock, timeout=10) as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if client.status().get("running"):
                    os.kill(first, signal.SIGKILL)  # type: ignore[arg-type]
                    killed.set()
                    return
                time.sleep(0.05)

    watcher = threading.Thread(target=kill_once_running, daemon=True)
    watcher.start()
    done = run(["infill", "-", "--socket", str(sock), "--json"], env,
               stdin=b"def f(x):\n    return <FILL>\n")
    watcher.join(10)
    try:
        assert killed.is_set()
        assert done.returncode == 0, done.stderr
        assert f"the daemon on socket {sock} stopped while answering" in done.stderr
        assert "sending the request to a new daemon" in done.stderr
        assert json.loads(done.stdout)["finish_reason"] in ("stop", "length", "time", "syntax")
        second = paths.read_pid(Path(f"{sock}.lock"))
        assert second and second != first
    finally:
        run(["daemon", "stop", "--socket", str(sock)], env)


def test_the_demo_model_notice_comes_once_per_start_and_in_status(base: Path) -> None:
    env = isolated_env(base)
    env.pop("DIFFGEMMA_MODEL", None)
    env["HF_HUB_CACHE"] = str(base / "hub")  # the real model is not cached: the demo model stands in
    sock = str(base / "d.sock")
    try:
        first = run(["infill", "-", "--socket", sock, "-l", "python"], env, stdin=b"x = <FILL>\n")
        assert first.returncode == 0, first.stderr
        assert first.stderr.count("using the small demo model diffgemma-mini") == 1
        again = run(["infill", "-", "--socket", sock, "-l", "python"], env, stdin=b"x = <FILL>\n")
        assert again.returncode == 0 and "demo model" not in again.stderr, again.stderr
        status = run(["status", "--socket", sock], env)
        assert "note: " in status.stdout and "using the small demo model" in status.stdout
        memory = next(line for line in status.stdout.splitlines() if line.startswith("memory:"))
        assert "resident" in memory and "model weights" in memory
        rss = json.loads(run(["status", "--socket", sock, "--json"], env).stdout)["rss_bytes"]
        assert rss > 100 * 2**20  # torch alone is more than that; the weights are ~9 MiB
    finally:
        run(["daemon", "stop", "--socket", sock], env)
