"""A tiny, fast HTTP/1.1 keep-alive server for calibrating the load generator (tests and benchmarks).

It answers every request with ``200 {"ok":true}`` after an optional fixed ``delay_s`` and, with
``stall_every_s``/``stall_s``, freezes for ``stall_s`` at the start of every ``stall_every_s`` period
(requests arriving in a stall are answered when it ends), so the true latency distribution of any
arrival schedule is known. ``/status/<code>`` answers that code. Pure asyncio: it spends far less
CPU per request than any client, so the client is what a benchmark measures.

    python -m rehearsal_lib.load.reference_server --port 8099 [--delay 0.01] [--stall-every 1.25 --stall 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

BODY = b'{"ok":true}'


def _response(code: int = 200) -> bytes:
    reason = {200: "OK", 201: "Created", 404: "Not Found", 500: "Internal Server Error", 503: "Unavailable"}
    return (f"HTTP/1.1 {code} {reason.get(code, 'Status')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY


OK = _response(200)


class _Proto(asyncio.Protocol):
    def __init__(self, server: ReferenceServer):
        self.server, self.buf = server, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            total = head_end + 4 + length
            if len(self.buf) < total:
                return
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            self.buf = self.buf[total:]
            self.server.requests += 1
            reply = OK
            if target.startswith(b"/status/"):
                reply = _response(int(target[8:11]))
            wait = self.server.wait_s()
            if wait <= 0:
                self.transport.write(reply)  # type: ignore[union-attr]
            else:
                asyncio.get_running_loop().call_later(wait, self._reply, reply)

    def _reply(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


class ReferenceServer:
    """The server's timing rules; `serve()` runs it on 127.0.0.1:port."""

    def __init__(self, delay_s: float = 0.0, stall_every_s: float = 0.0, stall_s: float = 0.0):
        self.delay_s, self.stall_every_s, self.stall_s = delay_s, stall_every_s, stall_s
        self.t0 = time.monotonic()
        self.requests = 0

    def wait_s(self) -> float:
        wait = self.delay_s
        if self.stall_every_s > 0:
            into = (time.monotonic() - self.t0) % self.stall_every_s
            if into < self.stall_s:
                wait += self.stall_s - into
        return wait

    async def serve(self, port: int = 0, ready: asyncio.Future | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Proto(self), "127.0.0.1", port, backlog=2048)
        self.t0 = time.monotonic()
        if ready is not None:
            ready.set_result(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def reference_server(*args: str) -> Iterator[str]:
    """This server in a subprocess on a free port (extra CLI ``args``); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rehearsal_lib.load.reference_server", "--port", str(port), *args])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("reference server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--stall-every", type=float, default=0.0)
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--cpu", type=int, default=None, help="pin to this core")
    a = p.parse_args(argv)
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    try:
        asyncio.run(ReferenceServer(a.delay, a.stall_every, a.stall).serve(a.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
