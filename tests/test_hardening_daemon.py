"""The daemon under bad input, long requests and hostile TCP callers.

- Bad requests: every one a 4xx with the typed error body, on every endpoint, never a 500 or a
  traceback in the log: lone surrogates in any string (ids and model names too, streamed or not),
  integers of more digits than Python converts, NaN/Infinity, deep nesting, wrong types, bodies
  the client abandons half-sent; plus property-based fuzzing.
- Work limits: the wall-time limit answers a request that would run for minutes with its best
  draft and the finish reason each protocol uses for it.
- TCP: Origin and Host checks, the model allow-list (one error text for every refused name),
  --fixed-model.
- The command line: `serve` on a live socket says only its error; `status` with no daemon
  writes to stderr; `daemon start` takes the flags `serve` does, and a background start hands
  them on unchanged.
Nothing here is timed: limits are observed through finish reasons and step counts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_daemon_api import Daemon, TcpDaemon

from diffgemma.runtime.api.errors import ErrorCode, status_of
from diffgemma.runtime.daemon.policy import MODEL_REFUSED

LIMIT_S = "3"
# Stopping rules no random-weight model meets: without a limit this runs every allowed step.
NEVER_SETTLES = {"stability_threshold": 64, "confidence_threshold": 1e-9}


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgh", dir="/tmp"))
    # A socket directory others may read: the daemon warns about it once, at its own start.
    (tmp / "open").mkdir(mode=0o755)
    os.chmod(tmp / "open", 0o755)
    d = Daemon(tmp, tiny_model_dir, "--max-request-seconds", LIMIT_S, "--max-steps", "1024", "--fixed-model",
               socket_path=tmp / "open" / "d.sock")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def assert_typed(response: Any, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"} and "\n" not in error["message"]
    assert status_of(ErrorCode(error["code"])) == response.status_code
    return error


def no_tracebacks(daemon: Daemon | TcpDaemon) -> None:
    log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log and " 500 " not in log, log[-2000:]


# --- bad requests ------------------------------------------------------------------------------

SURROGATE = "\\ud800"  # as a JSON escape: json.loads turns it into a lone surrogate

# (path, a body template with {S} where a string goes) for every string field of every endpoint.
STRING_FIELDS: list[tuple[str, str]] = [
    ("/v1/infill", '{"prefix": "{S}", "suffix": ""}'),
    ("/v1/infill", '{"prefix": "a", "suffix": "{S}"}'),
    ("/v1/infill", '{"prefix": "a", "suffix": "", "id": "{S}"}'),
    ("/v1/infill", '{"prefix": "a", "suffix": "", "model": "{S}"}'),
    ("/v1/infill", '{"prefix": "a", "suffix": "", "client": "{S}", "stream": true}'),
    ("/v1/infill", '{"prefix": "a", "suffix": "", "extra": [{"path": "{S}", "text": ""}]}'),
    ("/v1/edit", '{"prefix": "", "selection": "{S}", "suffix": "", "stream": true}'),
    ("/v1/edit", '{"prefix": "", "selection": "x", "suffix": "", "instruction": "{S}"}'),
    ("/v1/cancel", '{"id": "{S}"}'),
    ("/infill", '{"input_prefix": "{S}", "n_predict": 4}'),
    ("/infill", '{"input_prefix": "a", "prompt": "{S}", "stream": true}'),
    ("/infill", '{"input_extra": [{"filename": "a", "text": "{S}"}], "n_predict": 4}'),
    ("/completion", '{"prompt": "{S}", "n_predict": 4}'),
    ("/v1/completions", '{"prompt": "{S}", "max_tokens": 4}'),
    ("/v1/completions", '{"prompt": "a", "suffix": "{S}", "stream": true}'),
    ("/v1/completions", '{"prompt": "a", "model": "{S}"}'),
    ("/v1/fim/completions", '{"prompt": "a", "suffix": "{S}"}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "{S}"}], "stream": true}'),
    ("/tokenize", '{"content": "{S}"}'),
    ("/v1/infill", '{"{S}": 1}'),
]


@pytest.mark.parametrize(("path", "template"), STRING_FIELDS)
def test_a_lone_surrogate_anywhere_is_a_400(daemon: Daemon, path: str, template: str) -> None:
    body = template.replace("{S}", SURROGATE).encode()
    with daemon.http() as http:
        error = assert_typed(http.post(path, content=body, headers={"content-type": "application/json"}), 400)
    assert error["code"] == "invalid_json" and "surrogate" in error["message"]


ENDPOINTS = ["/v1/infill", "/v1/edit", "/v1/cancel", "/infill", "/completion", "/v1/completions",
             "/v1/fim/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]
MALFORMED: list[tuple[str, bytes]] = [
    ("4301-digit integer", b'{"prefix": "a", "suffix": "", "max_tokens": ' + b"9" * 4301 + b"}"),
    ("NaN", b'{"prefix": "a", "suffix": "", "seed": NaN}'),
    ("Infinity", b'{"prefix": "a", "suffix": "", "t_max_predict_ms": Infinity}'),
    ("-Infinity", b'{"prefix": "a", "suffix": "", "strength": -Infinity}'),
    ("overflowing float", b'{"prefix": "a", "suffix": "", "t_max_predict_ms": 1e999}'),
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", b'{"a": ' * 200 + b"1" + b"}" * 200),
    ("not JSON", b"\x00\x01\x02"),
    ("a bare number", b"1" * 5000),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("name", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_json_is_a_400_everywhere(daemon: Daemon, path: str, name: str, body: bytes) -> None:
    with daemon.http() as http:
        assert_typed(http.post(path, content=body, headers={"content-type": "application/json"}), 400)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("/v1/infill", {"prefix": ["a"], "suffix": ""}),
    ("/v1/infill", {"prefix": "a", "suffix": "", "extra": [None]}),
    ("/v1/infill", {"prefix": "a", "suffix": "", "time_limit_ms": "5"}),
    ("/v1/edit", {"prefix": "", "selection": 3, "suffix": ""}),
    ("/v1/cancel", ["id"]),
    ("/infill", {"input_prefix": "a", "n_predict": 1.5}),
    ("/infill", {"input_prefix": "a", "n_cmpl": "3"}),
    ("/infill", {"input_extra": "chunks"}),
    ("/infill", {"input_prefix": "a", "t_max_predict_ms": [250]}),
    ("/completion", {"prompt": {"text": "a"}}),
    ("/v1/completions", {"prompt": "a", "n": True}),
    ("/v1/completions", {"prompt": 5}),
    ("/v1/completions", {"prompt": "a", "stop": [1]}),
    ("/v1/fim/completions", {"suffix": "a"}),
    ("/v1/chat/completions", {"messages": "hi"}),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("/tokenize", {"content": 5}),
    ("/detokenize", {"tokens": ["a"]}),
    ("/detokenize", {"tokens": [10**9]}),
    ("/v1/infill", {"prefix": "a", "suffix": "", "id": "line\nbreak"}),
]


@pytest.mark.parametrize(("path", "body"), WRONG_TYPES)
def test_wrong_types_are_a_400(daemon: Daemon, path: str, body: Any) -> None:
    with daemon.http() as http:
        assert_typed(http.post(path, json=body), 400)


def test_abandoned_bodies_leave_no_traceback(daemon: Daemon) -> None:
    for declared, sent in ((1000, b'{"prefix": "a", '), (50, b""), (10**6, b'{"prefix": "' + b"a" * 4000)):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(daemon.socket))
        raw.sendall(b"POST /v1/infill HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {declared}\r\n\r\n".encode() + sent)
        raw.close()
    with daemon.http() as http:
        assert http.get("/health").status_code == 200
        good = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "steps": 1})
        assert good.status_code == 200
    no_tracebacks(daemon)


# Property-based: bodies built from the fields the endpoints know, with values of any JSON type.
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
_FIELDS = ["prefix", "suffix", "selection", "prompt", "input_prefix", "input_suffix", "input_extra", "messages",
           "n_predict", "max_tokens", "n", "n_cmpl", "stop", "stream", "seed", "steps", "t_max_predict_ms",
           "options", "extra", "id", "content", "tokens", "response_fields", "strength"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ENDPOINTS), body=st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=5)
       | _VALUES)
def test_fuzzed_bodies_never_fail_inside_the_daemon(daemon: Daemon, path: str, body: Any) -> None:
    if isinstance(body, dict):
        # A body that happens to be valid must stay cheap.
        body.setdefault("n_predict" if path in ("/infill", "/completion") else "max_tokens", 2)
        body["steps"] = 1
    with daemon.http() as http:
        response = http.post(path, json=body)
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert_typed(response)


def test_the_whole_corpus_leaves_no_traceback(daemon: Daemon) -> None:
    """Every bad body above, sent again here so the test stands on its own (alone, or before the
    tests above): each is answered with its typed 4xx, and still nothing in the log is a traceback."""
    bodies = [(path, template.replace("{S}", SURROGATE).encode()) for path, template in STRING_FIELDS]
    bodies += [(path, body) for path in ENDPOINTS for _, body in MALFORMED]
    bodies += [(path, json.dumps(body).encode()) for path, body in WRONG_TYPES]
    with daemon.http() as http:
        for path, body in bodies:
            assert_typed(http.post(path, content=body, headers={"content-type": "application/json"}), 400)
        assert http.get("/health").status_code == 200
    no_tracebacks(daemon)


# --- work limits ---------------------------------------------------------------------------------


def test_the_1024_step_request_answers_at_the_limit(daemon: Daemon) -> None:
    with daemon.http() as http:
        response = http.post("/v1/infill", json={"prefix": "a", "suffix": "b", "max_tokens": 64, "steps": 1024,
                                                 "options": NEVER_SETTLES})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["finish_reason"] == "time"  # the best draft so far, and the reason says so
    assert 0 < data["timings"]["steps"] < 1024 and isinstance(data["text"], str)


@pytest.mark.parametrize(("path", "body", "read"), [
    ("/infill", {"input_prefix": "a", "input_suffix": "b", "n_predict": 64}, lambda d: d["stop_type"] == "limit"),
    ("/completion", {"prompt": "a", "n_predict": 64}, lambda d: d["stop_type"] == "limit"),
    ("/v1/completions", {"prompt": "a", "suffix": "b", "max_tokens": 64},
     lambda d: d["choices"][0]["finish_reason"] == "length"),
    ("/v1/fim/completions", {"prompt": "a", "suffix": "b", "max_tokens": 64},
     lambda d: d["choices"][0]["finish_reason"] == "length"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 64},
     lambda d: d["choices"][0]["finish_reason"] == "length"),
    ("/v1/edit", {"prefix": "a", "selection": "b" * 40, "suffix": "c", "steps": 1024, "options": NEVER_SETTLES},
     lambda d: d["finish_reason"] == "time"),
])
def test_every_endpoint_has_the_time_limit(limited: Daemon, path: str, body: dict, read: Any) -> None:
    with limited.http() as http:
        response = http.post(path, json=body)
        assert response.status_code == 200, response.text
        assert read(response.json()), response.text[:400]
        assert http.get("/v1/status").json()["limits"]["max_request_seconds"] == 1.0


@pytest.fixture(scope="module")
def limited(tiny_model_dir: Path) -> Iterator[Daemon]:
    """A 1 s limit and a checkpoint whose defaults never settle: the compatibility endpoints take no
    steps or stopping rules, so only the checkpoint's own defaults can make them run long."""
    tmp = Path(tempfile.mkdtemp(prefix="dgl", dir="/tmp"))
    ckpt = shutil.copytree(tiny_model_dir, tmp / "slow")
    config = json.loads((ckpt / "generation_config.json").read_text())
    config.update({"max_denoising_steps": 1024, "stability_threshold": 64, "confidence_threshold": 1e-9})
    (ckpt / "generation_config.json").write_text(json.dumps(config))
    d = Daemon(tmp, ckpt, "--max-request-seconds", "1", "--max-steps", "1024")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_request_budget_shorter_than_the_limit_wins(daemon: Daemon) -> None:
    with daemon.http() as http:
        data = http.post("/v1/infill", json={"prefix": "a", "suffix": "b", "max_tokens": 32, "steps": 1024,
                                             "options": NEVER_SETTLES, "time_limit_ms": 200}).json()
    assert data["finish_reason"] == "time"


