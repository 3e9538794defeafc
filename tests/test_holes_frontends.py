"""Several holes, confidences, repair switches and alternatives through the real front ends: the
`diffgemma` CLI and the HTTP API against one real daemon on the tiny random-weight checkpoint,
and the language server (pytest-lsp) against it. Random weights: structure, not content."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from lsprotocol import types
from test_cli_commands import Daemon, daemon, ok  # noqa: F401 - the module's daemon fixture
from test_lsp_server import assert_inline_items, lsp_session

from diffgemma.lsp.infill import answer_texts
from diffgemma.lsp.settings import parse_settings, settings_to_json
from diffgemma.runtime.api.protocol import Result

PIECES = ["def f(x):\n    y = ", "\n    z = ", "\n    return y + z\n"]


def _http(d: Daemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://d", timeout=300)


def _joined(entry: dict) -> str:
    # an empty answer (the syntax gate left nothing) has no tokens to send
    return "".join(t["text"] for t in entry.get("tokens", []))


def test_several_markers_on_stdin_fill_every_hole_and_keep_the_text_around(daemon: Daemon) -> None:  # noqa: F811
    buffer = "<FILL>".join(PIECES).encode()
    out = ok(daemon.run(["infill", "-", "-l", "python", "--json"], stdin=buffer))
    data = json.loads(out.stdout)
    fills = [h["text"] for h in data["holes"]]
    assert len(fills) == 2
    for hole in data["holes"]:
        assert _joined(hole) == hole["text"]
        assert all(0.0 <= t["confidence"] <= 1.0 for t in hole["tokens"])
    printed = ok(daemon.run(["infill", "-", "-l", "python", "--seed", "5"], stdin=buffer)).stdout.decode()
    assert printed.startswith(PIECES[0]) and printed.endswith(PIECES[2]) and PIECES[1] in printed
    assert "<FILL>" not in printed


def test_apply_writes_every_hole_at_once(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "m.py"
    path.write_text("<FILL>".join(PIECES))
    data = json.loads(ok(daemon.run(["infill", str(path), "--apply", "--json", "--seed", "2"])).stdout)
    fills = [h["text"] for h in data["holes"]]
    written = path.read_text()
    assert written == PIECES[0] + fills[0] + PIECES[1] + fills[1] + PIECES[2]
    assert data["applied"] is True
    # each range is where that fill now sits (1-based lines and columns)
    lines = written.split("\n")
    for hole in data["holes"]:
        start, end = hole["range"]["start"], hole["range"]["end"]
        offset = sum(len(line) + 1 for line in lines[: start["line"] - 1]) + start["col"] - 1
        end_offset = sum(len(line) + 1 for line in lines[: end["line"] - 1]) + end["col"] - 1
        assert written[offset:end_offset] == hole["text"]


def test_json_tokens_alternatives_and_the_repair_switch(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "one.py"
    path.write_text("def f(x):\n    return g(<FILL>)\n")
    data = json.loads(ok(daemon.run(["infill", str(path), "--json", "--seed", "1"])).stdout)
    assert "".join(t["text"] for t in data["tokens"]) == data["text"]
    assert "refine_rounds" in data["timings"]
    off = json.loads(ok(daemon.run(["infill", str(path), "--json", "--seed", "1", "--no-refine"])).stdout)
    assert off["timings"]["refine_rounds"] == 0
    # the alternatives as the model wrote them (the syntax gate drops the ones that add errors)
    alts = json.loads(ok(daemon.run(["infill", f"{path}:2:14", "--json", "--seed", "1", "--alternatives", "3",
                                      "--no-refine", "--allow-broken"])).stdout)
    assert alts["alternatives"][0] == alts["text"]
    assert len(set(alts["alternatives"])) == len(alts["alternatives"]) <= 3
    bad = daemon.run(["infill", str(path), "--alternatives", "9"])
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr


def test_api_holes_form_and_confidence(daemon: Daemon) -> None:  # noqa: F811
    body = {"holes": [{"prefix": PIECES[0]}, {"prefix": PIECES[1]}], "suffix": PIECES[2], "language": "python",
            "confidence": True, "steps": 3, "max_tokens": 8}
    with _http(daemon) as http:
        result = http.post("/v1/infill", json=body).json()
        assert len(result["holes"]) == 2 and result["text"] == result["holes"][0]["text"]
        assert all(_joined(h) == h["text"] for h in result["holes"])
        single = http.post("/v1/infill", json={"prefix": PIECES[0], "suffix": PIECES[2], "confidence": True,
                                               "steps": 3, "max_tokens": 8, "refine": False}).json()
        assert _joined(single) == single["text"] and single["timings"]["refine_rounds"] == 0
        plain = http.post("/v1/infill", json={"prefix": "a = ", "suffix": "\n", "steps": 2, "max_tokens": 4}).json()
        assert "tokens" not in plain and "holes" not in plain
        for wrong in ({"holes": "x", "suffix": ""}, {"holes": [], "suffix": ""},
                      {"holes": [{"text": "x"}], "suffix": ""}, {"prefix": "", "suffix": "", "refine": "yes"}):
            answer = http.post("/v1/infill", json=wrong)
            assert answer.status_code == 400 and answer.json()["error"]["message"]


def test_lsp_settings_for_alternatives_and_confident_prefix() -> None:
    parsed = parse_settings({"alternatives": 3, "confidentPrefix": True})
    assert parsed.problems == () and parsed.settings.completion.alternatives == 3
    assert parsed.settings.completion.confident_prefix == 0.5
    assert parse_settings(settings_to_json(parsed.settings)).settings == parsed.settings
    off = parse_settings({}).settings.completion
    assert off.alternatives == 1 and off.confident_prefix is None
    bad = parse_settings({"alternatives": 9, "confidentPrefix": 2})
    assert len(bad.problems) == 2 and bad.settings.completion.alternatives == 1


def test_lsp_answer_texts_cut_at_the_first_low_confidence_token() -> None:
    tokens = [{"text": "a = ", "confidence": 0.9}, {"text": "b", "confidence": 0.2},
              {"text": " + 1", "confidence": 0.99}]
    result = Result(text="a = b + 1", finish_reason="stop", timings={}, id="x", model="m", tokens=tokens,
                    alternatives=["a = b + 1", "a = 2", "a = "])
    assert answer_texts(result, None) == ["a = b + 1", "a = 2", "a = "]
    # the answer cut before "b"; an alternative equal to it is not offered twice
    assert answer_texts(result, 0.5) == ["a = ", "a = 2"]
    assert answer_texts(Result(text="", finish_reason="stop", timings={}, id="x", model="m"), 0.5) == []


async def test_lsp_offers_several_inline_items(tmp_path: Path, daemon: Daemon) -> None:  # noqa: F811
    options = {"socket": str(daemon.socket), "autoStart": False, "debounceMs": 0, "maxTokens": 8, "steps": 3}
    text = "def f(x):\n    return \n"
    position = types.Position(line=1, character=11)
    async with lsp_session(tmp_path, {**options, "alternatives": 3, "confidentPrefix": 0.3},
                           env=daemon.env) as session:
        uri = session.open(tmp_path / "a.py", text)
        texts = assert_inline_items(await session.inline(uri, 1, 11), position)
        assert len(texts) <= 3 and len(set(texts)) == len(texts)
        assert await session.client.protocol.send_request_async("diffgemma/stats", {})


def test_watch_fills_several_markers_in_one_request(daemon: Daemon, tmp_path: Path,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from diffgemma.cli import options as opt
    from diffgemma.cli.watch_cmd import FileWatcher

    monkeypatch.setenv("DIFFGEMMA_CONFIG_DIR", str(tmp_path / "cfg"))
    path = tmp_path / "w.py"
    path.write_text("<FILL>".join(PIECES))
    settings = opt.resolve(quiet=True, socket=str(daemon.socket), steps=3, max_tokens=8, seed=4)
    fills = FileWatcher(settings).handle(path)
    written = path.read_text()
    assert len(fills) == 2 and "<FILL>" not in written
    assert [f.line for f in fills] == [2, written.count("\n", 0, written.index("    z = ")) + 1]
    assert written.startswith(PIECES[0]) and written.endswith(PIECES[2]) and PIECES[1] in written


def test_stream_drafts_carry_tokens_when_confidence_is_asked(daemon: Daemon) -> None:  # noqa: F811
    body = {"prefix": PIECES[0], "suffix": PIECES[2], "steps": 3, "max_tokens": 8, "stream": True}
    with _http(daemon) as http:
        for confidence in (True, False):
            lines = [json.loads(line) for line in http.post("/v1/infill", json={**body, "confidence": confidence})
                     .text.splitlines() if line.strip()]
            drafts = [line for line in lines if line["type"] == "draft" and not line.get("final")]
            assert drafts and lines[-1]["type"] == "result"
            for draft in drafts:
                if not confidence:
                    assert "tokens" not in draft
                elif "phase" not in draft:  # a repair round's draft text was not denoised token by token
                    assert "".join(t["text"] for t in draft["tokens"]) == draft["text"]


def test_live_view_dims_the_unsure_tokens() -> None:
    from diffgemma.cli.live import LiveCanvas

    view = LiveCanvas("x = ", "\n", "t")
    view.update({"step": 1, "text": "ab", "tokens": [{"text": "a", "confidence": 0.9},
                                                     {"text": "b", "confidence": 0.1}]})
    panel = view._render()
    styles = {str(span.style) for span in panel.renderable.spans if panel.renderable.plain[span.start:span.end]
              in ("a", "b")}
    assert styles == {"bold black on yellow", "dim black on yellow"}
