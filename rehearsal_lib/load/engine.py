"""An HTTP load generator on httpx that does not hide stalls.

Two models:

- **open** (constant arrival rate, optional linear ramp): arrival *i* has an intended send time fixed in
  advance; its latency is measured from that intended time, so a stalled server (or a late client)
  shows up in the percentiles instead of silently lowering the request rate (no coordinated omission).
- **closed** (N virtual users, each sending its next request when the previous one finished): what
  Locust does; latency from the actual send time. Useful for "N users at once", blind to stalls.

Each process runs one asyncio loop; `run_load(spec, processes=k)` starts k processes (one per core),
splits the rate or the users between them and merges their raw samples (exact percentiles, no
histogram approximation). The default transport calls aiohttp directly (one ``aiohttp.ClientSession``
per process; httpx's request and response layers cost more CPU than the rest of a request,
benchmarks/results/load.json); it sends the headers httpx would and keeps httpx's error and timeout
semantics. ``transport: httpcore`` keeps httpx's API over a free list of single-connection clients
(one pooled ``httpx.AsyncClient`` rescans its pool per request and collapses at a few hundred
requests/s, encode/httpx#3215). Either way the processes' connections share one SSL context.

The generator watches itself: scheduler lag, arrivals dropped at the in-flight cap, achieved vs target
rate and its own CPU use. `LoadResult.saturation()` lists why the figures cannot be trusted.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import json
import math
import os
import random
import ssl
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from rehearsal_lib.probes.bodies import encode as encode_body
from rehearsal_lib.probes.placeholders import expand, expand_text, has_placeholders, names
from rehearsal_lib.probes.stats import percentile

if TYPE_CHECKING:
    import pandas as pd

TIMEOUT, FAILED = -1, 0  # status codes recorded for requests without an HTTP response



@dataclass
class Scenario:
    """One kind of request, picked with probability weight / sum(weights).

    ``path``, header values and strings in ``json`` may hold placeholders: ``{uuid}``, ``{seq}`` (a
    per-process counter), ``{worker}``, ``{randint:A:B}``, and ``{name}`` for any key of
    ``LoadSpec.values`` (cycled through). A string that is exactly one placeholder becomes its value
    unchanged (an int stays an int). The language and the unknown-name rule are
    `rehearsal_lib.probes.placeholders`'.
    """

    name: str
    path: str
    method: str = "GET"
    weight: float = 1.0
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: list[int] = field(default_factory=lambda: [200, 201])
    body: dict[str, Any] | None = None  # a form / multipart / raw body (probes.bodies.body_spec), instead of json
    ack_field: str | None = None  # a write: keep this top-level field of a 2xx JSON answer (Samples.acked)


@dataclass
class LoadSpec:
    """What to send, where, how fast and for how long."""

    base_url: str
    scenarios: list[Scenario]
    model: Literal["open", "closed"] = "open"
    rate: float = 10.0  # open: arrivals per second (all processes together)
    ramp_s: float = 0.0  # open: linear ramp from 0 to `rate`
    users: int = 10  # closed: virtual users (all processes together)
    think_s: float = 0.0  # closed: pause between a user's requests
    duration_s: float = 5.0
    timeout_s: float = 5.0
    max_in_flight: int = 512  # open: arrivals beyond this many outstanding requests are dropped
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    values: dict[str, list[Any]] = field(default_factory=dict)
    verify_tls: bool = True
    seed: int = 1
    # auto: aiohttp called directly when installed, ~3x fewer CPU µs per request than httpx over httpcore
    # here (benchmarks/results/load.json); httpcore: httpx's API over a free list of single-connection clients
    transport: Literal["auto", "httpcore", "aiohttp"] = "auto"
    stop: Any = None  # in-process open model: a threading.Event that ends the arrivals before duration_s


@dataclass
class Samples:
    """Raw per-request records of one or more processes (merged by concatenation)."""

    scenario: array = field(default_factory=lambda: array("H"))
    offset_s: array = field(default_factory=lambda: array("d"))  # intended (open) / actual (closed) send time
    latency_ms: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("h"))
    lag_ms: array = field(default_factory=lambda: array("d"))  # open model: start - intended, per request
    errors: Counter = field(default_factory=Counter)  # (scenario, reason) -> count for requests with no response
    acked: dict[int, Any] = field(default_factory=dict)  # sample index -> the id a 2xx answer acknowledged (ack_field)
    t0: float = 0.0  # time.perf_counter() at the run's start (offset_s counts from it; in-process runs)

    def extend(self, other: Samples) -> None:
        base = len(self.status)
        for name in ("scenario", "offset_s", "latency_ms", "status", "lag_ms"):
            getattr(self, name).extend(getattr(other, name))
        self.errors.update(other.errors)
        self.acked.update({base + i: v for i, v in other.acked.items()})
        self.t0 = self.t0 or other.t0


@dataclass
class WorkerReport:
    """One process's part of a run."""

    samples: Samples
    scheduled: int = 0  # open: arrivals whose intended time fell inside the run
    dropped: int = 0  # open: arrivals not sent (in-flight cap, or more than 1 s late at the end)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    connections: int = 0


