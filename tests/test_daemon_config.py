"""A daemon's address as clients use it."""

from __future__ import annotations

import httpx

from diffgemma.runtime.api.daemon_config import DaemonConfig


def test_a_tcp_address_is_a_url_clients_accept() -> None:
    for host, url in ((None, "http://127.0.0.1:8012"), ("0.0.0.0", "http://0.0.0.0:8012"),
                      ("::1", "http://[::1]:8012")):
        described = DaemonConfig(host=host, port=8012).describe()
        assert described == url
        assert httpx.URL(described).port == 8012  # httpx refuses an unbracketed IPv6 host


def test_the_engine_flags_are_checked_and_survive_a_background_start() -> None:
    import pytest

    from diffgemma.cli.daemon_cmds import serve_config
    from diffgemma.runtime.api.daemon_config import DaemonStartError

    vllm = DaemonConfig(model="m", engine="vllm", vllm_urls=("http://a:8000", "http://b:8000"))
    vllm.check()
    argv = vllm.argv()
    assert argv[argv.index("--engine") + 1] == "vllm"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--vllm-url"] == ["http://a:8000", "http://b:8000"]
    assert "--engine" not in DaemonConfig(model="m").argv()
    assert serve_config("m", engine="vllm", vllm_url=["http://a:8000"]).vllm_urls == ("http://a:8000",)
    for bad, words in ((DaemonConfig(engine="gpu"), "unknown --engine"),
                       (DaemonConfig(engine="vllm"), "needs --vllm-url"),
                       (DaemonConfig(vllm_urls=("http://a",)), "needs --engine vllm"),
                       (DaemonConfig(engine="vllm", vllm_urls=("http://a",), device="cuda"), "--device"),
                       (DaemonConfig(engine="vllm", vllm_urls=("http://a",), allow_models=("x",)), "--allow-model")):
        with pytest.raises(DaemonStartError, match=words):
            bad.check()


def test_status_shows_each_vllm_server() -> None:
    from diffgemma.cli.daemon_cmds import _status_rows

    status = {"state": "ready", "engine": "vllm", "servers": [
        {"url": "http://a:8000", "model": "dg", "healthy": True, "requests": 12, "aborted": 3},
        {"url": "http://b:8000", "model": "dg", "healthy": False, "last_error": "HTTP 503", "requests": 1}]}
    rows = [value for key, value in _status_rows(status) if key == "vllm"]
    assert rows == ["http://a:8000 serving dg: healthy, 12 requests, 3 aborted",
                    "http://b:8000 serving dg: down (HTTP 503), 1 requests, 0 aborted"]
