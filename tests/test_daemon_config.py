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
