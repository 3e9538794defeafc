"""Request bodies as llama.vim, llama.vscode and Continue send them, replayed against a real daemon.

The bodies live in tests/data/clients/ (one JSON file each: the client, where in its source the
body is built, the path, the body, and what the client reads from the answer). Each test reads
the answer the way that client does. The daemon caps answers at a few tokens so Continue's
max_tokens 4096 answers quickly here, as it does (capped at --max-tokens) in real use.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_api import Daemon

CLIENTS = Path(__file__).parent / "data" / "clients"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((CLIENTS / f"{name}.json").read_text())


def sse_events(text: str) -> list[Any]:
    """The data of each SSE event; ``[DONE]`` stays a string."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[Daemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgc", dir="/tmp"))
    d = Daemon(tmp, tiny_model_dir, "--max-tokens", "12", "--max-steps", "4", "--sampler", "stock")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def replay(daemon: Daemon, name: str) -> Any:
    case = recorded(name)
    with daemon.http() as http:
        response = http.post(case["path"], json=case["body"])
    assert response.status_code == 200, response.text
    return response


def test_every_recorded_body_names_its_source() -> None:
    files = sorted(CLIENTS.glob("*.json"))
    assert len(files) >= 10
    for path in files:
        case = json.loads(path.read_text())
        assert {"client", "source", "path", "body", "reads"} <= set(case), path.name
        assert case["client"] in ("llama.vim", "llama.vscode", "Continue")


def test_llama_vim_fim(daemon: Daemon) -> None:
    case = recorded("llama_vim_fim")
    data = replay(daemon, "llama_vim_fim").json()
    assert set(data) == set(case["body"]["response_fields"])  # flattened "a/b" keys, as llama.cpp returns them
    assert isinstance(data["content"], str) and data["truncated"] is False
    assert data["timings/prompt_n"] > 0


def test_llama_vim_warmups_answer_at_once(daemon: Daemon) -> None:
    served = daemon.status()["requests_served"]
    assert replay(daemon, "llama_vim_ring_warmup").json() == {}
    replay(daemon, "llama_vim_inst_warmup")
    assert daemon.status()["requests_served"] == served  # nothing ran on the worker


def test_llama_vim_instruction_streams_chat_chunks(daemon: Daemon) -> None:
    events = sse_events(replay(daemon, "llama_vim_inst").text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert isinstance(text, str)


def test_llama_vscode_fim_gets_n_cmpl_results(daemon: Daemon) -> None:
    case = recorded("llama_vscode_fim")
    data = replay(daemon, "llama_vscode_fim").json()
    # llama.vscode: an array when n_cmpl > 1, each with .content (it keeps the distinct ones).
    assert isinstance(data, list) and 1 <= len(data) <= case["body"]["n_cmpl"]
    assert all(isinstance(item["content"], str) and item["stop"] is True for item in data)
    assert [item["index"] for item in data] == list(range(len(data)))


def test_llama_vscode_prepare_and_tokenize(daemon: Daemon) -> None:
    assert replay(daemon, "llama_vscode_prepare").status_code == 200
    tokens = replay(daemon, "llama_vscode_tokenize").json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    with daemon.http() as http:
        back = http.post("/detokenize", json={"tokens": tokens}).json()["content"]
        props = http.get("/props").json()
        models = http.get("/v1/models").json()
    assert back == recorded("llama_vscode_tokenize")["body"]["content"]
    assert props["default_generation_settings"]["n_ctx"] > 0  # what llama.vscode reads from /props
    assert models["object"] == "list" and models["data"][0]["id"] == Path(daemon.model).name


def test_llama_vscode_openai_mode_template_is_taken_apart(daemon: Daemon) -> None:
    data = replay(daemon, "llama_vscode_openai").json()
    choice = data["choices"][0]
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    assert "<|fim" not in choice["text"]
    assert data["usage"]["prompt_tokens"] > 0


def test_continue_llamacpp_completion_streams(daemon: Daemon) -> None:
    response = replay(daemon, "continue_llamacpp")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1]["stop"] is True and "timings" in events[-1]
    text = "".join(e.get("content") or "" for e in events)
    assert "\n\n" not in text and "<fim_" not in text


def test_continue_fim_streams_chat_shaped_chunks(daemon: Daemon) -> None:
    events = sse_events(replay(daemon, "continue_fim").text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "\n\n" not in text


def test_continue_openai_completion_with_repo_context(daemon: Daemon) -> None:
    events = sse_events(replay(daemon, "continue_openai").text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert "<|" not in text and "\n\n" not in text


def test_the_daemon_caps_steps_and_tokens_and_uses_its_sampler(daemon: Daemon) -> None:
    with daemon.http() as http:
        data = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 64, "steps": 1024,
                                             "options": {"stability_threshold": 64}}).json()
    canvases = max(1, data["timings"]["canvases"])
    assert data["timings"]["steps"] <= 4 * canvases  # --max-steps 4, not the 1024 asked for
    assert data["timings"]["generated_tokens"] <= 12  # --max-tokens 12
    status = daemon.status()
    assert status["sampler"] == "stock" and status["limits"]["max_steps"] == 4


def test_a_stream_that_fails_before_its_first_event_is_a_typed_error(daemon: Daemon) -> None:
    # The model does not load: nothing was streamed yet, so the answer is the error with its status.
    with daemon.http() as http:
        response = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "stream": True,
                                                 "model": "/nonexistent/ckpt"})
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "model_not_found"
