"""Preflight: is this the target we think it is, is it up, ready, frozen and responsive?"""

from __future__ import annotations

import os
import re
from typing import Any

from rehearsal_lib.checks.wording import ms, not_configured, plural
from rehearsal_lib.params_base import JsonExpect
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.preflight.params import PreflightParams, freeze_slug
from rehearsal_lib.probes import http
from rehearsal_lib.probes import steps as steps_probe
from rehearsal_lib.probes.assertions import check_json, read_version, select, shown
from rehearsal_lib.probes.sql import query
from rehearsal_lib.probes.stats import percentile
from rehearsal_lib.results import FAILING, Check, StatusName


def _status_check(ctx: PhaseRun[PreflightParams], path: str) -> Outcome:
    res = http.request(ctx.http, "GET", path)
    expected = f"GET {path} answers 2xx"
    unreached = http.reached_handler(res, authenticated=False)  # health endpoints are public
    if unreached:
        return Outcome("error", unreached, expected, res.evidence())
    return Outcome("pass" if res.ok else "fail", res.describe(), expected, res.evidence(),
                   {"elapsed_ms": round(res.elapsed_ms, 2), "status": res.status})


def check_identity(ctx: PhaseRun[PreflightParams]) -> Check | None:
    """The service names itself and, where params pin one, runs the expected version; where params declare
    `release.version`, the version observed is the one being released (`preflight.release.version`)."""
    s = ctx.settings
    cfg = s.version
    endpoint = cfg.endpoint if cfg is not None else s.version_endpoint
    pinned = cfg.expect if cfg is not None else s.expected_version
    if not endpoint:
        ctx.note(not_configured("phases.preflight.version", "that the service names itself and, where pinned, "
                                                            "runs the expected version"))
        return None
    observed: dict[str, Any] = {}

    def probe() -> Outcome:
        auth_on = cfg is not None and cfg.auth
        res = http.request(ctx.http, "GET", endpoint, auth=ctx.auth_for(None, auth_on))
        what = "a JSON identity" if cfg is None else "its version"
        expected = f"{endpoint} returns {what}" + (f" with version {pinned}" if pinned else "")
        unreached = http.reached_handler(res, authenticated=ctx.wants_auth(None, auth_on),  # 3xx: nothing read
                                         principal=ctx.principal_name(None, auth_on))
        if unreached:
            return Outcome("error", unreached, expected, res.evidence())
        if not res.ok or (cfg is None and not isinstance(res.body, dict)):
            return Outcome("fail", f"{res.describe()}; body is not a JSON object" if cfg is None else res.describe(),
                           expected, res.evidence())
        version, where = read_version(cfg, res.body, res.text, res.headers)
        if version is None:
            return Outcome("fail", f"{endpoint}: {where}", expected, res.evidence())
        observed["version"] = version
        service = res.body.get("service", "?") if cfg is None and isinstance(res.body, dict) else (
            ctx.params.release.name if ctx.params.release and ctx.params.release.name else "the service")
        if pinned and version != pinned:
            return Outcome("fail", f"{service} runs {version}, not {pinned}", expected, res.evidence())
        return Outcome("pass", f"{service} {version}" + ("" if cfg is None else f" (from {where})"), expected,
                       res.evidence())

    check = ctx.run("preflight.identity", "Target identity and version", probe, severity="blocker")
    check_release_version(ctx, observed.get("version"), check)
    return check


def check_release_version(ctx: PhaseRun[PreflightParams], observed: str | None, identity: Check) -> Check | None:
    """The version declared under `release:` is the version the target runs (as read by preflight.identity)."""
    release = ctx.params.release
    if release is None or not release.version:
        return None
    expected = f"the target runs the release under test, version {release.version}"
    deploy = getattr(ctx.params.phases, "deploy", None)
    deploys_it = (deploy is not None and getattr(deploy, "enabled", True) and getattr(deploy, "cutover", None)
                  is not None and (deploy.cutover.expected_version or release.version) == release.version)

    def probe() -> Outcome:
        if deploys_it and observed != release.version:
            # the release is not deployed yet: the deploy phase deploys it and checks it is served
            return Outcome("skip", f"the target runs {observed} before the deploy phase deploys {release.version} "
                                   "(deploy.cutover.version checks the release is served)", expected,
                           {"declared (release.version)": release.version, "observed": observed})
        if observed is None:
            return Outcome("error", f"the running version was not read: preflight.identity is {identity.status} "
                                    f"({identity.observed})", expected)
        evidence = {"declared (release.version)": release.version, "observed": observed}
        if observed != release.version:
            return Outcome("fail", f"the target runs {observed}, but the release under test is {release.version}",
                           expected, evidence)
        return Outcome("pass", f"the target runs {observed}, the declared release", expected, evidence)

    return ctx.run("preflight.release.version", "Release under test is what the target runs", probe,
                   severity="blocker", expected=expected)


