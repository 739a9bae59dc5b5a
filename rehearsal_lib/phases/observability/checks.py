"""Observability: metrics parse and carry the expected series, readiness follows health, request ids
reach the logs, logs are structured, and the database has no slow statements."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from rehearsal_lib.checks.wording import not_configured, plural, secs, without_none
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.observability.params import LogSource, MetricSeries, ObservabilityParams
from rehearsal_lib.probes import http
from rehearsal_lib.probes.poll import poll_until
from rehearsal_lib.probes.sql import query
from rehearsal_lib.restores import Restore
from rehearsal_lib.results import Check, StatusName


def slug(text: str) -> str:
    from rehearsal_lib.phases.security.checks import slug as _slug

    return _slug(text)


def scrape(ctx: PhaseRun[ObservabilityParams]) -> tuple[http.HttpResult, dict[str, Any] | None, str | None]:
    """GET the metrics URL and parse it with prometheus_client: (response, families by name, parse error)."""
    cfg = ctx.settings.metrics
    if cfg is None:
        raise RuntimeError("phases.observability.metrics is not configured")
    url = ctx.resolve(cfg.url, secret=False) or cfg.url
    headers = ctx.auth_headers() if cfg.auth else None
    t0 = time.perf_counter()
    try:
        resp = ctx.http.get(url, headers=headers)
        body = resp.text
    except (httpx.HTTPError, OSError) as exc:
        return http.HttpResult("GET", url, elapsed_ms=(time.perf_counter() - t0) * 1000, error=http._reason(exc)), \
            None, None
    res = http.HttpResult("GET", str(resp.url), resp.status_code, (time.perf_counter() - t0) * 1000, None,
                          body[:http.BODY_EXCERPT], dict(resp.headers))
    if not res.ok:
        return res, None, None
    try:
        if "openmetrics" in resp.headers.get("content-type", ""):
            from prometheus_client.openmetrics.parser import text_string_to_metric_families
        else:
            from prometheus_client.parser import text_string_to_metric_families
        families = {f.name: f for f in text_string_to_metric_families(body)}
    except Exception as exc:  # noqa: BLE001 - the parser's complaint is the finding
        return res, None, f"{type(exc).__name__}: {exc}"[:300]
    return res, families, None


def check_metrics(ctx: PhaseRun[ObservabilityParams]) -> list[Check]:
    """The metrics endpoint parses (prometheus_client's parser); each expected series exists with sane values."""
    cfg = ctx.settings.metrics
    if cfg is None:
        ctx.note(not_configured("phases.observability.metrics", "that the metrics endpoint parses and each expected "
                                                                "series exists with sane values"))
        return []
    res, families, parse_error = scrape(ctx)

    def parses() -> Outcome:
        expected = f"GET {cfg.url} answers 200 in the Prometheus text format"
        if res.error:
            return Outcome("error", res.describe(), expected, res.evidence())
        if not res.ok:
            return Outcome("fail", res.describe(), expected, res.evidence())
        if families is None:
            return Outcome("fail", f"does not parse: {parse_error}", expected, {"excerpt": res.text[:400]})
        return Outcome("pass", f"{len(families)} metric families", expected, {"families": sorted(families)[:40]},
                       {"families": len(families)})

    out = [ctx.run("observability.metrics.parse", "Metrics endpoint parses", parses)]
    for spec in cfg.series:
        out.append(ctx.run(f"observability.series.{slug(spec.name)}", f"Metric series {spec.name}",
                           partial(_series_outcome, spec, families, res), severity=spec.severity))
    return out


def _series_outcome(spec: MetricSeries, families: dict[str, Any] | None, res: http.HttpResult) -> Outcome:
    if spec.min is not None and spec.min == spec.max:
        bounds = f" = {spec.min:g}"
    else:
        bounds = "".join([f" ≥ {spec.min:g}" if spec.min is not None else "",
                          f" ≤ {spec.max:g}" if spec.max is not None else ""])
    expected = f"{spec.type or 'a'} series {spec.name}{bounds}"
    if families is None:
        return Outcome("error", "metrics unavailable or unparseable (see observability.metrics.parse)", expected)
    fam = families.get(spec.name)
    if fam is None:
        near = similar_families(spec, families)
        hint = f"; did you mean {near[0]} (a {families[near[0]].type})?" if near else ""
        return Outcome("fail", f"no metric family {spec.name}{hint}", expected,
                       {"similar families": ", ".join(near) or "none", "families": len(families)})
    if spec.type and fam.type != spec.type:
        return Outcome("fail", f"{spec.name} is a {fam.type}, not a {spec.type}", expected)
    wanted = {"histogram": spec.name + "_count", "summary": spec.name + "_count",
              "counter": spec.name + "_total"}.get(fam.type, spec.name)
    samples = [s for s in fam.samples if s.name in (wanted, spec.name)
               and all(s.labels.get(k) == v for k, v in spec.labels.items())]
    ev = {"type": fam.type, "samples": [{"labels": s.labels, "value": s.value} for s in samples[:10]]}
    if not samples:
        return Outcome("fail", f"{spec.name} has no samples" + (f" with labels {spec.labels}" if spec.labels else ""),
                       expected, ev)
    values = [s.value for s in samples]
    bad = [v for v in values if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max)]
    summary = (f"1 sample, value {values[0]:g}" if len(values) == 1 else
               f"{len(values)} samples, values {min(values):g} to {max(values):g}")
    if bad:
        return Outcome("fail", f"{summary}: out of range", expected, ev)
    if fam.type == "histogram":
        broken = _histogram_problem(fam)
        if broken:
            return Outcome("fail", f"{summary}, but {broken}", expected, ev)
    return Outcome("pass", summary, expected, ev, {"samples": len(samples)})


