"""Daemon processes: TCP with its bearer token, one daemon per socket, stale sockets, SIGTERM,
background start/stop/status through the CLI, and `ensure_daemon` starting one on demand."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diffgemma.runtime.api import paths
from diffgemma.runtime.api.autostart import stop_daemon
from diffgemma.runtime.api.client import Client, DaemonUnavailable, ensure_daemon
from diffgemma.runtime.api.daemon_config import DaemonConfig
from diffgemma.runtime.api.protocol import InfillRequest

DIFFGEMMA = str(Path(sys.executable).with_name("diffgemma"))
DAEMON_EXIT = 5  # `diffgemma serve` that cannot start: the daemon is unavailable


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private directory that is also this test's runtime and state directory."""
    path = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    monkeypatch.setenv("DIFFGEMMA_STATE_DIR", str(path / "state"))
    monkeypatch.setenv("DIFFGEMMA_RUNTIME_DIR", str(path))
    monkeypatch.delenv("DIFFGEMMA_TOKEN", raising=False)
    monkeypatch.delenv("DIFFGEMMA_MODEL", raising=False)
    monkeypatch.delenv("DIFFGEMMA_SOCKET", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


started: list[subprocess.Popen[bytes]] = []


def serve(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "serve", *args],
                                   stdout=out, stderr=subprocess.STDOUT)
    started.append(process)
    return process


@pytest.fixture(autouse=True)
def _kill_leftovers() -> Iterator[None]:
    yield
    while started:
        process = started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DIFFGEMMA, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_front_end_modules_do_not_import_torch() -> None:
    code = ("import sys, diffgemma.runtime.api.client, diffgemma.runtime.api.protocol, "
            "diffgemma.runtime.api.autostart, diffgemma.runtime.api.daemon_config, "
            "diffgemma.runtime.daemon.server, diffgemma.runtime.daemon.lifecycle, diffgemma.runtime.daemon.scheduler, "
            "diffgemma.cli.daemon_cmds; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_tcp_needs_the_bearer_token(tmp: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    process = serve("--model", str(tiny_model_dir), "--port", str(port), log=tmp / "log")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=300) as http:
        wait_for(lambda: _answers(http) or process.poll() is not None, "the TCP daemon")
        assert process.poll() is None, (tmp / "log").read_text()
        token_file = paths.token_path()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32

        assert http.get("/health").status_code == 200  # the one open endpoint
        assert http.get("/v1/status").status_code == 401
        assert http.get("/v1/status", headers={"Authorization": "Bearer " + token[:-1] + "x"}).status_code == 401
        response = http.post("/v1/infill", json={"prefix": "a", "suffix": ""})
        assert response.status_code == 401 and "token" in response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "unauthorized"
        assert http.post("/infill", json={"input_prefix": "a"}).status_code == 401
        ok = http.get("/v1/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["url"] == base

    # The client finds the token in the state directory by itself.
    with Client(base_url=base) as client:
        result = client.infill(InfillRequest(prefix="x = ", suffix="\n", steps=2, max_tokens=4))
        assert result.finish_reason in ("stop", "length")
    with Client(base_url=base, token="wrong") as client, pytest.raises(Exception) as info:
        client.status()
    assert getattr(info.value, "status", None) == 401


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_one_daemon_per_socket_and_clean_sigterm(tmp: Path, tiny_model_dir: Path) -> None:
    sock = tmp / "d.sock"
    first = serve("--model", str(tiny_model_dir), "--socket", str(sock), "--no-preload", log=tmp / "first.log")
    client = Client(socket=sock)
    wait_for(lambda: client.health() or first.poll() is not None, "the first daemon")
    assert first.poll() is None, (tmp / "first.log").read_text()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    # A second daemon on the same socket sees the live one and refuses.
    second = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket", str(sock),
                             "--no-preload"], capture_output=True, text=True, timeout=120)
    assert second.returncode == DAEMON_EXIT
    assert "already answering" in second.stderr and "Traceback" not in second.stderr

    # Even with the socket file gone, the lock keeps a second daemon off this address.
    sock.unlink()
    third = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket", str(sock),
                            "--no-preload"], capture_output=True, text=True, timeout=120)
    assert third.returncode == DAEMON_EXIT
    assert f"(pid {first.pid}) is already serving" in third.stderr

    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0
    assert not paths.pid_path(sock).exists()
    assert not paths.lock_path(sock).exists()
    assert "daemon stopped" in (tmp / "first.log").read_text()
    client.close()


def test_stale_socket_is_replaced(tmp: Path, tiny_model_dir: Path) -> None:
    sock = tmp / "d.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(sock))  # what a crashed daemon leaves behind: a socket file nobody listens on
    crashed.close()
    assert sock.exists()
    process = serve("--model", str(tiny_model_dir), "--socket", str(sock), "--no-preload", log=tmp / "log")
    with Client(socket=sock) as client:
        wait_for(lambda: client.health() or process.poll() is not None, "the daemon")
        assert process.poll() is None, (tmp / "log").read_text()
        assert client.status()["pid"] == process.pid
    assert "replacing stale socket" in (tmp / "log").read_text()
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    process.terminate()
    assert process.wait(60) == 0
    assert not sock.exists()


def test_a_regular_file_in_the_way_is_left_alone(tmp: Path) -> None:
    precious = tmp / "notes.txt"
    precious.write_text("keep me\n")
    result = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket",
                             str(precious)], capture_output=True, text=True, timeout=120)
    assert result.returncode == DAEMON_EXIT and "is not a socket" in result.stderr
    assert precious.read_text() == "keep me\n"


def test_overlong_socket_path_is_a_clear_error(tmp: Path) -> None:
    sock = tmp / ("x" * 120) / "d.sock"
    result = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket", str(sock)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == DAEMON_EXIT
    assert "choose a shorter --socket" in result.stderr and "Traceback" not in result.stderr