def check_health(ctx: PhaseRun[PreflightParams]) -> Check:
    path = ctx.settings.health_endpoint
    return ctx.run("preflight.health", f"Health endpoint {path}", lambda: _status_check(ctx, path),
                   severity="blocker")


def check_ready(ctx: PhaseRun[PreflightParams]) -> Check | None:
    path = ctx.settings.ready_endpoint
    if not path:
        return None
    return ctx.run("preflight.ready", f"Readiness endpoint {path}", lambda: _status_check(ctx, path),
                   severity="blocker")


def check_exam_mode(ctx: PhaseRun[PreflightParams]) -> Check | None:
    """The freeze flag (EXAM_MODE) is what the rehearsal expects."""
    cfg = ctx.settings.exam_mode
    if cfg is None:
        ctx.note(not_configured("phases.preflight.exam_mode", "that the freeze flag (EXAM_MODE) is what the rehearsal "
                                                              "expects"))
        return None

    def probe() -> Outcome:
        who = ctx.principal_name(cfg.principal, cfg.auth)
        res = http.request(ctx.http, "GET", cfg.endpoint, auth=ctx.auth_for(cfg.principal, cfg.auth))
        expected = f"{cfg.field} = {str(cfg.expected).lower()}"
        unreached = http.reached_handler(res, authenticated=ctx.wants_auth(cfg.principal, cfg.auth), principal=who)
        if unreached:
            return Outcome("error", unreached, expected, res.evidence())
        if not res.ok or not isinstance(res.body, dict) or cfg.field not in res.body:
            return Outcome("fail", f"{res.describe()}; no '{cfg.field}' field", expected, res.evidence())
        value = res.body[cfg.field]
        if isinstance(value, str):
            value = value.strip().lower() in ("true", "1", "on", "yes")
        ok = bool(value) is cfg.expected
        return Outcome("pass" if ok else "fail", f"{cfg.field} = {str(bool(value)).lower()}", expected,
                       res.evidence())

    return ctx.run("preflight.exam_mode", "Freeze flag (exam mode) as expected", probe, severity="blocker")


def check_freeze(ctx: PhaseRun[PreflightParams]) -> list[Check]:
    """Freeze flags (phases.preflight.freeze): each JSON path of one endpoint's answer has its expected value."""
    cfg = ctx.settings.freeze
    if cfg is None:
        return []
    res_cache: dict[str, http.HttpResult] = {}

    def answer() -> http.HttpResult:
        if "res" not in res_cache:
            res_cache["res"] = http.request(ctx.http, "GET", cfg.endpoint,
                                            auth=ctx.auth_for(cfg.principal, cfg.auth))
        return res_cache["res"]

    out = []
    for path, want in cfg.expect.items():
        expected = f"{path} of GET {cfg.endpoint} is {shown(want)}"

        def probe(path: str = path, want: Any = want, expected: str = expected) -> Outcome:
            res = answer()
            unreached = http.reached_handler(res, authenticated=ctx.wants_auth(cfg.principal, cfg.auth),
                                             principal=ctx.principal_name(cfg.principal, cfg.auth))
            if unreached:
                return Outcome("error", unreached, expected, res.evidence())
            if not res.ok or res.body is None:
                return Outcome("fail", f"{res.describe()}; no JSON answer to read {path} from", expected,
                               res.evidence())
            values = select(res.body, path)
            if len(values) != 1:
                seen = "nothing" if not values else f"{len(values)} values"
                return Outcome("fail", f"{path}: expected {shown(want)}, observed {seen} at that path", expected,
                               res.evidence())
            rule = JsonExpect(equals=want)
            fails = check_json(res.body, path, rule)
            return Outcome("fail" if fails else "pass", fails[0] if fails else f"{path} = {shown(values[0])}",
                           expected, res.evidence())

        out.append(ctx.run(f"preflight.freeze.{freeze_slug(path)}", f"Freeze flag {path} as expected", probe,
                           severity=cfg.severity, expected=expected))
    return out