# ------------------------------------------------------------------------------------------ templates


class _Template:
    """A request template rendered per request; constant parts are rendered once."""

    def __init__(self, scenario: Scenario, base_headers: dict[str, str], values: dict[str, list[Any]], worker: int):
        self.s, self.values, self.worker = scenario, values, worker
        self.cursor = {k: worker for k in values}
        self.headers = {**base_headers, **scenario.headers}
        self.dynamic_headers = has_placeholders(self.headers)
        self.dynamic_path = has_placeholders(scenario.path)
        self.dynamic_body = has_placeholders(scenario.json if scenario.body is None else scenario.body)
        if scenario.body is not None:
            self.body, ctype = (None, None) if self.dynamic_body else encode_body(scenario.body, {})
            if ctype:
                self.headers.setdefault("content-type", ctype)
        else:
            if scenario.json is not None:
                self.headers.setdefault("content-type", "application/json")
            self.body = json.dumps(scenario.json).encode() if scenario.json is not None else None
        self.rng = random.Random(worker * 7919 + 1)
        self.seq = 0
        # a template without placeholders is built into an httpx.Request once per client and re-sent
        # (request building is ~a quarter of the client's CPU per request; measured in the README)
        self.static = not (self.dynamic_path or self.dynamic_headers or self.dynamic_body)
        self.prebuilt: dict[int, httpx.Request] = {}
        self.aio_static: tuple[Any, Any, bytes | None] | None = None  # the aiohttp transport's, built once
        # the values this template's placeholders may take: functions are called per use
        self.known: dict[str, Any] = {"uuid": lambda: uuid.uuid4().hex, "seq": lambda: self.seq, "worker": worker,
                                      "randint": self._randint}
        self.known.update({k: functools.partial(self._next, k) for k, pool in values.items() if pool})

    def _randint(self, low: int | None = None, high: int | None = None) -> int:
        if low is None or high is None:
            raise ValueError("{randint} needs its bounds: {randint:A:B}")
        return self.rng.randint(low, high)

    def _next(self, name: str) -> Any:
        pool, i = self.values[name], self.cursor[name]
        self.cursor[name] = i + 1
        return pool[i % len(pool)]

    def render(self) -> tuple[str, dict[str, str], bytes | None]:
        """(path, headers, body) of the next request; an unknown placeholder raises `PlaceholderError`."""
        self.seq += 1
        path = expand_text(self.s.path, self.known, "path") if self.dynamic_path else self.s.path
        headers = expand(self.headers, self.known, "headers") if self.dynamic_headers else self.headers
        if not self.dynamic_body:
            return path, headers, self.body
        if self.s.body is not None:  # form, multipart (a new boundary each time) or raw
            body, ctype = encode_body(self.s.body, self.known)
            return path, {**headers, "content-type": ctype or ""}, body
        return path, headers, json.dumps(expand(self.s.json, self.known, "json")).encode()


    def aio_request(self, base_url: str) -> tuple[Any, Any, bytes | None]:
        """(URL, headers, body) of the next request for the aiohttp transport (a static template's is built
        once). Checked as httpx checks them: a non-ASCII header name or value raises UnicodeEncodeError."""
        if self.aio_static is not None:
            return self.aio_static
        from multidict import CIMultiDict
        from yarl import URL

        path, headers, body = self.render()
        for name, value in headers.items():
            name.encode("ascii")
            value.encode("ascii")
        req = (URL(_join_url(base_url, path)), CIMultiDict(headers) if headers else None, body)
        if self.static:
            self.aio_static = req
        return req


