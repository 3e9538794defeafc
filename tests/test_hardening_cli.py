"""Issue 13, the command line: what a careless user or an attacker can hand `diffgemma`.

Numbers are ASCII digits within range, config values are checked like flags, limits are checked
before any daemon is asked, an unusable runtime directory is an error (never a fallback), writes
keep symlinks and hard links and refuse read-only files (the tests run as root, which could write
them anyway), and the daemon's typed errors map to exit codes by their code alone. Every error is
one line on stderr. The end-to-end writes run the real CLI against a real daemon serving the
tiny random-weight checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket as socketlib
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_cli_commands import SOURCE, Daemon, cli_command, isolated_env, wait_ready

from diffgemma.cli import fileio
from diffgemma.cli.errors import ExitCode, FileProblem, UsageProblem, classify, exit_code_for
from diffgemma.runtime.api import client as client_mod
from diffgemma.runtime.api.errors import ErrorCode, error_body
from diffgemma.runtime.api.protocol import MAX_STEPS, MAX_TOKENS_LIMIT


def run(args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*cli_command(), *args], input=stdin, env=env, capture_output=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[bytes], code: int, fragment: str = "") -> str:
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffgemma: error: "), err
    assert fragment in lines[0], err
    return lines[0]


class Listener:
    """A Unix socket that listens but never answers: it tells whether anyone connected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.setblocking(False)

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[dict[str, str], Listener, Path]]:
    """An isolated environment whose socket is a listener no request may reach."""
    base = Path(tempfile.mkdtemp(prefix="dgh-", dir="/tmp"))
    env = isolated_env(base)
    listener = Listener(base / "l.sock")
    env["DIFFGEMMA_SOCKET"] = str(listener.path)
    (tmp_path / "f.py").write_text("def f(x):\n    return x\n\n\nprint(f(1))\n")
    try:
        yield env, listener, tmp_path
    finally:
        listener.close()
        shutil.rmtree(base, ignore_errors=True)


# --- numbers ----------------------------------------------------------------------------------

HUGE = "9" * 5000


@pytest.mark.parametrize("position", ["٣", "２", "3:٣", "3:２", "𝟑", HUGE, f"3:{HUGE}", "99999999999"])
def test_positions_are_ascii_digits_within_range(offline: tuple[dict[str, str], Listener, Path],
                                                 position: str) -> None:
    env, listener, where = offline
    one_line_error(run(["infill", f"{where / 'f.py'}:{position}"], env), ExitCode.USAGE)
    assert not listener.connected()


@pytest.mark.parametrize("selection", ["١-٢", "1-٢", "١:1-2", "1-２", f"1-{HUGE}", f"{HUGE}-1", "1:1-2:" + HUGE])
def test_selections_are_ascii_digits_within_range(offline: tuple[dict[str, str], Listener, Path],
                                                  selection: str) -> None:
    env, listener, where = offline
    one_line_error(run(["edit", str(where / "f.py"), "-s", selection], env), ExitCode.USAGE)
    assert not listener.connected()


def test_unicode_whitespace_is_not_part_of_a_selection() -> None:
    with pytest.raises(UsageProblem):
        fileio.parse_selection("1\u2003-2")  # an em space
    assert fileio.parse_selection(" 1 - 2 ") == (1, None, 2, None)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--steps", str(MAX_STEPS + 1)), ("--steps", "99999"), ("--max-tokens", str(MAX_TOKENS_LIMIT + 1)),
     ("--max-tokens", "99999"), ("--steps", "٣"), ("--max-tokens", "２"), ("--seed", HUGE),
     ("--context-chars", "199"), ("--context-chars", "-5"), ("--steps", "0")],
)
def test_limits_are_checked_before_the_daemon_is_asked(offline: tuple[dict[str, str], Listener, Path],
                                                       flag: str, value: str) -> None:
    env, listener, where = offline
    one_line_error(run(["infill", f"{where / 'f.py'}:2", flag, value], env), ExitCode.USAGE, flag)
    assert not listener.connected()


