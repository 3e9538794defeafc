"""The real `diffgemma` CLI against a real daemon serving the tiny random-weight checkpoint.

One daemon per module, on a short temporary socket, with its runtime/state/config directories
in a temporary folder. The tiny model's weights are random, so the tests check structure (where
text goes, what else stays byte-for-byte, exit codes, what reaches stdout), not content.
Requests use DIFFGEMMA_STEPS / DIFFGEMMA_MAX_TOKENS from the environment to stay short (which
also exercises the environment fallbacks).
"""

from __future__ import annotations

import difflib
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffgemma.cli.edit_cmd import diff_lines

SOURCE = '''import os


def add(a, b):
    total = a + b
    return total


def scale(values, factor):
    out = []
    for value in values:
        out.append(value * factor)
    return out
'''


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("diffgemma")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from diffgemma.cli.app import main; main()"]


@dataclass
class Daemon:
    socket: Path
    env: dict[str, str]
    model: Path
    base: Path

    def run(self, args: list[str], stdin: bytes = b"", timeout: float = 300, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*cli_command(), *args], input=stdin, env=env or self.env, capture_output=True,
                              timeout=timeout, cwd=cwd)


def isolated_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    env.update(DIFFGEMMA_RUNTIME_DIR=str(base / "run"), DIFFGEMMA_STATE_DIR=str(base / "state"),
               DIFFGEMMA_CONFIG_DIR=str(base / "cfg"), DIFFGEMMA_STEPS="4", DIFFGEMMA_MAX_TOKENS="8")
    return env


def wait_ready(socket: Path, process: subprocess.Popen[bytes] | None, timeout: float = 240) -> None:
    from diffgemma.runtime.api.client import Client

    deadline = time.monotonic() + timeout
    with Client(socket=socket, timeout=10) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}")
            if client.health() and client.status().get("state") == "ready":
                return
            time.sleep(0.2)
    raise TimeoutError("the daemon did not become ready")