def _join_url(base_url: str, path: str) -> str:
    """httpx's ``base_url`` merge: a relative path is appended to the base URL's path (which gets a trailing
    '/'); an absolute URL is used as it is."""
    if "://" in path.split("?", 1)[0]:
        return path
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def validate_templates(spec: LoadSpec) -> list[str]:
    """Placeholders that no value pool provides (empty when every template can be rendered)."""
    builtin = {"uuid", "seq", "worker", "randint"}
    missing = []
    for s in spec.scenarios:
        for name in names([s.path, s.json, s.body, s.headers, spec.headers]):
            if name not in builtin and not spec.values.get(name):
                missing.append(f"{s.name}: {{{name}}}")
    return sorted(set(missing))


# ------------------------------------------------------------------------------------------ live figures


@dataclass
class LiveFigures:
    """What a run has done so far, for a progress line: read on a timer from the samples the engine
    records anyway (never computed per request)."""

    elapsed_s: float = 0.0
    sent: int = 0  # requests completed (answered, failed or timed out)
    errors: int = 0  # of those, not answered with their scenario's expected status
    rate: float = 0.0  # requests completed per second since the previous reading
    p95_ms: float | None = None  # p95 latency of the requests completed since the previous reading

    def text(self) -> str:
        p95 = f"{self.p95_ms:.0f} ms" if self.p95_ms is not None else "-"
        return f"{self.sent} sent, {self.rate:.0f} req/s now, {self.errors} errors, p95 {p95} (last interval)"


class _LiveCounter:
    """Reads the new part of a Samples since the previous reading (O(new requests), bounded for p95)."""

    P95_WINDOW = 5000  # the p95 of at most the last this-many requests: a reading stays cheap at any rate

    def __init__(self, spec: LoadSpec):
        self.expect = [set(sc.expect_status) for sc in spec.scenarios]
        self.seen, self.errors = 0, 0
        self.t0 = self.t_prev = time.perf_counter()

    def read(self, samples: Samples) -> LiveFigures:
        now = time.perf_counter()
        n = min(len(samples.latency_ms), len(samples.status), len(samples.scenario))
        new = range(self.seen, n)
        status, scenario = samples.status, samples.scenario
        self.errors += sum(1 for i in new if status[i] not in self.expect[scenario[i]])
        window = [samples.latency_ms[i] for i in range(max(self.seen, n - self.P95_WINDOW), n) if status[i] > 0]
        rate = (n - self.seen) / max(now - self.t_prev, 1e-9)
        self.seen, self.t_prev = n, now
        return LiveFigures(round(now - self.t0, 2), n, self.errors, round(rate, 1), percentile(window, 95))


async def _report_live(spec: LoadSpec, samples: Samples, conn: Any, every_s: float) -> None:
    """A worker process's periodic reading, sent to the parent (one small message per interval)."""
    counter = _LiveCounter(spec)
    while True:
        await asyncio.sleep(every_s)
        f = counter.read(samples)
        conn.send(("live", f.sent, f.errors, f.rate, f.p95_ms))


# ------------------------------------------------------------------------------------------ one process


