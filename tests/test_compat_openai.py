"""The real ``openai`` Python package against a real daemon on loopback TCP (token required).

Completion with a suffix, streamed and not; several candidates (n); chat; the model list; and
errors whose message, type and code reach the user through the SDK's exceptions. Streaming is
checked for order, not speed: on a fill spanning several canvases the first text arrives before
the last event, and a stream's text is the non-streamed answer.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from test_daemon_api import TcpDaemon

from diffgemma.runtime.engine.mini import MINI_DIR


@pytest.fixture(scope="module")
def daemon() -> Iterator[TcpDaemon]:
    # The shipped diffgemma-mini (the real DiffusionGemma code, 2.3M trained parameters, canvas
    # 32): a committed canvas is released up to its last line break, and random tiny weights
    # never write one, so only a trained checkpoint shows text arriving canvas by canvas.
    tmp = Path(tempfile.mkdtemp(prefix="dgo", dir="/tmp"))
    d = TcpDaemon(tmp, MINI_DIR, "--max-steps", "4")  # few steps: these tests check shapes, not quality
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def sdk(daemon: TcpDaemon) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=daemon.base + "/v1", api_key=daemon.token, max_retries=0, timeout=300)
    yield client
    client.close()


def test_completion_with_suffix(sdk: openai.OpenAI, daemon: TcpDaemon) -> None:
    answer = sdk.completions.create(model="diffgemma", prompt="def add(a, b):\n    return ",
                                    suffix="\n\nprint(add(1, 2))\n", max_tokens=6, seed=3)
    choice = answer.choices[0]
    assert isinstance(choice.text, str) and choice.index == 0
    assert choice.finish_reason in ("stop", "length")
    assert answer.model == daemon.model and answer.usage is not None and answer.usage.prompt_tokens > 0


def test_streamed_completion_is_the_same_text(sdk: openai.OpenAI) -> None:
    body = {"model": "diffgemma", "prompt": "x = [", "suffix": "]\n", "max_tokens": 6, "seed": 4}
    whole = sdk.completions.create(**body).choices[0].text
    chunks = list(sdk.completions.create(**body, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].text for c in chunks) == whole


def test_n_gives_indexed_candidates(sdk: openai.OpenAI) -> None:
    answer = sdk.completions.create(model="diffgemma", prompt="y = ", suffix="\n", max_tokens=4, n=2, seed=1)
    assert 1 <= len(answer.choices) <= 2
    assert [c.index for c in answer.choices] == list(range(len(answer.choices)))


def test_errors_reach_the_user(sdk: openai.OpenAI, daemon: TcpDaemon) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="diffgemma", prompt="a", n=9)
    error = info.value
    assert error.status_code == 400 and error.code == "invalid_request" and error.type == "invalid_request_error"
    assert "Value must be between 1 <= value <= 4" in error.message  # the daemon's words, not "Error code: 400"
    wrong = openai.OpenAI(base_url=daemon.base + "/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.models.list()
    assert denied.value.code == "unauthorized" and "token" in denied.value.message
    wrong.close()


def test_models_and_chat(sdk: openai.OpenAI, daemon: TcpDaemon) -> None:
    first = next(iter(sdk.models.list()))
    assert first.id == Path(daemon.model).name and "/" not in first.id  # ids are short names, URLs can hold them
    assert sdk.models.retrieve(first.id).id == first.id
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
    chat = sdk.chat.completions.create(model="diffgemma", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4, seed=2)
    assert chat.choices[0].message.role == "assistant" and isinstance(chat.choices[0].message.content, str)
    assert chat.choices[0].finish_reason in ("stop", "length")
    chunks = list(sdk.chat.completions.create(model="diffgemma", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4, seed=2, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content


def test_first_text_arrives_before_the_end_of_a_multi_canvas_fill(daemon: TcpDaemon) -> None:
    # No suffix and 64 tokens: two canvases of the model's 32. The first canvas's text must
    # come out as soon as it is committed, not with the last event.
    body = {"model": "diffgemma", "prompt": "def fib(n):\n", "max_tokens": 64, "seed": 1, "stream": True,
            "t_max_predict_ms": 120_000}
    arrivals: list[tuple[float, dict]] = []
    with daemon.http() as http, http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                arrivals.append((time.monotonic(), json.loads(line.removeprefix("data: "))))
    texts = [(at, e) for at, e in arrivals if e["choices"][0]["text"]]
    assert len(texts) >= 2, "the answer came in one piece"
    first_text, last_event = texts[0][0], arrivals[-1][0]
    assert first_text < last_event
    assert texts[-1][0] <= last_event


def test_ndjson_marks_each_committed_canvas(daemon: TcpDaemon) -> None:
    body = {"prefix": "def fib(n):\n", "suffix": "", "max_tokens": 64, "steps": 3, "seed": 5, "stream": True}
    with daemon.http() as http, http.stream("POST", "/v1/infill", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    finals = [line for line in lines if line.get("final")]
    assert lines[-1]["type"] == "result"
    assert finals and all(line["type"] == "draft" for line in finals)
    texts = [line["text"] for line in finals]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # committed text only grows
    steps = [line for line in lines if line["type"] == "draft" and not line.get("final")]
    assert steps, "the per-step drafts are still sent"


def test_llama_cpp_completion_streams_canvas_by_canvas(daemon: TcpDaemon) -> None:
    # Continue's llama.cpp provider: /completion, streamed, the text assembled from .content.
    body = {"prompt": "def fib(n):\n", "n_predict": 64, "seed": 1}  # two canvases of 32
    with daemon.http() as http:
        whole = http.post("/completion", json=body).json()
        with http.stream("POST", "/completion", json={**body, "stream": True}) as response:
            events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                      if line.startswith("data: ")]
    texts = [e for e in events if e.get("content")]
    assert len(texts) >= 2 and all(e["stop"] is False for e in texts)
    assert events[-1]["stop"] is True and events.index(texts[-1]) < len(events) - 1
    assert "".join(e["content"] for e in events) == whole["content"]
