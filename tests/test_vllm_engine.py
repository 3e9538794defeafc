"""The vLLM engine's HTTP side, driven exactly: the start check, the scouting and finals rounds,
races, aborts, budgets and routing, against the plumbing server (tests/vllm_plumbing.py), whose
canvases are their seeds and whose timing and scores a test sets."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_plumbing import PlumbingServer

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.engine.types import Cancelled, CancelToken, Draft, SamplingSettings
from diffgemma.runtime.engine.vllm.canvases import FINALISTS, SCOUT_STEPS
from diffgemma.runtime.engine.vllm.connect import VllmStartError
from diffgemma.runtime.engine.vllm.engine import VllmEngine

PREFIX, SUFFIX = "def f(x):\n    return ", "\n\nprint(f(2))\n"


def wait_for(check: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture()
def servers(tiny_model_dir: Path) -> Iterator[list[PlumbingServer]]:
    started = [PlumbingServer(tiny_model_dir, 32, 512).start() for _ in range(2)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture()
def engine(tiny_model_dir: Path, servers: list[PlumbingServer]) -> Iterator[VllmEngine]:
    made = VllmEngine.connect(str(tiny_model_dir), [servers[0].url])
    yield made
    made.close()


def rounds(server: PlumbingServer) -> list[int | None]:
    """The diffusion_max_steps of every request the server got, in order."""
    return [b["vllm_xargs"].get("diffusion_max_steps") for b in server.record.bodies]


def test_the_start_check_accepts_only_a_server_on_the_same_checkpoint(tiny_model_dir: Path,
                                                                      servers: list[PlumbingServer]) -> None:
    server = servers[0]
    VllmEngine.connect(str(tiny_model_dir), [server.url + "/v1"]).close()  # OpenAI's base URL works too
    server.knobs.served_name = "another-model"  # served under another name, from the same directory
    VllmEngine.connect(str(tiny_model_dir), [server.url]).close()
    server.knobs.tokenize_shift = 1
    with pytest.raises(VllmStartError, match="tokenizes"):
        VllmEngine.connect(str(tiny_model_dir), [server.url])
    server.knobs.tokenize_shift = 0
    other = tiny_model_dir.parent / "elsewhere"
    other.mkdir(exist_ok=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(VllmStartError, match="serves another-model"):
        VllmEngine.connect(str(other), [server.url])
    with pytest.raises(VllmStartError, match="cannot reach"):
        VllmEngine.connect(str(tiny_model_dir), ["http://127.0.0.1:9"])


def test_an_infill_scouts_every_length_then_races_finalists(engine: VllmEngine, servers: list[PlumbingServer]) -> None:
    server = servers[0]
    result = engine.infill(PREFIX, SUFFIX, client="me")
    scouts = [s for s in rounds(server) if s == SCOUT_STEPS]
    assert len(scouts) == 8  # the tiny canvas's hole lengths, each its own request
    assert rounds(server)[len(scouts):] == [None] * FINALISTS  # the server's own steps for the finals
    assert result.finish_reason == "stop" and result.timings.canvases == 2 and result.timings.total_ms > 0
    # every canvas joins exactly here (the plumbing server emits its seed), so the best-scouted
    # finalist wins the race as soon as it is in: the other one may be cut off unread
    prompt = len(server.record.bodies[0]["prompt"])
    assert result.timings.encoded_tokens in (prompt * (8 + 1), prompt * (8 + 2))
    assert result.timings.prompt_tokens == prompt  # the request's prompt, once (what usage counts)


def test_the_best_scouted_length_is_the_answer(engine: VllmEngine, servers: list[PlumbingServer]) -> None:
    server = servers[0]
    chosen = 12  # the hole length whose held suffix the server scores best

    def held(body: dict[str, Any]) -> float:
        return -0.1 if body["vllm_xargs"]["diffusion_pinned"][0] == chosen else -4.0

    server.knobs.held_logprob = held
    drafts: list[Draft] = []
    result = engine.infill(PREFIX, SUFFIX, on_draft=drafts.append)
    assert result.hole_tokens == chosen
    finals = server.record.bodies[-FINALISTS:]
    assert finals[0]["vllm_xargs"]["diffusion_pinned"][0] == chosen
    scout = next(b for b in server.record.bodies if b["vllm_xargs"]["diffusion_pinned"][0] == chosen)
    seeded = finals[0]["vllm_xargs"]["diffusion_seed_canvas"]
    assert seeded == scout["vllm_xargs"]["diffusion_seed_canvas"]  # the final continues the scouted canvas
    assert [d.step for d in drafts] == [SCOUT_STEPS, engine.default_steps]  # one draft per canvas round


def test_a_drifting_finalist_loses_to_one_that_joins_and_the_rest_is_aborted(
        engine: VllmEngine, servers: list[PlumbingServer]) -> None:
    server = servers[0]
    best, second = 12, 8
    server.knobs.held_logprob = lambda b: {best: -0.1, second: -0.5}.get(b["vllm_xargs"]["diffusion_pinned"][0], -4.0)
    finals = lambda b: b["vllm_xargs"].get("diffusion_max_steps") is None  # noqa: E731
    # the best-scouted finalist emits other tokens at its pins, the second joins
    server.knobs.drift = lambda b: finals(b) and b["vllm_xargs"]["diffusion_pinned"][0] == best
    assert engine.infill(PREFIX, SUFFIX).hole_tokens == second
    # now the best one joins at once and the second is slow: the race aborts it
    server.knobs.drift = lambda b: False
    server.knobs.delay_s = lambda b: 5.0 if finals(b) and b["vllm_xargs"]["diffusion_pinned"][0] == second else 0.0
    started = time.monotonic()
    assert engine.infill(PREFIX, SUFFIX).hole_tokens == best
    assert time.monotonic() - started < 4.0
    wait_for(lambda: server.record.aborted == 1)
    assert engine.health()["servers"][0]["aborted"] == 1


def test_a_cancel_aborts_every_request_in_flight(engine: VllmEngine, servers: list[PlumbingServer]) -> None:
    server = servers[0]
    server.knobs.delay_s = lambda b: 30.0
    cancel = CancelToken()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        engine.infill(PREFIX, SUFFIX, cancel=cancel)
    assert time.monotonic() - started < 5.0
    wait_for(lambda: server.record.aborted == 8)  # every scouting request, closed
    assert server.record.finished == 0


def test_at_the_deadline_the_best_canvas_so_far_is_the_answer(engine: VllmEngine,
                                                              servers: list[PlumbingServer]) -> None:
    server = servers[0]
    server.knobs.held_logprob = lambda b: -0.1 if b["vllm_xargs"]["diffusion_pinned"][0] == 4 else -3.0
    server.knobs.delay_s = lambda b: 30.0 if b["vllm_xargs"].get("diffusion_max_steps") is None else 0.0
    result = engine.infill(PREFIX, SUFFIX, deadline=time.monotonic() + 4.0)  # the scouts take well under it
    assert result.finish_reason == "time" and result.hole_tokens == 4  # the best scouted canvas
    wait_for(lambda: server.record.aborted == FINALISTS)
    late = engine.infill(PREFIX, SUFFIX, deadline=time.monotonic() - 1)
    assert (late.finish_reason, late.text) == ("time", "")


def test_one_clients_requests_stay_on_one_server_and_move_when_it_fails(
        tiny_model_dir: Path, servers: list[PlumbingServer]) -> None:
    engine = VllmEngine.connect(str(tiny_model_dir), [s.url for s in servers])
    try:
        clients = [f"dev-{i}" for i in range(8)]
        homes = {}
        for client in clients:
            before = [len(s.record.bodies) for s in servers]
            engine.chat([{"role": "user", "content": "hi"}], max_tokens=8, client=client)
            used = [i for i, s in enumerate(servers) if len(s.record.bodies) > before[i]]
            assert len(used) == 1  # all of one call's requests on one server
            homes[client] = used[0]
        assert set(homes.values()) == {0, 1}
        for client in clients:  # again: the same homes
            before = [len(s.record.bodies) for s in servers]
            engine.chat([{"role": "user", "content": "hi"}], max_tokens=8, client=client)
            assert len(servers[homes[client]].record.bodies) > before[homes[client]]
        servers[0].knobs.status = 503
        for client in clients:
            engine.chat([{"role": "user", "content": "hi"}], max_tokens=8, client=client)
        health = engine.health()["servers"]
        assert not health[0]["healthy"] and health[0]["failures"] >= 1 and "503" in health[0]["last_error"]
        assert health[1]["healthy"] and health[1]["failures"] == 0
        servers[1].knobs.status = 503
        with pytest.raises(WireError) as failed:
            engine.chat([{"role": "user", "content": "hi"}], max_tokens=8, client=clients[0])
        assert failed.value.code == ErrorCode.ENGINE_UNAVAILABLE
    finally:
        engine.close()


def test_a_request_vllm_refuses_is_a_typed_error(engine: VllmEngine, servers: list[PlumbingServer]) -> None:
    servers[0].knobs.status = 400
    with pytest.raises(WireError) as refused:
        engine.infill(PREFIX, SUFFIX)
    assert refused.value.code == ErrorCode.INVALID_REQUEST and "refused by the plumbing server" in refused.value.message
    assert engine.health()["servers"][0]["healthy"]  # the request's fault, not the server's


def test_steps_go_to_vllm_and_seeds_are_refused_before_any_request(engine: VllmEngine,
                                                                   servers: list[PlumbingServer]) -> None:
    engine.chat([{"role": "user", "content": "hi"}], max_tokens=8, settings=SamplingSettings(steps=5))
    assert rounds(servers[0]) == [5]
    with pytest.raises(Exception, match="seed"):
        engine.chat([{"role": "user", "content": "hi"}], settings=SamplingSettings(seed=1))
    assert len(servers[0].record.bodies) == 1


def test_the_engine_and_the_daemon_around_it_never_import_torch(tiny_model_dir: Path,
                                                                servers: list[PlumbingServer]) -> None:
    code = ("import sys\n"
            "from diffgemma.runtime.daemon import lifecycle, server, scheduler\n"
            "from diffgemma.runtime.api.daemon_config import DaemonConfig\n"
            f"engine = lifecycle.connect_vllm(DaemonConfig(model={str(tiny_model_dir)!r}, engine='vllm', "
            f"vllm_urls=({servers[0].url!r},)))\n"
            "sched = lifecycle._scheduler(DaemonConfig(), engine.checkpoint.name, engine)\n"
            "server.create_app(sched, server.ServerInfo())\n"
            "print(engine.infill('x = ', '\\n').finish_reason)\n"
            "engine.close()\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["stop", "[]"]


def test_a_fill_that_breaks_the_syntax_is_repaired_in_a_seeded_canvas(engine: VllmEngine,
                                                                      servers: list[PlumbingServer]) -> None:
    from diffgemma.context.syntax import syntax_issues

    server = servers[0]
    prefix, suffix = "def f(x):\n    return ", "\n\nprint(f(2))\n"
    broken, space = engine.encode_text("x +"), engine.encode_text(" ")[0]
    pins = lambda body: body["vllm_xargs"].get("diffusion_pinned", [])  # noqa: E731
    server.knobs.held_logprob = lambda b: -0.1 if pins(b)[0] == len(broken) else -4.0

    def shape(body: dict[str, Any], tokens: list[int]) -> list[int]:
        if "logprob_token_ids" in body:  # a scouted or final candidate: the broken fill
            if pins(body)[0] == len(broken):
                tokens[: len(broken)] = broken
        else:  # a repair round: what it may rewrite becomes blank
            tokens[: len(broken)] = [t if p in pins(body) else space for p, t in enumerate(tokens[: len(broken)])]
        return tokens

    server.knobs.shape = shape
    plain = engine.infill(prefix, suffix, language="python", refine=False)
    assert plain.text == "x +" and plain.timings.refine_rounds == 0
    repair = engine.infill(prefix, suffix, language="python")
    assert repair.timings.refine_rounds >= 1 and repair.text != "x +"
    assert syntax_issues(prefix + repair.text + suffix, "python") == []
    repair_body = server.record.bodies[-1]
    assert "logprob_token_ids" not in repair_body  # nothing scored: everything but the broken span is pinned
    assert set(repair_body["vllm_xargs"]["diffusion_pinned"]) >= set(range(len(broken), len(broken) + 8))


def test_serve_refuses_to_start_in_one_line(tiny_model_dir: Path, servers: list[PlumbingServer],
                                            tmp_path: Path) -> None:
    import os

    servers[0].knobs.tokenize_shift = 3  # a server on another tokenizer
    env = {**os.environ, "DIFFGEMMA_STATE_DIR": str(tmp_path / "s"), "DIFFGEMMA_RUNTIME_DIR": str(tmp_path)}
    env.pop("DIFFGEMMA_MODEL", None)
    for args, words in ((["--model", str(tiny_model_dir), "--vllm-url", servers[0].url], "tokenizes"),
                        (["--vllm-url", servers[1].url], "needs --model"),
                        (["--model", str(tiny_model_dir), "--vllm-url", "gpu1:8000"], "not an http"),
                        (["--model", str(tiny_model_dir), "--device", "cpu", "--vllm-url", servers[1].url],
                         "--device")):
        done = subprocess.run([sys.executable, "-m", "diffgemma.cli", "serve", "--engine", "vllm",
                               "--socket", str(tmp_path / "x.sock"), *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "x.sock").exists()