def _acked(body: bytes, name: str) -> Any:
    """The `name` field of a JSON object answer (None when the body is not one or lacks it)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get(name) if isinstance(value, dict) else None


def resolve_transport(name: str) -> str:
    """`auto` becomes `aiohttp` when aiohttp is installed, else `httpcore`."""
    if name != "auto":
        return name
    import importlib.util

    return "aiohttp" if importlib.util.find_spec("aiohttp") else "httpcore"


@functools.cache
def _httpx_default_headers() -> dict[str, str]:
    """The headers httpx sends with every request (Accept, Connection, User-Agent), so that the target sees
    the same requests whatever the transport; Accept-Encoding is left to aiohttp (what it can decode)."""
    client = httpx.Client(transport=httpx.BaseTransport(), trust_env=False)
    return {k: v for k, v in client.headers.items() if k.lower() != "accept-encoding"}


class _LazyCookies(httpx.Cookies):
    """httpx parses every response through http.cookiejar (~10% of a request); only do it when needed."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _Client(httpx.AsyncClient):
    """An AsyncClient whose public `cookies` jar is a `_LazyCookies`: httpx reads and updates the jar only
    through that property, so overriding it needs none of httpx's private attributes."""

    def __init__(self, **kwargs: Any) -> None:
        self._jar = _LazyCookies()
        super().__init__(**kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _LazyCookies(cookies)


class _Connections:
    """A free list of single-connection httpx clients (created on demand, reused LIFO).

    With ``transport="aiohttp"``, one ``aiohttp.ClientSession`` over aiohttp's own connection pool instead
    (`session`; the clients list stays empty)."""

    def __init__(self, spec: LoadSpec):
        self.base_url, self.timeout = spec.base_url, spec.timeout_s
        # one SSL context for all clients (building one per client costs tens of ms); none for plain http
        tls = spec.base_url.startswith("https:") and spec.verify_tls
        self.verify: ssl.SSLContext | bool = ssl.create_default_context() if tls else False
        self.free: list[httpx.AsyncClient] = []
        self.all: list[httpx.AsyncClient] = []
        self.session: Any = None
        if resolve_transport(spec.transport) == "aiohttp":
            import aiohttp

            t = spec.timeout_s
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=spec.max_in_flight, ssl=self.verify, keepalive_timeout=5.0),
                # httpx keeps cookies of IP-address hosts too (aiohttp's jar refuses them unless "unsafe")
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                # httpx's timeout: each of connect, read and pool wait, not a total (as httpx-aiohttp mapped it)
                timeout=aiohttp.ClientTimeout(sock_connect=t, sock_read=t, connect=t),
                headers=_httpx_default_headers())

    @property
    def count(self) -> int:
        """Clients created (1 for the aiohttp session)."""
        return len(self.all) + (self.session is not None)

    def acquire(self) -> httpx.AsyncClient:
        if self.free:
            return self.free.pop()
        client = _Client(base_url=self.base_url, timeout=self.timeout, verify=self.verify,
                         limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), follow_redirects=False)
        self.all.append(client)
        return client

    def warm(self, n: int) -> None:
        """Create n clients up front (creating one takes ~0.5 ms of the loop's time)."""
        if self.session is None:
            fresh = [self.acquire() for _ in range(max(0, n - len(self.all)))]
            self.free.extend(fresh)

    def release(self, client: httpx.AsyncClient) -> None:
        self.free.append(client)

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.all), return_exceptions=True)
        if self.session is not None:
            await self.session.close()


def _arrival_offset(i: int, rate: float, ramp_s: float) -> float:
    """Intended time (s from start) of arrival i under a linear ramp 0 -> rate over ramp_s, then constant."""
    if ramp_s > 0 and i < rate * ramp_s / 2:
        return math.sqrt(2 * ramp_s * i / rate)
    return i / rate + (ramp_s / 2 if ramp_s > 0 else 0.0)


