"""A small asyncio TCP fault proxy driven by a subset of Toxiproxy's HTTP API (see docs/fault-proxy.md).

Run: ``python -m rehearsal_lib.faultproxy --control 127.0.0.1:8474 --proxy redis=127.0.0.1:0=unix:/run/r.sock``.
``LISTEN`` is ``host:port`` or ``fd:N`` (an inherited, bound and listening socket); ``UPSTREAM`` is
``host:port`` or ``unix:/path``. ``--control`` takes the same forms. Only loopback addresses make sense.

Toxics (Toxiproxy 2.x names and attributes): ``latency`` {latency, jitter} ms, ``bandwidth`` {rate} KB/s,
``timeout`` {timeout} ms (0: blackhole, data dropped and the connection held open), ``reset_peer``
{timeout} ms (RST after that long). ``toxicity`` is the chance that a toxic applies to a connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

VERSION = "rehearsal-faultproxy 1.0 (Toxiproxy 2.x API subset)"
TOXIC_TYPES = {"latency": ("latency", "jitter"), "bandwidth": ("rate",), "timeout": ("timeout",),
               "reset_peer": ("timeout",)}
STREAMS = ("upstream", "downstream")
CHUNK = 32 * 1024
# An upstream switch closes an existing connection once it has been idle QUIET_S (an idle keep-alive
# connection), at the latest after DRAIN_MAX_S. Closing sooner (after 10 ms) raced a client that sends every
# few tens of ms: its next request met the close. A server that drains in-band (`Connection: close`, as the
# sandbox's switched-away colour does) ends its busy connections itself long before.
DRAIN_MAX_S = 5.0
QUIET_S = 1.0


class ApiError(Exception):
    """An error answered by the control API as ``{"error": ..., "status": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Toxic:
    """One toxic: Toxiproxy's fields."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "stream": self.stream, "toxicity": self.toxicity,
                "attributes": dict(self.attributes)}


def _parse_toxic(body: dict[str, Any], existing: dict[str, Toxic]) -> Toxic:
    ttype = body.get("type")
    if ttype not in TOXIC_TYPES:
        raise ApiError(400, f"unknown toxic type {ttype!r} (this proxy implements {', '.join(TOXIC_TYPES)})")
    stream = body.get("stream", "downstream")
    if stream not in STREAMS:
        raise ApiError(400, f"stream must be upstream or downstream, not {stream!r}")
    name = body.get("name") or f"{ttype}_{stream}"
    if not isinstance(name, str):
        raise ApiError(400, "toxic name must be a string")
    if name in existing:
        raise ApiError(409, f"toxic already exists: {name}")
    toxicity = body.get("toxicity", 1.0)
    attrs_in = body.get("attributes") or {}
    if not isinstance(toxicity, int | float) or not 0 <= toxicity <= 1 or not isinstance(attrs_in, dict):
        raise ApiError(400, "toxicity must be a number in [0, 1] and attributes an object")
    attrs: dict[str, float] = {}
    for key in TOXIC_TYPES[ttype]:
        value = attrs_in.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ApiError(400, f"attribute {key} of a {ttype} toxic must be a number >= 0")
        attrs[key] = value
    if ttype == "bandwidth" and attrs["rate"] <= 0:
        raise ApiError(400, "attribute rate of a bandwidth toxic must be > 0")
    return Toxic(name, ttype, stream, float(toxicity), attrs)


@dataclass(eq=False)
class Link:
    """One proxied connection: client side and upstream side, a pump per direction."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    applies: dict[str, bool] = field(default_factory=dict)  # toxic name -> drawn against its toxicity
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    last_activity: float = field(default_factory=time.monotonic)
    awaiting_reply: bool = False
    closed: bool = False

    def toxic_on(self, toxic: Toxic) -> bool:
        if toxic.name not in self.applies:
            self.applies[toxic.name] = random.random() < toxic.toxicity
        return self.applies[toxic.name]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                w.close()
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()

    def reset(self) -> None:
        """Close with a TCP RST towards the client (SO_LINGER 0) and drop the upstream side."""
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport = self.client.transport
        with contextlib.suppress(Exception):
            transport.abort()
        with contextlib.suppress(Exception):
            self.upstream.transport.abort()
        self.close()


class Proxy:
    """One named proxy: a listener, an upstream, toxics and its live links."""

    def __init__(self, name: str, listen: str, upstream: str, listen_sock: socket.socket | None = None) -> None:
        self.name, self.upstream, self.enabled = name, upstream, True
        self.toxics: dict[str, Toxic] = {}
        self.links: set[Link] = set()
        self.server: asyncio.Server | None = None
        self._sock = listen_sock
        self.listen = listen

    async def start(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
        else:
            host, port = _split_hostport(self.listen)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        host, port = sock.getsockname()[:2]
        self.listen = f"{host}:{port}"
        self.server = await asyncio.start_server(self._accept, sock=sock)

    async def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": self.enabled,
                "toxics": [t.to_json() for t in self.toxics.values()]}

    async def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled:
            await self.start()
        else:
            await self.stop_listening()
            for link in list(self.links):
                link.close()

    def set_upstream(self, upstream: str) -> None:
        """New connections go to ``upstream``; existing ones are closed once quiet (at most DRAIN_MAX_S)."""
        _split_upstream(upstream)  # validate
        if upstream == self.upstream:
            return
        self.upstream = upstream
        for link in list(self.links):
            asyncio.get_running_loop().create_task(self._drain_close(link))

    async def _drain_close(self, link: Link) -> None:
        deadline = time.monotonic() + DRAIN_MAX_S
        while not link.closed and time.monotonic() < deadline:
            if not link.awaiting_reply and time.monotonic() - link.last_activity >= QUIET_S:
                break
            await asyncio.sleep(0.01)
        link.close()

    def add_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.name] = toxic
        if toxic.type == "reset_peer":
            for link in list(self.links):
                self._schedule_reset(link, toxic)

    def _schedule_reset(self, link: Link, toxic: Toxic) -> None:
        if not link.toxic_on(toxic):
            return

        async def later() -> None:
            await asyncio.sleep(toxic.attributes["timeout"] / 1000)
            if self.toxics.get(toxic.name) is toxic:
                link.reset()

        link.tasks.append(asyncio.get_running_loop().create_task(later()))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.close()
            return
        try:
            kind, target = _split_upstream(self.upstream)
            if kind == "unix":
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_unix_connection(target), 5)
            else:
                host, port = _split_hostport(target)
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, TimeoutError, ValueError):
            writer.close()  # upstream down: the client sees its connection closed, as with Toxiproxy
            return
        link = Link(writer, up_writer)
        self.links.add(link)
        loop = asyncio.get_running_loop()
        link.tasks += [loop.create_task(self._pump(link, reader, up_writer, "upstream")),
                       loop.create_task(self._pump(link, up_reader, writer, "downstream"))]
        for toxic in list(self.toxics.values()):
            if toxic.type == "reset_peer":
                self._schedule_reset(link, toxic)
        try:
            # the server's side ending ends the link (the client sees EOF at once, not a half-open
            # connection); the client's side ending is passed on as EOF and the server's reply still flows
            await asyncio.gather(link.tasks[1], return_exceptions=True)
        finally:
            link.close()
            self.links.discard(link)

    async def _pump(self, link: Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter, stream: str) -> None:
        """Copy ``src`` to ``dst`` through the toxics of ``stream``; chunks keep their order."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        busy = [False]  # the writer task holds a chunk

        async def writer() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                busy[0] = True
                due, data = item
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                while data:
                    if self._blackholed(link, stream):
                        data = b""  # dropped
                        break
                    rate = self._rate(link, stream)
                    piece = data if rate is None else data[: max(1, int(rate * 1000 / 10))]
                    data = data[len(piece):]
                    dst.write(piece)
                    await dst.drain()
                    if rate is not None:
                        await asyncio.sleep(len(piece) / (rate * 1000))
                link.last_activity = time.monotonic()
                busy[0] = False
                if stream == "downstream" and queue.empty():
                    link.awaiting_reply = False
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

        wtask = asyncio.get_running_loop().create_task(writer())
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                link.last_activity = time.monotonic()
                if stream == "upstream":
                    link.awaiting_reply = True
                if not self.toxics and not busy[0] and queue.empty():
                    # fast path, no toxic: straight through (one task switch less per chunk)
                    dst.write(data)
                    await dst.drain()
                    link.last_activity = time.monotonic()
                    if stream == "downstream":
                        link.awaiting_reply = False
                    continue
                if self._blackholed(link, stream):
                    continue  # timeout toxic: data dropped
                queue.put_nowait((time.monotonic() + self._latency(link, stream), data))
            queue.put_nowait(None)
            await wtask
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            wtask.cancel()

    def _active(self, link: Link, stream: str, ttype: str) -> list[Toxic]:
        return [t for t in list(self.toxics.values()) if t.type == ttype and t.stream == stream and link.toxic_on(t)]

    def _latency(self, link: Link, stream: str) -> float:
        total = 0.0
        for t in self._active(link, stream, "latency"):
            jitter = t.attributes.get("jitter", 0)
            total += max(0.0, t.attributes["latency"] + random.uniform(-jitter, jitter))
        return total / 1000

    def _rate(self, link: Link, stream: str) -> float | None:
        rates = [t.attributes["rate"] for t in self._active(link, stream, "bandwidth")]
        return min(rates) if rates else None

    def _blackholed(self, link: Link, stream: str) -> bool:
        toxics = self._active(link, stream, "timeout")
        for t in toxics:
            if t.attributes["timeout"] > 0:
                self._close_after(link, t)
        return bool(toxics)

    def _close_after(self, link: Link, toxic: Toxic) -> None:
        key = f"__timeout__{toxic.name}"
        if key in link.applies:
            return
        link.applies[key] = True

        async def later() -> None:
            await asyncio.sleep(toxic.attributes["timeout"] / 1000)
            if self.toxics.get(toxic.name) is toxic:
                link.close()

        link.tasks.append(asyncio.get_running_loop().create_task(later()))

    def timeout_toxic_added(self, toxic: Toxic) -> None:
        """A ``timeout`` toxic with timeout > 0 also closes existing connections after that long."""
        if toxic.type == "timeout" and toxic.attributes["timeout"] > 0:
            for link in list(self.links):
                if link.toxic_on(toxic):
                    self._close_after(link, toxic)


def _split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


def _split_upstream(value: str) -> tuple[str, str]:
    if not isinstance(value, str) or not value:
        raise ValueError("upstream must be host:port or unix:/path")
    if value.startswith("unix:"):
        return "unix", value[5:]
    _split_hostport(value)
    return "tcp", value


class FaultProxy:
    """The proxies and the control API."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}

    async def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if method == "GET" and parts == ["version"]:
            return 200, {"version": VERSION}
        if method == "GET" and parts == ["proxies"]:
            return 200, {name: p.to_json() for name, p in self.proxies.items()}
        if method == "POST" and parts == ["reset"]:
            for p in self.proxies.values():
                p.toxics.clear()
                await p.set_enabled(True)
            return 204, None
        if len(parts) >= 2 and parts[0] == "proxies":
            proxy = self.proxies.get(parts[1])
            if proxy is None:
                raise ApiError(404, f"proxy not found: {parts[1]}")
            if len(parts) == 2 and method == "GET":
                return 200, proxy.to_json()
            if len(parts) == 2 and method == "POST":
                return 200, await self._update(proxy, body)
            if len(parts) == 3 and parts[2] == "toxics":
                if method == "GET":
                    return 200, [t.to_json() for t in proxy.toxics.values()]
                if method == "POST":
                    if not isinstance(body, dict):
                        raise ApiError(400, "expected a JSON object")
                    new = _parse_toxic(body, proxy.toxics)
                    proxy.add_toxic(new)
                    proxy.timeout_toxic_added(new)
                    return 200, new.to_json()
            if len(parts) == 4 and parts[2] == "toxics":
                toxic = proxy.toxics.get(parts[3])
                if toxic is None:
                    raise ApiError(404, f"toxic not found: {parts[3]} (proxy {proxy.name})")
                if method == "GET":
                    return 200, toxic.to_json()
                if method == "DELETE":
                    del proxy.toxics[parts[3]]
                    return 204, None
        raise ApiError(404, f"no route {method} {path}")

    async def _update(self, proxy: Proxy, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        if "upstream" in body:
            try:
                proxy.set_upstream(body["upstream"])
            except ValueError as err:
                raise ApiError(400, str(err)) from err
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise ApiError(400, "enabled must be true or false")
            try:
                await proxy.set_enabled(body["enabled"])
            except OSError as err:
                raise ApiError(500, f"could not listen on {proxy.listen} again: {err}") from err
        return proxy.to_json()

    async def serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP/1.1 request per connection (``Connection: close``), JSON in and out."""
        status, payload = 500, None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length") or 0)
            raw = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as err:
                raise ApiError(400, "body is not valid JSON") from err
            status, payload = await self.handle(method.upper(), path, body)
        except ApiError as err:
            status, payload = err.status, {"error": str(err), "status": err.status}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, payload = 400, {"error": "malformed request", "status": 400}
        except Exception as err:  # noqa: BLE001 - the control API answers, it does not die
            status, payload = 500, {"error": f"{type(err).__name__}: {err}", "status": 500}
        data = b"" if payload is None else json.dumps(payload).encode()
        reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
                  409: "Conflict"}.get(status, "Error")
        head_out = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(Exception):
            writer.write(head_out + data)
            await writer.drain()
            writer.close()


def _socket_from(spec: str) -> socket.socket | None:
    """An inherited listening socket for ``fd:N``, else None (the caller binds ``host:port``)."""
    if spec.startswith("fd:"):
        return socket.socket(fileno=int(spec[3:]))
    return None


async def serve(control: str, proxies: list[tuple[str, str, str]], ready_file: str | None = None) -> None:
    """Run the proxies and the control API until SIGTERM/SIGINT."""
    fp = FaultProxy()
    for name, listen, upstream in proxies:
        _split_upstream(upstream)
        proxy = Proxy(name, listen, upstream, _socket_from(listen))
        await proxy.start()
        fp.proxies[name] = proxy
    csock = _socket_from(control)
    if csock is None:
        host, port = _split_hostport(control)
        ctl = await asyncio.start_server(fp.serve_control, host, port, reuse_address=True)
    else:
        ctl = await asyncio.start_server(fp.serve_control, sock=csock)
    addr = ctl.sockets[0].getsockname()
    listing = {name: p.listen for name, p in fp.proxies.items()}
    print(json.dumps({"msg": "fault proxy ready", "control": f"{addr[0]}:{addr[1]}", "proxies": listing}),
          flush=True)
    if ready_file:
        with open(ready_file, "w") as fh:
            json.dump({"control": f"{addr[0]}:{addr[1]}", "proxies": listing}, fh)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ctl.close()
    for p in fp.proxies.values():
        await p.stop_listening()
        for link in list(p.links):
            link.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rehearsal_lib.faultproxy", description=__doc__.split("\n")[0])
    ap.add_argument("--control", required=True, help="host:port (or fd:N) of the control API")
    ap.add_argument("--proxy", action="append", default=[], metavar="NAME=LISTEN=UPSTREAM",
                    help="a proxy; LISTEN host:port or fd:N, UPSTREAM host:port or unix:/path (repeatable)")
    ap.add_argument("--ready-file", help="write the bound addresses here (JSON) once listening")
    args = ap.parse_args(argv)
    proxies = []
    for spec in args.proxy:
        name, sep, rest = spec.partition("=")
        listen, sep2, upstream = rest.partition("=")
        if not (name and sep and sep2 and listen and upstream):
            ap.error(f"--proxy {spec!r}: expected NAME=LISTEN=UPSTREAM")
        proxies.append((name, listen, upstream))
    try:
        asyncio.run(serve(args.control, proxies, args.ready_file))
    except (OSError, ValueError) as err:
        print(f"fault proxy: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