def test_fixed_model_refuses_other_models_and_keeps_its_own(daemon: Daemon, tmp_path: Path) -> None:
    other = shutil.copytree(daemon.model, tmp_path / "other")
    with daemon.http() as http:
        error = assert_typed(http.post("/v1/infill", json={"prefix": "a", "suffix": "", "model": str(other)}), 403)
        assert error["code"] == "model_locked"
        ok = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "steps": 1,
                                           "model": daemon.model, "keep_alive": 0})
        assert ok.status_code == 200
    status = daemon.status()
    assert status["state"] == "ready" and status["model"] == daemon.model  # keep_alive 0 did not unload it


# --- TCP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp(tiny_model_dir: Path) -> Iterator[TcpDaemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgt", dir="/tmp"))
    allowed = shutil.copytree(tiny_model_dir, tmp / "allowed-ckpt")
    d = TcpDaemon(tmp, tiny_model_dir, "--allow-origin", "http://ok.example", "--allow-model", str(allowed))
    d.allowed = str(allowed)  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_origin_is_refused_unless_allowed(tcp: TcpDaemon) -> None:
    with tcp.http(Origin="http://evil.example") as http:
        error = assert_typed(http.get("/v1/status"), 403)
        assert error["code"] == "forbidden"
        assert_typed(http.get("/health"), 403)  # before anything else, /health included
    with tcp.http(Origin="http://ok.example") as http:
        assert http.get("/v1/status").status_code == 200
    with tcp.http() as http:  # editors and SDKs send no Origin
        assert http.get("/v1/status").status_code == 200


