"""An answer never adds syntax errors, end to end, and a seeded request repeats itself.

A real daemon serves the tiny random-weight checkpoint (whose fills are almost never code, so the
gate has work): the native API (one hole, several holes, a rewrite), llama.cpp's /infill, the CLI
(the README's demo on the shipped model, --apply, --allow-broken) and watch. Every answer is held
against its window with Python's parser and tree-sitter; with allow_broken the same requests do
bring errors in, which is what shows the gate at work.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import grammars_missing
from test_daemon_api import Daemon

from diffgemma.context.syntax_gate import added_errors
from diffgemma.runtime.api.protocol import EditRequest, InfillRequest

pytestmark = pytest.mark.skipif(grammars_missing() is not None, reason=str(grammars_missing()))

FAST = {"max_tokens": 8, "steps": 3}
PREFIX = "import os\n\n\ndef add(a, b):\n    total = a + b\n    "
SUFFIX = "\n    return total\n"
SEEDS = range(6)


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgg", dir="/tmp"))
    d = Daemon(tmp, tiny_model_dir, "--max-request-seconds", "0")
    d.wait_ready()
    yield d
    d.stop()


def test_every_infill_adds_no_error_and_says_when_it_was_cut(daemon: Daemon) -> None:
    """With repair (the default) and without: what repair leaves broken, the gate catches."""
    changed = broken = 0
    for seed in SEEDS:
        for refine in (None, False):
            result = daemon.client.infill(InfillRequest(prefix=PREFIX, suffix=SUFFIX, language="python", seed=seed,
                                                        refine=refine, **FAST))
            assert not added_errors([PREFIX, SUFFIX], [result.text], "python"), result
            # the gate's finish reason, unless a limit cut the answer too (max_tokens here): it wins
            assert (result.finish_reason in ("syntax", "length")) if result.reason else result.finish_reason != "syntax"
            changed += bool(result.reason)
        raw = daemon.client.infill(InfillRequest(prefix=PREFIX, suffix=SUFFIX, language="python", seed=seed,
                                                 refine=False, allow_broken=True, **FAST))
        assert raw.finish_reason != "syntax" and not raw.reason
        broken += bool(added_errors([PREFIX, SUFFIX], [raw.text], "python"))
    assert changed and broken  # the tiny model writes broken code: the gate is what keeps it out


def test_several_holes_and_rewrites_add_no_error(daemon: Daemon) -> None:
    pieces = ["def f(x):\n    y = ", "\n    z = ", "\n    return y + z\n"]
    selection = "    total = a + b\n"
    edit_fixed = ["def add(a, b):\n", "    return total\n"]
    for seed in range(3):
        holes = daemon.client.infill(InfillRequest(prefix="", suffix=pieces[-1], holes=[{"prefix": p}
                                     for p in pieces[:-1]], language="python", seed=seed, **FAST))
        fills = [h["text"] for h in holes.holes]
        assert holes.text == fills[0] and not added_errors(pieces, fills, "python"), holes
        edit = daemon.client.edit(EditRequest(prefix=edit_fixed[0], selection=selection, suffix=edit_fixed[1],
                                              language="python", seed=seed, strength=1.0, **FAST))
        assert not added_errors(edit_fixed, [edit.text], "python", [selection]), edit
        if edit.finish_reason == "syntax":
            assert edit.text == selection and edit.reason  # the code as it was, and why


def test_the_language_comes_from_the_path_or_the_text(daemon: Daemon) -> None:
    """No language named: the path's extension, else what the window reads like, picks the grammar
    (piped buffers and other clients' requests are judged too)."""
    for seed in range(3):
        for extra in ({"path": "pkg/util.py"}, {}):
            result = daemon.client.infill(InfillRequest(prefix=PREFIX, suffix=SUFFIX, seed=seed, **extra, **FAST))
            assert not added_errors([PREFIX, SUFFIX], [result.text], "python"), (extra, result)
    with daemon.http() as http:  # llama.cpp's /infill names no language
        for seed in range(3):
            body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "seed": seed}
            answer = http.post("/infill", json=body)
            assert answer.status_code == 200, answer.text
            assert not added_errors([PREFIX, SUFFIX], [answer.json()["content"]], "python")


