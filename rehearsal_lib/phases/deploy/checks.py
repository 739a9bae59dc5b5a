"""Deployment rehearsal: the team's deploy command runs while steady traffic runs; the cutover must leave no
gap without successful answers beyond the budget, stay within its error budget, end with the expected version
served and readiness settled. The abort drill starts a deploy, aborts it, and checks that the old version is
back within the bound. An optional plan command must show no drift."""

from __future__ import annotations

from typing import Any

from rehearsal_lib.checks.wording import not_configured
from rehearsal_lib.disruption.chart import timeline_figure
from rehearsal_lib.disruption.harness import Recovery, longest_gap, mix, read_version, window
from rehearsal_lib.disruption.params import Probe
from rehearsal_lib.disruption.run import DisruptionRun, run_command_under_traffic
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.deploy.params import DeployParams
from rehearsal_lib.probes import command as cmd
from rehearsal_lib.probes import http
from rehearsal_lib.results import Check, StatusName


def _version_is(field: str, version: str) -> Any:
    def green(res: http.HttpResult) -> bool:
        return isinstance(res.body, dict) and str(res.body.get(field)) == version

    return green


def _expected_version(ctx: PhaseRun[DeployParams]) -> str | None:
    cut = ctx.settings.cutover
    release = ctx.params.release.version if ctx.params.release else None
    return (cut.expected_version if cut and cut.expected_version else None) or release


def _once(ctx: PhaseRun[DeployParams], key: str, make: Any) -> DisruptionRun:
    def guarded() -> dict[str, Any]:
        try:
            return {"run": make()}
        except Exception as exc:  # noqa: BLE001 - every check of the family reports it
            return {"error": f"{type(exc).__name__}: {exc}"[:500]}

    got = ctx.cached(key, guarded)
    if "error" in got:
        raise RuntimeError(f"could not run: {got['error']}")
    run: DisruptionRun = got["run"]
    if run.error:
        raise RuntimeError(run.error)
    return run


def _cutover(ctx: PhaseRun[DeployParams]) -> DisruptionRun:
    cfg, s = ctx.settings.cutover, ctx.settings
    assert cfg is not None and s.traffic is not None
    want = _expected_version(ctx)
    probes: list[tuple[str, Probe, Any]] = [("readiness", cfg.readiness, None)]
    if want:
        probes.append(("version", Probe(path=s.version.path, consecutive=cfg.readiness.consecutive,
                                        interval_s=cfg.readiness.interval_s, within_s=cfg.version_within_s),
                       _version_is(s.version.field, want)))

    def make() -> DisruptionRun:
        with ctx.progress("cutover under traffic", total_s=cfg.before_s + cfg.after_s):
            assert s.traffic is not None  # the params validation makes sure
            return run_command_under_traffic(ctx, "cutover", s.traffic, cfg.command, cfg.timeout_s,
                                             cfg.before_s, cfg.after_s, s.version.path, s.version.field, probes)

    return _once(ctx, "deploy.cutover", make)


def _budget(reqs: list[Any], max_errors: int, max_5xx: int) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    bad = [r for r in reqs if not r.ok]
    fivexx = [r for r in reqs if r.status >= 500]
    problems = []
    if len(bad) > max_errors:
        problems.append(f"{len(bad)} errors > {max_errors}")
    if len(fivexx) > max_5xx:
        problems.append(f"{len(fivexx)} 5xx > {max_5xx}")
    ev = {"requests": len(reqs), "status mix": mix(reqs),
          "first failures": [{"t": r.t, "scenario": r.scenario, "outcome": r.outcome} for r in bad[:10]]}
    return problems, ev, {"requests": len(reqs), "errors": len(bad), "responses_5xx": len(fivexx)}


