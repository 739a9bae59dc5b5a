"""The fault proxy (rehearsal_lib.faultproxy) and its Toxiproxy client, against real echo servers.

One proxy process for the module (``python -m rehearsal_lib.faultproxy``), two TCP echo servers (the
second tags its replies, to tell an upstream switch) and one on a unix socket; every toxic is measured
from the client's side of a real connection."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from rehearsal_lib.probes.toxiproxy import ToxiproxyClient, ToxiproxyError

pytestmark = pytest.mark.integration


class _Echo(socketserver.BaseRequestHandler):
    tag = b""

    def handle(self) -> None:
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(self.tag + data if self.tag else data)


class _TaggedEcho(_Echo):
    tag = b"B:"


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def _serve(server: socketserver.BaseServer) -> socketserver.BaseServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("fp")
    echo_a = _serve(_TcpServer(("127.0.0.1", 0), _Echo))
    echo_b = _serve(_TcpServer(("127.0.0.1", 0), _TaggedEcho))
    sock_path = Path("/tmp") / f"fp-echo-{time.monotonic_ns()}.sock"
    echo_u = _serve(_UnixServer(str(sock_path), _Echo))
    a_port = echo_a.server_address[1]  # type: ignore[index]
    ports = {n: _free_port() for n in ("ctl", "tcp", "unix")}
    ready = tmp / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rehearsal_lib.faultproxy", "--control", f"127.0.0.1:{ports['ctl']}",
         "--proxy", f"echo=127.0.0.1:{ports['tcp']}=127.0.0.1:{a_port}",
         "--proxy", f"unixecho=127.0.0.1:{ports['unix']}=unix:{sock_path}", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, "the fault proxy did not start")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield {"client": ToxiproxyClient(f"http://127.0.0.1:{ports['ctl']}"), "port": ports["tcp"],
               "unix_port": ports["unix"], "b": f"127.0.0.1:{echo_b.server_address[1]}",  # type: ignore[index]
               "a": f"127.0.0.1:{a_port}"}
    finally:
        proc.terminate()
        proc.wait(10)
        for s in (echo_a, echo_b, echo_u):
            s.shutdown()
            s.server_close()
        sock_path.unlink(missing_ok=True)


@pytest.fixture()
def client(env: dict[str, object]) -> Iterator[ToxiproxyClient]:
    c = env["client"]
    assert isinstance(c, ToxiproxyClient)
    c.reset()
    c.set_upstream("echo", str(env["a"]))
    yield c
    c.reset()


def _connect(port: int, timeout: float = 5) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _roundtrip(s: socket.socket, payload: bytes = b"ping") -> tuple[bytes, float]:
    t0 = time.perf_counter()
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got, time.perf_counter() - t0


def test_proxies_listing_has_toxiproxy_fields(client: ToxiproxyClient, env: dict[str, object]) -> None:
    proxies = client.proxies()
    assert set(proxies) == {"echo", "unixecho"}
    assert proxies["echo"] == {"name": "echo", "listen": f"127.0.0.1:{env['port']}", "upstream": env["a"],
                               "enabled": True, "toxics": []}
    assert proxies["unixecho"]["upstream"].startswith("unix:")
    assert "Toxiproxy" in client.version()


def test_latency_adds_at_least_the_delay(client: ToxiproxyClient, env: dict[str, object]) -> None:
    with _connect(int(env["port"])) as s:  # type: ignore[call-overload]
        got, base = _roundtrip(s)
        assert got == b"ping"
        name = client.add_toxic("echo", "latency", {"latency": 300, "jitter": 20})
        assert name == "latency_downstream"
        assert client.proxies()["echo"]["toxics"] == [
            {"name": name, "type": "latency", "stream": "downstream", "toxicity": 1.0,
             "attributes": {"latency": 300, "jitter": 20}}]
        got, slow = _roundtrip(s)  # an existing connection gets the toxic too
        assert got == b"ping" and slow >= 0.28, (base, slow)
        client.remove_toxic("echo", name)
        got, fast = _roundtrip(s)
        assert got == b"ping" and fast < slow


def test_bandwidth_limits_the_rate(client: ToxiproxyClient, env: dict[str, object]) -> None:
    client.add_toxic("echo", "bandwidth", {"rate": 100})  # 100 KB/s downstream
    with _connect(int(env["port"]), timeout=10) as s:  # type: ignore[call-overload]
        got, took = _roundtrip(s, b"x" * 60_000)
    assert len(got) == 60_000 and took >= 0.5, took  # 60 KB at 100 KB/s: 0.6 s at least (10 % slack)


def test_disabled_refuses_and_closes_then_enabled_serves(client: ToxiproxyClient, env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    with _connect(port) as s:
        assert _roundtrip(s)[0] == b"ping"
        client.set_enabled("echo", False)
        assert client.proxies()["echo"]["enabled"] is False
        s.settimeout(5)
        with contextlib.suppress(OSError):
            s.sendall(b"late")
        try:
            leftover = s.recv(100)
        except ConnectionResetError:
            leftover = b""
        assert leftover == b""  # the existing connection was closed
    with pytest.raises(ConnectionRefusedError):
        _connect(port)
    client.set_enabled("echo", True)
    with _connect(port) as s:
        assert _roundtrip(s)[0] == b"ping"


def test_blackhole_holds_the_connection_without_data(client: ToxiproxyClient, env: dict[str, object]) -> None:
    with _connect(int(env["port"])) as s:  # type: ignore[call-overload]
        client.add_toxic("echo", "timeout", {"timeout": 0}, name="hole")
        s.sendall(b"into the void")
        s.settimeout(0.8)
        with pytest.raises(TimeoutError):  # no data and no EOF: the connection is held open
            s.recv(100)
        client.remove_toxic("echo", "hole")
        s.settimeout(5)
        assert _roundtrip(s)[0] == b"ping"  # the dropped bytes stay dropped; new ones flow


def test_reset_peer_resets(client: ToxiproxyClient, env: dict[str, object]) -> None:
    client.add_toxic("echo", "reset_peer", {"timeout": 100})
    with _connect(int(env["port"])) as s:  # type: ignore[call-overload]
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            while time.monotonic() - t0 < 5:
                with contextlib.suppress(TimeoutError):
                    s.settimeout(0.5)
                    s.sendall(b"x")
                    s.recv(100)
    assert time.monotonic() - t0 >= 0.09


def test_upstream_switch_sends_new_connections_to_the_new_upstream(client: ToxiproxyClient,
                                                                  env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    with _connect(port) as old:
        assert _roundtrip(old)[0] == b"ping"
        client.set_upstream("echo", str(env["b"]))
        assert client.proxies()["echo"]["upstream"] == env["b"]
        with _connect(port) as new:
            assert new.sendall(b"ping") is None
            assert wait_for(lambda: new.recv(100), 5, "no answer from the new upstream") == b"B:ping"
        old.settimeout(5)
        assert old.recv(100) == b""  # the existing (quiet) connection was closed


def test_unix_socket_upstream(client: ToxiproxyClient, env: dict[str, object]) -> None:
    with _connect(int(env["unix_port"])) as s:  # type: ignore[call-overload]
        assert _roundtrip(s, b"over unix")[0] == b"over unix"


def test_client_errors_name_the_proxy_and_status(client: ToxiproxyClient) -> None:
    with pytest.raises(ToxiproxyError) as info:
        client.set_enabled("no-such-proxy", False)
    assert info.value.status == 404 and "no-such-proxy" in str(info.value)
    with pytest.raises(ToxiproxyError) as info:
        client.add_toxic("echo", "slow_close", {"delay": 1})
    assert info.value.status == 400 and "slow_close" in str(info.value)
    client.add_toxic("echo", "latency", {"latency": 1}, name="dup")
    with pytest.raises(ToxiproxyError) as info:
        client.add_toxic("echo", "latency", {"latency": 1}, name="dup")
    assert info.value.status == 409
    with pytest.raises(ToxiproxyError) as info:
        ToxiproxyClient(f"http://127.0.0.1:{_free_port()}", timeout_s=1).proxies()
    assert info.value.status is None and "no answer" in str(info.value)


def test_reset_enables_all_and_removes_toxics(client: ToxiproxyClient, env: dict[str, object]) -> None:
    client.add_toxic("echo", "latency", {"latency": 500})
    client.set_enabled("unixecho", False)
    client.reset()
    proxies = client.proxies()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    with _connect(int(env["port"])) as s:  # type: ignore[call-overload]
        got, took = _roundtrip(s)
        assert got == b"ping" and took < 0.5
