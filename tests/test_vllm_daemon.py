"""`diffgemma serve --engine vllm`, end to end: a real daemon process in front of the stand-in vLLM
server (tests/vllm_harness.py), answering every client shape it serves, and aborting its vLLM
requests when a client goes away or supersedes itself, as the stand-in's /metrics count them.

The stand-in here runs one request at a time (``--max-num-seqs 1``), so a long request sent to it
directly (the hog) keeps the daemon's requests waiting at vLLM for as long as a test needs: what
they go through while in flight is forced, not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

pytest.importorskip("vllm_harness", reason="the vLLM side harness (tests/vllm_harness.py) is not here")
from test_daemon_api import wait_for
from vllm_harness import STANDIN_NAME, need_side_python
from vllm_side.launch import StandIn, start_standin, stop_process


class VllmDaemon:
    """`diffgemma serve --engine vllm` on a temp socket."""

    def __init__(self, tmp: Path, model: Path, urls: list[str]) -> None:
        self.socket = tmp / "d.sock"
        self.log = tmp / "daemon.log"
        env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp / "state"), "DIFFGEMMA_RUNTIME_DIR": str(tmp)}
        env.pop("DIFFGEMMA_MODEL", None)
        args = [sys.executable, "-m", "diffgemma.cli", "serve", "--engine", "vllm", "--model", str(model),
                "--socket", str(self.socket), "--max-request-seconds", "0"]
        for url in urls:
            args += ["--vllm-url", url]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: self.healthy() or self.process.poll() is not None, "the daemon to answer")
        assert self.process.poll() is None, self.log.read_text()

    def http(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d", timeout=timeout)

    def healthy(self) -> bool:
        try:
            with self.http(5) as http:
                return http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        with self.http() as http:
            return dict(http.get("/v1/status").json())

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def standin(vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = start_standin(need_side_python(), vllm_model_dir, tmp_path_factory.mktemp("standin-one"),
                           name=STANDIN_NAME, max_num_seqs=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(standin: StandIn) -> Iterator[VllmDaemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgv", dir="/tmp"))  # short: AF_UNIX paths are limited
    made = VllmDaemon(tmp, standin.model_dir, [standin.url])
    yield made
    made.stop()
    shutil.rmtree(tmp, ignore_errors=True)


class Hog:
    """A long request sent to the stand-in directly: while it runs, every other request waits."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"model": STANDIN_NAME, "prompt": [2, 10, 11], "max_tokens": 6000, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=120) as http, http.stream("POST", f"{self.standin.url}/v1/completions",
                                                            json=body) as response:
            for _ in response.iter_lines():
                if self.stop.is_set():
                    return  # closing the connection aborts it

    def __enter__(self) -> Hog:
        self.thread.start()
        wait_for(lambda: self.standin.counts()["running"] == 1, "the hog to run")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        wait_for(lambda: self.standin.counts()["running"] == 0, "the hog to go")


# how an answer of the stand-in's random weights ends: "syntax" when the syntax gate cut it
ENDS = ("stop", "length", "syntax")
INFILL = {"prefix": "def f(x):\n    return ", "suffix": "\n\nprint(f(2))\n", "max_tokens": 8}


def test_status_names_the_engine_its_servers_and_what_it_cannot_do(daemon: VllmDaemon, standin: StandIn) -> None:
    status = daemon.status()
    assert status["state"] == "ready" and status["engine"] == "vllm" and status["workers"] > 1
    (server,) = status["servers"]
    assert server["url"] == standin.url and server["model"] == STANDIN_NAME and server["healthy"]
    capabilities = status["capabilities"]
    assert capabilities["per_step_drafts"] is False and capabilities["seed"] is False
    assert capabilities["concurrent_requests"] is True and len(capabilities["notes"]) >= 4
    with daemon.http() as http:  # every field is the document's, typed as it says
        components = http.get("/openapi.json").json()["components"]
    schemas = components["schemas"]
    assert set(schemas["DaemonStatus"]["required"]) <= set(status) <= set(schemas["DaemonStatus"]["properties"])
    jsonschema_rs.validate({"$ref": "#/components/schemas/DaemonStatus", "components": components}, status)
    assert set(server) == set(schemas["EngineServer"]["properties"])
    assert set(capabilities) == set(schemas["EngineCapabilities"]["properties"])


def test_the_native_api_answers_and_streams_one_draft_per_canvas(daemon: VllmDaemon) -> None:
    with daemon.http() as http:
        result = http.post("/v1/infill", json=INFILL).json()
        assert result["finish_reason"] in ENDS and "held_mismatches" in result["timings"]
        with http.stream("POST", "/v1/infill", json={**INFILL, "stream": True}) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
    drafts, end = lines[:-1], lines[-1]
    assert end["type"] == "result" and 1 <= len(drafts) <= 3 and all(d["type"] == "draft" for d in drafts)
    with daemon.http() as http:
        edited = http.post("/v1/edit", json={"prefix": "x = ", "selection": "1 + 2", "suffix": "\n"}).json()
        holes = http.post("/v1/infill", json={"holes": [{"prefix": "a = "}, {"prefix": "\nb = "}],
                                              "suffix": "\n", "max_tokens": 4}).json()
    assert edited["finish_reason"] in ENDS and len(holes["holes"]) == 2