def test_environment_values_are_checked_like_flags(offline: tuple[dict[str, str], Listener, Path]) -> None:
    env, listener, where = offline
    for name, value in (("DIFFGEMMA_STEPS", "99999"), ("DIFFGEMMA_MAX_TOKENS", "٣")):
        one_line_error(run(["infill", f"{where / 'f.py'}:2"], {**env, name: value}), ExitCode.USAGE, name)
    assert not listener.connected()


@pytest.mark.parametrize(
    ("line", "fragment"),
    [("context_chars = -5", "context_chars"), ("context_chars = 0", "context_chars"),
     ("context_chars = 199", "context_chars"), ("steps = 99999", "steps"), ("steps = 0", "steps"),
     (f"max_tokens = {MAX_TOKENS_LIMIT + 1}", "max_tokens"), ("seed = -1", "seed"),
     (f"steps = {'9' * 4400}", "bad config file")],
)
def test_config_values_are_checked_like_flags(offline: tuple[dict[str, str], Listener, Path],
                                              line: str, fragment: str) -> None:
    env, listener, where = offline
    config = Path(env["DIFFGEMMA_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(line + "\n")
    one_line_error(run(["infill", f"{where / 'f.py'}:2"], env), ExitCode.USAGE, fragment)
    assert not listener.connected()


# --- the runtime directory ----------------------------------------------------------------------


def test_a_runtime_directory_under_a_regular_file_is_exit_5(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    env.update(XDG_RUNTIME_DIR=str(blocker / "run"), DIFFGEMMA_STATE_DIR=str(tmp_path / "state"),
               DIFFGEMMA_CONFIG_DIR=str(tmp_path / "cfg"))
    (tmp_path / "f.py").write_text("x = 1\n")
    shared = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}" / "diffgemma" / "daemon.sock"
    existed = shared.exists()
    for args in (["infill", f"{tmp_path / 'f.py'}:1"], ["edit", str(tmp_path / "f.py"), "-s", "1-1"]):
        line = one_line_error(run(args, env), ExitCode.DAEMON, "runtime directory")
        assert str(blocker) in line
    assert not (tmp_path / "state" / "run").exists()  # no other place was tried
    assert shared.exists() == existed  # nothing was made in the shared temporary directory
    # the same when the variable itself names the file
    one_line_error(run(["infill", f"{tmp_path / 'f.py'}:1"], {**env, "XDG_RUNTIME_DIR": str(blocker)}),
                   ExitCode.DAEMON, "XDG_RUNTIME_DIR")


# --- exit codes from typed errors -------------------------------------------------------------

EXPECTED_EXIT = {
    ErrorCode.MODEL_LOAD_FAILED: ExitCode.MODEL,
    ErrorCode.MODEL_NOT_FOUND: ExitCode.MODEL,
    ErrorCode.NO_MODEL: ExitCode.MODEL,
    ErrorCode.ENGINE_UNAVAILABLE: ExitCode.MODEL,  # the vLLM servers behind the daemon do not answer
    ErrorCode.UNAUTHORIZED: ExitCode.DAEMON,
    ErrorCode.FORBIDDEN: ExitCode.DAEMON,
}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_wire_error_code_has_its_exit_code(code: ErrorCode) -> None:
    response = httpx.Response(400, json=error_body(code, "the model could not load\nsecond line"))
    error = client_mod._error_from_response(response)
    assert error.code is code and error.status == 400
    mapped = classify(error)
    assert mapped is not None and mapped.code == EXPECTED_EXIT.get(code, ExitCode.REQUEST)
    assert "\n" not in str(mapped)


def test_no_decision_rests_on_the_wording_of_a_message() -> None:
    # the words of a model-load failure, without its code: a failed request / a daemon problem
    worded = client_mod.DaemonError("daemon answered 500: cannot load model x", status=500)
    assert classify(worded).code == ExitCode.REQUEST  # type: ignore[union-attr]
    down = client_mod.DaemonUnavailable("the daemon did not start: ModelLoadError: cannot load model")
    assert classify(down).code == ExitCode.DAEMON  # type: ignore[union-attr]
    # and the code decides whatever the words say
    coded = client_mod.DaemonError("daemon answered 500: something", status=500, code=ErrorCode.MODEL_LOAD_FAILED)
    assert classify(coded).code == ExitCode.MODEL  # type: ignore[union-attr]
    # a code this version does not know is read as none: a failed request
    assert exit_code_for(client_mod._error_from_response(httpx.Response(400, json={
        "error": {"message": "m", "type": "t", "code": "a_code_from_a_newer_daemon"}}))) == ExitCode.REQUEST
    # a daemon that could not start says why with a code too (its log's error[code] line)
    start = client_mod.DaemonUnavailable("the daemon did not start: x", code=client_mod._wire_code("model_load_failed"))
    assert classify(start).code == ExitCode.MODEL  # type: ignore[union-attr]
    assert client_mod._wire_code("start_failed") is None


def test_the_old_error_shape_and_plain_text_are_still_read() -> None:
    old = client_mod._error_from_response(httpx.Response(503, json={"error": "queue full\nmore"}))
    assert old.code is None and old.status == 503 and str(old) == "daemon answered 503: queue full"
    text = client_mod._error_from_response(httpx.Response(500, text="Internal Server Error"))
    assert text.code is None and "Internal Server Error" in str(text)
    unknown = client_mod._error_from_response(
        httpx.Response(400, json={"error": {"message": "m", "type": "t", "code": "from_the_future"}}))
    assert unknown.code is None and str(unknown) == "daemon answered 400: m"


def test_stream_lines_of_unknown_types_and_fields_are_skipped() -> None:
    drafts: list[dict[str, object]] = []
    parse = client_mod._parse_stream_line
    assert parse(json.dumps({"type": "draft", "step": 1, "text": "a", "final": True, "new": 1}),
                 drafts.append) is None
    assert parse(json.dumps({"type": "heartbeat"}), drafts.append) is None
    assert parse(json.dumps({"type": "canvas_final", "text": "x"}), drafts.append) is None
    assert [d["step"] for d in drafts] == [1]
    line = json.dumps({"type": "error", "error": error_body(ErrorCode.QUEUE_FULL, "busy")["error"], "status": 503})
    with pytest.raises(client_mod.DaemonError) as caught:
        parse(line, None)
    assert caught.value.code is ErrorCode.QUEUE_FULL and caught.value.status == 503
    with pytest.raises(client_mod.DaemonError) as old:
        parse(json.dumps({"type": "error", "error": "cancelled"}), None)
    assert old.value.code is None and str(old.value) == "cancelled"


# --- writes: symlinks, hard links, read-only files ----------------------------------------------


def test_write_through_a_symlink_edits_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "a.py"
    real.parent.mkdir()
    real.write_text("x = 1\n")
    link = tmp_path / "link.py"
    link.symlink_to(real)
    fileio.write_source(fileio.read_source(link), "x = 2\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "x = 2\n"
    assert (tmp_path / "link.py.diffgemma.bak").read_text() == "x = 1\n"
    assert not list(tmp_path.glob(".*diffgemma-tmp*")) and not list(real.parent.glob(".*diffgemma-tmp*"))


def test_write_keeps_hard_links_and_the_backup_comes_first(tmp_path: Path) -> None:
    first = tmp_path / "a.py"
    first.write_text("x = 1\n")
    second = tmp_path / "b.py"
    os.link(first, second)
    inode = first.stat().st_ino
    fileio.write_source(fileio.read_source(first), "x = 2\ny = 3\n")
    assert second.read_text() == first.read_text() == "x = 2\ny = 3\n"
    assert first.stat().st_ino == second.stat().st_ino == inode and first.stat().st_nlink == 2
    assert (tmp_path / "a.py.diffgemma.bak").read_text() == "x = 1\n"
    # shorter text: the old tail does not survive the in-place write
    fileio.write_source(fileio.read_source(second), "z\n")
    assert first.read_bytes() == b"z\n"


@pytest.mark.parametrize("mode", [0o444, 0o555, 0o044, 0o400])
def test_a_file_without_owner_write_permission_is_refused_even_as_root(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ro.py"
    path.write_text("x = 1\n")
    path.chmod(mode)
    source = fileio.read_source(path)
    with pytest.raises(FileProblem, match="read-only"):
        fileio.write_source(source, "x = 2\n")
    assert path.read_text() == "x = 1\n" and stat.S_IMODE(path.stat().st_mode) == mode
    assert not (tmp_path / "ro.py.diffgemma.bak").exists()


def test_apply_to_a_read_only_file_is_exit_3_before_any_request(offline: tuple[dict[str, str], Listener, Path]
                                                                 ) -> None:
    env, listener, where = offline
    path = where / "f.py"
    path.chmod(0o444)
    one_line_error(run(["infill", f"{path}:2", "--apply"], env), ExitCode.FILE, "read-only")
    one_line_error(run(["edit", str(path), "-s", "1-2", "--apply"], env), ExitCode.FILE, "read-only")
    assert not listener.connected()
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="dgw-", dir="/tmp"))
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


def test_apply_through_links_with_the_real_cli(daemon: Daemon, tmp_path: Path) -> None:
    real = tmp_path / "src" / "calc.py"
    real.parent.mkdir()
    real.write_text(SOURCE)
    link = tmp_path / "calc_link.py"
    link.symlink_to(real)
    twin = tmp_path / "calc_twin.py"
    os.link(real, twin)
    # --allow-broken: the rewrite is written whatever it is (the syntax gate would keep the text)
    result = daemon.run(["edit", str(link), "-s", "5-6", "--apply", "--quiet", "--allow-broken"])
    assert result.returncode == 0, result.stderr.decode()
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert twin.read_text() == real.read_text()  # one text under every name
    assert twin.stat().st_ino == real.stat().st_ino
    assert (tmp_path / "calc_link.py.diffgemma.bak").read_text() == SOURCE
    # watch writes the same way: fill a marker in a hard-linked file
    marked = tmp_path / "w" / "m.py"
    marked.parent.mkdir()
    marked.write_text("def add(a, b):\n    return <FILL>\n")
    other = tmp_path / "m_other.py"
    os.link(marked, other)
    result = daemon.run(["infill", str(marked), "--apply", "--quiet"])
    assert result.returncode == 0, result.stderr.decode()
    assert "<FILL>" not in marked.read_text() and other.read_text() == marked.read_text()


@pytest.mark.parametrize("port", ["٣", "２０８７", "0", "70000", HUGE])
def test_the_language_server_port_is_an_ascii_number_in_range(offline: tuple[dict[str, str], Listener, Path],
                                                              port: str) -> None:
    env, _listener, _where = offline
    one_line_error(run(["lsp", "--tcp", "--port", port], env), ExitCode.USAGE, "--port")


def test_watch_refuses_a_read_only_file_before_asking_the_daemon(offline: tuple[dict[str, str], Listener, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from diffgemma.cli import options as opt
    from diffgemma.cli.watch_cmd import FileWatcher

    env, listener, where = offline
    monkeypatch.setenv("DIFFGEMMA_SOCKET", env["DIFFGEMMA_SOCKET"])
    monkeypatch.setenv("DIFFGEMMA_CONFIG_DIR", env["DIFFGEMMA_CONFIG_DIR"])
    path = where / "todo.py"
    path.write_text("def add(a, b):\n    return <FILL>\n")
    path.chmod(0o444)
    watcher = FileWatcher(opt.resolve(quiet=True))
    with pytest.raises(FileProblem, match="read-only"):
        watcher.handle(path)
    assert not listener.connected()
    assert path.read_text() == "def add(a, b):\n    return <FILL>\n"
