"""Failure injection: each scenario injects one fault under steady traffic and checks what happened during it,
how fast the service recovered after the restore, that no acknowledged write was lost, and that it was logged.

The disruption is made once per scenario, by the first of its checks that needs it (every one is declared
`writes=True`: production refuses them without --allow-destructive and the fault is never made)."""

from __future__ import annotations

from typing import Any

from rehearsal_lib.checks.wording import not_configured
from rehearsal_lib.disruption.chart import timeline_figure
from rehearsal_lib.disruption.harness import judge_during, judge_lost, lookup_ids, window
from rehearsal_lib.disruption.run import DisruptionRun, run_fault
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.faults.params import FaultScenario, FaultsParams
from rehearsal_lib.results import Check


def _disruption(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> DisruptionRun:
    """The scenario's disruption, made once (a failure to make it is kept too: it is not tried again)."""
    def make() -> dict[str, Any]:
        try:
            traffic = ctx.settings.traffic_of(sc)
            with ctx.progress(f"{sc.name}: {sc.before_s:g} s + {sc.during_s:g} s fault + recovery",
                              total_s=sc.before_s + sc.during_s + sc.after_s):
                return {"run": run_fault(ctx, sc.title or sc.name, traffic, sc.inject, sc.before_s, sc.during_s,
                                         sc.after_s, sc.recovery, sc.logged)}
        except Exception as exc:  # noqa: BLE001 - every check of the scenario reports it
            return {"error": f"{type(exc).__name__}: {exc}"[:500]}

    got = ctx.cached(f"faults.{sc.name}", make)
    if "error" in got:
        raise RuntimeError(f"the scenario could not run: {got['error']}")
    run: DisruptionRun = got["run"]
    if run.error:
        raise RuntimeError(run.error)
    return run


def _window(run: DisruptionRun) -> tuple[float, float]:
    return run.markers["inject"], run.markers["restore"]


def check_scenario(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> list[Check]:
    """The four checks of one scenario, then its timeline chart."""
    out = [check_during(ctx, sc), check_recovery(ctx, sc)]
    if sc.nothing_lost is not None:
        out.append(check_nothing_lost(ctx, sc))
    else:  # read-only traffic: nothing to look up; a skipped blocker would make every such run CONDITIONAL
        ctx.note(f"**{sc.name}**: no `nothing_lost` block: acknowledged writes are not looked up.")
    if sc.logged is not None:
        out.append(check_logged(ctx, sc))
    got = ctx._cache.get(f"faults.{sc.name}", {})
    if "run" in got:
        show(ctx, got["run"])
    if sc.reset and "run" in got:
        reset_after(ctx, sc)
    return out


def reset_after(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> None:
    """Run the scenario's `reset` command once it is judged: what the scenario left behind (a service that
    did not recover) must not be blamed on the phases after it. Shown as a note, never a verdict."""
    from rehearsal_lib.probes import command

    res = command.run(ctx.resolve(sc.reset, secret=False) or "", sc.reset_timeout_s)
    ok = res.error is None and res.returncode == 0
    tail = ctx.secrets.scrub(res.output.strip()[-300:])
    outcome = "done" if ok else "FAILED: " + (res.error or f"exit {res.returncode}")
    ctx.note(f"**{sc.name}**: reset after the scenario ({outcome}, {res.duration_s:.1f} s)"
             + (f": `{tail.splitlines()[-1]}`" if tail else ""))


def check_during(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> Check:
    d = sc.during
    expected = (f"while the fault lasts: error rate ≤ {d.max_error_rate:.1%}" + (", no 5xx" if d.no_5xx else "")
                + (f", every {', '.join(d.must_succeed)} request succeeds" if d.must_succeed else ""))

    def probe() -> Outcome:
        run = _disruption(ctx, sc)
        v = judge_during(window(run.requests, *_window(run)), d)
        return Outcome(v.status, f"{run.injected}: {v.observed}", expected,
                       {**v.evidence, "markers": run.markers}, v.metrics)

    return ctx.run(f"faults.{sc.name}.during", f"{sc.title or sc.name}: service during the fault", probe,
                   expected=expected, writes=True)


def check_recovery(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> Check:
    r = sc.recovery
    expected = (f"after the restore, {r.consecutive} consecutive green {r.method} {r.path} within {r.within_s:g} s "
                "(a probe without an answer is never green)")

    def probe() -> Outcome:
        run = _disruption(ctx, sc)
        assert run.restore is not None
        if not run.restore[0]:
            return Outcome("fail", f"the restore failed: {run.restore[1]}", expected, {"markers": run.markers})
        assert run.recovery is not None
        v = run.recovery.verdict(r)
        return Outcome(v.status, v.observed, expected,
                       {**v.evidence, "restore": run.restore[1], "markers": run.markers}, v.metrics)

    return ctx.run(f"faults.{sc.name}.recovery", f"{sc.title or sc.name}: recovery after the restore", probe,
                   severity="blocker", expected=expected, writes=True)


def check_nothing_lost(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> Check:
    cfg = sc.nothing_lost
    expected = ("every write acknowledged 2xx while the traffic ran exists afterwards exactly once"
                + (f" ({cfg.table}.{cfg.id_column})" if cfg else ""))

    def probe() -> Outcome:
        if cfg is None:
            return Outcome("skip", "this scenario's traffic has no write to look up (set nothing_lost: scenario, "
                                   "table, id_column)", expected)
        import time

        run = _disruption(ctx, sc)
        acked = [r for r in run.requests if r.scenario == cfg.scenario and r.acked is not None
                 and 200 <= r.status < 300]
        during = [r for r in window(acked, *_window(run))]
        if not acked:
            return Outcome("error", f"no {cfg.scenario} write was acknowledged with an id: nothing to look up "
                                    "(not exercised)", expected)
        time.sleep(cfg.settle_s)
        counts = lookup_ids(ctx.engine, cfg, [r.acked for r in acked])
        v = judge_lost(acked, counts, cfg)
        v.evidence["acknowledged during the fault"] = len(during)
        return Outcome(v.status, v.observed, expected, v.evidence, v.metrics)

    return ctx.run(f"faults.{sc.name}.nothing_lost", f"{sc.title or sc.name}: no acknowledged write lost", probe,
                   severity="blocker", expected=expected, writes=True)


def check_logged(ctx: PhaseRun[FaultsParams], sc: FaultScenario) -> Check:
    cfg = sc.logged
    assert cfg is not None
    expected = f"a line matching /{cfg.pattern}/ in the log within {cfg.within_s:g} s of the injection"

    def probe() -> Outcome:
        run = _disruption(ctx, sc)
        log = run.log
        assert log is not None
        ev = {"file": cfg.file, "lines read since the injection": log.lines, "markers": run.markers}
        if log.found is None:
            why = "" if log.lines else " (no line was written to it after the injection)"
            return Outcome("fail", f"no matching line within {cfg.within_s:g} s{why}", expected, ev)
        took = (log.found_t or 0) - run.markers["inject"]
        return Outcome("pass", f"logged {took:.1f} s after the injection", expected, {**ev, "line": log.found},
                       {"logged_after_s": round(took, 3)})

    return ctx.run(f"faults.{sc.name}.logged", f"{sc.title or sc.name}: the fault is logged", probe,
                   expected=expected, writes=True)


def show(ctx: PhaseRun[FaultsParams], run: DisruptionRun) -> None:
    rec = None
    if run.recovery is not None and run.recovery.recovered_s is not None:
        rec = (run.recovery.start, run.recovery.start + run.recovery.recovered_s)
    markers = {k: v for k, v in run.markers.items() if k in ("inject", "restore")}
    ctx.figure(timeline_figure(f"{run.title}: requests/s by status", run.requests, markers, rec, run.versions))


def run_all(ctx: PhaseRun[FaultsParams]) -> list[Check]:
    """Every scenario in order (the notebook's one call)."""
    if not ctx.settings.scenarios:
        ctx.note(not_configured("phases.faults.scenarios", "that the service survives injected faults (a dependency "
                                                           "down, a worker killed, DB latency, terminated backends)"))
        return []
    out: list[Check] = []
    for sc in ctx.settings.scenarios:
        out += check_scenario(ctx, sc)
    return out