async def _run_worker(spec: LoadSpec, worker: int, workers: int, start_at: float, live_conn: Any = None,
                      live_every_s: float = 0.0, live_box: dict[str, Any] | None = None) -> WorkerReport:
    """Run this process's share of the load; `start_at` is a time.time() instant shared by all processes.
    With `live_conn`, a reading of its figures goes to the parent every `live_every_s` (progress)."""
    samples = Samples()
    if live_box is not None:  # in-process run: the caller's thread reads these samples on its timer
        live_box["samples"] = samples
    rng = random.Random(spec.seed * 1000 + worker)
    templates = [_Template(s, spec.headers, spec.values, worker) for s in spec.scenarios]
    weights = [max(0.0, s.weight) for s in spec.scenarios]
    kinds, cum_weights = range(len(weights)), list(itertools.accumulate(weights))

    def pick(r: random.Random) -> int:
        """A scenario index: the draws of ``r.choices(kinds, weights)``, without summing the weights each time."""
        return r.choices(kinds, cum_weights=cum_weights)[0] if len(kinds) > 1 else 0
    conns = _Connections(spec)
    report = WorkerReport(samples)

    open_model = spec.model == "open"
    session = conns.session
    methods = [sc.method for sc in spec.scenarios]
    acks = [sc.ack_field for sc in spec.scenarios]
    aio_error: type[BaseException] = OSError
    if session is not None:
        import aiohttp

        aio_error = aiohttp.ClientError

    def record(k: int, code: int, intended: float, started: float, t0_mono: float) -> None:
        done = time.perf_counter()
        samples.scenario.append(k)
        samples.offset_s.append(intended - t0_mono)
        samples.latency_ms.append((done - intended) * 1000)
        samples.status.append(code)
        if open_model:
            samples.lag_ms.append((started - intended) * 1000)

    def note_ack(k: int, code: int, body: bytes) -> None:
        """The id a 2xx answer of an `ack_field` scenario acknowledged, under the index its sample gets next."""
        ack = acks[k]
        if ack and 200 <= code < 300 and (acked := _acked(body, ack)) is not None:
            samples.acked[len(samples.status)] = acked

    async def send_httpx(k: int, client: httpx.AsyncClient | None, intended: float, t0_mono: float) -> None:
        assert client is not None  # httpx transports always pass a pooled client
        tpl = templates[k]
        req = tpl.prebuilt.get(id(client)) if tpl.static else None
        started = time.perf_counter()
        code = FAILED
        try:
            if req is None:
                path, headers, body = tpl.render()
                req = client.build_request(methods[k], path, headers=headers, content=body)
                if tpl.static:
                    tpl.prebuilt[id(client)] = req
            resp = await client.send(req)
            await resp.aread()
            code = resp.status_code
            note_ack(k, code, resp.content)
        except (httpx.HTTPError, OSError) as exc:
            if isinstance(exc, httpx.TimeoutException | TimeoutError):
                code = TIMEOUT
                samples.errors[(k, "timeout")] += 1
            else:
                samples.errors[(k, type(exc).__name__)] += 1
        except (UnicodeError, ValueError, TypeError) as exc:
            # the request could not be built (e.g. a non-ASCII header value): an error of its scenario,
            # named, never a task exception that leaves the generator looking saturated
            samples.errors[(k, type(exc).__name__)] += 1
        record(k, code, intended, started, t0_mono)

    async def send_aio(k: int, client: Any, intended: float, t0_mono: float) -> None:
        started = time.perf_counter()
        code = FAILED
        try:
            url, headers, body = templates[k].aio_request(spec.base_url)
            async with session.request(methods[k], url, headers=headers, data=body, allow_redirects=False) as resp:
                payload = await resp.read()
            code = resp.status
            note_ack(k, code, payload)
        except TimeoutError:  # aiohttp's connect, read and pool timeouts are all TimeoutErrors
            code = TIMEOUT
            samples.errors[(k, "timeout")] += 1
        except (aio_error, OSError, UnicodeError, ValueError, TypeError) as exc:
            # aiohttp's own name (ClientConnectorError for a refused connection, ServerDisconnectedError, ...);
            # a request that cannot be built (a non-ASCII header value) is a named error of its scenario too
            samples.errors[(k, type(exc).__name__)] += 1
        record(k, code, intended, started, t0_mono)

    send = send_aio if session is not None else send_httpx

    conns.warm(min(spec.max_in_flight, max(8, int(spec.rate / workers / 10)))
               if spec.model == "open" else spec.users // workers + 1)
    # wait for the shared start instant (processes start at different moments)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    samples.t0 = t0
    cpu0 = time.process_time()
    end = t0 + spec.duration_s
    pending: set[asyncio.Task] = set()
    live = (asyncio.ensure_future(_report_live(spec, samples, live_conn, live_every_s))
            if live_conn is not None and live_every_s > 0 else None)

    if spec.model == "open":
        share = spec.rate / workers
        in_flight = 0

        async def one(k: int, intended: float) -> None:
            nonlocal in_flight
            client = conns.acquire() if session is None else None
            try:
                await send(k, client, intended, t0)
            finally:
                if client is not None:
                    conns.release(client)
                in_flight -= 1

        i = 0
        phase = worker / workers  # interleave the processes' arrivals
        while True:
            intended = t0 + _arrival_offset(i, share, spec.ramp_s) + phase / max(spec.rate, 1e-9)
            if intended >= end or (spec.stop is not None and spec.stop.is_set()):
                break
            i += 1
            report.scheduled += 1
            now = time.perf_counter()
            if intended > now:
                await asyncio.sleep(intended - now)
            else:
                await asyncio.sleep(0)  # behind schedule: still let the requests in flight run
            if now - intended > 1.0 and now >= end:
                report.dropped += 1
                continue
            if in_flight >= spec.max_in_flight:
                report.dropped += 1
                continue
            in_flight += 1
            k = pick(rng)
            task = asyncio.ensure_future(one(k, intended))
            pending.add(task)
            task.add_done_callback(pending.discard)
    else:
        users = spec.users // workers + (1 if worker < spec.users % workers else 0)

        async def user(u: int) -> None:
            client = conns.acquire() if session is None else None
            urng = random.Random(spec.seed * 100_000 + worker * 1000 + u)
            await asyncio.sleep(u * 0.001)  # do not open every connection in the same instant
            while time.perf_counter() < end:
                k = pick(urng)
                await send(k, client, time.perf_counter(), t0)
                if spec.think_s:
                    await asyncio.sleep(spec.think_s)

        pending = {asyncio.ensure_future(user(u)) for u in range(users)}
    if pending:  # the closed model's users run until `end`; then every request has its timeout to finish
        _, late = await asyncio.wait(pending, timeout=max(0.0, end - time.perf_counter()) + spec.timeout_s + 2)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1)
    if live is not None:
        live.cancel()
    report.wall_s = time.perf_counter() - t0
    report.cpu_s = time.process_time() - cpu0
    report.connections = conns.count
    await conns.close()
    return report


@contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection during a run: a full collection stalls the loop for tens of ms."""
    was = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def _worker_entry(spec: LoadSpec, worker: int, workers: int, cpu: int | None, conn: Any,
                  live_every_s: float = 0.0) -> None:
    """Process entry point: pin to a core if asked, say ready, get the shared start instant, run, report."""
    try:
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        conn.send("ready")
        start_at = conn.recv()
        with _no_gc():
            report = asyncio.run(_run_worker(spec, worker, workers, start_at, conn, live_every_s))
        conn.send(report)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        conn.send(exc)
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ results


@dataclass
class ScenarioStats:
    name: str
    count: int
    ok: int
    errors: int
    error_rate: float
    status_mix: dict[str, int]
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    answered: int | None = None  # requests with an HTTP response (the percentiles' sample); None: same as count


@dataclass
class LoadResult:
    """A merged run: per-scenario figures, a per-second series and the generator's own health."""

    spec: LoadSpec
    samples: Samples
    processes: int
    scheduled: int
    dropped: int
    wall_s: float
    cpu_s_per_process: list[float]
    connections: int

    @property
    def sent(self) -> int:
        return len(self.samples.latency_ms)

    @property
    def target_rate(self) -> float | None:
        if self.spec.model != "open":
            return None
        ramp_loss = self.spec.rate * self.spec.ramp_s / 2 if self.spec.ramp_s else 0.0
        return (self.spec.rate * self.spec.duration_s - ramp_loss) / self.spec.duration_s

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.spec.duration_s

    def lag_p99_ms(self) -> float | None:
        return percentile(self.samples.lag_ms, 99)

    def cpu_utilisation(self) -> float:
        """The busiest process's CPU time over its wall time (1.0 = one core fully used)."""
        return max(self.cpu_s_per_process, default=0.0) / max(self.wall_s, 1e-9)

    def cpu_us_per_request(self) -> float | None:
        return sum(self.cpu_s_per_process) * 1e6 / self.sent if self.sent else None

    def saturation(self, min_rate_ratio: float = 0.95, max_lag_p99_ms: float = 10.0,
                   max_cpu: float = 0.9) -> list[str]:
        """Why this run's latency figures cannot be trusted as the server's (empty: the generator kept up)."""
        reasons = []
        if self.spec.model == "open":
            target = self.target_rate or 0.0
            if target and self.achieved_rate < min_rate_ratio * target:
                reasons.append(f"achieved {self.achieved_rate:.1f} req/s of the {target:.1f} req/s target "
                               f"(< {min_rate_ratio:.0%})")
            if self.dropped:
                reasons.append(f"{self.dropped} of {self.scheduled} arrivals dropped (in-flight cap "
                               f"{self.spec.max_in_flight} or too late)")
            lag = self.lag_p99_ms()
            if lag is not None and lag > max_lag_p99_ms:
                reasons.append(f"scheduler lag p99 {lag:.1f} ms > {max_lag_p99_ms:g} ms")
        cpu = self.cpu_utilisation()
        if cpu > max_cpu:
            reasons.append(f"client CPU {cpu:.0%} of a core (> {max_cpu:.0%})")
        return reasons

    def generator_figures(self) -> dict[str, Any]:
        lag = self.lag_p99_ms()
        return {"transport": resolve_transport(self.spec.transport),
                "target_rps": round(self.target_rate, 2) if self.target_rate else None,
                "achieved_rps": round(self.achieved_rate, 2), "scheduled": self.scheduled, "sent": self.sent,
                "dropped": self.dropped, "scheduler_lag_p99_ms": round(lag, 2) if lag is not None else None,
                "client_cpu": round(self.cpu_utilisation(), 3), "processes": self.processes,
                "connections": self.connections}

    def scenario_stats(self) -> list[ScenarioStats]:
        s = self.samples
        out = []
        for k, sc in enumerate(self.spec.scenarios):
            idx = [i for i, v in enumerate(s.scenario) if v == k]
            # percentiles over answered requests only: a refused connection is fast, not a response time
            lat = [s.latency_ms[i] for i in idx if s.status[i] > 0]
            codes = Counter(s.status[i] for i in idx)
            mix: dict[str, int] = {}
            for code, n in sorted(codes.items()):
                if code == TIMEOUT:
                    mix["timeout"] = n
                elif code == FAILED:
                    for (kk, reason), m in s.errors.items():
                        if kk == k and reason != "timeout":
                            mix[f"error:{reason}"] = m
                else:
                    mix[str(code)] = n
            ok = sum(n for code, n in codes.items() if code in sc.expect_status)
            count = len(idx)

            def p(q: float, lat: list[float] = lat) -> float | None:
                v = percentile(lat, q)
                return round(v, 2) if v is not None else None

            out.append(ScenarioStats(sc.name, count, ok, count - ok, round((count - ok) / count, 4) if count else 0.0,
                                     mix, round(count / self.spec.duration_s, 2), p(50), p(90), p(95), p(99),
                                     round(max(lat), 2) if lat else None, len(lat)))
        return out

    def samples_frame(self) -> pd.DataFrame:
        """Every request of the run as a pandas DataFrame, for a notebook: ``scenario``, ``offset_s``
        (intended send time in the open model, actual in the closed one, from the run's start),
        ``latency_ms``, ``status`` (-1 timeout, 0 no response), ``outcome`` (the code, ``timeout`` or
        ``error``), ``answered`` and, in the open model, ``lag_ms`` (how late the request left)."""
        import pandas as pd  # here: the load phase's kernel does not need it

        s = self.samples
        names = [sc.name for sc in self.spec.scenarios]
        df = pd.DataFrame({"scenario": [names[k] for k in s.scenario], "offset_s": list(s.offset_s),
                           "latency_ms": list(s.latency_ms), "status": list(s.status)})
        df["outcome"] = [("timeout" if code == TIMEOUT else "error" if code == FAILED else str(code))
                         for code in s.status]
        df["answered"] = df["status"] > 0
        if len(s.lag_ms) == len(df):
            df["lag_ms"] = list(s.lag_ms)
        return df

    def timeline(self) -> list[dict[str, Any]]:
        """Per second of the run: requests, errors and latency p50/p95 per scenario (by intended send time)."""
        s = self.samples
        buckets: dict[tuple[int, int], list[int]] = {}
        for i in range(len(s.latency_ms)):
            buckets.setdefault((int(max(0.0, s.offset_s[i])), s.scenario[i]), []).append(i)
        rows = []
        for (sec, k), idx in sorted(buckets.items()):
            lat = [s.latency_ms[i] for i in idx if s.status[i] > 0]
            expect = self.spec.scenarios[k].expect_status
            rows.append({"second": sec, "scenario": self.spec.scenarios[k].name, "requests": len(idx),
                         "errors": sum(1 for i in idx if s.status[i] not in expect),
                         "p50_ms": round(percentile(lat, 50) or 0, 2), "p95_ms": round(percentile(lat, 95) or 0, 2)})
        return rows