def test_a_seeded_request_repeats_on_a_warm_daemon_with_drafts_on_and_off(daemon: Daemon) -> None:
    """The prefix cache is warm (or holds another prompt) on every repeat: the text is the same."""
    req = InfillRequest(prefix=PREFIX * 3, suffix=SUFFIX, language="python", seed=11, max_tokens=16, steps=4)
    texts = []
    for i in range(4):
        if i == 2:  # another prompt in between: the next one re-encodes part of it
            daemon.client.infill(InfillRequest(prefix=PREFIX * 3 + "x = 1\n", suffix="\n", seed=1, **FAST))
        drafts: list[object] = []
        stream = i % 2 == 1
        result = daemon.client.infill(InfillRequest(**{**req.to_json(), "stream": stream}),
                                      drafts.append if stream else None)
        assert result.finish_reason != "time"
        assert bool(drafts) == stream
        texts.append((result.text, result.finish_reason))
    assert len(set(texts)) == 1, texts


# --- the command line -------------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str], stdin: str | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "diffgemma.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _env(daemon: Daemon) -> dict[str, str]:
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(daemon.dir / "state"),
           "DIFFGEMMA_RUNTIME_DIR": str(daemon.dir), "DIFFGEMMA_CONFIG_DIR": str(daemon.dir / "config")}
    env.pop("DIFFGEMMA_MODEL", None)
    return env


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def test_the_readme_demo_prints_code_that_parses_or_says_why(tmp_path: Path) -> None:
    """`printf 'def add(a, b):\\n    <FILL>\\n' | diffgemma infill -` on the shipped model: the
    printed buffer parses, or it is the buffer without its marker and stderr says why."""
    root = Path(tempfile.mkdtemp(prefix="dgm", dir="/tmp"))
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(root / "state"), "DIFFGEMMA_RUNTIME_DIR": str(root),
           "DIFFGEMMA_CONFIG_DIR": str(root / "config")}
    env.pop("DIFFGEMMA_MODEL", None)
    try:
        for _ in range(3):
            run = _cli(["infill", "-"], env, stdin="def add(a, b):\n    <FILL>\n")
            assert run.returncode == 0, run.stderr
            if not _parses(run.stdout):
                assert run.stdout == "def add(a, b):\n    \n", run.stdout
                said = [ln for ln in run.stderr.splitlines() if "syntax error" in ln]
                assert len(said) == 1 and said[0].startswith("diffgemma: "), run.stderr
    finally:
        _cli(["daemon", "stop"], env)


def test_edit_apply_never_writes_a_broken_rewrite(daemon: Daemon, tmp_path: Path) -> None:
    source = "def add(a, b):\n    total = a + b\n    return total\n"
    path = tmp_path / "calc.py"
    env = _env(daemon)
    refused = written_broken = 0
    for seed in range(4):
        path.write_text(source)
        args = ["edit", str(path), "-s", "2-2", "--apply", "--seed", str(seed), "--strength", "1",
                "--steps", "3", "--socket", str(daemon.socket), "--model", daemon.model]
        run = _cli(args, env)
        assert run.returncode == 0, run.stderr
        after = path.read_text()
        assert after == source or _parses(after), after
        if after == source:
            refused += 1
            assert path.read_bytes() == source.encode()
        path.write_text(source)
        run = _cli([*args, "--allow-broken"], env)
        assert run.returncode == 0, run.stderr
        written_broken += not _parses(path.read_text())
    assert refused and written_broken


def test_watch_never_writes_a_fill_that_adds_errors(daemon: Daemon, tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    env = _env(daemon)
    watch = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "watch", str(folder), "--socket",
                              str(daemon.socket), "--model", daemon.model, "--steps", "3", "--max-tokens", "8",
                              "--no-backup"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # the watcher is up
        target = folder / "m.py"
        for seed_text in ("a", "b", "c"):
            before = f"{PREFIX}<FILL>{SUFFIX}# {seed_text}\n"
            target.write_text(before)
            deadline = time.monotonic() + 120
            while "<FILL>" in target.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            after = target.read_text()
            assert "<FILL>" not in after, "watch never filled the marker"
            head, tail = before.split("<FILL>")
            fill = after[len(head): len(after) - len(tail)]
            assert after.startswith(head) and after.endswith(tail)
            assert not added_errors([head, tail], [fill], "python"), fill
    finally:
        watch.terminate()
        watch.communicate(timeout=30)