def similar_families(spec: MetricSeries, families: dict[str, Any]) -> list[str]:
    """Families that look like a renamed `spec.name`: same type and same unit suffix, or a close spelling;
    best first."""
    import difflib

    unit = spec.name.rsplit("_", 1)[-1]
    prefix = spec.name.split("_")[0]

    def score(name: str) -> float:
        same_type = spec.type is None or families[name].type == spec.type
        return (difflib.SequenceMatcher(None, spec.name, name).ratio() + 0.3 * (name.rsplit("_", 1)[-1] == unit)
                + 0.2 * (name.split("_")[0] == prefix) + 0.3 * same_type)

    ranked = sorted(((score(n), n) for n in families if n != spec.name), reverse=True)
    return [n for sc, n in ranked if sc >= 1.0][:5]


def _histogram_problem(fam: Any) -> str | None:
    """Buckets cumulative (non-decreasing by `le`) and `+Inf` equal to `_count`, per label set; else what is wrong."""
    series: dict[tuple, dict[str, Any]] = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        entry = series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        values = [v for _, v in buckets]
        if any(b < a for a, b in zip(values, values[1:], strict=False)):
            return f"buckets decrease for {dict(key)}"
        top = buckets[-1] if buckets else None
        if top and top[0] == float("inf") and entry["count"] is not None and top[1] != entry["count"]:
            return f"+Inf bucket {top[1]:g} != _count {entry['count']:g} for {dict(key)}"
    return None


def _gauge_value(ctx: PhaseRun[ObservabilityParams], name: str) -> float | None:
    _, families, _ = scrape(ctx)
    fam = (families or {}).get(name)
    values = [s.value for s in fam.samples] if fam else []
    return values[0] if values else None


