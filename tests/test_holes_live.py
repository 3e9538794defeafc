"""Several holes streamed and with alternatives, through a real daemon on the tiny random-weight
checkpoint: NDJSON drafts that carry every hole, the CLI's live view of them (a pseudo-terminal
and Rich's record mode), and joint alternatives in the API, `--json`, the text output and
`--apply`. Random weights: structure, not content."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from test_cli_commands import Daemon, daemon, ok, run_on_pty  # noqa: F401 - the module's daemon fixture

from diffgemma.runtime.api.config import MAX_ALTERNATIVES

PIECES = ["def f(x):\n    y = ", "\n    z = ", "\n    return y + z\n"]
# far apart: the text between the holes is longer than a quarter canvas, so they go left to right
FAR = ["def f():\n    a = ", "\n".join(f"    v{i} = {i} * {i}" for i in range(24)) + "\n    w = ", "\n    return w\n"]


def _http(d: Daemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://d", timeout=300)


def _stream(d: Daemon, body: dict) -> list[dict]:
    with _http(d) as http:
        answer = http.post("/v1/infill", json={**body, "stream": True})
        assert answer.status_code == 200, answer.text
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]


def _body(pieces: list[str], **more: object) -> dict:
    return {"holes": [{"prefix": p} for p in pieces[:-1]], "suffix": pieces[-1], "language": "python",
            "steps": 3, "max_tokens": 8, "seed": 2, **more}


def _filled(pieces: list[str], fills: list[str] | tuple[str, ...]) -> str:
    return pieces[0] + "".join(f + p for f, p in zip(fills, pieces[1:], strict=True))


@pytest.mark.parametrize("pieces", [PIECES, FAR], ids=["close", "far"])
def test_drafts_of_several_holes_stream_before_the_result(daemon: Daemon, pieces: list[str]) -> None:  # noqa: F811
    lines = _stream(daemon, _body(pieces, confidence=True))
    assert lines[-1]["type"] == "result" and all(line["type"] == "draft" for line in lines[:-1])
    drafts, result = lines[:-1], lines[-1]
    assert drafts, "drafts arrive before the result"
    assert [d["step"] for d in drafts] == sorted(d["step"] for d in drafts)
    answer = [h["text"] for h in result["holes"]]
    for draft in drafts:
        holes = draft["holes"]
        assert len(holes) == 2 and draft["text"] == holes[0]["text"]
        assert {h["state"] for h in holes} <= {"final", "refining", "waiting"}
        # every draft's holes join the fixed text into a whole buffer
        buffer = _filled(pieces, [h["text"] for h in holes])
        assert buffer.startswith(pieces[0]) and buffer.endswith(pieces[-1]) and pieces[1] in buffer
        for i, hole in enumerate(holes):
            # a repair round's draft has no tokens for the holes it re-noises
            if not (draft.get("phase") == "repairing" and hole["state"] == "refining"):
                assert "".join(t["text"] for t in hole["tokens"]) == hole["text"]
            if hole["state"] == "final":
                assert hole["text"] == answer[i]
    states = [tuple(h["state"] for h in d["holes"]) for d in drafts]
    if pieces is FAR:  # left to right: the first hole final while the second refines
        assert states[0] == ("refining", "waiting") and ("final", "refining") in states
    else:
        assert set(states) == {("refining", "refining")}
    plain = _stream(daemon, _body(pieces))  # without confidence: no tokens in the drafts
    assert all("tokens" not in h for line in plain[:-1] for h in line["holes"])


def test_api_alternatives_with_several_holes_are_aligned_sets(daemon: Daemon) -> None:  # noqa: F811
    with _http(daemon) as http:
        for pieces in (PIECES, FAR):
            # the sets as the model wrote them (the syntax gate drops the ones that add errors)
            result = http.post("/v1/infill", json=_body(pieces, alternatives=3, allow_broken=True)).json()
            lists = [h["alternatives"] for h in result["holes"]]
            assert len(lists) == 2 and len(lists[0]) == len(lists[1])
            sets = list(zip(*lists, strict=True))
            assert 2 <= len(sets) <= 3 and len(set(sets)) == len(sets)  # distinct sets only
            assert list(sets[0]) == [h["text"] for h in result["holes"]]  # set 0 is the answer
            assert "alternatives" not in result  # per hole, not for the first hole alone
        single = http.post("/v1/infill", json=_body(PIECES)).json()
        assert all("alternatives" not in h for h in single["holes"])
        for wrong, field in (({"alternatives": 0}, "alternatives"), ({"alternatives": MAX_ALTERNATIVES + 1},
                                                                      "alternatives"),
                             ({"alternatives": True}, "alternatives"), ({"holes": [{"prefix": 1}]}, "holes")):
            answer = http.post("/v1/infill", json={**_body(PIECES), **wrong})
            message = answer.json()["error"]["message"]
            assert answer.status_code == 400 and field in message and "\n" not in message
        assert http.get("/health").status_code == 200  # still serving
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
        assert "holes" in schemas["DraftLine"]["properties"] and "holes" in schemas["Result"]["properties"]


def test_cli_alternatives_with_several_markers(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    buffer = "<FILL>".join(PIECES).encode()
    data = json.loads(ok(daemon.run(["infill", "-", "-l", "python", "--json", "--seed", "2", "--alternatives",
                                     "3", "--allow-broken"], stdin=buffer)).stdout)
    lists = [h["alternatives"] for h in data["holes"]]
    sets = list(zip(*lists, strict=True))
    assert len(lists) == 2 and 2 <= len(sets) <= 3 and len(set(sets)) == len(sets)
    assert list(sets[0]) == [h["text"] for h in data["holes"]]
    for hole in data["holes"]:
        assert set(hole) >= {"text", "range", "tokens", "alternatives"}
    # --apply writes the first set, atomically, with the previous contents as the backup
    path = tmp_path / "m.py"
    path.write_text("<FILL>".join(PIECES))
    applied = json.loads(ok(daemon.run(["infill", str(path), "--apply", "--json", "--seed", "2",
                                        "--alternatives", "3", "--allow-broken"])).stdout)
    first = [h["text"] for h in applied["holes"]]
    assert path.read_text() == _filled(PIECES, first) and applied["applied"] is True
    assert Path(applied["backup"]).read_text() == "<FILL>".join(PIECES)
    assert first == [h["alternatives"][0] for h in applied["holes"]]
    # bad combinations: one line, a usage exit code, nothing written
    path.write_text("<FILL>".join(PIECES))
    for args, stdin in ((["infill", str(path), "--alternatives", str(MAX_ALTERNATIVES + 1)], b""),
                        (["infill", str(path), "--alternatives", "0"], b""),
                        (["infill", "-", "--apply", "--alternatives", "2"], buffer)):
        bad = daemon.run(args, stdin=stdin)
        assert bad.returncode == 2 and b"Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.decode().strip().splitlines()) == 1, bad.stderr
    assert path.read_text() == "<FILL>".join(PIECES)


def test_the_live_view_draws_every_hole_and_the_other_sets(daemon: Daemon, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "far.py"
    path.write_text("<FILL>".join(FAR))
    code, screen = run_on_pty(["infill", str(path), "--alternatives", "2", "--seed", "1", "--allow-broken"],
                              daemon.env)
    assert code == 0 and "Traceback" not in screen, screen
    assert re.search(r"step \d+ · hole 1 of 2", screen) and re.search(r"step \d+ · hole 2 of 2", screen), screen
    assert "far.py: 2 holes" in screen and "v0 = 0 * 0" in screen and "return w" in screen
    assert "⋮" in screen  # the long text between the holes, shortened
    assert "diffgemma: alternative 2 of 2, hole 1 of 2:" in screen and "alternative 2 of 2, hole 2 of 2:" in screen
    code, quiet = run_on_pty(["infill", str(path), "--quiet"], daemon.env)
    assert code == 0 and "step " not in quiet and "alternative" not in quiet


def test_the_holes_view_colors_each_hole_by_its_state() -> None:
    from rich.console import Console

    from diffgemma.cli.live import HolesCanvas

    view = HolesCanvas(["a = ", "\nb = ", "\nc = ", "\n"], "t")
    tokens = [{"text": "1", "confidence": 0.9}, {"text": "2", "confidence": 0.1}]
    view.update({"step": 4, "text": "10", "holes": [{"text": "10", "state": "final"},
                                                   {"text": "12", "state": "refining", "tokens": tokens},
                                                   {"text": "", "state": "waiting"}]})
    body = view._render().renderable
    styles = {body.plain[s.start:s.end]: str(s.style) for s in body.spans}
    assert styles["10"] == "bold black on green" and styles["1"] == "bold black on yellow"
    assert styles["2"] == "dim black on yellow" and styles["…"] == "dim yellow"
    assert body.plain == "a = 10\nb = 12\nc = …\n"
    console = Console(record=True, width=60, color_system=None)
    console.print(view._render())
    assert "step 4 · hole 2 of 3" in console.export_text()
    view.update({"step": 5, "text": "x", "holes": [{"text": "x"}]})  # not every hole: the last good ones stay
    assert view._render().renderable.plain == "a = 10\nb = 12\nc = …\n"
