"""A team server end to end: a real daemon process on TCP with HTTPS (a self-signed certificate made
here by the openssl command line) and a tokens file, reached by real clients: the Python client, the
`diffgemma` command line and the language server (pytest-lsp), all through `--url` / ``url``.

Nothing here is timed: supersession is observed through finish reasons and the /v1/status counters.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lsprotocol import types
from test_daemon_api import free_port, wait_for
from test_lsp_server import PY, assert_inline_items, lsp_session
from vllm_harness import ROOT as _ROOT  # noqa: F401  (puts benchmarks/ on sys.path)
from vllm_side.launch import stop_process

from diffgemma.runtime.api.client import Client, DaemonError, DaemonUnavailable
from diffgemma.runtime.api.errors import ErrorCode
from diffgemma.runtime.api.protocol import InfillRequest
from diffgemma.runtime.api.remote import tls_context

DIFFGEMMA = str(Path(sys.executable).with_name("diffgemma"))
ALICE, BOB, CAROL = "alice-" + "a" * 26, "bob-" + "b" * 28, "carol-" + "c" * 26
TOKENS = f"# the team\nalice {ALICE}\nbob {BOB}\n"
# Keeps the worker busy until it is cancelled (the most steps, stopping rules no random model meets).
BUSY = {"steps": 1024, "max_tokens": 32, "options": {"stability_threshold": 64, "confidence_threshold": 1e-9}}
QUICK = {"prefix": "y = ", "suffix": "\n", "steps": 2, "max_tokens": 4}
WAIT_S = 180.0  # the longest wait here (test_daemon_api's default is 120 s)
COUNTS = ("requests", "completed", "cancelled", "superseded", "errors", "generated_tokens")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command line makes the test certificate")


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, made now (valid for a day)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


def isolated_env(root: Path) -> dict[str, str]:
    """A front end's environment with folders of its own: any daemon it started would show there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFGEMMA_")}
    for name in ("run", "state", "config"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env.update(DIFFGEMMA_RUNTIME_DIR=str(root / "run"), DIFFGEMMA_STATE_DIR=str(root / "state"),
               DIFFGEMMA_CONFIG_DIR=str(root / "config"))
    return env


def nothing_started(root: Path) -> bool:
    """No daemon was started from ``root``'s environment: no socket, lock, pid file or log."""
    return not any((root / "run").iterdir()) and not any((root / "state").glob("daemon*"))


@dataclass
class TeamDaemon:
    root: Path
    url: str
    cert: Path
    tokens: Path
    process: subprocess.Popen[bytes]

    @property
    def owner_token(self) -> str:
        return (self.root / "state" / "token").read_text().strip()

    def client(self, token: str | None) -> Client:
        return Client(base_url=self.url, token=token or "", verify=tls_context(self.cert), timeout=300)

    def http(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=tls_context(self.cert), timeout=300)

    def status(self, token: str | None = None) -> dict[str, Any]:
        with self.client(token or self.owner_token) as client:
            return client.status()

    def counts(self, name: str) -> dict[str, int]:
        usage = self.status()["developers"][name]
        return {key: usage[key] for key in COUNTS}

    def cli(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DIFFGEMMA, *args], capture_output=True, text=True, timeout=300, env=env,
                              input="def add(a, b):\n    <FILL>\n")


