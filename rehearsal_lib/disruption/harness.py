"""Steady background traffic around a disruption, and the judgements every disruptive phase makes of it.

`Traffic` runs the load engine's open model in a thread for before + during + after; every request is kept
(`Req`: intended send time, scenario, status, latency, the id a write's 2xx answer acknowledged). Times are
seconds since the harness's own start (`time.perf_counter()` based), like the markers (inject, restore,
cutover start/end, abort, rollback) the phase records, so windows are exact.

The judgements are plain functions of those requests: `judge_during` (error rate, 5xx, scenarios that must
keep succeeding), `probe_until_green` (recovery: the first of N consecutive green probes; a probe without an
answer is never green), `longest_gap`, `lookup_ids` (nothing lost), `LogWatch` (a line matching a pattern,
read from the offset taken at injection), `VersionSampler` (the version served, on a timer).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from rehearsal_lib.disruption.params import During, NothingLost, Probe, Traffic
from rehearsal_lib.load.engine import FAILED, TIMEOUT, LoadResult, LoadSpec, Scenario, _Template, run_load
from rehearsal_lib.probes import http
from rehearsal_lib.probes.placeholders import partial

# ------------------------------------------------------------------------------------------ traffic


@dataclass
class Req:
    """One background request: `t` its intended send time (s since the harness started), `done` when its
    answer (or failure) arrived, `status` the HTTP code (-1 timeout, 0 no response)."""

    t: float
    done: float
    scenario: str
    status: int
    latency_ms: float
    ok: bool
    acked: Any = None

    @property
    def outcome(self) -> str:
        return "timeout" if self.status == TIMEOUT else "error" if self.status == FAILED else str(self.status)

    @property
    def status_class(self) -> str:
        return "no answer" if self.status <= 0 else f"{self.status // 100}xx"


class Clock:
    """Seconds since the harness started; markers are named instants on it."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.markers: dict[str, float] = {}

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def mark(self, name: str) -> float:
        self.markers[name] = round(self.now(), 3)
        return self.markers[name]


def setup_values(client: httpx.Client, traffic: Traffic, run_id: str, headers: dict[str, str]) -> dict[str, list]:
    """Send each setup request `count` times; the `field` of every answer fills its placeholder."""
    values: dict[str, list[Any]] = {}
    for step in traffic.setup:
        sc = Scenario(step.name, partial(step.path, {"run_id": run_id}), step.method,
                      json=partial(step.json_body, {"run_id": run_id}))
        tpl = _Template(sc, {}, values, 0)
        codes = step.expect_status if isinstance(step.expect_status, list) else [step.expect_status]
        kept = []
        for _ in range(step.count):
            path, hdrs, body = tpl.render()
            res = http.request(client, step.method, path, headers={**hdrs, **(headers if step.auth else {})},
                               content=body)
            if res.status not in codes or not isinstance(res.body, dict) or step.field not in res.body:
                raise RuntimeError(f"traffic setup {step.name}: {res.describe()} (expected {codes} with a "
                                   f"'{step.field}' field)")
            kept.append(res.body[step.field])
        values[step.name] = kept
    return values