def check_freeze_quiet(ctx: PhaseRun[PreflightParams]) -> list[Check]:
    """While the freeze is on, nothing that should be paused is running (zero-row SQL from params)."""
    from rehearsal_lib.phases.integrity.checks import check_zero_rows

    specs = ctx.settings.freeze_quiet
    if not specs:
        ctx.note(not_configured("phases.preflight.freeze_quiet", "that, while the freeze is on, nothing that should "
                                                                 "be paused is running (zero-row SQL queries)"))
    elif not ctx.database_url:
        ctx.note("freeze_quiet needs target.database_url.")
        return []
    return [check_zero_rows(ctx, spec, id_prefix="preflight.freeze", sample=10) for spec in specs]


def check_latency(ctx: PhaseRun[PreflightParams]) -> Check:
    """Sequential samples of the light endpoints; p95 against the threshold, with a chart."""
    cfg = ctx.settings.latency
    samples: dict[str, list[float]] = {}  # response times of answered (2xx) requests only

    def probe() -> Outcome:
        errors: list[str] = []
        for path in cfg.endpoints:
            for _ in range(cfg.samples):
                res = http.request(ctx.http, "GET", path)
                if res.error or not res.ok:
                    errors.append(res.describe())
                else:
                    samples.setdefault(path, []).append(res.elapsed_ms)
        all_ms = [v for vals in samples.values() for v in vals]
        metrics: dict[str, float | int | None] = {
            f"{p}.p95_ms": round(percentile(v, 95) or 0, 2) for p, v in samples.items()}
        p95 = percentile(all_ms, 95)
        metrics.update({"p50_ms": round(percentile(all_ms, 50) or 0, 2),
                        "p95_ms": round(p95, 2) if p95 is not None else None,
                        "max_ms": round(max(all_ms), 2) if all_ms else None, "errors": len(errors)})
        expected = (f"p95 <= {cfg.p95_ms:g} ms over {cfg.samples} requests per endpoint, no errors, at least "
                    f"{cfg.min_responses} answered")
        evidence: dict[str, Any] = {
            path: (f"p50 {ms(percentile(v, 50))}, p95 {ms(percentile(v, 95))}, max {ms(max(v))} "
                   f"over {plural(len(v), 'request')}") for path, v in samples.items()}
        evidence["limit"] = f"p95 at most {cfg.p95_ms:g} ms, all endpoints together"
        evidence["requests"] = f"{len(all_ms) + len(errors)} sent one after another, {len(errors)} failed"
        evidence["percentiles"] = "over requests answered 2xx only; the others are counted as errors"
        if errors:
            evidence["errors"] = errors[:5]
        too_few = http.too_few_responses(len(all_ms), len(all_ms) + len(errors), cfg.min_responses, "answered 2xx")
        if too_few:
            first = f"no successful response: {errors[0]}" if not all_ms and errors else (
                errors[0] if errors else "no endpoints")
            return Outcome("error", f"{too_few} ({first})", expected, evidence, metrics)
        if errors:
            return Outcome("fail", f"{plural(len(errors), 'failed request')}; p95 {ms(p95)}", expected, evidence,
                           metrics)
        assert p95 is not None  # too_few_responses returned above when nothing was answered
        status: StatusName = "pass" if p95 <= cfg.p95_ms else "fail"
        return Outcome(status, f"p95 {ms(p95)} (p50 {ms(metrics['p50_ms'])})", expected, evidence, metrics)

    check = ctx.run("preflight.latency", "Response times of health endpoints", probe, severity="major")
    if samples:
        import plotly.graph_objects as go

        fig = go.Figure()
        for path, values in samples.items():
            fig.add_trace(go.Box(y=values, name=path, boxpoints="all", jitter=0.4))
        top = max(v for vals in samples.values() for v in vals)
        if top * 1.5 >= cfg.p95_ms:  # the limit is in view: draw it
            fig.add_hline(y=cfg.p95_ms, line_dash="dash", annotation_text=f"p95 limit {cfg.p95_ms:g} ms")
            top = max(top, cfg.p95_ms)
        fig.update_layout(title=f"Preflight response times (ms); p95 limit {cfg.p95_ms:g} ms", yaxis_title="ms",
                          yaxis_range=[0, top * 1.15], height=360, margin=dict(l=40, r=20, t=50, b=40))
        ctx.figure(fig)
    return check


