"""What other clients read from the daemon, end to end: a real daemon on loopback TCP with a token and
one allowed browser origin, serving the tiny checkpoint.

Token usage counts the prompt, never the model's output; ``response_fields: []`` is the whole answer;
``max_tokens: 0`` is the same empty answer on every endpoint; model ids are short and can be
retrieved; 405 says what is allowed; ``errors`` counts the daemon's failures, not a client's; ids
may hold any character but a control one; CORS for the allowed origin (preflight before the token,
the allow headers on every answer, errors included) and none for another; prompts longer than the
model's context are cut to it. The browser itself is tests/test_api_browser.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_api import TcpDaemon

from diffgemma.runtime.daemon.lifecycle import AddressLock, bind_tcp_socket

ORIGIN = "http://localhost:8734"
OTHER = "http://evil.example"


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path) -> Iterator[TcpDaemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgc", dir="/tmp"))
    d = TcpDaemon(tmp, tiny_model_dir, "--max-steps", "2", "--allow-origin", ORIGIN)
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _post(daemon: TcpDaemon, path: str, body: dict[str, Any]) -> Any:
    with daemon.http() as http:
        answer = http.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_usage_counts_the_prompt_not_the_answer(daemon: TcpDaemon) -> None:
    prompt = "def f("
    ids = _post(daemon, "/tokenize", {"content": prompt})["tokens"]
    short = _post(daemon, "/v1/completions", {"prompt": prompt, "max_tokens": 8, "seed": 1})
    long = _post(daemon, "/v1/completions", {"prompt": prompt, "max_tokens": 96, "seed": 1})  # three canvases
    for answer in (short, long):
        usage = answer["usage"]
        assert usage["prompt_tokens"] == len(ids) + 1  # <bos> and the prompt's tokens, whatever was generated
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert long["timings"]["encoded_tokens"] > long["usage"]["prompt_tokens"]  # finished canvases were encoded
    llama = _post(daemon, "/completion", {"prompt": prompt, "n_predict": 96, "seed": 1})
    assert llama["tokens_evaluated"] == len(ids) + 1
    assert llama["timings"]["prompt_n"] + llama["timings"]["cache_n"] == len(ids) + 1
    chats = [_post(daemon, "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}],
                                                    "max_tokens": n, "seed": 1})["usage"] for n in (8, 96)]
    assert chats[0]["prompt_tokens"] == chats[1]["prompt_tokens"] < 20


def test_empty_response_fields_is_the_whole_answer(daemon: TcpDaemon) -> None:
    for path, body in (("/infill", {"input_prefix": "a = ", "input_suffix": "\n"}), ("/completion", {"prompt": "a"})):
        answer = _post(daemon, path, {**body, "n_predict": 4, "response_fields": []})
        assert {"content", "stop_type", "timings", "tokens_evaluated"} <= set(answer)
        picked = _post(daemon, path, {**body, "n_predict": 4, "response_fields": ["content", "timings/prompt_n"]})
        assert set(picked) == {"content", "timings/prompt_n"}


def test_zero_tokens_is_an_empty_answer_everywhere(daemon: TcpDaemon) -> None:
    served = daemon.http().get("/v1/status").json()["requests_served"]
    messages = [{"role": "user", "content": "hi"}]
    texts = {
        "/v1/completions": _post(daemon, "/v1/completions", {"prompt": "a", "max_tokens": 0})["choices"][0]["text"],
        "/v1/fim/completions": _post(daemon, "/v1/fim/completions", {"prompt": "a", "suffix": "b", "max_tokens": 0})
        ["choices"][0]["message"]["content"],
        "/v1/chat/completions": _post(daemon, "/v1/chat/completions", {"messages": messages, "max_tokens": 0})
        ["choices"][0]["message"]["content"],
        "/completion": _post(daemon, "/completion", {"prompt": "a", "n_predict": 0})["content"],
        "/infill": _post(daemon, "/infill", {"input_prefix": "a", "n_predict": 0})["content"],
    }
    assert texts == dict.fromkeys(texts, "")
    two = _post(daemon, "/infill", {"input_prefix": "a", "n_predict": 0, "n_cmpl": 2})
    assert [a["content"] for a in two] == ["", ""]  # n_cmpl > 1: an array, as when tokens are generated
    with daemon.http() as http:
        stream = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 0, "stream": True}).text
        assert stream.endswith("data: [DONE]\n\n")
        assert http.get("/v1/status").json()["requests_served"] == served  # the worker never saw them


def test_model_ids_are_short_and_retrievable(daemon: TcpDaemon) -> None:
    with daemon.http() as http:
        listed = http.get("/v1/models").json()["data"]
        assert listed[0]["id"] == Path(daemon.model).name and all("/" not in m["id"] for m in listed)
        one = http.get(f"/v1/models/{listed[0]['id']}")
        assert one.status_code == 200 and one.json() == listed[0]
        missing = http.get("/v1/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        named = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "model": listed[0]["id"]})
        assert named.status_code == 200 and named.json()["model"] == daemon.model


def test_405_says_which_methods_a_path_takes(daemon: TcpDaemon) -> None:
    with daemon.http() as http:
        for method, path, allowed in (("GET", "/v1/infill", "POST"), ("PUT", "/v1/completions", "POST"),
                                      ("DELETE", "/v1/status", "GET, HEAD")):
            answer = http.request(method, path)
            assert answer.status_code == 405 and answer.headers["allow"] == allowed
            assert answer.json()["error"]["code"] == "method_not_allowed"


def test_errors_count_the_daemons_failures_not_the_clients(daemon: TcpDaemon) -> None:
    before = daemon.http().get("/v1/status").json()["errors"]
    with daemon.http() as http:
        vocab = http.get("/v1/status").json()["vocab_size"]
        assert http.post("/detokenize", json={"tokens": [vocab + 5]}).status_code == 400  # found by the worker
        assert http.post("/v1/infill", json={"prefix": "a", "suffix": "", "model": "/elsewhere"}).status_code == 404
        assert http.post("/v1/infill", json={"prefix": "a", "suffix": "", "steps": 0}).status_code == 400
        assert http.get("/v1/status").json()["errors"] == before


def test_ids_hold_any_character_but_control_ones(daemon: TcpDaemon) -> None:
    with daemon.http() as http:
        for private in ("\ue000", "\U000f0001id", "naïve id\u00a0x"):
            answer = http.post("/v1/cancel", json={"id": private})
            assert answer.status_code == 200 and answer.json() == {"id": private, "cancelled": False}
        for control in ("a\nb", "a\x00", "a\x85", "a\u2028b"):
            answer = http.post("/v1/cancel", json={"id": control})
            assert answer.status_code == 400 and "control characters" in answer.json()["error"]["message"]


def test_a_wrong_max_tokens_is_told_its_real_range(daemon: TcpDaemon) -> None:
    with daemon.http() as http:
        answer = http.post("/v1/completions", json={"prompt": "a", "max_tokens": -2})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "max_tokens must be -1 (no limit) or between 0 and 2147483647 (got -2)"


def test_cors_for_the_allowed_origin(daemon: TcpDaemon) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with daemon.http() as http:
        http.headers.pop("Authorization")  # a browser's preflight carries no token
        answer = http.options("/v1/completions", headers=preflight)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in answer.headers["access-control-allow-methods"]
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        refused = http.post("/v1/completions", json={"prompt": "a"}, headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    with daemon.http() as http:
        ok = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}, headers={"Origin": ORIGIN})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
        bad = http.post("/v1/completions", json={"prompt": 3}, headers={"Origin": ORIGIN})
        assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == ORIGIN
        stream = http.post("/v1/infill", json={"prefix": "a", "suffix": "", "max_tokens": 2, "stream": True},
                           headers={"Origin": ORIGIN})
        assert stream.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in stream.headers["access-control-expose-headers"].lower()
        for method in ("OPTIONS", "POST"):
            other = http.request(method, "/v1/completions", headers={**preflight, "Origin": OTHER})
            assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_a_prompt_longer_than_the_context_is_cut_to_it(daemon: TcpDaemon) -> None:
    status = daemon.http().get("/v1/status").json()
    room = status["context_length"] - status["canvas_length"]
    answer = _post(daemon, "/v1/infill", {"prefix": "x = 1\n" * 4000, "suffix": "\n", "max_tokens": 4})
    assert answer["timings"]["prompt_tokens"] == room


def test_tcp_connections_send_without_delay() -> None:
    # asyncio turns Nagle's algorithm off only on sockets that say they are TCP: the daemon's do
    async def check() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            lock = AddressLock(Path(tmp) / "lock")
            listener = bind_tcp_socket("127.0.0.1", 0, lock)
            seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(accepted, sock=listener)
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            server.close()
            lock.release()
            return value

    assert asyncio.run(check()) != 0


def test_the_document_says_what_the_token_guards(daemon: TcpDaemon) -> None:
    with daemon.http() as http:
        doc = http.get("/openapi.json").json()
    assert doc["security"] == [{"bearer": []}] and doc["paths"]["/health"]["get"]["security"] == []
    assert doc["components"]["schemas"]["DetokenizeRequest"]["properties"]["tokens"]["items"]["maximum"] > 0
    guarded = {path: "401" in op["responses"] for path, item in doc["paths"].items() for op in item.values()}
    assert guarded == {path: path != "/health" for path in guarded}
