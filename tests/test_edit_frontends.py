"""Inline rewrite confidences and the repair switch through the real front ends: `diffgemma edit`
and the HTTP API against one real daemon on the tiny random-weight checkpoint (structure, not
content)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from test_cli_commands import Daemon, daemon, ok  # noqa: F401 - the module's daemon fixture

SOURCE = "def f(x):\n    y = g(x, 1)\n    return y\n"


def _joined(entry: dict) -> str:
    return "".join(t["text"] for t in entry["tokens"])


def test_edit_json_has_tokens_that_join_to_the_rewrite_and_the_repair_switch(daemon: Daemon,  # noqa: F811
                                                                             tmp_path: Path) -> None:
    path = tmp_path / "e.py"
    path.write_text(SOURCE)
    data = json.loads(ok(daemon.run(["edit", str(path), "-s", "2:11-2:15", "--json", "--seed", "1",
                                     "--strength", "1"])).stdout)
    assert data["original"] == "x, 1"
    assert _joined(data) == data["text"]
    assert all(set(t) == {"text", "confidence"} and 0.0 <= t["confidence"] <= 1.0 for t in data["tokens"])
    assert "refine_rounds" in data["timings"]
    # as the model wrote it: the syntax gate would give back the selection, with no tokens of its own
    off = json.loads(ok(daemon.run(["edit", str(path), "-s", "2:11-2:15", "--json", "--seed", "1",
                                    "--strength", "1", "--no-refine", "--allow-broken"])).stdout)
    assert off["timings"]["refine_rounds"] == 0 and _joined(off) == off["text"]
    assert path.read_text() == SOURCE


def test_api_edit_confidence_and_refine(daemon: Daemon) -> None:  # noqa: F811
    body = {"prefix": "def f(x):\n    y = g(", "selection": "x, 1", "suffix": ")\n    return y\n",
            "language": "python", "steps": 3, "seed": 2, "strength": 1.0}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://d",
                      timeout=300) as http:
        asked = http.post("/v1/edit", json={**body, "confidence": True}).json()
        assert _joined(asked) == asked["text"]
        assert all(0.0 <= t["confidence"] <= 1.0 for t in asked["tokens"])
        plain = http.post("/v1/edit", json={**body, "refine": False}).json()
        assert "tokens" not in plain and plain["timings"]["refine_rounds"] == 0
        for wrong in ({**body, "refine": "no"}, {**body, "confidence": 1}):
            answer = http.post("/v1/edit", json=wrong)
            assert answer.status_code == 400 and answer.json()["error"]["message"]
        assert http.get("/health").status_code == 200
