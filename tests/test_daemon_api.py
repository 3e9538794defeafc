"""The daemon's HTTP API, end to end: a real daemon process serving the tiny checkpoint on a temp socket.

One daemon serves the whole module (started with --queue 1 so the full-queue case is reachable).
Nothing here is timed: cancellation and supersession are observed through finish reasons and the
/v1/status counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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
import jsonschema_rs
import pytest

from diffgemma.runtime.api.client import AsyncClient, Client, DaemonError
from diffgemma.runtime.api.errors import ErrorCode, status_of
from diffgemma.runtime.api.protocol import EditRequest, InfillRequest, Result

MAX_BODY = 65536
# A request that keeps the worker busy until it is cancelled: the most steps allowed, and stopping
# rules no random-weight model can meet (stable for 64 steps, mean entropy under 1e-9).
BUSY = {"steps": 1024, "max_tokens": 32, "options": {"stability_threshold": 64, "confidence_threshold": 1e-9}}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    def __init__(self, tmp: Path, model: Path, *extra: str, socket_path: Path | None = None) -> None:
        self.dir = tmp
        self.model = str(model)
        self.socket = socket_path or tmp / "d.sock"
        self.log = tmp / "daemon.log"
        env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp / "state"), "DIFFGEMMA_RUNTIME_DIR": str(tmp)}
        env.pop("DIFFGEMMA_MODEL", None)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model),
                 "--socket", str(self.socket), *extra],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        self.client = Client(socket=self.socket, timeout=300)
        wait_for(lambda: self.client.health() or self.process.poll() is not None, "the daemon to answer")
        assert self.process.poll() is None, self.log.read_text()

    def http(self, timeout: float = 300) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d",
                            timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.client.status()

    def wait_ready(self) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status())["state"] == "ready" and s, "the model to load")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TcpDaemon:
    """A daemon on loopback TCP with a known token (the shape OpenAI-style clients reach)."""

    token = "test-token-0123456789"

    def __init__(self, tmp: Path, model: Path, *extra: str) -> None:
        self.dir = tmp
        self.model = str(model)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "daemon.log"
        env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp / "state"), "DIFFGEMMA_RUNTIME_DIR": str(tmp),
               "DIFFGEMMA_TOKEN": self.token}
        env.pop("DIFFGEMMA_MODEL", None)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "diffgemma.cli", "serve", "--model", str(model),
                 "--port", str(self.port), *extra], stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: self._healthy() or self.process.poll() is not None, "the daemon to answer")
        assert self.process.poll() is None, self.log.read_text()
        wait_for(lambda: self.http().get("/v1/status").json()["state"] == "ready", "the model to load")

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.base + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def http(self, timeout: float = 300, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout,
                            headers={"Authorization": f"Bearer {self.token}", **headers})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgd", dir="/tmp"))  # short: AF_UNIX paths are limited
    # BUSY requests must run until cancelled: no time limit or steps ceiling gets in their way here
    # (those limits have their own tests in test_hardening_daemon.py).
    d = Daemon(tmp, tiny_model_dir, "--queue", "1", "--max-body", str(MAX_BODY), "--max-request-seconds", "0",
               "--max-steps", "1024")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def busy_request(daemon: Daemon, request_id: str, **fields: Any) -> tuple[threading.Thread, dict[str, Any]]:
    body = {"prefix": "def f(x):\n    return ", "suffix": "\n", "id": request_id, **BUSY, **fields}
    return in_thread(lambda: daemon.http().post("/v1/infill", json=body))


# --- answers -------------------------------------------------------------------------------------


def test_socket_is_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(daemon.socket.stat().st_mode)


def test_infill_answers_with_timings(daemon: Daemon) -> None:
    req = InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", language="python",
                        max_tokens=8, steps=6, seed=3)
    result = daemon.client.infill(req)
    assert isinstance(result, Result)
    assert result.finish_reason in ("stop", "length")
    assert result.id and result.model == daemon.model
    for key in ("encode_ms", "steps", "ms_per_step", "tokens_per_forward", "cached_tokens", "total_ms"):
        assert key in result.timings
    assert result.timings["steps"] >= 1
    # Same seed, same request, same answer: the daemon adds nothing random of its own.
    assert daemon.client.infill(req).text == result.text


def test_edit_answers(daemon: Daemon) -> None:
    req = EditRequest(prefix="x = ", selection="1 + 2", suffix="\nprint(x)\n", instruction="use three",
                      strength=0.5, seed=1, max_tokens=8, steps=6)
    result = daemon.client.edit(req)
    assert result.finish_reason in ("stop", "length")
    assert isinstance(result.text, str)
    assert result.timings["steps"] >= 1


def test_stream_sends_drafts_then_result(daemon: Daemon) -> None:
    drafts: list[dict[str, Any]] = []
    result = daemon.client.infill(InfillRequest(prefix="for i in range(3):\n    ", suffix="\n", steps=4,
                                                max_tokens=8, seed=2, id="stream-1"), on_draft=drafts.append)
    assert drafts, "no draft lines before the result"
    assert all(d["type"] == "draft" and d["id"] == "stream-1" and isinstance(d["text"], str) for d in drafts)
    steps = [d["step"] for d in drafts]
    assert steps[0] == 1 and max(steps) <= 4
    assert result.id == "stream-1" and result.finish_reason in ("stop", "length")


def test_stream_wire_format_is_ndjson(daemon: Daemon) -> None:
    body = {"prefix": "a = ", "suffix": "\n", "steps": 2, "max_tokens": 4, "seed": 0, "stream": True}
    with daemon.http() as http, http.stream("POST", "/v1/infill", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["type"] for line in lines][-1] == "result"
    assert {line["type"] for line in lines[:-1]} == {"draft"}


def test_status_reports_model_and_counters(daemon: Daemon) -> None:
    status = daemon.status()
    for key in ("model", "device", "dtype", "state", "load_progress", "memory_bytes", "queue_length",
                "requests_served", "cache_hits", "mean_latency_ms", "pid", "socket"):
        assert key in status, key
    assert status["state"] == "ready" and status["device"] == "cpu"
    assert status["memory_bytes"] > 0 and status["pid"] == daemon.process.pid
    assert status["socket"] == str(daemon.socket)
    before = status["requests_served"]
    # The same prefix twice: the second reuses the cached prompt (its whole blocks of one canvas: the
    # prefix spans several) and counts as a cache hit.
    req = InfillRequest(prefix="import os\nimport sys\n" * 12 + "\ndef main():\n    ", suffix="\n", max_tokens=4,
                        steps=2)
    daemon.client.infill(req)
    hits = daemon.status()["cache_hits"]
    second = daemon.client.infill(req)
    assert second.timings["cached_tokens"] > 0
    after = daemon.status()
    assert after["cache_hits"] == hits + 1
    assert after["requests_served"] == before + 2
    assert after["mean_latency_ms"] > 0


def test_openapi_describes_every_endpoint(daemon: Daemon) -> None:
    with daemon.http() as http:
        doc = http.get("/openapi.json").json()
    assert doc["openapi"] == "3.2.0"
    assert set(doc["paths"]) == {"/v1/infill", "/v1/edit", "/v1/next-edit", "/v1/cancel", "/v1/status", "/health",
                                 "/openapi.json", "/infill", "/v1/completions", "/completion", "/completions",
                                 "/props", "/v1/props", "/tokenize", "/detokenize", "/v1/models", "/models",
                                 "/v1/models/{model_id}", "/v1/chat/completions", "/chat/completions",
                                 "/v1/fim/completions"}
    error = doc["components"]["schemas"]["ErrorDetail"]
    assert error["required"] == ["message", "type", "code"]
    infill = doc["components"]["schemas"]["InfillRequest"]
    assert infill["required"] == ["suffix"] and infill["additionalProperties"] is False
    assert "max_tokens" in infill["properties"]
    assert "security" not in doc  # a Unix socket asks for no token
    # the status the daemon answers has exactly the fields its type declares (no more, none missing)
    status = doc["components"]["schemas"]["DaemonStatus"]
    answered = daemon.status()
    assert set(status["required"]) <= set(answered) <= set(status["properties"]), set(answered) ^ set(
        status["properties"])
    assert {"engine", "capabilities", "servers", "running_jobs", "workers", "rss_bytes"} <= set(status["required"])
    assert answered["engine"] == "local" and answered["capabilities"]["seed"] is True
    jsonschema_rs.validate({"$ref": "#/components/schemas/DaemonStatus", "components": doc["components"]}, answered)


# --- cancellation, supersession, the bounded queue --------------------------------------------------


def test_disconnect_during_stream_cancels(daemon: Daemon) -> None:
    before = daemon.status()
    body = {"prefix": "while True:\n    ", "suffix": "\n", "stream": True, "id": "gone-1", **BUSY}
    with daemon.http() as http, http.stream("POST", "/v1/infill", json=body) as response:
        first = json.loads(next(response.iter_lines()))
        assert first["type"] == "draft"
    # The connection is closed now; the daemon notices and stops the engine at its next step.
    after = wait_for(lambda: (s := daemon.status())["running"] is None and s["cancelled"] > before["cancelled"]
                     and s, "the abandoned stream to be cancelled")
    assert after["disconnects"] > before["disconnects"]
    assert after["requests_served"] == before["requests_served"]


def test_disconnect_while_waiting_cancels(daemon: Daemon) -> None:
    before = daemon.status()
    body = {"prefix": "class A:\n    ", "suffix": "\n", "id": "gone-2", **BUSY}
    with daemon.http(timeout=1.0) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/infill", json=body)  # gives up after a second and hangs up
    after = wait_for(lambda: (s := daemon.status())["running"] is None and s["cancelled"] > before["cancelled"]
                     and s, "the abandoned request to be cancelled")
    assert after["disconnects"] > before["disconnects"]


def test_cancel_endpoint(daemon: Daemon) -> None:
    thread, box = busy_request(daemon, "cancel-me")
    wait_for(lambda: daemon.status()["running"] == "cancel-me", "the request to start")
    assert daemon.client.cancel("cancel-me") is True
    thread.join(120)
    response = box["value"]
    assert response.status_code == 200
    assert response.json()["finish_reason"] == "cancelled" and response.json()["id"] == "cancel-me"
    assert daemon.client.cancel("cancel-me") is False  # finished: nothing left to cancel


def test_newer_request_from_same_client_supersedes(daemon: Daemon) -> None:
    before = daemon.status()
    thread, box = busy_request(daemon, "old", client="editor-1")
    wait_for(lambda: daemon.status()["running"] == "old", "the old request to start")
    newer = daemon.client.infill(InfillRequest(prefix="y = ", suffix="\n", steps=2, max_tokens=4,
                                               client="editor-1", id="new"))
    thread.join(120)
    assert box["value"].json()["finish_reason"] == "cancelled"
    assert newer.finish_reason in ("stop", "length") and newer.id == "new"
    assert daemon.status()["superseded"] == before["superseded"] + 1


def test_full_queue_answers_503(daemon: Daemon) -> None:
    busy, busy_box = busy_request(daemon, "busy")
    wait_for(lambda: daemon.status()["running"] == "busy", "the worker to be busy")
    waiting, waiting_box = busy_request(daemon, "waiting")
    wait_for(lambda: daemon.status()["queue_length"] == 1, "the queue to fill")
    with daemon.http() as http:
        response = http.post("/v1/infill", json={"prefix": "z = ", "suffix": "\n", "max_tokens": 4})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_full"
    assert "queue is full" in response.json()["error"]["message"]
    assert daemon.status()["rejected"] >= 1
    # Free the worker again: the queued one is dropped at once, the running one at its next step.
    assert daemon.client.cancel("waiting") and daemon.client.cancel("busy")
    for thread in (busy, waiting):
        thread.join(120)
    assert busy_box["value"].json()["finish_reason"] == "cancelled"
    assert waiting_box["value"].json()["finish_reason"] == "cancelled"


def test_newer_request_supersedes_a_queued_one(daemon: Daemon) -> None:
    busy, busy_box = busy_request(daemon, "hold")
    wait_for(lambda: daemon.status()["running"] == "hold", "the worker to be busy")
    queued, queued_box = busy_request(daemon, "queued-old", client="editor-2")
    wait_for(lambda: daemon.status()["queue_length"] == 1, "the request to queue")
    superseded = daemon.status()["superseded"]
    # The queue holds one, but the newer request replaces the older one of its client: no 503.
    newer, newer_box = in_thread(lambda: daemon.client.infill(InfillRequest(
        prefix="w = ", suffix="\n", steps=2, max_tokens=4, client="editor-2", id="queued-new")))
    queued.join(120)
    assert queued_box["value"].json()["finish_reason"] == "cancelled"
    assert daemon.status()["superseded"] == superseded + 1
    assert daemon.client.cancel("hold")
    busy.join(120)
    newer.join(120)
    assert busy_box["value"].json()["finish_reason"] == "cancelled"
    assert newer_box["value"].id == "queued-new" and newer_box["value"].finish_reason in ("stop", "length")


# --- bad input -------------------------------------------------------------------------------------


BAD_REQUESTS: list[tuple[str, str, bytes, int, str]] = [
    ("malformed JSON", "/v1/infill", b'{"prefix": "a", ', 400, "malformed JSON"),
    ("not an object", "/v1/infill", b'["a", "b"]', 400, "JSON object"),
    ("empty body", "/v1/infill", b"", 400, "empty"),
    ("invalid UTF-8", "/v1/infill", b'{"prefix": "\xff\xfe", "suffix": ""}', 400, "UTF-8"),
    ("wrong type", "/v1/infill", b'{"prefix": 3, "suffix": ""}', 400, "prefix must be a string"),
    ("missing field", "/v1/edit", b'{"prefix": "a", "suffix": ""}', 400, "selection"),
    ("unknown field", "/v1/infill", b'{"prefix": "a", "suffix": "", "temprature": 1}', 400, "temprature"),
    ("absurd max_tokens", "/v1/infill", b'{"prefix": "a", "suffix": "", "max_tokens": 10000000}', 400,
     "max_tokens"),
    ("absurd steps", "/v1/infill", b'{"prefix": "a", "suffix": "", "steps": 100000}', 400, "steps"),
    ("negative seed", "/v1/infill", b'{"prefix": "a", "suffix": "", "seed": -4}', 400, "seed"),
    ("bool as int", "/v1/infill", b'{"prefix": "a", "suffix": "", "steps": true}', 400, "steps"),
    ("bad strength", "/v1/edit", b'{"prefix": "", "selection": "x", "suffix": "", "strength": 7}', 400,
     "strength"),
    ("bad option", "/v1/infill", b'{"prefix": "a", "suffix": "", "options": {"t_min": 0.9, "t_max": 11}}', 400,
     "t_max"),
    ("oversized body", "/v1/infill", b'{"prefix": "' + b"a" * MAX_BODY + b'", "suffix": ""}', 413, "limit"),
    ("cancel without id", "/v1/cancel", b"{}", 400, "id"),
    ("llama.cpp wrong type", "/infill", b'{"input_prefix": 5}', 400, "input_prefix"),
    ("openai n > 4", "/v1/completions", b'{"prompt": "a", "n": 5}', 400, "Value must be between 1 <= value <= 4"),
    ("unknown model", "/v1/infill", b'{"prefix": "a", "suffix": "", "model": "/nonexistent/ckpt"}', 404,
     "could not load model"),
]


@pytest.mark.parametrize(("name", "path", "body", "code", "reason"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_a_4xx_and_the_daemon_keeps_serving(daemon: Daemon, name: str, path: str, body: bytes,
                                                        code: int, reason: str) -> None:
    with daemon.http() as http:
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == code, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code"}
        assert reason in error["message"] and "\n" not in error["message"]
        assert ErrorCode(error["code"]) and status_of(ErrorCode(error["code"])) == code
        good = http.post("/v1/infill", json={"prefix": "n = ", "suffix": "\n", "steps": 2, "max_tokens": 4})
        assert good.status_code == 200, good.text
        assert good.json()["finish_reason"] in ("stop", "length")


def test_oversized_chunked_body_is_refused(daemon: Daemon) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"prefix": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"b" * 4096
        yield b'", "suffix": ""}'

    with daemon.http() as http:
        response = http.post("/v1/infill", content=chunks())
        assert response.status_code == 413
        assert http.get("/health").status_code == 200


def test_unknown_route_and_method(daemon: Daemon) -> None:
    with daemon.http() as http:
        missing = http.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        response = http.get("/v1/infill")
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_client_raises_one_line_daemon_error(daemon: Daemon) -> None:
    with pytest.raises(DaemonError) as info:
        daemon.client.infill(InfillRequest(prefix="a", suffix="", model="/nonexistent/ckpt"))
    assert info.value.status == 404 and "\n" not in str(info.value)
    assert info.value.code == ErrorCode.MODEL_NOT_FOUND


# --- keep_alive ----------------------------------------------------------------------------------------


def test_keep_alive_zero_unloads_and_next_request_reloads(daemon: Daemon) -> None:
    daemon.client.infill(InfillRequest(prefix="q = ", suffix="\n", steps=2, max_tokens=4))  # loaded now
    loads = daemon.status()["loads"]
    result = daemon.client.infill(InfillRequest(prefix="q = ", suffix="\n", steps=2, max_tokens=4, keep_alive=0))
    assert result.finish_reason in ("stop", "length")
    unloaded = wait_for(lambda: (s := daemon.status())["state"] == "unloaded" and s, "the model to unload")
    assert unloaded["memory_bytes"] == 0 and unloaded["model"] is not None
    again = daemon.client.infill(InfillRequest(prefix="q = ", suffix="\n", steps=2, max_tokens=4))
    assert again.finish_reason in ("stop", "length")
    assert again.timings["load_ms"] > 0
    status = daemon.status()
    assert status["state"] == "ready" and status["loads"] == loads + 1


def test_idle_model_unloads_when_keep_alive_passes(daemon: Daemon) -> None:
    daemon.client.infill(InfillRequest(prefix="r = ", suffix="\n", steps=2, max_tokens=4, keep_alive=0.5))
    status = daemon.status()
    assert status["state"] == "unloaded" or 0 <= status["unload_in_s"] <= 0.5
    wait_for(lambda: daemon.status()["state"] == "unloaded", "the idle model to unload")
    assert daemon.client.infill(InfillRequest(prefix="r = ", suffix="\n", steps=2, max_tokens=4)).timings[
        "load_ms"] > 0


def test_failure_inside_a_request_fails_only_that_request(daemon: Daemon, tmp_path: Path) -> None:
    # A checkpoint that loads but cannot generate (a zero-length canvas): the engine raises deep
    # inside the model's forward pass. That request gets a 500 with one line; the daemon goes on.
    broken = shutil.copytree(daemon.model, tmp_path / "broken-ckpt")
    config = json.loads((broken / "config.json").read_text())
    config["canvas_length"] = 0
    (broken / "config.json").write_text(json.dumps(config))
    errors = daemon.status()["errors"]
    with daemon.http() as http:
        response = http.post("/v1/infill", json={"prefix": "a = ", "suffix": "\n", "max_tokens": 4,
                                                 "model": str(broken)})
        assert response.status_code == 500
        message = response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "internal_error"
        assert message.startswith("internal error: ") and "\n" not in message
        good = http.post("/v1/infill", json={"prefix": "a = ", "suffix": "\n", "steps": 2, "max_tokens": 4})
        assert good.status_code == 200 and good.json()["model"] == daemon.model
    assert daemon.status()["errors"] == errors + 1
    assert "Traceback" in daemon.log.read_text()  # the detail goes to the daemon's log, not the client


def test_request_naming_another_model_switches_to_it(daemon: Daemon, tmp_path: Path) -> None:
    other = shutil.copytree(daemon.model, tmp_path / "other-ckpt")
    result = daemon.client.infill(InfillRequest(prefix="v = ", suffix="\n", steps=2, max_tokens=4,
                                                model=str(other)))
    assert result.model == str(other) and result.timings["load_ms"] > 0
    status = daemon.status()
    assert status["model"] == str(other) and status["state"] == "ready"
    back = daemon.client.infill(InfillRequest(prefix="v = ", suffix="\n", steps=2, max_tokens=4))
    assert back.model == daemon.model and daemon.status()["model"] == daemon.model


# --- adapters, with the payloads real clients send ----------------------------------------------------


def test_llama_vim_fim_request(daemon: Daemon) -> None:
    # llama.vim's llama#fim() request body, field for field.
    body = {
        "input_prefix": "def add(a, b):\n",
        "input_suffix": "\n\nprint(add(1, 2))\n",
        "input_extra": [{"text": "def sub(a, b):\n    return a - b\n", "time": 1730000000.5, "filename": "m.py"}],
        "prompt": "    return ",
        "n_predict": 8,
        "stop": [],
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "stream": False,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 250,
        "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
                            "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
                            "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
                            "tokens_cached"],
    }
    with daemon.http() as http:
        data = http.post("/infill", json=body).json()
    assert set(data) == set(body["response_fields"])  # flattened "a/b" keys, as llama.cpp returns them
    assert isinstance(data["content"], str)
    assert data["timings/prompt_n"] > 0 and data["timings/predicted_n"] > 0
    assert data["truncated"] is False


def test_llama_vim_ring_buffer_warmup(daemon: Daemon) -> None:
    # llama.vim sends these with n_predict 0 to prime the cache; they must not occupy the worker.
    body = {"input_prefix": "", "input_suffix": "", "input_extra": [{"text": "x = 1\n", "time": 1.0,
                                                                     "filename": "a.py"}],
            "prompt": "", "n_predict": 0, "temperature": 0.0, "stream": False, "samplers": [],
            "cache_prompt": True, "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""]}
    served = daemon.status()["requests_served"]
    with daemon.http() as http:
        response = http.post("/infill", json=body)
    assert response.status_code == 200 and response.json() == {}
    assert daemon.status()["requests_served"] == served


def test_llama_vscode_request(daemon: Daemon) -> None:
    # llama.vscode's LlamaServer.getLlamaCompletion payload (no response_fields: the full answer).
    body = {"input_prefix": "function add(a, b) {\n", "input_suffix": "\n}\n", "input_extra": [],
            "prompt": "  return ", "n_predict": 8, "top_k": 40, "top_p": 0.99, "stream": False, "n_indent": 2,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 2500, "id_slot": 0}
    with daemon.http() as http:
        data = http.post("/infill", json=body).json()
    assert isinstance(data["content"], str) and data["stop"] is True
    assert isinstance(data["tokens_cached"], int)
    for key in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"):
        assert key in data["timings"]


def test_llama_cpp_stream_is_sse(daemon: Daemon) -> None:
    body = {"input_prefix": "x = [", "input_suffix": "]\n", "prompt": "", "n_predict": 6, "seed": 5}
    with daemon.http() as http:
        whole = http.post("/infill", json=body).json()
        response = http.post("/infill", json={**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line]
    assert events[-1]["stop"] is True and "timings" in events[-1]
    assert all(e["stop"] is False for e in events[:-1])
    # A client that concatenates the chunks' content (as llama.cpp clients do) gets the whole answer.
    assert "".join(e["content"] for e in events) == whole["content"]


def test_continue_fim_request(daemon: Daemon) -> None:
    # Continue's OpenAI provider FIM body (streamed SSE, with stop words).
    body = {"model": "diffgemma", "prompt": "def greet(name):\n    ", "suffix": "\n\ngreet('a')\n",
            "max_tokens": 8, "temperature": 0.01, "top_p": None, "frequency_penalty": None,
            "presence_penalty": None, "stop": ["\n\n", "\ndef "], "stream": True}
    with daemon.http() as http:
        response = http.post("/v1/completions", json=body)
    assert response.status_code == 200
    lines = [line for line in response.text.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert "\n\n" not in text and "\ndef " not in text


def test_tabby_openai_completion_request(daemon: Daemon) -> None:
    # Tabby's openai/completion backend: suffix may be null; it stops at the first finish_reason.
    body = {"model": "diffgemma", "prompt": "fn main() {\n    ", "suffix": None, "max_tokens": 8,
            "temperature": 0.1, "stream": False, "presence_penalty": 0.0}
    with daemon.http() as http:
        data = http.post("/v1/completions", json=body).json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    choice = data["choices"][0]
    assert set(choice) == {"text", "index", "finish_reason", "logprobs"} and choice["logprobs"] is None
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]


# --- the async client ------------------------------------------------------------------------------------


async def test_async_client_streams_and_task_cancel_stops_the_work(daemon: Daemon) -> None:
    drafts: list[dict[str, Any]] = []
    async with AsyncClient(socket=daemon.socket) as client:
        assert await client.health()
        result = await client.infill(InfillRequest(prefix="b = ", suffix="\n", steps=3, max_tokens=4, seed=1),
                                     on_draft=drafts.append)
        assert drafts and result.finish_reason in ("stop", "length")

        before = await asyncio.to_thread(daemon.status)
        task = asyncio.create_task(client.infill(InfillRequest(prefix="def g():\n    ", suffix="\n",
                                                               id="async-busy", **BUSY)))
        deadline = time.monotonic() + 120
        while (await client.status())["running"] != "async-busy":
            assert time.monotonic() < deadline, "the request never started"
            await asyncio.sleep(0.05)
        task.cancel()  # closes the HTTP connection, which cancels the daemon's work
        with pytest.raises(asyncio.CancelledError):
            await task
    after = wait_for(lambda: (s := daemon.status())["running"] is None and s["cancelled"] > before["cancelled"]
                     and s, "the async request to be cancelled")
    assert after["disconnects"] > before["disconnects"]
