"""Bad input to the real `diffgemma` command: one line on stderr, a distinct exit code, no traceback.

None of these reach a model: they fail before a request (or at the daemon start), so they run
without the tiny checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("diffgemma")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from diffgemma.cli.app import main; main()"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="dge-", dir="/tmp"))
    values = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    values.update(DIFFGEMMA_RUNTIME_DIR=str(base / "run"), DIFFGEMMA_STATE_DIR=str(base / "state"),
                  DIFFGEMMA_CONFIG_DIR=str(base / "cfg"), DIFFGEMMA_SOCKET=str(base / "none.sock"))
    yield values
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def run(args: list[str], env: dict[str, str], stdin: bytes | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*cli_command(), *args], input=stdin if stdin is not None else b"", env=env,
                          capture_output=True, timeout=120, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], code: int, fragment: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffgemma: error: "), err
    assert fragment in lines[0], err
    assert result.stdout == b""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "ok.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "bin.py").write_bytes(b"\x7fELF\x00\x01\x02")
    (tmp_path / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    (tmp_path / "pkg").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["infill", "missing.py:1"], 3, "no such file: missing.py"),
        (["infill", "pkg:1"], 3, "is a directory"),
        (["infill", "bin.py:1"], 3, "looks binary"),
        (["infill", "latin1.py:1"], 3, "not valid UTF-8"),
        (["infill", "ok.py:9"], 4, "line 9 is out of range"),
        (["infill", "ok.py:1:99"], 4, "column 99 is out of range"),
        (["infill", "ok.py:0"], 4, "start at 1"),
        (["infill", "ok.py:two"], 2, "malformed position"),
        (["infill", "ok.py"], 4, "no <FILL> marker"),
        (["infill", "ok.py:1", "--language", "klingon"], 2, "unknown language 'klingon'"),
        (["infill", "ok.py:1", "--bogus"], 2, "No such option: --bogus"),
        (["infill", "ok.py:1", "--steps", "0"], 2, "--steps"),
        (["infill", "-", "--apply"], 2, "--apply needs a FILE"),
        (["edit", "ok.py", "--selection", "1-x"], 2, "malformed selection"),
        (["edit", "ok.py", "--selection", "1-7"], 4, "line 7 is out of range"),
        (["edit", "ok.py", "--selection", "2-1"], 4, "ends before it starts"),
        (["edit", "ok.py", "--selection", "1-2", "--strength", "3"], 2, "--strength"),
        (["edit", "ok.py"], 2, "Missing option '--selection'"),
        (["edit", "missing.py", "-s", "1-1"], 3, "no such file"),
        (["watch", "nowhere"], 3, "no such file or directory: nowhere"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(files: Path, env: dict[str, str], args: list[str], code: int,
                                                  fragment: str) -> None:
    assert_one_line_error(run(args, env, cwd=files), code, fragment)


@pytest.mark.parametrize(
    ("stdin", "args", "code", "fragment"),
    [
        (b"", ["infill", "-"], 3, "stdin is empty"),
        (b"  \n\n", ["infill", "-"], 3, "stdin is empty"),
        (b"def f():\n    pass\n", ["infill", "-"], 4, "no <FILL> marker"),
        (b"a = <FILL>\n" * 33, ["infill", "-"], 4, "33 <FILL> markers"),
        (b"a = @@\n", ["infill", "-", "--marker", "<X>"], 4, "no <X> marker"),
        (b"\x00\x01binary", ["infill", "-"], 3, "stdin looks binary"),
        (b"caf\xe9 <FILL>\n", ["infill", "-"], 3, "stdin is not valid UTF-8"),
        (b"", ["edit", "-", "-s", "1-1"], 3, "stdin is empty"),
        (b"one\ntwo\n", ["edit", "-", "-s", "5-6"], 4, "line 5 is out of range"),
    ],
)
def test_bad_stdin(env: dict[str, str], stdin: bytes, args: list[str], code: int, fragment: str) -> None:
    assert_one_line_error(run(args, env, stdin=stdin), code, fragment)


def test_marker_precedence_flag_env_config_default(env: dict[str, str], tmp_path: Path) -> None:
    """--marker beats DIFFGEMMA_MARKER beats config.toml beats <FILL> (seen in the error each names)."""
    config = Path(env["DIFFGEMMA_CONFIG_DIR"])
    config.mkdir(parents=True)
    stdin = b"no marker here\n"
    assert_one_line_error(run(["infill", "-"], env, stdin), 4, "no <FILL> marker")
    (config / "config.toml").write_text('marker = "%%"\n')
    assert_one_line_error(run(["infill", "-"], env, stdin), 4, "no %% marker")
    with_env = {**env, "DIFFGEMMA_MARKER": "@@"}
    assert_one_line_error(run(["infill", "-"], with_env, stdin), 4, "no @@ marker")
    assert_one_line_error(run(["infill", "-", "--marker", "##"], with_env, stdin), 4, "no ## marker")


def test_bad_config_file(env: dict[str, str]) -> None:
    config = Path(env["DIFFGEMMA_CONFIG_DIR"])
    config.mkdir(parents=True)
    (config / "config.toml").write_text("steps = 'lots'\n")
    assert_one_line_error(run(["infill", "-"], env, b"<FILL>\n"), 2, "'steps' must be int")


def test_daemon_that_cannot_start(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    # The socket's directory would have to be inside a regular file: the daemon cannot bind.
    result = run(["infill", "-", "--socket", str(blocker / "d.sock"), "--model", str(tmp_path)], env,
                 b"x = <FILL>\n")
    err = result.stderr.decode()
    assert result.returncode == 5, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("diffgemma: error: ")


def test_help_explains_with_examples_and_exit_codes(env: dict[str, str]) -> None:
    top = run(["--help"], env)
    assert top.returncode == 0
    for text in ("infill", "edit", "watch", "Examples", "Exit codes", "printf 'def add(a, b)"):
        assert text in top.stdout.decode()
    for command in ("infill", "edit", "watch"):
        page = run([command, "--help"], env).stdout.decode()
        assert "Examples" in page and "Exit codes" in page and f"diffgemma {command}" in page


def test_cli_import_stays_free_of_torch_and_transformers() -> None:
    code = ("import sys, diffgemma.cli.app; "
            "bad = [m for m in ('torch', 'transformers', 'httpx', 'rich') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