def check_readiness_toggle(ctx: PhaseRun[ObservabilityParams]) -> Check | None:
    """Toggle the target unhealthy: readiness (and its gauge) must follow within N s; health is always restored."""
    cfg = ctx.settings.readiness
    if cfg is None:
        ctx.note(not_configured("phases.observability.readiness", "that readiness (and its gauge) follows when the "
                                                                  "target is toggled unhealthy; this target has no "
                                                                  "health toggle"))
        return None
    timeline: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def sample(phase: str) -> tuple[bool | None, float | None]:
        res = http.request(ctx.http, "GET", cfg.endpoint)
        ready = None if res.error else res.status == cfg.ready_status if res.status in (
            cfg.ready_status, cfg.unready_status) else None
        gauge = _gauge_value(ctx, cfg.gauge) if cfg.gauge and ctx.settings.metrics else None
        timeline.append({"t": round(time.monotonic() - t0, 3), "phase": phase, "status": res.status,
                         "ready": ready, "gauge": gauge})
        return ready, gauge

    def follows(want: bool, phase: str) -> float | None:
        r = poll_until(lambda: sample(phase), timeout_s=cfg.within_s, interval_s=cfg.poll_interval_s,
                       done=lambda rg: rg[0] is want and (rg[1] is None or bool(rg[1]) is want))
        return None if r.timed_out else round(r.elapsed_s, 3)

    def toggle(body: Any) -> http.HttpResult:
        res = http.request(ctx.http, cfg.toggle_method, cfg.toggle_path, headers=ctx.auth_headers(), json_body=body)
        timeline.append({"t": round(time.monotonic() - t0, 3), "phase": "toggle", "status": res.status,
                         "ready": None, "gauge": None, "body": body})
        return res

    def probe() -> Outcome:
        expected = f"{cfg.endpoint} turns {cfg.unready_status} within {cfg.within_s:g} s of the toggle, then recovers"
        if follows(True, "before") is None:
            status: StatusName = "error" if timeline[-1]["status"] is None else "fail"
            what = "gives no response" if status == "error" else f"answers HTTP {timeline[-1]['status']}"
            return Outcome(status, f"{cfg.endpoint} {what} before the toggle (not ready)", expected,
                           {"timeline": timeline})
        went_down: float | None = None
        recovered: float | None = None
        restore: http.HttpResult | None = None
        handle = ctx.register_restore(Restore("restore the target's health", method=cfg.toggle_method,
                                              path=cfg.toggle_path, json_body=cfg.healthy_json))
        try:
            res = toggle(cfg.unhealthy_json)
            if res.error or not res.ok:
                return Outcome("error", f"toggle failed: {res.describe()}", expected, {"timeline": timeline})
            went_down = follows(False, "unhealthy")
        finally:
            restore = toggle(cfg.healthy_json)
            handle.done(not restore.error and restore.ok, restore.describe())
            recovered = follows(True, "restored")
        ev = {"timeline": [_plain(p) for p in timeline[-40:]]}
        metrics = without_none({"unready_after_s": went_down,
                                "ready_after_restore_s": recovered if went_down is not None else None})
        _figure(ctx, timeline)
        if restore.error or not restore.ok or recovered is None:
            return Outcome("fail", f"target did NOT recover after restoring health ({restore.describe()})",
                           expected, ev, metrics)
        if went_down is None:
            return Outcome("fail", f"readiness still reported ready {secs(cfg.within_s)} after the unhealthy toggle "
                                   f"(never turned {cfg.unready_status})", expected, ev, metrics)
        return Outcome("pass", f"unready after {went_down:.2f} s, ready again {recovered:.2f} s after restore",
                       expected, ev, metrics)

    expected = f"{cfg.endpoint} turns {cfg.unready_status} within {cfg.within_s:g} s of the toggle, then recovers"
    return ctx.run("observability.readiness.toggle", "Readiness follows a toggled health state", probe,
                   expected=expected, writes=True)