@pytest.fixture(scope="module")
def team(tiny_model_dir: Path) -> Iterator[TeamDaemon]:
    root = Path(tempfile.mkdtemp(prefix="dgt", dir="/tmp"))
    cert, key = self_signed(root)
    tokens = private(root / "tokens", TOKENS)
    port = free_port()
    env = isolated_env(root)
    with open(root / "daemon.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(tiny_model_dir),
                                    "--port", str(port), "--tokens-file", str(tokens), "--tls-cert", str(cert),
                                    "--tls-key", str(key), "--queue", "4"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    daemon = TeamDaemon(root, f"https://127.0.0.1:{port}", cert, tokens, process)
    try:
        with daemon.client(None) as probe:
            wait_for(lambda: probe.health() or process.poll() is not None, "the daemon to answer", WAIT_S)
        assert process.poll() is None, (root / "daemon.log").read_text()[-2000:]
        wait_for(lambda: daemon.status()["state"] == "ready", "the model to load", WAIT_S)
        yield daemon
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except Exception as exc:  # handed to the test, which asserts on it
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


# --- TLS and tokens --------------------------------------------------------------------------------


def test_https_with_a_developers_token(team: TeamDaemon) -> None:
    with team.client(ALICE) as alice:
        result = alice.infill(InfillRequest(prefix="x = ", suffix="\n", steps=2, max_tokens=4))
        assert result.finish_reason in ("stop", "length")
        mine = alice.status()
    assert mine["url"] == team.url and mine["developer"] == "alice"
    assert list(mine["developers"]) == ["alice"]  # a developer sees their own counters only
    owner = team.status()
    assert owner["developer"] is None and list(owner["developers"]) == ["alice", "bob"]
    # Any name reaches an HTTPS daemon (a rebound name cannot pass the certificate check).
    with team.http(BOB) as http:
        assert http.get("/v1/status", headers={"Host": "gpu-box.example.com"}).json()["developer"] == "bob"
    # The name in the certificate is checked: localhost is in it, and the client checks it.
    with Client(base_url=team.url.replace("127.0.0.1", "localhost"), token=BOB, verify=tls_context(team.cert)) as c:
        assert c.status()["developer"] == "bob"


@pytest.mark.parametrize("token", [None, "", ALICE[:-1], ALICE + "x", CAROL, "Bearer"])
def test_a_missing_wrong_or_unknown_token_is_refused(team: TeamDaemon, token: str | None) -> None:
    with team.http(token) as http:
        response = http.get("/v1/status")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
        assert http.post("/v1/infill", json=QUICK).status_code == 401
        assert http.get("/health").status_code == 200  # /health needs no token


def test_plain_http_and_an_unknown_certificate_do_not_connect(team: TeamDaemon) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(team.url.replace("https:", "http:") + "/health", timeout=30)
    with Client(base_url=team.url, token=ALICE) as client, pytest.raises(DaemonUnavailable) as info:
        client.status()  # the system's store does not know a certificate made a minute ago
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) and "--ca-cert" in str(info.value)
    assert "\n" not in str(info.value)
    with team.client("nobody-" + "n" * 20) as client, pytest.raises(DaemonError) as refused:
        client.status()
    assert refused.value.code is ErrorCode.UNAUTHORIZED


# --- per-developer counters and supersession -----------------------------------------------------------


def test_counters_and_supersession_are_per_developer(team: TeamDaemon) -> None:
    alice_before, bob_before, superseded = team.counts("alice"), team.counts("bob"), team.status()["superseded"]
    with team.http(ALICE) as alice_http, team.http(BOB) as bob_http:
        busy, busy_box = in_thread(lambda: alice_http.post("/v1/infill", json={
            "prefix": "x = ", "suffix": "\n", "id": "alice-busy", "client": "editor", **BUSY}))
        wait_for(lambda: team.status()["running"] == "alice-busy", "alice's request to run", WAIT_S)
        # bob's editor uses the same client key: his request waits, alice's keeps running
        bob, bob_box = in_thread(lambda: bob_http.post("/v1/infill", json={**QUICK, "client": "editor", "id": "b1"}))
        wait_for(lambda: team.status()["queue_length"] == 1, "bob's request to queue", WAIT_S)
        assert team.status()["superseded"] == superseded and team.status()["running"] == "alice-busy"
        assert bob_http.post("/v1/infill", json={"prefix": 3}).status_code == 400  # counted as bob's error
        # alice's own newer request supersedes her older one
        newer = alice_http.post("/v1/infill", json={**QUICK, "client": "editor", "id": "alice-new"})
        busy.join(120)
        bob.join(120)
    assert busy_box["value"].json()["finish_reason"] == "cancelled"
    assert newer.json()["finish_reason"] in ("stop", "length")
    assert bob_box["value"].json()["finish_reason"] in ("stop", "length")
    assert team.status()["superseded"] == superseded + 1
    alice, bob_now = team.counts("alice"), team.counts("bob")
    grew = {key: alice[key] - alice_before[key] for key in COUNTS}
    assert {k: v for k, v in grew.items() if k != "generated_tokens"} == {
        "requests": 2, "completed": 1, "cancelled": 0, "superseded": 1, "errors": 0}
    assert grew["generated_tokens"] == newer.json()["timings"]["generated_tokens"] > 0
    assert {key: bob_now[key] - bob_before[key] for key in ("requests", "completed", "superseded", "errors")} == {
        "requests": 2, "completed": 1, "superseded": 0, "errors": 1}
    assert team.status()["developers"]["bob"]["last_seen"].endswith("Z")


