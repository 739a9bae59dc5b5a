"""A server that drops a keep-alive connection after answering (as uvicorn does after an app crash) must not
make the next probe's verdict depend on connection reuse: the probe is sent again on a new connection, once,
and says so; a server that never answers is still an error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rehearsal_lib.probes import http

pytestmark = pytest.mark.integration


class DropsAfterCrash(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; /crash answers 500 and then closes the connection without saying so; /never
    closes every connection without an answer; anything else answers 422 JSON."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/never":
            self.close_connection = True
            return
        status, body = (500, b"Internal Server Error") if self.path == "/crash" else (422, b'{"detail": "bad"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.path == "/crash"  # no "Connection: close": the client thinks it may reuse it

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DropsAfterCrash)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_the_probe_after_a_crash_gets_its_own_answer(server: str):
    with httpx.Client(base_url=server, timeout=3) as client:
        for _ in range(5):  # every time: the 500, then the next input on the connection the server dropped
            crashed = http.request(client, "POST", "/crash", json_body={"x": "{"})
            assert crashed.status == 500
            nxt = http.request(client, "POST", "/items", json_body={"name": "<script>"})
            assert nxt.status == 422 and nxt.error is None, nxt.describe()
            if nxt.retried:
                assert "sent again on a new connection" in nxt.evidence()["retried"]


def test_a_server_that_never_answers_is_still_an_error(server: str):
    with httpx.Client(base_url=server, timeout=3) as client:
        res = http.request(client, "POST", "/never", json_body={})
    assert res.error and res.status is None and res.retried, res
    assert http.reached_handler(res) is not None