def check_readiness_gauge(ctx: PhaseRun[ObservabilityParams]) -> Check | None:
    """The readiness gauge exists and agrees with the readiness endpoint (1 while ready), read without any
    toggle: for a target whose health cannot be flipped. Reads only."""
    cfg = ctx.settings.readiness_gauge
    if cfg is None:
        return None
    expected = f"gauge {cfg.gauge} reads 1 while {cfg.endpoint} answers {cfg.ready_status} (0 while it does not)"

    def probe() -> Outcome:
        ready_res = http.request(ctx.http, "GET", cfg.endpoint)
        if ready_res.error:
            return Outcome("error", ready_res.describe(), expected, ready_res.evidence())
        res, families, problem = scrape(ctx)
        evidence: dict[str, Any] = {"readiness": ready_res.describe(), "metrics": res.describe()}
        if res.error or not res.ok:
            return Outcome("error", f"metrics not read: {res.describe()}", expected, evidence)
        if families is None:
            return Outcome("fail", f"metrics do not parse: {problem}", expected, evidence)
        fam = families.get(cfg.gauge)
        if fam is None:
            near = similar_families(MetricSeries(name=cfg.gauge), families)
            return Outcome("fail", f"no gauge {cfg.gauge} on the metrics endpoint"
                           + (f" (similar: {', '.join(near)})" if near else ""), expected, evidence)
        samples = [x for x in fam.samples if all(x.labels.get(k) == v for k, v in cfg.labels.items())]
        if len(samples) != 1:
            return Outcome("fail", f"{cfg.gauge} has {len(samples)} samples with labels {cfg.labels or '{}'}, "
                                   "not one", expected, evidence)
        value = samples[0].value
        ready = ready_res.status == cfg.ready_status
        evidence["gauge"] = value
        want = 1.0 if ready else 0.0
        state = f"{cfg.endpoint} answers HTTP {ready_res.status} ({'ready' if ready else 'not ready'})"
        if value != want:
            return Outcome("fail", f"{cfg.gauge} reads {value:g} while {state}", expected, evidence,
                           {"gauge": value})
        return Outcome("pass", f"{cfg.gauge} reads {value:g} while {state}", expected, evidence, {"gauge": value})

    return ctx.run("observability.readiness.gauge", "Readiness gauge agrees with the readiness endpoint", probe,
                   severity=cfg.severity, expected=expected)


def _plain(point: dict[str, Any]) -> dict[str, Any]:
    """A timeline point in words: 'ready' / 'unready' / 'no answer' instead of True / False / None."""
    state = {True: "ready", False: "unready", None: "no answer"}[point["ready"]]
    out = {"t_s": point["t"], "step": point["phase"], "status": point["status"] or "no answer"}
    if point["phase"] != "toggle":
        out["readiness"] = state
    return without_none({**out, "gauge": point.get("gauge"), "sent": point.get("body")})


def _figure(ctx: PhaseRun[ObservabilityParams], timeline: list[dict[str, Any]]) -> None:
    import plotly.graph_objects as go

    points = [p for p in timeline if p["phase"] != "toggle"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p["t"] for p in points], y=[None if p["ready"] is None else int(p["ready"])
                                                            for p in points],
                             mode="lines+markers", line_shape="hv", name="readiness endpoint"))
    if any(p["gauge"] is not None for p in points):
        fig.add_trace(go.Scatter(x=[p["t"] for p in points], y=[p["gauge"] for p in points], mode="markers",
                                 name="readiness gauge", marker_symbol="x"))
    for p in timeline:
        if p["phase"] == "toggle":
            healthy = p.get("body") == (ctx.settings.readiness.healthy_json if ctx.settings.readiness else None)
            fig.add_vline(x=p["t"], line_dash="dot", line_color="#57606a",
                          annotation_text="health restored" if healthy else "set unhealthy",
                          annotation_position="top right" if healthy else "top left")
    fig.update_layout(title="Readiness over time during the health toggle (dotted: toggles)",
                      xaxis_title="seconds", yaxis={"tickvals": [0, 1], "ticktext": ["unready", "ready"],
                                                    "range": [-0.2, 1.2]}, height=320)
    ctx.figure(fig)


def read_log_lines(ctx: PhaseRun[ObservabilityParams], src: LogSource) -> list[str]:
    """The last `tail_lines` lines of the configured log file or command."""
    if src.file:
        path = Path(ctx.resolve(src.file, secret=False) or "")
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 400 * src.tail_lines))
            data = fh.read()
        lines = data.decode("utf-8", errors="replace").splitlines()
        return lines[-src.tail_lines:] if size <= 400 * src.tail_lines else lines[1:][-src.tail_lines:]
    argv = [ctx.resolve(a, secret=False) or "" for a in src.command or []]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"log command exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    return list(deque(proc.stdout.splitlines(), maxlen=src.tail_lines))