def check_cutover(ctx: PhaseRun[DeployParams]) -> list[Check]:
    cfg = ctx.settings.cutover
    if cfg is None:
        ctx.note(not_configured("phases.deploy.cutover", "that the team's deploy command switches versions under "
                                                         "traffic without a gap, errors, or unsettled readiness"))
        return []

    def tail(run: DisruptionRun) -> tuple[float, float]:
        return run.markers["start"], run.markers["end"] + cfg.after_s

    gap_expected = f"no stretch longer than {cfg.max_gap_s:g} s without a successful answer during the cutover"

    def gap() -> Outcome:
        run = _cutover(ctx)
        start, end = tail(run)
        if not window(run.requests, start, end):
            return Outcome("error", "no request was sent during the cutover (not exercised)", gap_expected)
        length, a, b = longest_gap(run.requests, start, end)
        ev = {"window": [start, end], "longest gap": {"from": a, "to": b}, "markers": run.markers,
              "command": run.extra.get("command")}
        status: StatusName = "fail" if length > cfg.max_gap_s else "pass"
        return Outcome(status, f"longest gap without a successful answer {length:.2f} s (from {a:.2f} s to "
                               f"{b:.2f} s)", gap_expected, ev, {"gap_s": length})

    err_expected = f"during the cutover at most {cfg.max_errors} errors and {cfg.max_5xx} 5xx"

    def errors() -> Outcome:
        run = _cutover(ctx)
        reqs = window(run.requests, *tail(run))
        problems, ev, metrics = _budget(reqs, cfg.max_errors, cfg.max_5xx)
        if not reqs:
            return Outcome("error", "no request was sent during the cutover (not exercised)", err_expected)
        return Outcome("fail" if problems else "pass", f"{metrics['requests']} requests, {metrics['errors']} errors, "
                       f"{metrics['responses_5xx']} 5xx" + (": " + "; ".join(problems) if problems else ""),
                       err_expected, ev, metrics)

    want = _expected_version(ctx)
    ver_expected = f"version {want} served within {cfg.version_within_s:g} s of the command's end"

    def version() -> Outcome:
        if not want:
            return Outcome("error", "no version to expect: set release.version or phases.deploy.cutover."
                                    "expected_version", "the new version is served")
        run = _cutover(ctx)
        rec: Recovery = run.extra["version"]
        v = rec.verdict(rec_probe(cfg.version_within_s, cfg.readiness.consecutive), f"serving {want}")
        seen = sorted({x for _, x in run.versions if x})
        return Outcome(v.status, v.observed + f"; versions seen: {', '.join(seen) or 'none'}",
                       ver_expected, {**v.evidence, "command": run.extra.get("command")}, v.metrics)

    r = cfg.readiness
    ready_expected = f"{r.consecutive} consecutive ready answers from {r.path} within {r.within_s:g} s of the end"

    def readiness() -> Outcome:
        run = _cutover(ctx)
        v = run.extra["readiness"].verdict(r, "settled")
        return Outcome(v.status, v.observed, ready_expected, v.evidence, v.metrics)

    out = [ctx.run("deploy.cutover.gap", "Cutover: no gap without answers", gap, severity="blocker",
                   expected=gap_expected, writes=True),
           ctx.run("deploy.cutover.errors", "Cutover: errors within budget", errors, expected=err_expected,
                   writes=True),
           ctx.run("deploy.cutover.version", "Cutover: the new version is served", version, severity="blocker",
                   expected=ver_expected, writes=True),
           ctx.run("deploy.cutover.readiness", "Cutover: readiness settles", readiness, expected=ready_expected,
                   writes=True)]
    got = ctx._cache.get("deploy.cutover", {})
    if "run" in got:
        show(ctx, got["run"], {"start": "cutover start", "end": "cutover end"}, got["run"].extra.get("readiness"))
    return out


def rec_probe(within_s: float, consecutive: int) -> Probe:
    return Probe(within_s=within_s, consecutive=consecutive)


