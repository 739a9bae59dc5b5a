"""The load engine's transports against a real local server that misbehaves in the ways HTTP servers do:
chunked answers, keep-alive connections closed (announced or not), connections dropped without an
answer, a body that stalls, TLS. The default transport calls aiohttp directly; `httpcore` goes through
httpx's API: both must count the same things the same way and send the same requests."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rehearsal_lib.load.engine import LoadSpec, Scenario, run_load

pytestmark = pytest.mark.integration  # a real HTTP server on 127.0.0.1

TRANSPORTS = ["aiohttp", "httpcore"]


class Misbehaving(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; the path says how to answer."""

    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        body = self._body()
        path = self.path
        if path.startswith("/echo"):
            Misbehaving.seen.append({"method": self.command, "path": path, "body": body.decode(),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}})
            self._send(201, json.dumps({"id": f"id-{len(Misbehaving.seen)}"}).encode())
        elif path.startswith("/chunked"):  # the answer in several chunks, no Content-Length
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"id": ', b'"c-', path.rsplit("/", 1)[-1].encode(), b'"}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/announced-close"):  # Connection: close, then the server closes
            self._send(200, b"{}", {"Connection": "close"})
            self.close_connection = True
        elif path.startswith("/silent-close"):  # keep-alive announced, closed right after the answer anyway
            self._send(200, b"{}")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path.startswith("/drop"):  # the connection is closed without any answer
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path.startswith("/stall-body"):  # headers and half the body, then nothing for 1 s
            self.send_response(200)
            self.send_header("Content-Length", "20")
            self.end_headers()
            self.wfile.write(b'{"half": ')
            self.wfile.flush()
            time.sleep(1.0)
            self.close_connection = True
        else:
            self._send(200, b"{}")

    do_GET = do_POST = _route  # noqa: N815 - http.server's naming


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    from rehearsal_lib.sandbox.tls import make_certificates

    return make_certificates(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def tls_server(certs) -> Iterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert_file, certs.key_file)
    yield from _serve(ctx)


def _closed(url: str, scenario: Scenario, transport: str, users: int = 2, duration_s: float = 0.4,
            **kw: object):
    r = run_load(LoadSpec(url, [scenario], model="closed", users=users, duration_s=duration_s,
                          transport=transport, **kw))  # type: ignore[arg-type]
    return r, r.scenario_stats()[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chunked_answers_are_read_whole_and_acknowledged(server, transport):
    r, st = _closed(server, Scenario("c", "/chunked/{seq}", ack_field="id", expect_status=[200]), transport)
    assert st.count > 5 and st.status_mix == {"200": st.count}, st.status_mix
    # every answer's id, read from the reassembled chunked body, at its own sample's index
    assert sorted(r.samples.acked) == list(range(st.count))
    assert all(str(v).startswith("c-") for v in r.samples.acked.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_closing_keep_alive_connections_is_followed_without_errors(server, transport):
    """`Connection: close` on every answer: the client opens a new connection for each request."""
    _, st = _closed(server, Scenario("k", "/announced-close", expect_status=[200]), transport)
    assert st.count > 5 and st.status_mix == {"200": st.count}, st.status_mix


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_closing_keep_alive_connections_silently_costs_named_errors_at_most(server, transport):
    """Keep-alive announced, yet each connection is closed after its answer: a request sent on a connection
    the server has just closed (its FIN not yet read) fails as a named disconnect, never a timeout nor an
    answer. aiohttp retries such a GET once on a new connection (seen: 0-1 errors in ~300); httpcore does
    not (~10% errors)."""
    _, st = _closed(server, Scenario("k", "/silent-close", expect_status=[200]), transport)
    named = {"aiohttp": "error:ServerDisconnectedError", "httpcore": "error:RemoteProtocolError"}[transport]
    assert st.count > 5 and set(st.status_mix) <= {"200", named}, st.status_mix
    assert st.status_mix.get("200", 0) >= 0.5 * st.count, st.status_mix


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dropped_connection_is_an_error_not_a_timeout(server, transport):
    """Closed without an answer: a named error at once. Before the aiohttp transport was called directly,
    httpx-aiohttp mapped aiohttp's ServerDisconnectedError to httpx's ConnectTimeout and the engine
    counted each of them as a timeout."""
    _, st = _closed(server, Scenario("d", "/drop"), transport, users=1, duration_s=0.3, timeout_s=2)
    expected = {"aiohttp": "error:ServerDisconnectedError", "httpcore": "error:RemoteProtocolError"}[transport]
    assert st.count > 0 and st.errors == st.count and list(st.status_mix) == [expected], st.status_mix
    assert st.answered == 0 and st.p50_ms is None  # no response: no latency figure


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_body_that_stalls_past_the_timeout_is_a_timeout(server, transport):
    _, st = _closed(server, Scenario("s", "/stall-body"), transport, users=1, duration_s=0.2, timeout_s=0.3)
    assert st.count > 0 and st.status_mix == {"timeout": st.count}, st.status_mix


def test_both_transports_send_the_same_requests(server):
    """A templated POST with an auth header and values: the server sees the same method, path, body and
    headers (Accept, User-Agent, Authorization, Content-Type) whichever transport sent them."""
    sc = Scenario("w", "/echo/{session_id}?n={seq}", "POST", json={"q": "{randint:7:7}", "s": "{session_id}"},
                  headers={"X-Run": "r-{worker}"}, expect_status=[201], ack_field="id")
    seen = {}
    for transport in TRANSPORTS:
        Misbehaving.seen = []
        r = run_load(LoadSpec(server, [sc], model="closed", users=1, duration_s=0.3, transport=transport,
                              headers={"Authorization": "Bearer t0ken"}, values={"session_id": ["s1", "s2"]}))
        st = r.scenario_stats()[0]
        assert st.count > 2 and st.status_mix == {"201": st.count}
        assert len(r.samples.acked) == st.count
        seen[transport] = Misbehaving.seen[:2]
    keys = ("accept", "user-agent", "authorization", "content-type", "x-run", "content-length")
    for a, h in zip(seen["aiohttp"], seen["httpcore"], strict=True):
        assert (a["method"], a["path"], a["body"]) == (h["method"], h["path"], h["body"])
        assert {k: a["headers"].get(k) for k in keys} == {k: h["headers"].get(k) for k in keys}
    first = seen["aiohttp"][0]
    assert first["path"] == "/echo/s1?n=1" and json.loads(first["body"]) == {"q": 7, "s": "s2"}
    assert first["headers"]["authorization"] == "Bearer t0ken" and first["headers"]["x-run"] == "r-0"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_verification_on_and_off(tls_server, certs, transport, monkeypatch):
    """HTTPS with a certificate from a CA nobody trusts: verify off answers, verify on is an error of every
    request (not an answer); trusting the CA (SSL_CERT_FILE, read by the default SSL context) answers."""
    sc = Scenario("t", "/", expect_status=[200])
    _, off = _closed(tls_server, sc, transport, users=1, duration_s=0.3, verify_tls=False)
    assert off.count > 0 and off.status_mix == {"200": off.count}
    _, on = _closed(tls_server, sc, transport, users=1, duration_s=0.3)
    assert on.count > 0 and on.errors == on.count and on.answered == 0, on.status_mix
    name = {"aiohttp": "error:ClientConnectorCertificateError", "httpcore": "error:ConnectError"}[transport]
    assert list(on.status_mix) == [name]
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))
    _, trusted = _closed(tls_server, sc, transport, users=1, duration_s=0.3)
    assert trusted.count > 0 and trusted.status_mix == {"200": trusted.count}