def check_request_id(ctx: PhaseRun[ObservabilityParams]) -> list[Check]:
    """A request id we send is echoed in the response and shows up in the log source."""
    cfg, src = ctx.settings.request_id, ctx.settings.logs
    if cfg is None:
        ctx.note(not_configured("phases.observability.request_id", "that a request id sent in is echoed in the "
                                                                   "response and shows up in the log source"))
        return []
    rid = f"rehearsal-{uuid.uuid4().hex[:16]}"
    res = http.request(ctx.http, "GET", cfg.path, headers={cfg.header: rid})

    def echo() -> Outcome:
        expected = f"response header {cfg.header}: {rid}"
        if res.error:
            return Outcome("error", res.describe(), expected, res.evidence())
        got = {k.lower(): v for k, v in (res.headers or {}).items()}.get(cfg.header.lower())
        status: StatusName = "pass" if got == rid else "fail"
        return Outcome(status, f"{cfg.header}: {got}" if got else f"no {cfg.header} header", expected,
                       {"sent": rid, "received": got})

    out = [ctx.run("observability.request_id.echo", f"Request id echoed in {cfg.header}", echo)]
    if src is None:
        ctx.note("No log source configured (phases.observability.logs): the request id is not traced to a log.")
        return out

    def logged() -> Outcome:
        expected = f"{rid} appears in the log within {src.wait_s:g} s"
        if res.error:
            return Outcome("error", f"the request itself failed: {res.describe()}", expected)
        lines = poll_until(lambda: read_log_lines(ctx, src), timeout_s=src.wait_s, interval_s=0.2,
                           done=lambda lines: any(rid in ln for ln in lines)).value
        hits = [ln for ln in lines if rid in ln]
        if hits:
            return Outcome("pass", f"found in {plural(len(hits), 'log line')}", expected, {"line": _readable(hits[0])})
        return Outcome("fail", f"not found in the last {len(lines)} log lines after {secs(src.wait_s)}",
                       expected, {"sent": rid, "last_lines": [_readable(ln) for ln in lines[-3:]]})

    out.append(ctx.run("observability.request_id.logged", "Request id reaches the logs", logged))
    return out


def _readable(line: str) -> Any:
    """A log line for the evidence: a JSON line as its object (not a string full of escaped quotes)."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return line[:300]
    return parsed if isinstance(parsed, dict) else line[:300]


def check_logs_json(ctx: PhaseRun[ObservabilityParams]) -> Check | None:
    """Recent log lines are JSON objects (structured logging)."""
    src = ctx.settings.logs
    if src is None:
        ctx.note(not_configured("phases.observability.logs", "that recent log lines are JSON objects (structured "
                                                             "logging)"))
        return None

    def probe() -> Outcome:
        expected = ("every recent non-empty log line is a JSON object" if src.min_json_ratio >= 1 else
                    f"at least {src.min_json_ratio:.0%} of recent non-empty log lines are JSON objects")
        lines = [ln for ln in read_log_lines(ctx, src) if ln.strip()]
        if not lines:
            return Outcome("fail", "the log source has no lines", expected)
        bad = []
        for ln in lines:
            try:
                ok = isinstance(json.loads(ln), dict)
            except ValueError:
                ok = False
            if not ok:
                bad.append(ln)
        ratio = 1 - len(bad) / len(lines)
        from collections import Counter

        kinds = Counter(b[:200] for b in bad)
        ev = {"lines": len(lines), "not_json": len(bad),
              "examples": [{"line": line, "times": n} for line, n in kinds.most_common(5)]}
        status: StatusName = "pass" if ratio >= src.min_json_ratio else "fail"
        observed = (f"all {len(lines)} recent lines are JSON" if not bad else
                    f"{len(lines) - len(bad)}/{len(lines)} lines are JSON; e.g. {bad[0][:80]!r}")
        return Outcome(status, observed, expected, ev, {"json_ratio": round(ratio, 4)})

    return ctx.run("observability.logs.json", "Log lines are structured JSON", probe)


# Rehearsal's own statements: everything its read-only engine sends ends with sql.MARKER; older entries
# (recorded before the marker existed) are recognised by the shapes its probes use. The app's statements
# are what is left. Limit: pg_stat_statements merges statements of the same shape under one text, so an
# app statement identical in shape to one of Rehearsal's (rare) is counted as Rehearsal's.
OWN_SQL = """
  (s.query LIKE '%' || :marker OR s.query LIKE '%AS rehearsal_q%' OR s.query LIKE '%pg_stat_statements%')
