"""The wire protocol and the adapters' mappings, without a daemon (pure, fast)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diffgemma.runtime.api import config, paths
from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.api.protocol import (
    MAX_EXTRA_FILES,
    MAX_TOKENS_LIMIT,
    CancelRequest,
    EditRequest,
    ExtraFile,
    InfillRequest,
    ProtocolError,
    Result,
    error_line,
)
from diffgemma.runtime.daemon import adapters
from diffgemma.runtime.engine.types import Draft


def test_infill_request_round_trip() -> None:
    req = InfillRequest(prefix="a", suffix="b", language="python", extra=[ExtraFile("m.py", "x = 1\n")],
                        max_tokens=12, steps=8, seed=0, stream=True, client="ed", model="/m", id="r1",
                        keep_alive=0, options={"entropy_bound": 0.2})
    data = req.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["extra"] == [{"path": "m.py", "text": "x = 1\n"}]
    assert InfillRequest.from_json(data) == InfillRequest(**{**req.__dict__, "keep_alive": 0.0})


def test_defaults_are_left_out_of_the_wire() -> None:
    assert InfillRequest(prefix="", suffix="").to_json() == {"prefix": "", "suffix": ""}
    assert EditRequest(prefix="", selection="s", suffix="").to_json() == {"prefix": "", "selection": "s",
                                                                          "suffix": ""}


@pytest.mark.parametrize(("body", "reason"), [
    ({"prefix": "a"}, "missing the required field 'suffix'"),
    ({"prefix": "a", "suffix": "", "nope": 1}, "unknown field 'nope'"),
    ({"prefix": None, "suffix": ""}, "prefix must be a string (got null)"),
    ({"prefix": "a", "suffix": "", "max_tokens": 0}, "max_tokens must be between 1"),
    ({"prefix": "a", "suffix": "", "max_tokens": 2.5}, "max_tokens must be an integer"),
    ({"prefix": "a", "suffix": "", "steps": False}, "steps must be an integer (got boolean)"),
    ({"prefix": "a", "suffix": "", "stream": "yes"}, "stream must be true or false"),
    ({"prefix": "a", "suffix": "", "extra": [{"path": "x"}]}, "extra[0] is missing 'text'"),
    ({"prefix": "a", "suffix": "", "extra": [{"path": "x", "text": "", "mtime": 1}]}, "unknown field 'mtime'"),
    ({"prefix": "a", "suffix": "", "extra": "x"}, "extra must be an array"),
    ({"prefix": "a", "suffix": "", "keep_alive": "5m"}, "keep_alive must be a number"),
    ({"prefix": "a", "suffix": "", "options": {"top_k": 4}}, "unknown option 'top_k'"),
    ({"prefix": "a", "suffix": "", "options": {"entropy_bound": 0}}, "entropy_bound must be in (0"),
    ({"prefix": "a", "suffix": "", "id": "x" * 500}, "id is longer than"),
    ({"prefix": "a", "suffix": "", "id": "a\nb"}, "id must not contain control characters"),
    ({"prefix": "a", "suffix": "", "alternatives": 5}, "alternatives must be between 1 and 4"),
    ({"prefix": "a", "suffix": "", "time_limit_ms": 0}, "time_limit_ms must be between 1"),
])
def test_infill_request_validation(body: dict, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        InfillRequest.from_json(body)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_edit_request_validation_and_python_side_validate() -> None:
    with pytest.raises(ProtocolError, match="strength must be in"):
        EditRequest.from_json({"prefix": "", "selection": "", "suffix": "", "strength": 1.5})
    with pytest.raises(ProtocolError, match="steps must be between"):
        InfillRequest(prefix="", suffix="", steps=5000).validate()
    assert EditRequest(prefix="", selection="x", suffix="", strength=1).validate().strength == 1.0


def test_whole_floats_are_integers() -> None:
    assert InfillRequest.from_json({"prefix": "", "suffix": "", "max_tokens": 16.0}).max_tokens == 16


def test_cancel_and_result() -> None:
    assert CancelRequest.from_json({"id": "a"}).id == "a"
    with pytest.raises(ProtocolError):
        CancelRequest.from_json({"id": 3})
    line = {"type": "result", "text": "x", "finish_reason": "stop", "timings": {"steps": 2}, "id": "i",
            "model": "m"}
    assert Result.from_json(line) == Result(text="x", finish_reason="stop", timings={"steps": 2}, id="i", model="m")
    with pytest.raises(ProtocolError):
        Result.from_json({"finish_reason": "stop"})


def test_request_schema_lists_every_field() -> None:
    schema = EditRequest.json_schema()
    assert schema["required"] == ["prefix", "selection", "suffix"]
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(EditRequest)}
    assert all(schema["properties"][name] for name in schema["properties"])


def test_llama_infill_mapping() -> None:
    call = adapters.llama_infill_request({
        "input_prefix": "def f():\n", "input_suffix": "\n", "prompt": "    return ", "n_predict": -1,
        "input_extra": [{"filename": "a.py", "text": "x = 1\n", "time": 3.5}], "samplers": ["top_k"],
        "id_slot": 0, "stop": ["\n\n"], "seed": -1, "response_fields": ["content", "timings/prompt_n"],
        "t_max_predict_ms": 250})
    assert call.request.prefix == "def f():\n    return "  # prompt appended, as llama.cpp does
    assert call.request.extra == [ExtraFile("a.py", "x = 1\n")]
    assert call.request.max_tokens is None and call.request.seed is None
    assert call.request.time_limit_ms == 250
    result = Result(text="42\n\nmore", finish_reason="stop", id="i", model="m",
                    timings={"prompt_tokens": 13, "encoded_tokens": 10, "encode_ms": 5.0, "generated_tokens": 4,
                             "total_ms": 25.0, "cached_tokens": 3})
    assert call.codec.answer(result) == {"content": "42", "timings/prompt_n": 10}
    call.codec.response_fields = None
    full = call.codec.answer(result)
    assert full["stop_type"] == "word" and full["stopping_word"] == "\n\n" and full["tokens_cached"] == 3
    assert full["timings"]["predicted_ms"] == 20.0 and full["timings"]["predicted_per_second"] == 200.0


def test_llama_n_cmpl_answers_an_array_and_time_is_a_limit() -> None:
    call = adapters.llama_infill_request({"input_prefix": "a", "input_suffix": "b", "n_cmpl": 3})
    assert call.request.alternatives == 3
    result = Result(text="x", finish_reason="time", id="i", model="m", timings={}, alternatives=["x", "y", "z"])
    answer = call.codec.answer(result)
    assert [a["content"] for a in answer] == ["x", "y", "z"] and [a["index"] for a in answer] == [0, 1, 2]
    assert answer[0]["stop_type"] == "limit"
    with pytest.raises(ProtocolError, match="Field 'n_cmpl': Value must be between 1 <= value <= 4"):
        adapters.llama_infill_request({"n_cmpl": 7})


def test_llama_infill_keeps_the_newest_extra_chunks() -> None:
    chunks = [{"filename": f"f{i}.py", "text": f"x{i}\n"} for i in range(200)]
    call = adapters.llama_infill_request({"input_prefix": "a", "input_extra": chunks})
    assert call.request.extra[-1] == ExtraFile("f199.py", "x199\n")
    assert len(call.request.extra) == MAX_EXTRA_FILES
    big = [{"filename": "", "text": "y" * 40_000} for _ in range(3)]
    assert len(adapters.llama_infill_request({"input_extra": big}).request.extra) == 1


def test_llama_infill_rejects_wrong_types() -> None:
    for body in ({"input_prefix": 1}, {"input_extra": [{"filename": "a"}]}, {"n_predict": "8"},
                 {"stream": 1}, {"stop": [1]}, {"n_predict": 10**12}, {"n_cmpl": 0}, {"t_max_predict_ms": "1"}, []):
        with pytest.raises(ProtocolError):
            adapters.llama_infill_request(body)


def test_large_max_tokens_is_capped_not_refused() -> None:
    call = adapters.openai_completion_request({"prompt": "p", "max_tokens": 100_000})
    assert call.request.max_tokens == MAX_TOKENS_LIMIT


def test_openai_completion_mapping() -> None:
    call = adapters.openai_completion_request({"model": "anything", "prompt": ["p"], "suffix": None,
                                               "max_tokens": 5, "stop": "\n", "echo": True, "user": "u"})
    assert call.request.prefix == "p" and call.request.suffix == "" and call.request.max_tokens == 5
    assert call.request.model is None  # the client's label is not a checkpoint: the daemon's default answers
    result = Result(text="ab\ncd", finish_reason="length", id="i", model="m", timings={"generated_tokens": 5})
    data = adapters.openai_completion_response(call, result)
    assert data["choices"] == [{"text": "pab", "index": 0, "finish_reason": "stop", "logprobs": None}]
    chunks = call.codec.end(result).split(b"\n\n")
    assert chunks[-2] == b"data: [DONE]"
    assert json.loads(chunks[0].removeprefix(b"data: "))["choices"][0]["text"] == "pab"


def test_openai_n_gives_indexed_choices_and_time_is_length() -> None:
    call = adapters.openai_completion_request({"prompt": "p", "suffix": "s", "n": 2})
    result = Result(text="a", finish_reason="time", id="i", model="m", timings={}, alternatives=["a", "b"])
    choices = adapters.openai_completion_response(call, result)["choices"]
    assert [(c["index"], c["text"], c["finish_reason"]) for c in choices] == [(0, "a", "length"), (1, "b", "length")]
    with pytest.raises(ProtocolError):
        adapters.openai_completion_request({"prompt": "p", "n": 5})


def test_streaming_sends_committed_text_and_holds_back_a_possible_stop() -> None:
    call = adapters.openai_completion_request({"prompt": "p", "stop": ["\n\n"], "stream": True})
    codec = call.codec
    assert codec.draft(Draft(step=3, text="abc"), "i") == b""  # a step's draft: not sent
    first = codec.draft(Draft(step=5, text="abc\n", final=True), "i")
    assert json.loads(first.removeprefix(b"data: "))["choices"][0]["text"] == "abc"  # "\n" may start a stop
    assert codec.draft(Draft(step=9, text="abc\n\nrest", final=True), "i") == b""  # stopped
    end = codec.end(Result(text="abc\n\nrest", finish_reason="length", id="i", model="m", timings={}))
    assert b'"finish_reason": "stop"' in end and codec.sent == "abc"


def test_apply_stop_cuts_at_earliest() -> None:
    assert adapters.apply_stop("abcXdefY", ["Y", "X"]) == ("abc", "X")
    assert adapters.apply_stop("abc", []) == ("abc", None)


def test_paths_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DIFFGEMMA_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.setenv("DIFFGEMMA_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("DIFFGEMMA_SOCKET", raising=False)
    assert config.default_socket_path() == tmp_path / "rt" / "daemon.sock"
    assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o700
    assert paths.pid_path() == tmp_path / "st" / "daemon.pid"
    assert paths.pid_path(tmp_path / "other.sock") != paths.pid_path()
    assert paths.lock_path(paths.tcp_address("127.0.0.1", 9)).parent == tmp_path / "st"
    monkeypatch.setenv("DIFFGEMMA_SOCKET", str(tmp_path / "x.sock"))
    assert config.default_socket_path() == tmp_path / "x.sock"


def test_too_much_extra_context_keeps_the_newest_files() -> None:
    extra = [{"path": f"f{i}.py", "text": "x\n"} for i in range(100)]
    req = InfillRequest.from_json({"prefix": "a", "suffix": "", "extra": extra})
    assert len(req.extra) == MAX_EXTRA_FILES and req.extra[-1] == ExtraFile("f99.py", "x\n")
    assert req.extra[0] == ExtraFile(f"f{100 - MAX_EXTRA_FILES}.py", "x\n")


def test_error_lines_carry_the_typed_error() -> None:
    line = error_line(WireError(ErrorCode.QUEUE_FULL, "full\nsecond line"), "r1")
    assert line == {"type": "error", "error": {"message": "full", "type": "server_busy", "code": "queue_full"},
                    "status": 503, "id": "r1"}


def test_stream_lines_survive_any_line_reader() -> None:
    # JSON leaves U+0085, U+2028 and U+2029 raw in strings; str.splitlines (and httpx's iter_lines,
    # which our clients read NDJSON with) breaks lines there, so the daemon escapes them
    from diffgemma.runtime.daemon.codec import sse
    from diffgemma.runtime.daemon.jobs import Job
    from diffgemma.runtime.daemon.streaming import ndjson_draft

    text = "a\u2028b\x85c\u2029d"
    job = Job(kind="infill", request=InfillRequest(prefix="", suffix=""), model="m", on_done=lambda _: None)
    for raw in (ndjson_draft(job, Draft(step=1, text=text)), sse({"content": text})):
        lines = raw.decode().splitlines()
        assert len([line for line in lines if line]) == 1
        assert text in json.loads(lines[0].removeprefix("data: ")).values()
