"""The load engine keeps a server's session cookie (httpcore: its lazy jar sits behind httpx's public `cookies`;
aiohttp: the session's jar, which must accept cookies of an IP-address host as httpx does)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rehearsal_lib.load.engine import LoadSpec, Scenario, run_load

pytestmark = pytest.mark.integration  # a real HTTP server on 127.0.0.1


class SetsCookieOnce(BaseHTTPRequestHandler):
    """The first request gets a cookie; every later request is answered 200 only if it sends it back."""

    protocol_version = "HTTP/1.1"
    cookies_seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        cookie = self.headers.get("Cookie", "")
        first = not SetsCookieOnce.cookies_seen
        SetsCookieOnce.cookies_seen.append(cookie)
        self.send_response(200 if first or "sid=abc" in cookie else 401)
        if first:
            self.send_header("Set-Cookie", "sid=abc; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[str]:
    SetsCookieOnce.cookies_seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SetsCookieOnce)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("transport", ["httpcore", "aiohttp"])
def test_a_cookie_set_by_the_server_is_sent_back(server, transport):
    if transport == "aiohttp":
        pytest.importorskip("aiohttp")
    # a dynamic path: each request is built anew, with the client's cookies (a static template's request
    # is built once per client and re-sent as it was)
    r = run_load(LoadSpec(server, [Scenario("s", "/?n={seq}")], model="closed", users=1, duration_s=0.5,
                          transport=transport))
    seen = SetsCookieOnce.cookies_seen
    assert len(seen) >= 3 and all("sid=abc" in c for c in seen[1:]), seen[:5]
    assert set(r.samples.status) == {200}