"""
SLOW_SQL = f"""
SELECT r.rolname AS role, s.calls, round(s.mean_exec_time::numeric, 2) AS mean_ms,
       round(s.max_exec_time::numeric, 2) AS max_ms, left(s.query, 200) AS query
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.calls >= :min_calls AND (cardinality(CAST(:roles AS text[])) = 0 OR r.rolname = ANY(CAST(:roles AS text[])))
  AND NOT {OWN_SQL}
ORDER BY s.mean_exec_time DESC LIMIT :top
"""
OWN_COUNT_SQL = f"""
SELECT count(*) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (cardinality(CAST(:roles AS text[])) = 0 OR r.rolname = ANY(CAST(:roles AS text[]))) AND {OWN_SQL}
"""


def check_slow_queries(ctx: PhaseRun[ObservabilityParams]) -> Check | None:
    """The application's slowest statements (mean time) from pg_stat_statements, Rehearsal's own statements
    excluded; skip with the reason when the extension is absent."""
    from rehearsal_lib.probes.sql import MARKER, scalar

    cfg = ctx.settings.slow_queries
    if cfg is None:
        ctx.note(not_configured("phases.observability.slow_queries", "the application's slowest statements (mean "
                                                                     "time) from pg_stat_statements against a limit"))
        return None

    def probe() -> Outcome:
        scope = f"role {', '.join(cfg.roles)}; " if cfg.roles else ""
        expected = (f"no application statement with mean time > {cfg.threshold_ms:g} ms "
                    f"({scope}Rehearsal's own statements excluded)")
        _, ext = query(ctx.engine, "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'")
        if not ext:
            return Outcome("skip", "pg_stat_statements is not installed in this database", expected)
        args = {"min_calls": cfg.min_calls, "roles": cfg.roles, "top": cfg.top, "marker": MARKER}
        try:
            cols, rows = query(ctx.engine, SLOW_SQL, args)
            own = scalar(ctx.engine, OWN_COUNT_SQL, {"roles": cfg.roles, "marker": MARKER})
        except Exception as exc:  # noqa: BLE001 - e.g. not in shared_preload_libraries
            from rehearsal_lib.phase import describe_exception

            reason = describe_exception(exc)
            if "shared_preload_libraries" in reason:
                return Outcome("skip", f"pg_stat_statements is installed but not loaded: {reason}", expected)
            raise
        top = [dict(zip(cols, r, strict=True)) for r in rows]
        slow = [r for r in top if float(r["mean_ms"]) > cfg.threshold_ms]
        worst = float(top[0]["mean_ms"]) if top else 0.0
        ev = {"Rehearsal's own statements excluded": int(own or 0),
              "how they are recognised": f"they end with the comment {MARKER}", "slowest": top}
        if slow:
            return Outcome("fail", f"{plural(len(slow), 'application statement')} slower than {cfg.threshold_ms:g} ms "
                                   f"on average; worst {worst:.0f} ms: {slow[0]['query'][:80]}", expected, ev,
                           {"worst_mean_ms": worst})
        if not top:
            return Outcome("skip", "pg_stat_statements holds no application statement: nothing to judge", expected,
                           ev)
        return Outcome("pass", f"slowest application statement {worst:.1f} ms on average (of the top "
                               f"{plural(len(top), 'statement')})", expected, ev, {"worst_mean_ms": worst})

    return ctx.run("observability.slow_queries", "No slow application statements (pg_stat_statements)", probe)
