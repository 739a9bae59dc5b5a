"""The drivers: one fault, one cutover, one abort drill, each under its own background traffic.

Every driver runs inside a check declared `writes=True` (the one write-safety route: production refuses it
without --allow-destructive). A fault's restore is registered (`ctx.register_restore`) BEFORE the injection and
run in `finally`, so it runs when anything in between raises; the runner runs it when the kernel dies.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rehearsal_lib.disruption import injectors
from rehearsal_lib.disruption.harness import (
    Background,
    Clock,
    LogWatch,
    Recovery,
    Req,
    VersionSampler,
    probe_until_green,
    setup_values,
)
from rehearsal_lib.disruption.params import LogExpect, Probe, Traffic, TrafficScenario
from rehearsal_lib.probes import command as cmd


@dataclass
class DisruptionRun:
    """What one disruption did and saw (times in seconds since its traffic started, see `Clock`)."""

    title: str
    clock: Clock
    requests: list[Req] = field(default_factory=list)
    injected: str = ""
    error: str | None = None  # the disruption could not be made (the checks that need it are `error`)
    restore: tuple[bool, str] | None = None
    recovery: Recovery | None = None
    log: LogWatch | None = None
    versions: list[tuple[float, str | None]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def markers(self) -> dict[str, float]:
        return self.clock.markers


def _headers_for(ctx: Any) -> Any:
    def headers(s: TrafficScenario) -> dict[str, str]:
        out = dict(ctx.auth_headers(s.principal)) if s.auth else {}  # obtained once, before the traffic
        out.update({k: ctx.resolve(v) or "" for k, v in s.headers.items()})
        return out

    return headers


def _background(ctx: Any, traffic: Traffic, clock: Clock, cap_s: float) -> tuple[Background, threading.Event]:
    """Setup requests, then the traffic started (it runs until the returned event is set, at most cap_s)."""
    values = setup_values(ctx.http, traffic, ctx.run_id, ctx.auth_headers())
    stop = threading.Event()
    bg = Background(ctx.base_url, traffic, _headers_for(ctx), ctx.run_id, cap_s, clock, values,
                    ctx.params.target.verify_tls)
    bg.spec.stop = stop
    return bg.start(), stop


def _sleep_until(clock: Clock, t: float) -> None:
    while (left := t - clock.now()) > 0:
        time.sleep(min(left, 0.05))


def _probe(ctx: Any, cfg: Probe, clock: Clock, start: float, green: Any = None) -> Recovery:
    headers = ctx.auth_headers() if cfg.auth else None
    return probe_until_green(ctx.base_url, cfg, clock, start, headers, ctx.params.target.verify_tls,
                             timeout_s=min(ctx.params.target.timeout_s, 5), green=green)


def run_fault(ctx: Any, title: str, traffic: Traffic, inject: Any, before_s: float, during_s: float, after_s: float,
              recovery: Probe, logged: LogExpect | None = None) -> DisruptionRun:
    """Traffic; at before_s inject (restore registered first); at +during_s restore; probe recovery; after_s more."""
    resolve = lambda v: ctx.resolve(v, secret=False) or ""  # noqa: E731
    if getattr(inject, "database_url", None):
        ctx.resolve(inject.database_url)  # an admin URL: masked in every output
    injector = injectors.make(inject, resolve)
    run = DisruptionRun(title, Clock())
    restore = injector.restore()
    cap = before_s + during_s + recovery.within_s + after_s + (restore.timeout_s if restore else 0) + 5
    stop: threading.Event | None = None
    log_thread: threading.Thread | None = None
    handle = None
    try:
        bg, stop = _background(ctx, traffic, run.clock, cap)
        _sleep_until(run.clock, before_s)
        injector.refresh()  # e.g. the pid of the worker serving the traffic now
        restore = injector.restore()
        handle = ctx.register_restore(restore) if restore is not None else None  # before the injection
        if logged is not None:
            run.log = LogWatch(resolve(logged.file), logged.pattern)  # the offset: taken at injection
        t_inject = run.clock.mark("inject")
        try:
            run.injected = injector.inject()
        except Exception as exc:  # noqa: BLE001 - the checks say the fault was not made
            run.error = f"injection failed: {type(exc).__name__}: {exc}"[:500]
        if run.log is not None and logged is not None and run.error is None:
            log_thread = threading.Thread(target=run.log.watch, args=(run.clock, t_inject + logged.within_s),
                                          daemon=True)
            log_thread.start()
        if run.error is None:
            _sleep_until(run.clock, t_inject + during_s)
    except BaseException:
        if stop is not None:
            stop.set()  # no more traffic: the check is over
        raise
    finally:
        t_restore = run.clock.mark("restore")
        run.restore = handle.run() if handle is not None else (True, "nothing to undo")
        run.clock.mark("restored")
    if run.error is None and run.restore[0]:
        run.recovery = _probe(ctx, recovery, run.clock, t_restore)
    _sleep_until(run.clock, run.clock.now() + after_s)
    stop.set()
    if log_thread is not None:
        log_thread.join()
    run.requests = bg.join()
    return run


def run_command_under_traffic(ctx: Any, title: str, traffic: Traffic, command: str, timeout_s: float,
                              before_s: float, after_s: float, version_path: str | None, version_field: str,
                              probes: list[tuple[str, Probe, Any]], abort: tuple[float, str | None] | None = None,
                              ) -> DisruptionRun:
    """Traffic (and the version sampled) while `command` runs: markers `<title>_start`/`_end`; then each probe
    (name, cfg, green) from the command's end. `abort` (after_s, command or None): run the abort command that
    many seconds after the start (None: the command aborts itself then), marker `abort`."""
    run = DisruptionRun(title, Clock())
    bg, stop = _background(ctx, traffic, run.clock, before_s + timeout_s + after_s
                           + sum(p.within_s for _, p, _ in probes) + 10)
    sampler = None
    if version_path:
        sampler = VersionSampler(ctx.base_url, version_path, version_field, run.clock,
                                 verify=ctx.params.target.verify_tls)
        sampler.start()
    try:
        _sleep_until(run.clock, before_s)
        start = run.clock.mark("start")
        argv = cmd.split(command)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if abort is not None:
            _sleep_until(run.clock, start + abort[0])
            run.clock.mark("abort")
            if abort[1]:
                res = cmd.run(abort[1], timeout_s)
                run.extra["abort_command"] = res.evidence()
        try:
            out, _ = proc.communicate(timeout=max(0.1, timeout_s - (run.clock.now() - start)))
            run.extra["command"] = {"command": " ".join(argv)[:500], "exit_code": proc.returncode,
                                    "output_tail": out.decode(errors="replace")[-2000:]}
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            run.error = f"the command did not finish in {timeout_s:g} s"
            run.extra["command"] = {"command": " ".join(argv)[:500], "exit_code": None,
                                    "output_tail": out.decode(errors="replace")[-2000:]}
        end = run.clock.mark("end")
        for name, cfg, green in probes:
            run.extra[name] = _probe(ctx, cfg, run.clock, end if abort is None else run.markers["abort"], green)
        _sleep_until(run.clock, run.clock.now() + after_s)
    finally:
        stop.set()
        if sampler is not None:
            run.versions = sampler.stop()
    run.requests = bg.join()
    return run