def check_abort_drill(ctx: PhaseRun[DeployParams]) -> Check | None:
    cfg, s = ctx.settings.abort_drill, ctx.settings
    if cfg is None:
        ctx.note(not_configured("phases.deploy.abort_drill", "that aborting a deploy mid-way rolls back to the old "
                                                             "version within a bound"))
        return None
    expected = (f"aborted {cfg.abort_after_s:g} s into the deploy, the old version is served again "
                f"({cfg.consecutive} consecutive answers) within {cfg.rollback_within_s:g} s; at most "
                f"{cfg.max_errors} errors and {cfg.max_5xx} 5xx during the drill")

    def probe() -> Outcome:
        def make() -> DisruptionRun:
            old = read_version(ctx.base_url, s.version.path, s.version.field, verify=ctx.params.target.verify_tls)
            if old is None:
                raise RuntimeError(f"cannot read the served version from {s.version.path} before the drill")
            rollback = Probe(path=s.version.path, consecutive=cfg.consecutive, within_s=cfg.rollback_within_s)
            with ctx.progress("abort drill under traffic", total_s=cfg.before_s + cfg.abort_after_s + cfg.after_s):
                assert s.traffic is not None  # the params validation makes sure
                run = run_command_under_traffic(ctx, "abort drill", s.traffic, cfg.command, cfg.timeout_s,
                                                cfg.before_s, cfg.after_s, s.version.path, s.version.field,
                                                [("rollback", rollback, _version_is(s.version.field, old))],
                                                abort=(cfg.abort_after_s, cfg.abort_command))
            run.extra["old_version"] = old
            rec: Recovery = run.extra["rollback"]
            if rec.recovered_s is not None:
                run.clock.markers["rollback"] = round(rec.start + rec.recovered_s, 3)
            return run

        run = _once(ctx, "deploy.abort_drill", make)
        old, rec = run.extra["old_version"], run.extra["rollback"]
        v = rec.verdict(Probe(within_s=cfg.rollback_within_s, consecutive=cfg.consecutive), f"back on {old}")
        reqs = window(run.requests, run.markers["start"], run.markers["end"] + cfg.after_s)
        problems, ev, metrics = _budget(reqs, cfg.max_errors, cfg.max_5xx)
        # `old` was read before the drill: on a busy machine the sampler may start after a fast deploy's switch
        seen = sorted({old} | {x for _, x in run.versions if x})
        ev.update({"old version": old, "versions seen": seen, "markers": run.markers, "rollback": v.evidence,
                   "command": run.extra.get("command"), "abort command": run.extra.get("abort_command")})
        status: StatusName = "fail" if v.status == "fail" or problems else "pass"
        observed = v.observed + (": " + "; ".join(problems) if problems else
                                 f"; {metrics['errors']} errors, {metrics['responses_5xx']} 5xx")
        return Outcome(status, observed, expected, ev, {**metrics, **v.metrics})

    check = ctx.run("deploy.abort_drill.rollback", "Abort drill: the old version is back", probe, severity="blocker",
                    expected=expected, writes=True)
    got = ctx._cache.get("deploy.abort_drill", {})
    if "run" in got:
        rec = got["run"].extra.get("rollback")
        show(ctx, got["run"], {"start": "deploy start", "abort": "abort", "rollback": "rollback"}, rec)
    return check


def check_plan(ctx: PhaseRun[DeployParams]) -> Check | None:
    cfg = ctx.settings.plan
    if cfg is None:
        ctx.note(not_configured("phases.deploy.plan", "that the infrastructure plan shows no drift (its output kept "
                                                      "as evidence)"))
        return None
    expected = f"the plan exits 0 (exit {', '.join(map(str, cfg.drift_exit_codes))} means drift)"

    def probe() -> Outcome:
        res = cmd.run(cfg.command, cfg.timeout_s)
        ev = res.evidence()
        if res.error:
            return Outcome("error", res.describe(), expected, ev)
        if res.returncode in cfg.drift_exit_codes:
            return Outcome("fail" if cfg.require_no_drift else "pass", f"drift: {res.describe()}", expected, ev,
                           severity=None if cfg.require_no_drift else "info")
        if res.returncode != 0:
            return Outcome("error", f"the plan did not run: {res.describe()}", expected, ev)
        return Outcome("pass", f"no drift ({res.describe()})", expected, ev)

    return ctx.run("deploy.plan.no_drift", "Deploy plan shows no drift", probe, expected=expected)


def show(ctx: PhaseRun[DeployParams], run: DisruptionRun, names: dict[str, str], rec: Recovery | None) -> None:
    markers = {label: run.markers[k] for k, label in names.items() if k in run.markers}
    shade = (rec.start, rec.start + rec.recovered_s) if rec is not None and rec.recovered_s is not None else None
    ctx.figure(timeline_figure(f"{run.title}: requests/s by status, version served", run.requests, markers, shade,
                               run.versions))


def record_served_version(ctx: PhaseRun[DeployParams]) -> None:
    """After the cutover and the abort drill: the target now serves another version on purpose. Record the
    identity the phase leaves it in, so later phases check that target (and name this phase) instead of
    reporting a changed target. Nothing is recorded when no deploy command ran."""
    if not any(key in ctx._cache for key in ("deploy.cutover", "deploy.abort_drill")):
        return
    s = ctx.settings
    try:
        served = read_version(ctx.base_url, s.version.path, s.version.field, verify=ctx.params.target.verify_tls)
    except Exception as exc:  # noqa: BLE001 - said in the reason; the next phase's identity check judges it
        served = f"unreadable ({type(exc).__name__})"
    entry = ctx.accept_target_change(f"deploy phase left version {served} serving")
    if entry is not None:
        ctx.note(f"The deploy phase leaves version **{served}** serving; later phases check that target.")
