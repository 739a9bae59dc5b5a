"""Preflight: is this the target we think it is, is it up, ready, frozen and responsive?"""

from __future__ import annotations

import os
import re
from typing import Any

from rehearsal_lib.checks.wording import ms, plural
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.probes import http
from rehearsal_lib.probes.placeholders import expand, expand_text
from rehearsal_lib.probes.sql import query
from rehearsal_lib.probes.stats import percentile
from rehearsal_lib.results import FAILING, Check, StatusName


def _status_check(ctx: PhaseRun, path: str) -> Outcome:
    res = http.request(ctx.http, "GET", path)
    expected = f"GET {path} answers 2xx"
    unreached = http.reached_handler(res, authenticated=False)  # health endpoints are public
    if unreached:
        return Outcome("error", unreached, expected, res.evidence())
    return Outcome("pass" if res.ok else "fail", res.describe(), expected, res.evidence(),
                   {"elapsed_ms": round(res.elapsed_ms, 2), "status": res.status})


def check_identity(ctx: PhaseRun) -> Check | None:
    """The service names itself and, where params pin one, runs the expected version."""
    s = ctx.settings
    if not s.version_endpoint:
        ctx.note("Not configured: phases.preflight.version_endpoint is empty.")
        return None

    def probe() -> Outcome:
        res = http.request(ctx.http, "GET", s.version_endpoint)
        expected = f"{s.version_endpoint} returns a JSON identity" + (
            f" with version {s.expected_version}" if s.expected_version else "")
        unreached = http.reached_handler(res, authenticated=False)  # 3xx: no identity was read
        if unreached:
            return Outcome("error", unreached, expected, res.evidence())
        if not res.ok or not isinstance(res.body, dict):
            return Outcome("fail", f"{res.describe()}; body is not a JSON object", expected, res.evidence())
        version = str(res.body.get("version", ""))
        service = res.body.get("service", "?")
        if not version:
            fields = ", ".join(sorted(map(str, res.body))[:10]) or "none"
            return Outcome("fail", f"{s.version_endpoint} has no 'version' field (fields: {fields}); the "
                                   "service is read from 'service' and the version from 'version'",
                           expected, res.evidence())
        if s.expected_version and version != s.expected_version:
            return Outcome("fail", f"{service} runs {version}, not {s.expected_version}", expected, res.evidence())
        return Outcome("pass", f"{service} {version}", expected, res.evidence())

    return ctx.run("preflight.identity", "Target identity and version", probe, severity="blocker")


def check_health(ctx: PhaseRun) -> Check:
    path = ctx.settings.health_endpoint
    return ctx.run("preflight.health", f"Health endpoint {path}", lambda: _status_check(ctx, path),
                   severity="blocker")


def check_ready(ctx: PhaseRun) -> Check | None:
    path = ctx.settings.ready_endpoint
    if not path:
        return None
    return ctx.run("preflight.ready", f"Readiness endpoint {path}", lambda: _status_check(ctx, path),
                   severity="blocker")


def check_exam_mode(ctx: PhaseRun) -> Check | None:
    """The freeze flag (EXAM_MODE) is what the rehearsal expects."""
    cfg = ctx.settings.exam_mode
    if cfg is None:
        ctx.note("Not configured: phases.preflight.exam_mode.")
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


def check_freeze_quiet(ctx: PhaseRun) -> list[Check]:
    """While the freeze is on, nothing that should be paused is running (zero-row SQL from params)."""
    from rehearsal_lib.phases.integrity.checks import check_zero_rows

    specs = ctx.settings.freeze_quiet
    if not specs:
        ctx.note("Not configured: phases.preflight.freeze_quiet.")
    elif not ctx.database_url:
        ctx.note("freeze_quiet needs target.database_url.")
        return []
    return [check_zero_rows(ctx, spec, id_prefix="preflight.freeze", sample=10) for spec in specs]


def check_latency(ctx: PhaseRun) -> Check:
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


def check_database(ctx: PhaseRun) -> Check | None:
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


def check_required_settings(ctx: PhaseRun) -> Check | None:
    """Settings the release needs are present in the environment (names only; values never shown)."""
    names = ctx.settings.required_settings
    if not names:
        ctx.note("Not configured: list environment variable names under phases.preflight.required_settings.")
        return None

    def probe() -> Outcome:
        missing = [n for n in names if not os.environ.get(n)]
        expected = f"{len(names)} setting(s) present"
        evidence = {"present": [n for n in names if n not in missing], "missing": missing}
        if missing:
            return Outcome("fail", f"missing: {', '.join(missing)}", expected, evidence)
        return Outcome("pass", f"all {len(names)} present", expected, evidence)

    return ctx.run("preflight.settings", "Required settings present (names only)", probe, severity="major")


def check_journey(ctx: PhaseRun) -> list[Check]:
    """The critical path as a user walks it (e.g. create session, answer, submit), one check per step."""
    steps = ctx.settings.journey
    if not steps:
        ctx.note("Not configured: phases.preflight.journey.")
    saved: dict[str, str] = {"run_id": ctx.run_id}
    broken: str | None = None
    out = []
    for step in steps:
        expected_codes = step.expect_status if isinstance(step.expect_status, list) else [step.expect_status]

        expected = f"{step.method} {step.path} answers {' or '.join(map(str, expected_codes))}"

        def probe(step=step, expected_codes=expected_codes, broken=broken, expected=expected) -> Outcome:
            if broken:
                return Outcome("skip", f"not tried: step {broken} failed", expected)
            path, body = expand_text(step.path, saved, "path"), expand(step.json_body, saved, "json")
            who = ctx.principal_name(step.principal, step.auth)
            res = http.request(ctx.http, step.method, path, auth=ctx.auth_for(step.principal, step.auth),
                               json_body=body, follow_redirects=step.follow_redirects)
            evidence = {**res.evidence(), "as": who, **({"request_body": body} if body is not None else {})}
            unreached = http.reached_handler(res, authenticated=ctx.wants_auth(step.principal, step.auth),
                                             expected=expected_codes,
                                             principal=who)
            if unreached:
                return Outcome("error", unreached, expected, evidence, {"elapsed_ms": round(res.elapsed_ms, 2)})
            if res.status not in expected_codes:
                return Outcome("fail", res.describe(), expected, evidence, {"elapsed_ms": round(res.elapsed_ms, 2)})
            for name, field in step.save.items():
                if not isinstance(res.body, dict) or field not in res.body:
                    return Outcome("fail", f"{res.describe()}; response has no '{field}' to keep as {name}",
                                   expected, evidence)
                saved[name] = str(res.body[field])
            return Outcome("pass", res.describe(), expected, evidence, {"elapsed_ms": round(res.elapsed_ms, 2)})

        check = ctx.run(f"preflight.journey.{step.name}", step.title or f"{step.method} {step.path}", probe,
                        severity=step.severity, expected=expected, writes=True)
        if check.status in FAILING and broken is None:
            broken = step.name
        out.append(check)
    return out
