"""The client's side of the daemon's life: start one in the background, wait for it, find, stop and ask it.

A background daemon is `diffgemma serve` itself, run as ``python -m diffgemma.cli serve`` with
the flags ``DaemonConfig.argv`` writes: one command line, so a daemon a front end starts reads
the same flags, environment variables and defaults as one started by hand. It is detached from
the terminal and logs to the state directory; a start that fails says why in a start report
(see daemon_config), which tells a lost start race from a real failure by its code.

Torch-free: nothing here imports the daemon's own modules.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffgemma.runtime.api import paths
from diffgemma.runtime.api.client import Client, DaemonError
from diffgemma.runtime.api.daemon_config import (
    START_FAILED,
    DaemonConfig,
    DaemonStartError,
    lost_start_race,
    read_start_report,
)
from diffgemma.runtime.api.remote import tls_context

SERVE_COMMAND = ("-m", "diffgemma.cli", "serve")
START_REPORT_FLAG = "--start-report"  # a hidden `serve` flag: where a failed start records its code

Say = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


@dataclass
class Launch:
    """A background `serve` process and the report it writes when its start fails."""

    process: subprocess.Popen[bytes]
    report: Path

    def failure(self) -> DaemonStartError | None:
        return read_start_report(self.report)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.report.unlink()


def serve_command(config: DaemonConfig, report: Path | None = None) -> list[str]:
    """The command line of a `diffgemma serve` process with this configuration."""
    command = [sys.executable, *SERVE_COMMAND, *config.argv()]
    return [*command, START_REPORT_FLAG, str(report)] if report is not None else command


def spawn_background(config: DaemonConfig) -> Launch:
    """Start `diffgemma serve` detached from this terminal, logging to the state directory."""
    log_file = paths.log_path(config.address)
    # One report per start: two front ends starting at once must not read each other's.
    report = log_file.with_name(f"{log_file.stem}.start-{os.getpid()}-{secrets.token_hex(4)}.json")
    try:
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        raise DaemonStartError(f"cannot write the daemon log {log_file}: {exc.strerror}") from None
    with out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting daemon\n".encode())
        out.flush()
        try:
            process = subprocess.Popen(serve_command(config, report), stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=out, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise DaemonStartError(f"cannot start the daemon: {exc.strerror}") from None
    return Launch(process, report)


def client_for(config: DaemonConfig, timeout: float = 10.0) -> Client:
    if config.tcp:
        # Our own HTTPS daemon, reached by its listening address rather than the name in its
        # certificate: checked against that certificate itself.
        verify = tls_context(config.tls_cert, check_hostname=False) if config.tls_cert else None
        return Client(base_url=config.describe(), timeout=timeout, verify=verify)
    return Client(socket=config.socket_path(), timeout=timeout)


def wait_until_up(client: Client, launch: Launch, config: DaemonConfig, timeout: float, deadline: float) -> None:
    """Wait until a daemon answers on the address: ours, or the one that won a start race."""
    try:
        while not client.health():
            code = launch.process.poll()
            if code is not None and not client.health():
                failure = launch.failure()
                if not lost_start_race(failure):
                    reason = str(failure) if failure else (f"it exited with status {code}; "
                                                           f"see its log: {paths.log_path(config.address)}")
                    raise DaemonStartError(f"the daemon did not start: {reason}",
                                           failure.code if failure else START_FAILED)
                # Another front end started one at the same moment: wait for that one instead.
            if time.monotonic() > deadline:
                raise DaemonStartError(f"the daemon did not answer within {timeout:g} s; "
                                       f"see its log: {paths.log_path(config.address)}")
            time.sleep(0.05)
    finally:
        launch.discard()


def wait_for_load(client: Client, say: Say, deadline: float, detail: bool = True) -> dict[str, Any] | None:
    """Report a model load in progress; return the daemon's status once it has finished (or failed),
    or at the deadline (its state still "loading"); None when the daemon stopped answering (the
    request itself will say what is wrong). ``detail`` adds the time elapsed to the line, for a
    display that rewrites it in place (a log wants one line per load)."""
    last = ""
    while True:
        try:
            status = client.status()
        except DaemonError:
            return None
        if status.get("state") != "loading":
            return status
        line = f"loading model {status.get('loading_model') or status.get('model')}…"
        progress = status.get("load_progress")
        if progress and detail:
            line = f"{line} {progress}"
        if line != last:
            say(line)
            last = line
        if time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def start_daemon(client: Client, config: DaemonConfig, say: Say = _quiet, timeout: float = 300.0,
                 message: str = "starting daemon…", detail: bool = True) -> dict[str, Any] | None:
    """Make a daemon answer on ``client``'s address (starting one when none does) and wait while it
    loads its model; returns its status (None when it stopped answering). Raises DaemonStartError."""
    deadline = time.monotonic() + timeout
    if not client.health():
        say(message)
        wait_until_up(client, spawn_background(config), config, timeout, deadline)
    return wait_for_load(client, say, deadline, detail)


def start_background(config: DaemonConfig, on_progress: Say | None = None, timeout: float = 300.0) -> int:
    """Start a background daemon (unless one answers) and wait until it is ready; returns its pid."""
    say = on_progress or _quiet
    deadline = time.monotonic() + timeout
    with client_for(config) as client:
        if not client.health():
            say(f"starting daemon on {config.describe()}…")
            wait_until_up(client, spawn_background(config), config, timeout, deadline)
    # A TCP daemon writes its token file as it starts: a client made now reads it (the one above
    # was made before there was a token to send).
    with client_for(config) as client:
        status = wait_for_load(client, say, deadline, detail=False)
        return int((status or client.status()).get("pid") or 0)  # ours, or the one that won a start race


# --- find, stop, ask ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_daemon_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must be a diffgemma daemon (Linux /proc check)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return b"diffgemma" in cmdline


def find_pid(config: DaemonConfig) -> int | None:
    """The running daemon's pid: asked over the socket, else read from the pid file."""
    with client_for(config, timeout=5.0) as client:
        if client.health():
            with contextlib.suppress(Exception):  # a probe: the pid file below is the fallback
                answered = int(client.status().get("pid") or 0)
                if answered:
                    return answered
    pid = paths.read_pid(paths.pid_path(config.address))
    if pid and _alive(pid) and _is_daemon_process(pid):
        return pid
    return None


def stop_daemon(config: DaemonConfig, timeout: float = 15.0) -> int | None:
    """SIGTERM the daemon and wait for it to exit; returns its pid, or None when none was running."""
    pid = find_pid(config)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise DaemonStartError(f"the daemon (pid {pid}) did not exit within {timeout:g} s of SIGTERM")
        time.sleep(0.05)
    return pid


def daemon_status(config: DaemonConfig) -> dict[str, Any] | None:
    """The daemon's /v1/status, or None when no daemon answers."""
    with client_for(config) as client:
        try:
            return client.status()
        except DaemonError:
            return None