def test_host_must_be_this_daemon(tcp: TcpDaemon) -> None:
    for host in ("evil.example", f"evil.example:{tcp.port}", "127.0.0.1.nip.io"):
        with tcp.http(Host=host) as http:
            assert assert_typed(http.get("/v1/status"), 403)["code"] == "forbidden"
    for host in (f"localhost:{tcp.port}", f"127.0.0.1:{tcp.port}", "localhost"):
        with tcp.http(Host=host) as http:
            assert http.get("/v1/status").status_code == 200


def test_models_outside_the_allow_list_get_one_message(tcp: TcpDaemon) -> None:
    messages = set()
    with tcp.http() as http:
        for name in ("/etc/passwd", "/root", "/nonexistent/ckpt", str(tcp.dir), "google/some-model", "~"):
            error = assert_typed(http.post("/v1/infill", json={"prefix": "a", "suffix": "", "model": name}), 404)
            assert error["code"] == "model_not_found"
            messages.add(error["message"])
        assert messages == {MODEL_REFUSED}
        allowed = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "steps": 1,
                                                "model": tcp.allowed})  # type: ignore[attr-defined]
        assert allowed.status_code == 200 and allowed.json()["model"] == tcp.allowed  # type: ignore[attr-defined]
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        # listed by their short ids, which a request may name too
        assert Path(tcp.model).name in models and Path(tcp.allowed).name in models  # type: ignore[attr-defined]
        by_id = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "steps": 1,
                                              "model": Path(tcp.allowed).name})  # type: ignore[attr-defined]
        assert by_id.status_code == 200 and by_id.json()["model"] == tcp.allowed  # type: ignore[attr-defined]