class Background:
    """The traffic of one disruption: `run_load` (open model, one process) in a thread of its own."""

    def __init__(self, base_url: str, traffic: Traffic, headers_for: Callable[[Any], dict[str, str]], run_id: str,
                 duration_s: float, clock: Clock, values: dict[str, list] | None = None, verify: bool | str = True):
        self.traffic, self.clock = traffic, clock
        scenarios = [Scenario(s.name, partial(s.path, {"run_id": run_id}), s.method, s.weight,
                              partial(s.json_body, {"run_id": run_id}), headers_for(s), s.codes(),
                              ack_field=s.ack_field) for s in traffic.scenarios]
        self.spec = LoadSpec(base_url, scenarios, model="open", rate=traffic.rate, duration_s=duration_s,
                             timeout_s=traffic.timeout_s, max_in_flight=64, values=values or {},
                             verify_tls=bool(verify), transport="httpcore")
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rehearsal-disruption-traffic", daemon=True)

    def _run(self) -> None:
        try:
            self.result = run_load(self.spec)
        except BaseException as exc:  # noqa: BLE001 - reported by requests()
            self.error = exc

    def start(self) -> Background:
        self._thread.start()
        return self

    def join(self) -> list[Req]:
        self._thread.join(self.spec.duration_s + self.spec.timeout_s + 30)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError("the background traffic did not finish")
        return self.requests()

    def requests(self) -> list[Req]:
        assert self.result is not None
        s, sc = self.result.samples, self.spec.scenarios
        base = s.t0 - self.clock.t0
        out = []
        for i in range(len(s.status)):
            t = base + s.offset_s[i]
            k = s.scenario[i]
            out.append(Req(round(t, 4), round(t + s.latency_ms[i] / 1000, 4), sc[k].name, s.status[i],
                           round(s.latency_ms[i], 2), s.status[i] in sc[k].expect_status, s.acked.get(i)))
        return sorted(out, key=lambda r: r.t)


def window(reqs: list[Req], start: float, end: float | None) -> list[Req]:
    """Requests whose intended send time is in [start, end) (end None: to the last)."""
    return [r for r in reqs if r.t >= start and (end is None or r.t < end)]


# ------------------------------------------------------------------------------------------ judgements


@dataclass
class Verdict:
    status: Literal["pass", "fail", "error"]
    observed: str
    evidence: dict[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float | int | None] = field(default_factory=dict)


def mix(reqs: list[Req]) -> dict[str, int]:
    return dict(sorted(Counter(r.outcome for r in reqs).items()))


def judge_during(reqs: list[Req], cfg: During) -> Verdict:
    """Error rate, 5xx and the scenarios that must keep succeeding, over the requests sent during the window."""
    if len(reqs) < cfg.min_requests:
        return Verdict("error", f"only {len(reqs)} request(s) were sent during the disruption (fewer than "
                                f"{cfg.min_requests}): not exercised", {"status mix": mix(reqs)})
    bad = [r for r in reqs if not r.ok]
    rate = len(bad) / len(reqs)
    fivexx = [r for r in reqs if r.status >= 500]
    problems = []
    if rate > cfg.max_error_rate:
        problems.append(f"error rate {rate:.1%} > {cfg.max_error_rate:.1%}")
    if cfg.no_5xx and fivexx:
        problems.append(f"{len(fivexx)} answer(s) with 5xx")
    per_scenario = {}
    for name in cfg.must_succeed:
        mine = [r for r in reqs if r.scenario == name]
        failed = [r for r in mine if not r.ok]
        per_scenario[name] = {"sent": len(mine), "failed": len(failed), "status mix": mix(mine)}
        if not mine:
            problems.append(f"{name}: no request sent during the disruption (not exercised)")
        elif failed:
            problems.append(f"{name}: {len(failed)} of {len(mine)} failed")
    evidence = {"requests": len(reqs), "status mix": mix(reqs), "must succeed": per_scenario,
                "first failures": [{"t": r.t, "scenario": r.scenario, "outcome": r.outcome} for r in bad[:10]]}
    metrics = {"requests": len(reqs), "error_rate": round(rate, 4), "responses_5xx": len(fivexx)}
    summary = f"{len(reqs)} requests, {len(bad)} not as expected ({rate:.1%}), {len(fivexx)} 5xx"
    unexercised = [p for p in problems if "not exercised" in p]
    if unexercised and len(unexercised) == len(problems):
        return Verdict("error", "; ".join(unexercised), evidence, metrics)
    return Verdict("fail" if problems else "pass", summary + (": " + "; ".join(problems) if problems else ""),
                   evidence, metrics)