def test_the_tokens_file_is_read_again_without_a_restart(team: TeamDaemon) -> None:
    try:
        fresh = private(team.tokens.with_name("tokens.new"), TOKENS + f"carol {CAROL}\n")
        fresh.replace(team.tokens)
        assert team.status(CAROL)["developer"] == "carol"
        # A broken edit keeps the developers in force; SIGHUP reads the file again (and stops nothing).
        team.tokens.write_text("carol\n")
        team.process.send_signal(signal.SIGHUP)
        assert team.status(CAROL)["developer"] == "carol" and team.process.poll() is None
    finally:
        private(team.tokens.with_name("tokens.new"), TOKENS).replace(team.tokens)
    with team.http(CAROL) as http:
        assert http.get("/v1/status").status_code == 401


# --- the command line through --url ----------------------------------------------------------------------


def test_the_command_line_reaches_the_team_server(team: TeamDaemon, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgc", dir="/tmp"))
    try:
        env = isolated_env(root)
        token_file = private(tmp_path / "token", ALICE + "\n")
        remote = ["--url", team.url, "--token-file", str(token_file), "--ca-cert", str(team.cert)]
        before = team.counts("alice")["completed"]
        filled = team.cli("infill", "-", *remote, "--steps", "2", "--max-tokens", "4", "--quiet", env=env)
        assert filled.returncode == 0, filled.stderr
        assert filled.stdout.startswith("def add(a, b):\n    ") and "<FILL>" not in filled.stdout
        edited = team.cli("edit", "-", "--selection", "2-2", "--steps", "2", *remote, "--quiet", env=env)
        assert edited.returncode == 0, edited.stderr
        assert team.counts("alice")["completed"] == before + 2
        shown = team.cli("status", *remote, env=env)
        assert shown.returncode == 0 and "you are: alice" in shown.stdout
        # config.toml names the server once for every command, status included.
        (root / "config" / "config.toml").write_text(
            f'url = "{team.url}"\ntoken_file = "{token_file}"\nca_cert = "{team.cert}"\n')
        shown = team.cli("status", env=env)
        assert shown.returncode == 0 and "you are: alice" in shown.stdout, shown.stderr
        assert team.cli("infill", "-", "--steps", "2", "--max-tokens", "4", "--quiet", env=env).returncode == 0
        (root / "config" / "config.toml").unlink()
        # The same through the environment, with the token in DIFFGEMMA_TOKEN.
        via_env = {**env, "DIFFGEMMA_URL": team.url, "DIFFGEMMA_TOKEN": BOB, "DIFFGEMMA_CA_CERT": str(team.cert)}
        assert team.cli("status", "--json", env=via_env).returncode == 0
        assert '"developer": "bob"' in team.cli("status", "--json", "--url", team.url, env=via_env).stdout
        assert nothing_started(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_watch_fills_through_the_team_server(team: TeamDaemon, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgw", dir="/tmp"))
    project = tmp_path / "project"
    project.mkdir()
    env = {**isolated_env(root), "DIFFGEMMA_URL": team.url, "DIFFGEMMA_TOKEN": ALICE,
           "DIFFGEMMA_CA_CERT": str(team.cert)}
    before = team.counts("alice")["completed"]
    process = subprocess.Popen([DIFFGEMMA, "watch", str(project), "--steps", "2", "--max-tokens", "4"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "watching" in (process.stderr.readline() if process.stderr else "")
        (project / "a.py").write_text("x = <FILL>\n")
        line = process.stdout.readline() if process.stdout else ""
        assert "a.py:1 filled" in line, line
        assert "<FILL>" not in (project / "a.py").read_text()
        assert team.counts("alice")["completed"] == before + 1
        assert nothing_started(root)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_a_remote_daemon_that_fails_is_one_line_and_nothing_starts(team: TeamDaemon) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgc", dir="/tmp"))
    try:
        env = isolated_env(root)
        nobody = f"https://127.0.0.1:{free_port()}"
        cases = [
            (["infill", "-", "--url", nobody, "--token", ALICE], 5, f"no diffgemma daemon answers on {nobody}"),
            (["infill", "-", "--url", team.url, "--token", ALICE], 5, "--ca-cert"),
            (["infill", "-", "--url", team.url, "--token", CAROL, "--ca-cert", str(team.cert)], 5,
             f"the daemon at {team.url} refused the token"),
            (["infill", "-", "--url", team.url, "--ca-cert", str(team.cert)], 5, "no token was sent"),
            (["infill", "-", "--url", "gpu-box:8443"], 2, "--url must look like https://HOST:PORT"),
            (["status", "--url", nobody, "--token", ALICE], 5, nobody),
            (["watch", str(root / "config"), "--url", nobody, "--token", ALICE], 5, nobody),
        ]
        for args, code, message in cases:
            done = team.cli(*args, "--quiet", env=env) if args[0] != "status" else team.cli(*args, env=env)
            assert done.returncode == code, (args, done.stderr)
            assert done.stderr.count("\n") == 1 and message in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
        assert nothing_started(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_url_given_as_the_socket_is_refused_and_starts_nothing(team: TeamDaemon) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgs", dir="/tmp"))
    try:
        env = isolated_env(root)
        url = "http://127.0.0.1:8012"
        for args, extra in ((["infill", "-", "--socket", url], {}), (["infill", "-"], {"DIFFGEMMA_SOCKET": url}),
                            (["status", "--socket", url], {}), (["serve", "--socket", url], {})):
            done = team.cli(*args, env={**env, **extra})
            assert done.returncode == 2, (args, done.stderr)
            assert "takes a Unix socket path, not a URL" in done.stderr, done.stderr
            assert ("--port" if args[0] == "serve" else f"use --url {url}") in done.stderr, done.stderr
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert nothing_started(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_tcp_daemon_of_ones_own_is_reached_by_url(tiny_model_dir: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgo", dir="/tmp"))
    env = isolated_env(root)
    port = free_port()
    run = [DIFFGEMMA, "daemon", "start", "--port", str(port), "--model", str(tiny_model_dir)]
    try:
        started = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env)
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{port}"
        client_env = {**env, "DIFFGEMMA_RUNTIME_DIR": str(root / "client-run")}  # the token is the state dir's
        (root / "client-run").mkdir()
        filled = subprocess.run([DIFFGEMMA, "infill", "-", "--url", url, "--steps", "2", "--max-tokens", "4"],
                                input="x = <FILL>\n", capture_output=True, text=True, timeout=300, env=client_env)
        assert filled.returncode == 0, filled.stderr
        assert filled.stdout.startswith("x = ")
        assert not any((root / "client-run").iterdir())
    finally:
        subprocess.run([DIFFGEMMA, "daemon", "stop", "--port", str(port)], capture_output=True, timeout=120, env=env)
        shutil.rmtree(root, ignore_errors=True)


# --- the language server through its url setting ---------------------------------------------------------


async def test_the_language_server_reaches_the_team_server(team: TeamDaemon, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    try:
        env = isolated_env(root)
        token_file = private(tmp_path / "token", BOB + "\n")
        options = {"url": team.url, "tokenFile": str(token_file), "caCert": str(team.cert), "autoStart": True,
                   "debounceMs": 0, "maxTokens": 8}
        before = team.counts("bob")["requests"]
        async with lsp_session(tmp_path, options, env=env) as s:
            uri = s.open(tmp_path / "t.py", PY)
            assert_inline_items(await s.inline(uri, 5, 4), types.Position(line=5, character=4))
            assert s.client.messages == []
            stats = (await s.stats())["settings"]
            assert stats["url"] == team.url and stats["tokenFile"] == str(token_file)
        assert team.counts("bob")["requests"] > before
        assert nothing_started(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_the_language_server_says_why_a_remote_daemon_is_unusable(team: TeamDaemon, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    try:
        env = isolated_env(root)
        options = {"url": team.url, "token": CAROL, "caCert": str(team.cert), "debounceMs": 0,
                   "socket": "http://127.0.0.1:1"}
        async with lsp_session(tmp_path, options, env=env) as s:
            def messages() -> list[str]:
                return [m.message for m in s.client.messages]

            await _until(lambda: any("refused the token" in m for m in messages()))
            assert any("diffgemma.socket is a Unix socket path, not a URL" in m for m in messages())
            assert any(team.url in m for m in messages())
            assert (await s.stats())["settings"]["token"] == "(set)"  # a token is never sent back
            uri = s.open(tmp_path / "t.py", PY)
            assert await s.inline(uri, 5, 4) is None  # and the server keeps answering
        assert nothing_started(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