def test_llama_cpp_and_openai_clients_are_answered_in_their_shapes(daemon: VllmDaemon) -> None:
    with daemon.http() as http:
        llama = http.post("/infill", json={"input_prefix": "x = ", "input_suffix": "\n", "n_predict": 6}).json()
        assert isinstance(llama["content"], str) and llama["stop"] is True
        openai = http.post("/v1/completions", json={"prompt": "x = ", "suffix": "\n", "max_tokens": 6}).json()
        assert openai["object"] == "text_completion" and isinstance(openai["choices"][0]["text"], str)
        chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 6}).json()
        assert chat["choices"][0]["message"]["role"] == "assistant"
        with http.stream("POST", "/v1/completions", json={"prompt": "x = ", "suffix": "\n", "max_tokens": 6,
                                                          "stream": True}) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


def test_a_seed_is_refused_with_a_clear_400(daemon: VllmDaemon) -> None:
    with daemon.http() as http:
        response = http.post("/v1/infill", json={**INFILL, "seed": 3})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request" and "seed" in response.json()["error"]["message"]


def test_a_newer_request_of_the_same_client_aborts_the_older_ones_vllm_requests(daemon: VllmDaemon,
                                                                                 standin: StandIn) -> None:
    before = standin.counts()
    box: dict[str, Any] = {}
    with Hog(standin):
        def older() -> None:
            with daemon.http() as http:
                box["older"] = http.post("/v1/infill", json={**INFILL, "client": "editor-1", "id": "old"}).json()

        thread = threading.Thread(target=older)
        thread.start()
        # its scouting requests wait at vLLM behind the hog
        wait_for(lambda: standin.counts()["waiting"] >= 1 and daemon.status()["running_jobs"] == 1, "the older one")
        newer = threading.Thread(target=lambda: box.update(newer=daemon.http().post(
            "/v1/infill", json={**INFILL, "client": "editor-1", "id": "new"}).json()))
        newer.start()
        thread.join(60)
        assert box["older"]["finish_reason"] == "cancelled"
        aborted = wait_for(lambda: (c := standin.counts())["aborted"] > before["aborted"] and c, "vLLM to abort")
    newer.join(120)
    assert box["newer"]["finish_reason"] in ENDS
    assert daemon.status()["superseded"] >= 1 and aborted["aborted"] >= before["aborted"] + 1


def test_a_client_that_goes_away_aborts_its_vllm_requests(daemon: VllmDaemon, standin: StandIn) -> None:
    before, status = standin.counts(), daemon.status()
    with Hog(standin):
        with daemon.http(timeout=3.0) as http, pytest.raises(httpx.ReadTimeout):
            http.post("/v1/infill", json=INFILL)  # gives up after three seconds and hangs up
        wait_for(lambda: standin.counts()["aborted"] >= before["aborted"] + 1, "vLLM to abort")
        after = wait_for(lambda: (s := daemon.status())["running_jobs"] == 0 and s, "the job to end")
    assert after["disconnects"] > status["disconnects"] and after["cancelled"] > status["cancelled"]


def test_a_time_budget_aborts_and_answers_with_the_best_so_far(daemon: VllmDaemon, standin: StandIn) -> None:
    before = standin.counts()
    with Hog(standin), daemon.http() as http:
        result = http.post("/v1/infill", json={**INFILL, "time_limit_ms": 1500}).json()
        assert result["finish_reason"] == "time" and result["text"] == ""  # nothing came back in time
        wait_for(lambda: standin.counts()["aborted"] >= before["aborted"] + 1, "vLLM to abort")


def test_clients_run_at_the_same_time(daemon: VllmDaemon, standin: StandIn) -> None:
    boxes: list[Any] = []
    with Hog(standin):
        threads = [threading.Thread(target=lambda c=c: boxes.append(daemon.http().post(
            "/v1/infill", json={**INFILL, "client": c}).json())) for c in ("dev-a", "dev-b", "dev-c")]
        for thread in threads:
            thread.start()
        wait_for(lambda: daemon.status()["running_jobs"] == 3, "three jobs in flight at once")
    for thread in threads:
        thread.join(120)
    assert sorted(b["finish_reason"] for b in boxes if b["finish_reason"] in ENDS) and len(boxes) == 3


def test_a_daemon_on_another_checkpoint_does_not_start(standin: StandIn, tmp_path: Path) -> None:
    other = tmp_path / "other-checkpoint"
    shutil.copytree(standin.model_dir, other)
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp_path / "s"), "DIFFGEMMA_RUNTIME_DIR": str(tmp_path)}
    for args, words in ((["--model", str(other), "--vllm-url", standin.url], "serves diffgemma-tiny"),
                        (["--model", str(standin.model_dir)], "needs --vllm-url"),
                        (["--model", str(standin.model_dir), "--vllm-url", "http://127.0.0.1:9"], "cannot reach")):
        done = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--engine", "vllm",
                               "--socket", str(tmp_path / "x.sock"), *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr
        assert len([line for line in done.stderr.splitlines() if line.startswith("error")]) <= 1
        assert not (tmp_path / "x.sock").exists()