@dataclass
class Recovery:
    """The probes after a restore: `recovered_s` (restore -> first green of the streak) or None."""

    start: float
    recovered_s: float | None
    attempts: list[dict[str, Any]]
    answered: int

    def verdict(self, cfg: Probe, what: str = "recovered") -> Verdict:
        ev = {"probe": f"{cfg.method} {cfg.path}", "attempts": len(self.attempts), "answered": self.answered,
              "last attempts": self.attempts[-8:]}
        if self.recovered_s is not None:
            return Verdict("pass", f"{what} in {self.recovered_s:.2f} s ({cfg.consecutive} consecutive green "
                                   f"probes)", ev, {"recovery_s": round(self.recovered_s, 3)})
        last = self.attempts[-1]["outcome"] if self.attempts else "no attempt"
        if not self.answered:
            return Verdict("fail", f"not {what} within {cfg.within_s:g} s: no probe got an answer "
                                   f"({len(self.attempts)} attempts; last: {last})", ev, {"recovery_s": None})
        return Verdict("fail", f"not {what} within {cfg.within_s:g} s: no {cfg.consecutive} consecutive green "
                               f"probes ({len(self.attempts)} attempts; last: {last})", ev, {"recovery_s": None})


def probe_until_green(base_url: str, cfg: Probe, clock: Clock, start: float, headers: dict[str, str] | None = None,
                      verify: bool | str = True, timeout_s: float = 2.0,
                      green: Callable[[http.HttpResult], bool] | None = None) -> Recovery:
    """Probe from `start` until `cfg.consecutive` green answers in a row or `cfg.within_s` has passed.

    Green: an answer with an expected status (and `green(res)` when given). A request without an answer
    (refused, reset, timed out) is never green and breaks a streak. Each probe uses a new connection."""
    attempts: list[dict[str, Any]] = []
    streak_start: float | None = None
    streak = answered = 0
    while True:
        t = clock.now()
        with httpx.Client(base_url=base_url, timeout=timeout_s, verify=verify) as client:
            res = http.request(client, cfg.method, cfg.path, headers=headers)
        is_green = (res.error is None and res.status in cfg.expect_status and (green is None or green(res)))
        answered += res.error is None
        attempts.append({"t": round(t, 3), "outcome": res.error or res.status, "green": is_green})
        if is_green:
            streak_start = t if streak == 0 else streak_start
            streak += 1
            if streak >= cfg.consecutive:
                return Recovery(start, max(0.0, (streak_start or t) - start), attempts, answered)
        else:
            streak, streak_start = 0, None
        if clock.now() - start > cfg.within_s:
            return Recovery(start, None, attempts, answered)
        time.sleep(cfg.interval_s)


def longest_gap(reqs: list[Req], start: float, end: float) -> tuple[float, float, float]:
    """The longest stretch of [start, end] without a successful answer: (length, from, to), by answer time."""
    times = sorted(r.done for r in reqs if r.ok and start <= r.done <= end)
    edges = [start, *times, end]
    best = (0.0, start, start)
    for a, b in zip(edges, edges[1:], strict=False):
        if b - a > best[0]:
            best = (b - a, a, b)
    return round(best[0], 3), round(best[1], 3), round(best[2], 3)


def lookup_ids(engine: Any, cfg: NothingLost, ids: list[Any]) -> dict[Any, int]:
    """How many rows each id has: one read-only statement with a bound (expanding) parameter list."""
    import sqlalchemy as sa

    if not ids:
        return {}
    table = ".".join(f'"{part}"' for part in cfg.table.split("."))
    stmt = sa.text(f'SELECT "{cfg.id_column}" FROM {table} WHERE "{cfg.id_column}" IN :ids').bindparams(
        sa.bindparam("ids", expanding=True))
    counts: Counter = Counter()
    with engine.connect() as conn:
        for chunk in range(0, len(ids), 1000):
            for (value,) in conn.execute(stmt, {"ids": ids[chunk:chunk + 1000]}):
                counts[str(value)] += 1
    return {i: counts.get(str(i), 0) for i in ids}


