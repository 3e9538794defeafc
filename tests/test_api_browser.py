"""A web page in a real browser calls the daemon: headless Chromium (Debian's package) driven by Playwright.

The daemon listens on loopback TCP with a token and `--allow-origin http://localhost:PORT`. A page
served from that origin fetches /v1/completions with the token (the browser sends its CORS preflight
first) and reads the answer, an error answer and the exposed X-Request-Id; the same page served from
another origin (http://127.0.0.1:PORT) cannot read anything: its fetch fails.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_api import TcpDaemon

CHROMIUM = Path("/usr/bin/chromium")
# What a machine without network access needs (no background fetches, no first-run work).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]
PAGE = b"<!doctype html><title>diffgemma from a page</title><p>a page that calls the daemon</p>"
FETCH = """async ([url, token, body]) => {
  try {
    const headers = {"Content-Type": "application/json"};
    if (token) headers["Authorization"] = "Bearer " + token;
    const r = await fetch(url, {method: "POST", headers, body: JSON.stringify(body)});
    const text = await r.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch (e) {}  // a stream's events stay text
    return {status: r.status, body: parsed, requestId: r.headers.get("x-request-id")};
  } catch (e) {
    return {error: String(e)};
  }
}"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing (.ci/run installs it)")


class _DualStack(http.server.ThreadingHTTPServer):
    """The page's server on ::1 and 127.0.0.1 alike, whichever "localhost" resolves to."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    server = _DualStack(("::", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.fixture(scope="module")
def daemon(tiny_model_dir: Path, page_port: int) -> Iterator[TcpDaemon]:
    tmp = Path(tempfile.mkdtemp(prefix="dgb", dir="/tmp"))
    d = TcpDaemon(tmp, tiny_model_dir, "--max-steps", "2", "--allow-origin", f"http://localhost:{page_port}")
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_page_on_the_allowed_origin_calls_the_daemon_and_another_cannot(daemon: TcpDaemon, page_port: int,
                                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url = daemon.base + "/v1/completions"
    body = {"prompt": "def add(a, b):\n    return ", "max_tokens": 8, "seed": 1}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"http://localhost:{page_port}/")
            answer = page.evaluate(FETCH, [url, daemon.token, body])
            assert answer.get("status") == 200, answer
            assert isinstance(answer["body"]["choices"][0]["text"], str)
            streamed = page.evaluate(FETCH, [url, daemon.token, {**body, "stream": True}])
            assert streamed.get("status") == 200 and streamed["body"].endswith("data: [DONE]\n\n"), streamed
            assert streamed["requestId"]  # an exposed header the page may read
            refused = page.evaluate(FETCH, [url, "", body])  # the page reads the error answer too
            assert refused.get("status") == 401 and refused["body"]["error"]["code"] == "unauthorized", refused
            wrong = page.evaluate(FETCH, [url, daemon.token, {"prompt": 3}])
            assert wrong.get("status") == 400 and wrong["body"]["error"]["code"] == "invalid_request", wrong

            other = browser.new_page()
            other.goto(f"http://127.0.0.1:{page_port}/")
            blocked = other.evaluate(FETCH, [url, daemon.token, body])
            assert "error" in blocked and "fetch" in blocked["error"].lower(), blocked
        finally:
            browser.close()