def stop_daemon(socket: Path, env: dict[str, str]) -> None:
    from diffgemma.runtime.api.client import Client

    stopped = subprocess.run([*cli_command(), "daemon", "stop", "--socket", str(socket)], env=env,
                             capture_output=True, timeout=60)
    with Client(socket=socket, timeout=5) as client:
        assert not client.health(), stopped.stderr.decode()  # no daemon left behind


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="dgc-", dir="/tmp"))  # AF_UNIX paths must stay short
    env = isolated_env(base)
    socket = base / "d.sock"
    log = open(base / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([*cli_command(), "serve", "--model", str(tiny_model_dir), "--socket", str(socket)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(socket, process)
        yield Daemon(socket, {**env, "DIFFGEMMA_SOCKET": str(socket)}, tiny_model_dir, base)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "calc.py").write_text(SOURCE)
    return tmp_path


def ok(result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result


# --- infill -----------------------------------------------------------------------------------


def test_infill_at_a_position_prints_only_the_text_and_leaves_the_file(daemon: Daemon, project: Path) -> None:
    path = project / "calc.py"
    plain = ok(daemon.run(["infill", f"{path}:6", "--socket", str(daemon.socket), "--seed", "3"]))
    assert path.read_text() == SOURCE
    assert not (project / "calc.py.diffgemma.bak").exists()
    # Not a terminal: no live view, no progress, nothing on stderr; stdout is just the text.
    assert plain.stderr == b""
    data = json.loads(ok(daemon.run(["infill", f"{path}:6:5", "--json", "--socket", str(daemon.socket)])).stdout)
    assert set(data) >= {"text", "range", "timings"}
    assert data["range"]["start"] == {"line": 6, "col": 5}
    inserted = data["text"]
    end_line = 6 + inserted.count("\n")
    end_col = (len(inserted) - inserted.rfind("\n")) if "\n" in inserted else 5 + len(inserted)
    assert data["range"]["end"] == {"line": end_line, "col": end_col}
    assert data["timings"]["steps"] >= 1 and data["applied"] is False


def test_infill_apply_writes_only_the_hole_keeps_crlf_mode_and_a_backup(daemon: Daemon, project: Path) -> None:
    path = project / "calc.py"
    original = SOURCE.replace("\n", "\r\n").encode()
    path.write_bytes(original)
    os.chmod(path, 0o640)
    data = json.loads(ok(daemon.run(["infill", f"{path}:5", "--apply", "--json", "--socket",
                                     str(daemon.socket)])).stdout)
    offset = SOURCE.index("    total = a + b") + len("    total = a + b")
    assert data["range"]["start"] == {"line": 5, "col": len("    total = a + b") + 1}
    expected = SOURCE[:offset] + data["text"].replace("\r\n", "\n") + SOURCE[offset:]
    written = path.read_bytes()
    assert written == expected.replace("\n", "\r\n").encode()
    assert written.count(b"\r\n") == written.count(b"\n")  # CRLF stays CRLF
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert (project / "calc.py.diffgemma.bak").read_bytes() == original
    assert data["applied"] is True and data["backup"] == str(project / "calc.py.diffgemma.bak")


def test_infill_apply_refuses_when_the_file_changes_underneath(daemon: Daemon, project: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process run: a write hook edits the file after the read, right before the commit check."""
    from typer.testing import CliRunner

    from diffgemma.cli import fileio
    from diffgemma.cli.app import app

    path = project / "calc.py"
    meanwhile = SOURCE + "\n# saved by the user meanwhile\n"
    monkeypatch.setattr(fileio, "before_commit_hooks", [lambda p: p.write_text(meanwhile)])
    result = CliRunner().invoke(app, ["infill", f"{path}:5", "--apply", "--socket", str(daemon.socket)],
                                env=daemon.env)
    assert result.exit_code == 7, result.output
    assert "changed since it was read" in result.output and "nothing written" in result.output
    assert "Traceback" not in result.output
    assert path.read_text() == meanwhile  # the user's save survives
    assert sorted(p.name for p in project.iterdir()) == ["calc.py"]  # no backup, no temp file


def test_infill_stdin_filter_fills_the_marker(daemon: Daemon) -> None:
    buffer = "def add(a, b):\n    <FILL>\n\n\nprint(add(1, 2))\n"
    out = ok(daemon.run(["infill", "-", "-l", "python", "--socket", str(daemon.socket)],
                        stdin=buffer.encode())).stdout.decode()
    before, after = buffer.split("<FILL>")
    assert out.startswith(before) and out.endswith(after) and "<FILL>" not in out


def test_infill_custom_marker_in_a_file(daemon: Daemon, project: Path) -> None:
    path = project / "calc.py"
    text = SOURCE.replace("    return total\n", "    return @@\n")
    path.write_text(text)
    out = ok(daemon.run(["infill", str(path), "--marker", "@@", "--socket", str(daemon.socket)])).stdout.decode()
    before, after = text.split("@@")
    assert out.startswith(before) and out.endswith(after) and "@@" not in out
    assert path.read_text() == text


def test_main_job_pipe(daemon: Daemon) -> None:
    """`printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -` (the model named by env)."""
    env = {**daemon.env, "DIFFGEMMA_MODEL": str(daemon.model)}
    result = subprocess.run(f"printf 'def add(a, b):\\n    <FILL>\\n' | {' '.join(cli_command())} infill -",
                            shell=True, env=env, capture_output=True, timeout=300)
    out = ok(result).stdout.decode()
    assert out.startswith("def add(a, b):\n    ") and out.endswith("\n") and "<FILL>" not in out


# --- edit -------------------------------------------------------------------------------------


def test_edit_prints_a_diff_that_touches_only_the_selection(daemon: Daemon, project: Path) -> None:
    path = project / "calc.py"
    result = ok(daemon.run(["edit", "calc.py", "--selection", "11-12", "-i", "use a comprehension",
                            "--socket", str(daemon.socket)], cwd=project))
    assert path.read_text() == SOURCE
    diff = result.stdout.decode()
    if diff:  # the random model might, in principle, return the selection unchanged
        assert diff.startswith("--- a/calc.py\n+++ b/calc.py\n@@ ")
        assert "\x1b[" not in diff  # not a terminal: no color codes
        copy = project / "patched.py"
        copy.write_text(SOURCE)
        subprocess.run(["patch", "-s", str(copy)], input=result.stdout, check=True, timeout=30)
        patched = copy.read_text()
        lines = SOURCE.split("\n")
        head, tail = "\n".join(lines[:10]) + "\n", "\n" + "\n".join(lines[12:])
        assert patched.startswith(head) and patched.endswith(tail)


def test_edit_apply_rewrites_the_span_in_place(daemon: Daemon, project: Path) -> None:
    path = project / "calc.py"
    data = json.loads(ok(daemon.run(["edit", str(path), "-s", "5:5-5:18", "--strength", "0.8", "--apply",
                                     "--json", "--socket", str(daemon.socket)])).stdout)
    assert data["original"] == "total = a + b"
    start = SOURCE.index("total = a + b")
    expected = SOURCE[:start] + data["text"] + SOURCE[start + len("total = a + b"):]
    assert path.read_text() == expected
    assert (project / "calc.py.diffgemma.bak").read_text() == SOURCE
    assert data["range"]["start"] == {"line": 5, "col": 5}
    assert data["diff"] == "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
        for line in difflib.unified_diff(diff_lines(SOURCE), diff_lines(expected), f"{path}", f"{path}")
    )


def test_edit_stdin_prints_the_rewritten_buffer(daemon: Daemon) -> None:
    out = ok(daemon.run(["edit", "-", "--selection", "2-2", "--socket", str(daemon.socket)],
                        stdin=b"first line\nrewrite me\nlast line\n")).stdout.decode()
    assert out.startswith("first line\n") and out.endswith("\nlast line\n")


# --- the live view ----------------------------------------------------------------------------


# Any frame of the live view that shows a draft, whatever its step: on a busy machine the
# first frame drawn can be a late step, so no test may wait for a particular one.
ANY_DRAFT = r"step \d+"


def run_on_pty(args: list[str], env: dict[str, str], timeout: float = 300,
               interrupt_on: str | None = None, lines: int = 40) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal of 160 columns and ``lines`` lines; returns
    (exit code, everything drawn).

    With `interrupt_on` (a regular expression), send SIGINT (Ctrl-C) as soon as text matching
    it has been drawn."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    process = subprocess.Popen([*cli_command(), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               env={**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": str(lines)},
                               close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        data = b""
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                data = b""
        if data:
            chunks.append(data)
            if interrupt_on is not None and re.search(interrupt_on.encode(), b"".join(chunks)):
                process.send_signal(signal.SIGINT)
                interrupt_on = None
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(master)
    return process.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_live_view_shows_the_drafts_on_a_terminal(daemon: Daemon, project: Path) -> None:
    code, screen = run_on_pty(["infill", f"{project / 'calc.py'}:6", "--socket", str(daemon.socket)], daemon.env)
    assert code == 0, screen
    steps = [int(n) for n in re.findall(r"step (\d+)", screen)]
    assert steps and steps == sorted(steps) and steps[-1] >= 1, screen  # frames for successive drafts
    assert "diffgemma" in screen and "calc.py:6" in screen  # the panel's title
    assert "return total" in screen  # the context around the hole is drawn
    assert "Traceback" not in screen
    code, quiet = run_on_pty(["infill", f"{project / 'calc.py'}:6", "--quiet", "--socket",
                              str(daemon.socket)], daemon.env)
    assert code == 0 and "step " not in quiet and "diffgemma" not in quiet


def test_ctrl_c_during_a_request_is_exit_130_without_a_traceback(daemon: Daemon, project: Path) -> None:
    # The most steps and tokens the daemon takes, so the request is still running however late
    # the first draft is drawn (the tiny random model never settles early).
    from diffgemma.runtime.api.protocol import MAX_STEPS

    env = {**daemon.env, "DIFFGEMMA_STEPS": str(MAX_STEPS), "DIFFGEMMA_MAX_TOKENS": "64"}
    code, screen = run_on_pty(["infill", f"{project / 'calc.py'}:6", "--socket", str(daemon.socket)], env,
                              interrupt_on=ANY_DRAFT)
    assert code == 130, screen
    assert "diffgemma: interrupted" in screen and "Traceback" not in screen
    assert (project / "calc.py").read_text() == SOURCE


# --- watch ------------------------------------------------------------------------------------


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        into.put(raw.decode("utf-8", "replace"))


def _wait_for(lines: queue.Queue[str], pattern: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s; saw {seen!r}")


def test_watch_fills_markers_in_saved_files_and_stops_on_ctrl_c(daemon: Daemon, project: Path) -> None:
    process = subprocess.Popen([*cli_command(), "watch", str(project), "--socket", str(daemon.socket)],
                               env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, out), daemon=True).start()
    threading.Thread(target=_lines, args=(process.stderr, err), daemon=True).start()
    try:
        _wait_for(err, r"watching .* for <FILL>", 120)
        path = project / "todo.py"
        saved = ("import os\n\n\ndef add(a, b):\n    return <FILL>\n\n\n"
                 "# diffgemma: double every value\n"
                 "def scale(values):\n    out = []\n    for v in values:\n        out.append(v)\n    return out\n\n\n"
                 "print('done')\n")
        path.write_text(saved)
        seen = _wait_for(out, r"todo\.py:\d+ rewrote", 240)
        fills = [line for line in seen if "todo.py" in line]
        assert re.fullmatch(r".*todo\.py:5 filled \d+ chars in \d+ ms\n", fills[0])
        assert re.fullmatch(r".*todo\.py:\d+ rewrote \d+ lines \(\d+ chars\) in \d+ ms(; removed \d+ of its \d+ lines, "
                            r"backup .*todo\.py\.diffgemma\.bak)?\n", fills[1])
        text = path.read_text()
        assert "<FILL>" not in text and "diffgemma:" not in text
        assert text.startswith("import os\n\n\ndef add(a, b):\n    return ")
        assert text.endswith("\n\n\nprint('done')\n")
        assert (project / "todo.py.diffgemma.bak").read_text() == saved
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0
    assert "stopped watching" in "".join(list(err.queue))


# --- daemon start-up --------------------------------------------------------------------------


def test_the_daemon_starts_when_absent_and_is_reused(tiny_model_dir: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="dga-", dir="/tmp"))
    env = isolated_env(base)
    socket = base / "auto.sock"
    args = ["infill", "-", "--model", str(tiny_model_dir), "--socket", str(socket)]
    try:
        first = subprocess.run([*cli_command(), *args], input=b"x = <FILL>\n", env=env, capture_output=True,
                               timeout=300)
        assert first.returncode == 0, first.stderr.decode()
        assert first.stdout.startswith(b"x = ") and first.stdout.endswith(b"\n")
        # Progress goes to stderr (on a pipe too; --quiet silences it).
        assert b"starting daemon" in first.stderr
        second = subprocess.run([*cli_command(), *args], input=b"y = <FILL>\n", env=env, capture_output=True,
                                timeout=300)
        assert second.returncode == 0 and b"starting daemon" not in second.stderr
    finally:
        stop_daemon(socket, env)
        shutil.rmtree(base, ignore_errors=True)


def test_a_model_that_cannot_load_is_exit_6(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="dgm-", dir="/tmp"))
    env = isolated_env(base)
    socket = base / "bad.sock"
    try:
        result = subprocess.run([*cli_command(), "infill", "-", "--model", str(tmp_path / "no-such-model"),
                                 "--socket", str(socket), "--quiet"], input=b"x = <FILL>\n", env=env,
                                capture_output=True, timeout=300)
        err = result.stderr.decode()
        assert result.returncode == 6, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert err.startswith("diffgemma: error: ") and "no-such-model" in err
    finally:
        stop_daemon(socket, env)
        shutil.rmtree(base, ignore_errors=True)