def check_database(ctx: PhaseRun[PreflightParams]) -> Check | None:
    """The database answers through a read-only session with the statement timeout in force."""
    if not ctx.database_url:
        ctx.note("No database configured (target.database_url).")
        return None

    def probe() -> Outcome:
        cols, rows = query(ctx.engine, "SELECT current_setting('server_version') AS server_version, "
                                       "current_database() AS database, "
                                       "current_setting('transaction_read_only') AS read_only, "
                                       "current_setting('statement_timeout') AS statement_timeout")
        info = dict(zip(cols, rows[0], strict=True))
        expected = "connects; session is read-only with a statement timeout"
        if info["read_only"] != "on":
            return Outcome("fail", f"session is not read-only ({info['read_only']})", expected, info)
        timeout = re.sub(r"^(\d+)\s*([a-z]+)$", r"\1 \2", str(info["statement_timeout"]))  # "5s" -> "5 s"
        return Outcome("pass", f"PostgreSQL {info['server_version']}, database {info['database']}, read-only, "
                               f"statement timeout {timeout}", expected, info)

    return ctx.run("preflight.database", "Database reachable (read-only session)", probe, severity="blocker",
                   expected="connects; session is read-only with a statement timeout")


def check_required_settings(ctx: PhaseRun[PreflightParams]) -> Check | None:
    """Settings the release needs are present in the environment (names only; values never shown)."""
    names = ctx.settings.required_settings
    if not names:
        ctx.note(not_configured("phases.preflight.required_settings", "that each named environment variable (setting) "
                                                                      "the release needs is present in this "
                                                                      "environment (names only, never values); list "
                                                                      "the names there"))
        return None

    def probe() -> Outcome:
        missing = [n for n in names if not os.environ.get(n)]
        expected = f"{len(names)} setting(s) present"
        evidence = {"present": [n for n in names if n not in missing], "missing": missing}
        if missing:
            return Outcome("fail", f"missing: {', '.join(missing)}", expected, evidence)
        return Outcome("pass", f"all {len(names)} present", expected, evidence)

    return ctx.run("preflight.settings", "Required settings present (names only)", probe, severity="major")


def _resolver(ctx: PhaseRun[Any]) -> Any:
    """${VAR} references in request bodies and headers, resolved (and masked as secrets)."""
    return lambda text: ctx.resolve(text) or ""


def check_journey(ctx: PhaseRun[PreflightParams]) -> list[Check]:
    """The critical path as a user walks it (e.g. create session, answer, submit), one check per step."""
    steps = ctx.settings.journey
    if not steps:
        ctx.note(not_configured("phases.preflight.journey", "the critical path as a user walks it (e.g. create "
                                                            "session, answer, submit), one check per step"))
    saved: dict[str, Any] = {"run_id": ctx.run_id}
    broken: str | None = None
    out = []
    for step in steps:
        expected = steps_probe.expected_text(step)

        def probe(step=step, broken=broken, expected=expected) -> Outcome:
            if broken:
                return Outcome("skip", f"not tried: step {broken} failed", expected)
            return steps_probe.run_step(ctx.http, step, saved, principals=ctx.principals, resolve=_resolver(ctx),
                                        secret=ctx.secrets.add, expected=expected)[0]

        check = ctx.run(f"preflight.journey.{step.name}", step.title or f"{step.method} {step.path}", probe,
                        severity=step.severity, expected=expected, writes=True)
        if check.status in FAILING and broken is None:
            broken = step.name
        out.append(check)
    return out