def _call_progress(progress: Callable[[LiveFigures], None], figures: LiveFigures) -> None:
    try:
        progress(figures)
    except Exception:  # noqa: BLE001 - a progress display never stops the load
        pass


def _merge(spec: LoadSpec, reports: list[WorkerReport]) -> LoadResult:
    samples = Samples()
    for r in reports:
        samples.extend(r.samples)
    return LoadResult(spec, samples, len(reports), sum(r.scheduled for r in reports), sum(r.dropped for r in reports),
                      max(r.wall_s for r in reports), [r.cpu_s for r in reports], sum(r.connections for r in reports))


def run_load(spec: LoadSpec, processes: int = 1, cpus: list[int] | None = None,
             progress: Callable[[LiveFigures], None] | None = None, progress_every_s: float = 1.0) -> LoadResult:
    """Run the load and return the merged result.

    ``processes=1`` runs in this process (in a thread of its own, so it also works inside a running
    event loop such as a Jupyter kernel); more start that many processes, each with its own event
    loop, pinned round-robin to ``cpus`` when given.

    ``progress`` is called with the figures so far every ``progress_every_s`` while the load runs, from
    this (the calling) thread: in one process it reads the samples the run records anyway; worker
    processes each send one small reading per interval. Nothing is added per request.
    """
    missing = validate_templates(spec)
    if missing:
        raise ValueError("placeholders without values: " + ", ".join(missing))
    if not spec.scenarios:
        raise ValueError("no scenarios")
    if processes <= 1:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                if cpus and hasattr(os, "sched_setaffinity"):
                    os.sched_setaffinity(threading.get_native_id(), {cpus[0]})
                with _no_gc():
                    box["report"] = asyncio.run(_run_worker(spec, 0, 1, time.time(), live_box=box))
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                box["error"] = exc

        t = threading.Thread(target=target, name="rehearsal-load", daemon=True)
        t.start()
        if progress is None:
            t.join()
        else:
            counter = _LiveCounter(spec)
            while t.is_alive():
                t.join(progress_every_s)
                if t.is_alive() and box.get("samples") is not None:
                    _call_progress(progress, counter.read(box["samples"]))
        if "error" in box:
            raise box["error"]
        return _merge(spec, [box["report"]])

    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for w in range(processes):
        parent, child = ctx.Pipe()
        cpu = cpus[w % len(cpus)] if cpus else None
        proc = ctx.Process(target=_worker_entry, daemon=True,
                           args=(spec, w, processes, cpu, child, progress_every_s if progress else 0.0))
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    try:
        for parent, proc in zip(pipes, procs, strict=True):
            if not parent.poll(60):
                raise TimeoutError(f"load worker {proc.pid} did not start")
            ready = parent.recv()
            if isinstance(ready, BaseException):
                raise ready
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    start_at = time.time() + 0.2  # one instant shared by every process
    for parent in pipes:
        parent.send(start_at)
    from multiprocessing.connection import wait

    results: dict[int, WorkerReport] = {}
    live: dict[int, tuple[int, int, float, float | None]] = {}
    deadline = start_at + spec.duration_s + spec.timeout_s + 30
    while len(results) < len(pipes):
        waiting = [p for w, p in enumerate(pipes) if w not in results]
        if not wait(waiting, timeout=max(0.0, min(deadline - time.time(), progress_every_s))):
            if time.time() < deadline:
                continue
            silent = [procs[w] for w in range(len(pipes)) if w not in results]
            for proc in silent:
                proc.kill()
            raise TimeoutError(f"load worker {silent[0].pid} sent no result")
        for w, parent in enumerate(pipes):
            if w in results or not parent.poll():
                continue
            got = parent.recv()
            if isinstance(got, tuple) and got and got[0] == "live":
                live[w] = got[1:]
                if progress is not None and len(live) == len(pipes):
                    sent, errors = sum(v[0] for v in live.values()), sum(v[1] for v in live.values())
                    p95s = [v[3] for v in live.values() if v[3] is not None]
                    _call_progress(progress, LiveFigures(round(time.time() - start_at, 2), sent, errors,
                                                         round(sum(v[2] for v in live.values()), 1),
                                                         max(p95s) if p95s else None))
                continue
            procs[w].join(5)
            if isinstance(got, BaseException):
                raise got
            results[w] = got
    reports = [results[w] for w in range(len(pipes))]
    late = [r for r in reports if r.wall_s > spec.duration_s + spec.timeout_s + 5]
    if late:
        raise RuntimeError("a load worker ran far past the duration")
    return _merge(spec, reports)