def judge_lost(acked: list[Req], counts: dict[Any, int], cfg: NothingLost) -> Verdict:
    missing = [i for i, n in counts.items() if n == 0]
    doubled = {str(i): n for i, n in counts.items() if n > 1}
    acked_twice = [i for i, n in Counter(str(r.acked) for r in acked).items() if n > 1]
    ev = {"acknowledged": len(acked), "looked up in": f"{cfg.table}.{cfg.id_column}",
          "missing ids": missing[:20], "ids with more than one row": dict(list(doubled.items())[:20]),
          "ids acknowledged more than once (an upsert; not a loss)": acked_twice[:20],
          "missing, with when acknowledged": [{"id": r.acked, "t": r.t} for r in acked
                                              if counts.get(r.acked) == 0][:10]}
    problems = []
    if missing:
        problems.append(f"{len(missing)} acknowledged write(s) missing")
    if doubled:
        problems.append(f"{len(doubled)} stored more than once")
    metrics = {"acknowledged": len(acked), "missing": len(missing), "duplicated": len(doubled)}
    observed = f"{len(acked)} writes acknowledged 2xx, " + ("; ".join(problems) if problems else "each stored once")
    return Verdict("fail" if problems else "pass", observed, ev, metrics)


class LogWatch:
    """Lines appended to a log file after an offset (taken at injection), searched for a pattern."""

    def __init__(self, path: str, pattern: str):
        self.path, self.regex = path, re.compile(pattern)
        self.offset = os.path.getsize(path) if os.path.isfile(path) else 0
        self.found: str | None = None
        self.found_t: float | None = None
        self.lines = 0

    def poll(self, now: float) -> bool:
        if self.found is not None:
            return True
        if not os.path.isfile(self.path):
            return False
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        cut = chunk.rfind(b"\n") + 1  # only whole lines; the rest is read next time
        self.offset += cut
        for line in chunk[:cut].decode("utf-8", errors="replace").splitlines():
            self.lines += 1
            if self.regex.search(line):
                self.found, self.found_t = line[:500], now
                return True
        return False

    def watch(self, clock: Clock, until: float, stop: threading.Event | None = None) -> None:
        """Poll every 0.1 s until found or the clock passes `until` (run in a thread)."""
        while clock.now() <= until and not (stop and stop.is_set()):
            if self.poll(clock.now()):
                return
            time.sleep(0.1)
        self.poll(clock.now())


def read_version(base_url: str, path: str, field_name: str, headers: dict[str, str] | None = None,
                 verify: bool | str = True, timeout_s: float = 2.0) -> str | None:
    """The version served now (GET path, top-level JSON field); None without a usable answer."""
    with httpx.Client(base_url=base_url, timeout=timeout_s, verify=verify) as client:
        res = http.request(client, "GET", path, headers=headers)
    if res.ok and isinstance(res.body, dict) and res.body.get(field_name) is not None:
        return str(res.body[field_name])
    return None


class VersionSampler(threading.Thread):
    """The version the target serves, read every `interval_s` (GET path, JSON field), until stopped."""

    def __init__(self, base_url: str, path: str, field_name: str, clock: Clock, interval_s: float = 0.25,
                 headers: dict[str, str] | None = None, verify: bool | str = True, timeout_s: float = 2.0):
        super().__init__(name="rehearsal-version-sampler", daemon=True)
        self.base_url, self.path, self.field, self.clock = base_url, path, field_name, clock
        self.interval_s, self.headers, self.verify, self.timeout_s = interval_s, headers, verify, timeout_s
        self.samples: list[tuple[float, str | None]] = []
        self.stop_event = threading.Event()

    def read(self) -> str | None:
        return read_version(self.base_url, self.path, self.field, self.headers, self.verify, self.timeout_s)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((round(self.clock.now(), 3), self.read()))
            self.stop_event.wait(self.interval_s)

    def stop(self) -> list[tuple[float, str | None]]:
        self.stop_event.set()
        self.join(self.timeout_s + 2)
        return self.samples

    def first_steady(self, version: str, after: float) -> float | None:
        """The first sample at or after `after` from which every later sample reads `version`."""
        start = None
        for t, v in self.samples:
            if t < after:
                continue
            if v == version:
                start = t if start is None else start
            else:
                start = None
        return start