def test_the_token_is_still_needed(tcp: TcpDaemon) -> None:
    with tcp.http(Authorization="Bearer wrong") as http:
        response = http.get("/v1/status")
    assert assert_typed(response, 401)["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


# --- the command lines -----------------------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp / "state"), "DIFFGEMMA_RUNTIME_DIR": str(tmp)}
    env.pop("DIFFGEMMA_MODEL", None)
    return env


def test_serve_on_a_live_socket_says_only_its_error(daemon: Daemon, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--model", daemon.model, "--socket",
                           str(daemon.socket)], capture_output=True, text=True, timeout=120, env=_env(daemon.dir))
    assert done.returncode != 0
    assert "WARNING" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "already answering" in done.stderr and done.stdout == ""
    assert daemon.client.health()


def test_status_without_a_daemon_writes_to_stderr(tmp_path: Path) -> None:
    sock = tmp_path / "none.sock"
    done = subprocess.run([sys.executable, "-m", "diffgemma.cli", "status", "--socket", str(sock)],
                          capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert done.returncode == 5 and done.stdout == "" and "not running" in done.stderr
    done = subprocess.run([sys.executable, "-m", "diffgemma.cli", "daemon", "status", "--socket", str(sock)],
                          capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert done.returncode == 5 and done.stdout == "" and str(sock) in done.stderr


def test_a_background_start_hands_every_flag_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """`daemon start` (and auto-start) run `diffgemma serve` with ``DaemonConfig.argv``: serve's own
    parser must read those arguments back into the same configuration."""
    import typer

    from diffgemma.cli import daemon_cmds
    from diffgemma.cli.app import app
    from diffgemma.runtime.api.autostart import SERVE_COMMAND, serve_command
    from diffgemma.runtime.api.config import ENV_DEVICE, ENV_KEEP_ALIVE, ENV_MODEL, ENV_QUANTIZE, ENV_SOCKET
    from diffgemma.runtime.api.daemon_config import DaemonConfig

    for name in (ENV_MODEL, ENV_SOCKET, ENV_DEVICE, ENV_QUANTIZE, ENV_KEEP_ALIVE):
        monkeypatch.delenv(name, raising=False)
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    serve = group.resolve_command(ctx, ["serve"])[1]  # type: ignore[attr-defined]  # imports its module
    start = group.resolve_command(ctx, ["daemon"])[1].commands["start"]  # type: ignore[attr-defined]
    flags = {command.name: {opt for param in command.params for opt in param.opts if opt.startswith("--")}
             for command in (serve, start)}
    assert flags["serve"] - {"--start-report"} == flags["start"]
    for config in (
        DaemonConfig(model="m", socket=Path("/tmp/x.sock"), max_request_seconds=2.5, max_steps=9, max_tokens=77,
                     allow_origins=("http://a",), allow_models=("p", "q"), fixed_model=True, sampler="stock",
                     keep_alive=-1.0, max_body=2048, max_queue=3, device="cpu", dtype="float32", quantize="4bit",
                     preload=False),
        DaemonConfig(host="::1", port=8012, max_request_seconds=0.0),
        DaemonConfig(socket=Path("/tmp/y.sock")),
    ):
        command = serve_command(config, Path("/tmp/report.json"))
        assert command[1:4] == list(SERVE_COMMAND)
        params = serve.make_context("serve", command[4:]).params
        assert params.pop("start_report") == Path("/tmp/report.json")
        assert daemon_cmds.serve_config(**params) == config