def test_background_start_status_stop_via_cli(tmp: Path, tiny_model_dir: Path) -> None:
    sock = tmp / "bg.sock"
    started_ = cli("daemon", "start", "--socket", str(sock), "--model", str(tiny_model_dir), "--no-preload")
    assert started_.returncode == 0, started_.stderr
    assert "daemon running (pid" in started_.stdout
    pid = int(paths.pid_path(sock).read_text())
    try:
        assert paths.log_path(sock).exists()
        as_json = cli("status", "--socket", str(sock), "--json")
        assert as_json.returncode == 0, as_json.stderr
        status: dict[str, Any] = json.loads(as_json.stdout)
        assert status["pid"] == pid and status["socket"] == str(sock)
        plain = cli("daemon", "status", "--socket", str(sock))
        assert plain.returncode == 0
        assert f"daemon: running, pid {pid}" in plain.stdout and "memory:" in plain.stdout

        again = cli("daemon", "start", "--socket", str(sock))  # already running: reports it, starts nothing
        assert again.returncode == 0 and f"pid {pid}" in again.stdout
    finally:
        stopped = cli("daemon", "stop", "--socket", str(sock))
    assert stopped.returncode == 0 and f"(pid {pid}) stopped" in stopped.stdout
    gone = cli("status", "--socket", str(sock))
    assert gone.returncode == 5 and "not running" in gone.stderr and gone.stdout == ""
    assert cli("daemon", "stop", "--socket", str(sock)).stdout.startswith("no daemon was running")


def test_ensure_daemon_starts_one_and_reports_progress(tmp: Path, tiny_model_dir: Path) -> None:
    sock = tmp / "auto.sock"
    lines: list[str] = []
    client = ensure_daemon(model=str(tiny_model_dir), socket=sock, on_progress=lines.append, timeout=240)
    try:
        assert lines[0].startswith("starting daemon")
        status = client.status()
        assert status["state"] == "ready" and status["model"] == str(tiny_model_dir)
        result = client.infill(InfillRequest(prefix="y = ", suffix="\n", steps=2, max_tokens=4))
        assert result.finish_reason in ("stop", "length")
        # A second call finds the running daemon and starts nothing.
        lines.clear()
        ensure_daemon(socket=sock, on_progress=lines.append).close()
        assert lines == []
    finally:
        client.close()
        assert stop_daemon(DaemonConfig(socket=sock)) is not None
    assert not sock.exists()


def test_ensure_daemon_reports_why_it_cannot_start(tmp: Path) -> None:
    sock = tmp / ("y" * 120) / "d.sock"
    with pytest.raises(DaemonUnavailable) as info:
        ensure_daemon(socket=sock, timeout=60)
    assert "shorter --socket" in str(info.value)


def test_two_front_ends_starting_at_once_share_one_daemon(tmp: Path) -> None:
    sock = tmp / "race.sock"
    results: list[Any] = []

    def start() -> None:
        try:
            results.append(ensure_daemon(socket=sock, timeout=120))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert all(isinstance(r, Client) for r in results) and len(results) == 2, results
        pids = {r.status()["pid"] for r in results}
        assert len(pids) == 1
    finally:
        for r in results:
            if isinstance(r, Client):
                r.close()
        stop_daemon(DaemonConfig(socket=sock))
    assert not sock.exists()


def test_a_lost_start_race_is_told_by_its_code_not_its_words(tmp_path: Path) -> None:
    from diffgemma.runtime.api.daemon_config import (
        ADDRESS_TAKEN,
        START_FAILED,
        DaemonStartError,
        lost_start_race,
        read_start_report,
        write_start_report,
    )

    report = tmp_path / "start.json"
    write_start_report(report, DaemonStartError("whatever the wording", ADDRESS_TAKEN))
    reason = read_start_report(report)
    assert reason is not None and str(reason) == "whatever the wording" and reason.code == ADDRESS_TAKEN
    assert lost_start_race(reason)
    # The words of a race without its code: a real failure, not a race.
    write_start_report(report, DaemonStartError("another diffgemma daemon (pid 1) is already serving x"))
    reason = read_start_report(report)
    assert reason is not None and reason.code == START_FAILED and not lost_start_race(reason)
    assert not lost_start_race(None)
    assert read_start_report(tmp_path / "none.json") is None
    report.write_text("not json")
    assert read_start_report(report) is None


def test_serve_records_why_its_start_failed(tmp: Path, tiny_model_dir: Path) -> None:
    """A background daemon's failed start reaches the process that started it as a code."""
    from diffgemma.runtime.api.autostart import START_REPORT_FLAG
    from diffgemma.runtime.api.daemon_config import ADDRESS_TAKEN, START_FAILED, read_start_report

    sock = tmp / "d.sock"
    first = serve("--model", str(tiny_model_dir), "--socket", str(sock), "--no-preload", log=tmp / "first.log")
    with Client(socket=sock) as client:
        wait_for(lambda: client.health() or first.poll() is not None, "the first daemon")
    report = tmp / "race.json"
    lost = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket", str(sock), "--no-preload",
                           START_REPORT_FLAG, str(report)], capture_output=True, text=True, timeout=120)
    assert lost.returncode == DAEMON_EXIT
    reason = read_start_report(report)
    assert reason is not None and reason.code == ADDRESS_TAKEN

    precious = tmp / "notes.txt"
    precious.write_text("keep me\n")
    failed = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--socket", str(precious),
                             START_REPORT_FLAG, str(report)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == DAEMON_EXIT
    reason = read_start_report(report)
    assert reason is not None and reason.code == START_FAILED and "not a socket" in str(reason)
    first.terminate()
    assert first.wait(60) == 0
