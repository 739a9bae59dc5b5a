"""Load: latency percentiles, error rate and throughput under load, and database connections meanwhile.

`run_load_phase` sends the setup requests and then each stage of `phases.load` through the load
engine (`rehearsal_lib.load`) or Locust, sampling `pg_stat_activity` in the background. The check
functions then judge the figures. When the generator could not keep up (rate not reached, arrivals
dropped, scheduler lag, client CPU), every check of that stage is an `error` saying "load generator
saturated" with the figures: a saturated client measures itself, not the server.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rehearsal_lib.checks.wording import ms, not_configured, plural, rps, secs, status_mix
from rehearsal_lib.load.engine import LiveFigures, LoadResult, LoadSpec, Scenario, ScenarioStats, _Template, run_load
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.load.params import LoadParams, LoadScenario, LoadStage
from rehearsal_lib.probes import http
from rehearsal_lib.probes.bodies import body_spec
from rehearsal_lib.probes.placeholders import partial
from rehearsal_lib.progress import Progress
from rehearsal_lib.results import Check

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class StageRun:
    stage: LoadStage
    offset_s: float = 0.0  # start, seconds after the phase's load began
    result: LoadResult | None = None
    error: str | None = None  # why the stage produced no figures
    saturated: list[str] = field(default_factory=list)


@dataclass
class ConnSample:
    t_s: float
    total: int
    app: int | None
    active: int


@dataclass
class LoadRun:
    """Everything the load phase measured; the check functions read it."""

    setup_error: str | None = None
    stages: list[StageRun] = field(default_factory=list)
    conn_samples: list[ConnSample] = field(default_factory=list)
    max_connections: int | None = None
    conn_error: str | None = None
    conn_hidden: int = 0  # the most sessions of other roles the sampler's role could not see
    values: dict[str, list[Any]] = field(default_factory=dict)
    sent: bool = False  # the load ran (once, inside the first check that needs it)
    _send: Any = None

    def ensure(self) -> LoadRun:
        """Send the load now unless it was sent already. Only the probes of the load checks call this:
        they are declared `writes=True`, so where writes are refused the load is never sent."""
        if not self.sent and self._send is not None:
            self.sent = True
            self._send()
        return self

    def stage_run(self, name: str) -> StageRun | None:
        return next((sr for sr in self.ensure().stages if sr.stage.name == name), None)

    def samples_frame(self) -> pd.DataFrame:
        """Every request of every stage as one pandas DataFrame (``stage`` plus the columns of
        ``LoadResult.samples_frame``; ``offset_s`` counted from the phase's load start)."""
        import pandas as pd

        frames = []
        for sr in self.stages:
            if sr.result is not None:
                df = sr.result.samples_frame()
                df.insert(0, "stage", sr.stage.name)
                df["offset_s"] += sr.offset_s
                frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def connections_frame(self) -> pd.DataFrame:
        """The database connection samples taken during the load (``t_s``, ``total``, ``app``, ``active``)."""
        import pandas as pd

        return pd.DataFrame([vars(c) for c in self.conn_samples], columns=["t_s", "total", "app", "active"])


def _codes(value: int | list[int]) -> list[int]:
    return value if isinstance(value, list) else [value]


def _run_id(ctx: PhaseRun[LoadParams]) -> str:
    return os.path.basename(ctx.run_dir.rstrip("/")) or f"adhoc-{uuid.uuid4().hex[:8]}"


def _fill_run_id(value: Any, run_id: str) -> Any:
    """`{run_id}` filled now; the per-request placeholders are the load engine's (same language, same rule)."""
    return partial(value, {"run_id": run_id})


def _headers(ctx: PhaseRun[LoadParams], sc: LoadScenario) -> dict[str, str]:
    out = dict(ctx.auth_headers(sc.principal)) if sc.auth else {}  # obtained once, before the load
    out.update({k: ctx.resolve(v) or "" for k, v in sc.headers.items()})
    return out


def _scenario(ctx: PhaseRun[LoadParams], sc: LoadScenario, run_id: str) -> Scenario:
    spec = body_spec(sc)
    form_or_raw = spec if spec is not None and "json" not in spec else None
    return Scenario(sc.name, _fill_run_id(sc.path, run_id), sc.method, sc.weight, _fill_run_id(sc.json_body, run_id),
                    _headers(ctx, sc), _codes(sc.expect_status),
                    _resolve_refs(ctx, _fill_run_id(form_or_raw, run_id)))


def _resolve_refs(ctx: PhaseRun[LoadParams], value: Any) -> Any:
    """${VAR} references in a form or raw body resolved now (and masked as secrets): a login under load."""
    if isinstance(value, str):
        return ctx.resolve(value) if "${" in value else value
    if isinstance(value, dict):
        return {k: _resolve_refs(ctx, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(ctx, v) for v in value]
    return value


class _ConnSampler(threading.Thread):
    """Samples pg_stat_activity every interval through the read-only engine until stopped."""

    def __init__(self, ctx: PhaseRun[LoadParams], run: LoadRun, interval_s: float, app_name: str | None, t0: float):
        super().__init__(name="rehearsal-pg-sampler", daemon=True)
        self.ctx, self.run_, self.interval, self.app_name = ctx, run, interval_s, app_name
        self.stop_event = threading.Event()
        self.ready = threading.Event()  # set after the first sample (or the error that prevented it)
        self.t0 = t0

    def run(self) -> None:
        import sqlalchemy as sa

        from rehearsal_lib.probes.sql import HIDDEN_SESSIONS_SQL

        sql = sa.text("SELECT count(*), count(*) FILTER (WHERE application_name = :app), "
                      "count(*) FILTER (WHERE state = 'active'), current_setting('max_connections')::int, "
                      f"({HIDDEN_SESSIONS_SQL}) "
                      "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        try:
            with self.ctx.engine.connect() as conn:
                while True:  # at least one sample, however late the connection opened
                    total, app, active, limit, hidden = conn.execute(sql, {"app": self.app_name or ""}).one()
                    conn.rollback()
                    self.run_.conn_hidden = max(self.run_.conn_hidden, int(hidden))
                    self.run_.max_connections = int(limit)
                    self.run_.conn_samples.append(ConnSample(round(time.perf_counter() - self.t0, 3), int(total),
                                                             int(app) if self.app_name else None, int(active)))
                    self.ready.set()
                    if self.stop_event.wait(self.interval):
                        break
        except Exception as exc:  # noqa: BLE001 - reported by check_db_connections
            from rehearsal_lib.phase import describe_exception

            self.run_.conn_error = describe_exception(exc)
        finally:
            self.ready.set()


def _setup(ctx: PhaseRun[LoadParams], cfg: LoadParams, run_id: str, run: LoadRun) -> None:
    """Send each setup request `count` times and keep the named field of every response."""
    for step in cfg.setup:
        sc = Scenario(step.name, _fill_run_id(step.path, run_id), step.method,
                      json=_fill_run_id(step.json_body, run_id))
        tpl = _Template(sc, {}, run.values, 0)
        kept: list[Any] = []
        for _ in range(step.count):
            path, headers, body = tpl.render()
            who = ctx.principal_name(step.principal, step.auth)
            res = http.request(ctx.http, step.method, path, headers=headers, content=body,
                               auth=ctx.auth_for(step.principal, step.auth))
            unreached = http.reached_handler(res, authenticated=ctx.wants_auth(step.principal, step.auth),
                                             expected=_codes(step.expect_status), principal=who)
            if unreached or res.status not in _codes(step.expect_status):
                raise RuntimeError(f"setup {step.name}: {unreached or res.describe()}")
            if not isinstance(res.body, dict) or step.field not in res.body:
                raise RuntimeError(f"setup {step.name}: response has no '{step.field}' field")
            kept.append(res.body[step.field])
        run.values[step.name] = kept


def run_load_phase(ctx: PhaseRun[LoadParams]) -> LoadRun:
    """The phase's load, sent by the first load check that needs it (`LoadRun.ensure`): setup, then every
    stage in order while pg_stat_activity is sampled. Sending writes to the target, so it happens only
    inside checks declared `writes=True` (refused in production without --allow-destructive)."""
    run = LoadRun()
    if not ctx.settings.stages:
        ctx.note(not_configured("phases.load.stages", "latency percentiles, errors and throughput under a fixed "
                                                      "request rate, stage by stage"))
        return run
    run._send = lambda: _send_load(ctx, run)
    return run


def _send_load(ctx: PhaseRun[LoadParams], run: LoadRun) -> None:
    """Setup, then every stage in order while pg_stat_activity is sampled; never raises."""
    cfg = ctx.settings
    run_id = _run_id(ctx)
    gen = cfg.generator
    sampler = None
    t0 = time.perf_counter()  # charts count seconds from here
    if cfg.db_connections is not None and ctx.database_url:
        sampler = _ConnSampler(ctx, run, cfg.db_connections.sample_interval_s, cfg.db_connections.application_name, t0)
        sampler.start()
        # the load starts once the sampler has its first sample: a slow connection must not make the
        # sampler miss the whole load (bounded by the connect and statement timeouts)
        sampler.ready.wait(ctx.params.target.timeout_s + ctx.params.safety.sql_statement_timeout_ms / 1000)
    try:
        try:
            _setup(ctx, cfg, run_id, run)
        except Exception as exc:  # noqa: BLE001 - every stage reports it
            from rehearsal_lib.phase import describe_exception

            run.setup_error = describe_exception(exc)
        for stage in cfg.stages:
            sr = StageRun(stage, offset_s=round(time.perf_counter() - t0, 3))
            run.stages.append(sr)
            if run.setup_error:
                sr.error = f"setup failed: {run.setup_error}"
                continue
            spec = LoadSpec(ctx.base_url, [_scenario(ctx, sc, run_id) for sc in stage.scenarios], model=stage.model,
                            rate=stage.rate, ramp_s=stage.ramp_s, users=stage.users, duration_s=stage.duration_s,
                            timeout_s=gen.timeout_s, max_in_flight=gen.max_in_flight, values=run.values,
                            verify_tls=ctx.params.target.verify_tls, transport=gen.transport)
            try:
                if gen.engine == "locust":
                    from rehearsal_lib.load.locust_driver import run_locust

                    sr.result = run_locust(spec, command=gen.locust_command, workers=gen.locust_workers,
                                           user_class=gen.locust_user_class)
                else:
                    shape = (f"{stage.rate:g} req/s" if stage.model == "open" else f"{stage.users} users")
                    with ctx.progress(f"stage {stage.name} ({shape})", total_s=stage.duration_s) as bar:
                        live: list[LiveFigures] = []  # the latest reading, taken on the engine's 1 s timer

                        def show(f: LiveFigures, bar: Progress = bar, live: list[LiveFigures] = live) -> None:
                            live[:] = [f]
                            bar.update(f.text())

                        sr.result = run_load(spec, processes=gen.processes, progress=show)
                        errors = f", {live[-1].errors}+ errors" if live and live[-1].errors else ""
                        bar.update(f"{sr.result.sent} sent, {sr.result.achieved_rate:.0f} req/s on average{errors}")
                sr.saturated = sr.result.saturation(gen.min_rate_ratio, gen.max_scheduler_lag_ms, gen.max_client_cpu)
            except Exception as exc:  # noqa: BLE001 - the stage's checks report it
                from rehearsal_lib.phase import describe_exception

                sr.error = describe_exception(exc)
    finally:
        if sampler is not None:
            time.sleep(min(1.0, sampler.interval))  # one sample after the load
            sampler.stop_event.set()
            sampler.join(ctx.params.target.timeout_s + ctx.params.safety.sql_statement_timeout_ms / 1000)


def show_run(ctx: PhaseRun[LoadParams], run: LoadRun) -> None:
    """A short table of what was sent: per stage its shape, requests, failures and how long it took."""
    import html

    from rehearsal_lib.phase import display_bundle

    if not run.sent:
        if ctx.settings.stages:
            ctx.note("Load not sent (its checks were refused or did not run).")
        return
    if not run.stages:
        return
    rows = []
    for sr in run.stages:
        st = sr.stage
        shape = (rps(st.rate) + (f" after a {secs(st.ramp_s)} ramp" if st.ramp_s else "") if st.model == "open"
                 else f"{plural(st.users, 'user')} at once")
        if sr.result is None:
            rows.append([st.title or st.name, shape, secs(st.duration_s), "—", "—", "—",
                         f"no figures: {sr.error or 'did not run'}"])
            continue
        stats = sr.result.scenario_stats()
        sent, failed = sum(s.count for s in stats), sum(s.errors for s in stats)
        note = "generator saturated: " + "; ".join(sr.saturated) if sr.saturated else "generator kept up"
        rows.append([st.title or st.name, shape, secs(st.duration_s), str(sent), str(failed),
                     secs(sr.result.wall_s), note])
    head = ["stage", "load", "planned", "requests", "failed", "took", "note"]
    left = "style='text-align:left'"
    body = "".join("<tr>" + "".join(f"<td {left}>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    total = sum(int(r[3]) for r in rows if r[3].isdigit())
    setup = f"setup failed: {run.setup_error}. " if run.setup_error else ""
    lead = f"{setup}{plural(len(rows), 'stage')}, {plural(total, 'request')} sent."
    display_bundle({"text/html": f"<p>{html.escape(lead)}</p><table><tr>"
                           + "".join(f"<th {left}>{h}</th>" for h in head) + f"</tr>{body}</table>",
              "text/plain": lead + "\n" + "\n".join(" | ".join(r) for r in rows)})


# ------------------------------------------------------------------------------------------ checks


def _not_judged(run: LoadRun, sr: StageRun | None, expected: str) -> Outcome | None:
    """The outcome when a stage has no trustworthy figures (failed, saturated), else None."""
    if sr is None or sr.error or sr.result is None:
        return Outcome("error", sr.error if sr is not None and sr.error else "stage did not run", expected)
    if sr.saturated:
        figures = _generator_figures(sr.result)
        return Outcome("error", "load generator saturated: " + "; ".join(sr.saturated), expected, figures,
                       _numbers(figures))
    return None


def _generator_figures(result: LoadResult) -> dict[str, Any]:
    """The generator's figures for people: rates to one decimal, client CPU in % of one core."""
    f = dict(result.generator_figures())
    for key in ("target_rps", "achieved_rps"):
        if f.get(key) is not None:
            f[key] = round(f[key], 1)
    cpu = f.pop("client_cpu", None)
    f["client_cpu_pct"] = round(cpu * 100, 1) if cpu is not None else None
    return f


def _numbers(figures: dict[str, Any]) -> dict[str, float | int | None]:
    return {k: v for k, v in figures.items() if v is None or isinstance(v, int | float)}


def _unanswered_mix(st: ScenarioStats) -> dict[str, int]:
    """The part of a status mix without an HTTP response (timeouts, connection errors)."""
    return {k: v for k, v in st.status_mix.items() if k == "timeout" or k.startswith("error:")}


def _stats(sr: StageRun, name: str) -> ScenarioStats:
    assert sr.result is not None
    return next(s for s in sr.result.scenario_stats() if s.name == name)


def _stages(ctx: PhaseRun[LoadParams]) -> list[LoadStage]:
    return list(ctx.settings.stages)


def check_generator(ctx: PhaseRun[LoadParams], run: LoadRun) -> list[Check]:
    """The generator kept up with each stage (else its latency figures are the client's, not the server's)."""
    gen = ctx.settings.generator
    out = []
    for stage in _stages(ctx):
        expected = (f"achieved >= {gen.min_rate_ratio:.0%} of target, no dropped arrivals, scheduler lag p99 <= "
                    f"{gen.max_scheduler_lag_ms:g} ms, client CPU <= {gen.max_client_cpu:.0%}")

        def probe(name: str = stage.name, expected: str = expected) -> Outcome:
            sr = run.stage_run(name)
            bad = _not_judged(run, sr, expected)
            if bad:
                return bad
            assert sr is not None and sr.result is not None
            f = _generator_figures(sr.result)
            rate = rps(f["achieved_rps"]) + (f" of {rps(f['target_rps'])} target" if f["target_rps"] else "")
            lag_ms = f["scheduler_lag_p99_ms"]
            lag = f", scheduler lag p99 {ms(lag_ms)}" if lag_ms is not None else ""
            return Outcome("pass", f"kept up: {rate}{lag}, client CPU {f['client_cpu_pct']:.0f}% of a core", expected,
                           f, _numbers(f))

        out.append(ctx.run(f"load.generator.{stage.name}", f"Load generator kept up: {stage.title or stage.name}",
                           probe, severity="major", expected=expected, writes=True))
    return out


def check_latency(ctx: PhaseRun[LoadParams], run: LoadRun) -> list[Check]:
    """p95 (a blocker by default, as the seed's hard gate) and p99 of every scenario against its limits."""
    out = []
    for stage in _stages(ctx):
        for sc in stage.scenarios:
            for pct, limit, sev in ((95, sc.p95_ms, sc.p95_severity), (99, sc.p99_ms, sc.severity)):
                if limit is None and pct == 99:
                    continue
                expected = f"p{pct} <= {limit:g} ms" if limit else f"p{pct} reported"

                def probe(name: str = stage.name, sc: LoadScenario = sc, pct: int = pct, limit: float | None = limit,
                          expected: str = expected) -> Outcome:
                    sr = run.stage_run(name)
                    bad = _not_judged(run, sr, expected)
                    if bad:
                        return bad
                    assert sr is not None
                    st = _stats(sr, sc.name)
                    value = getattr(st, f"p{pct}_ms")
                    answered = st.count if st.answered is None else st.answered
                    metrics = {"p50_ms": st.p50_ms, "p95_ms": st.p95_ms, "p99_ms": st.p99_ms, "max_ms": st.max_ms,
                               "requests": st.count, "answered": answered}
                    if not st.count:
                        return Outcome("error", "no requests were sent for this scenario", expected, None, metrics)
                    unanswered = st.count - answered
                    too_few = http.too_few_responses(answered, st.count, ctx.settings.min_responses)
                    if too_few or value is None:
                        return Outcome("error", f"{too_few or 'no percentile'}; no response: "
                                       f"{status_mix(_unanswered_mix(st))}",
                                       expected, {"requests": st.count, "answered": answered,
                                                  "without a response": unanswered,
                                                  "status mix": status_mix(st.status_mix),
                                                  "minimum": f"{ctx.settings.min_responses} answered requests "
                                                             "(phases.load.min_responses)"}, metrics)
                    seen = f"p{pct} {ms(value)} over {plural(answered, 'answered request')} (p50 {ms(st.p50_ms)})"
                    evidence = {"percentiles": f"p50 {ms(st.p50_ms)}, p95 {ms(st.p95_ms)}, p99 {ms(st.p99_ms)}, "
                                               f"max {ms(st.max_ms)}",
                                "requests": st.count, "limit": f"p{pct} at most {limit:g} ms" if limit else "none",
                                "measured from": "the intended send time", "status mix": status_mix(st.status_mix)}
                    if unanswered:
                        evidence["answered"] = (f"{answered} of {st.count}: the percentiles leave out "
                                                f"{plural(unanswered, 'request')} without a response (see the "
                                                "error-rate check)")
                    if limit is None:
                        return Outcome("pass", seen, expected, evidence, metrics)
                    return Outcome("pass" if value <= limit else "fail", seen, expected, evidence, metrics)

                out.append(ctx.run(f"load.p{pct}.{sc.name}", f"p{pct} latency of {sc.title or sc.name} under load",
                                   probe, severity=sev, expected=expected, writes=True))
    _latency_figure(ctx, run)
    return out


def check_errors(ctx: PhaseRun[LoadParams], run: LoadRun) -> list[Check]:
    """Share of requests per scenario without an expected status (timeouts and connection errors count)."""
    out = []
    for stage in _stages(ctx):
        for sc in stage.scenarios:
            expected = (f"error rate <= {sc.max_error_rate:.1%} (expected status "
                        f"{' or '.join(map(str, _codes(sc.expect_status)))})")

            def probe(name: str = stage.name, sc: LoadScenario = sc, expected: str = expected) -> Outcome:
                sr = run.stage_run(name)
                bad = _not_judged(run, sr, expected)
                if bad:
                    return bad
                assert sr is not None
                st = _stats(sr, sc.name)
                if not st.count:
                    return Outcome("error", "no requests were sent for this scenario", expected)
                metrics = {"requests": st.count, "errors": st.errors, "error_rate": st.error_rate}
                ok = st.error_rate <= sc.max_error_rate
                return Outcome("pass" if ok else "fail", f"{st.errors} of {plural(st.count, 'request')} failed "
                               f"({st.error_rate:.1%}); answers {status_mix(st.status_mix)}", expected,
                               {"answers": status_mix(st.status_mix), "requests": st.count, "errors": st.errors,
                                "expected status": " or ".join(map(str, _codes(sc.expect_status)))}, metrics)

            out.append(ctx.run(f"load.errors.{sc.name}", f"Error rate of {sc.title or sc.name} under load", probe,
                               severity=sc.severity, expected=expected, writes=True))
    _timeline_figure(ctx, run)
    return out


def check_throughput(ctx: PhaseRun[LoadParams], run: LoadRun) -> list[Check]:
    """Completed, expected responses per second of each stage with a `min_throughput_rps`."""
    out = []
    for stage in _stages(ctx):
        if stage.min_throughput_rps is None:
            continue
        expected = f">= {stage.min_throughput_rps:g} successful responses/s"

        def probe(stage: LoadStage = stage, name: str = stage.name, expected: str = expected,
                  min_rps: float = stage.min_throughput_rps) -> Outcome:
            sr = run.stage_run(name)
            bad = _not_judged(run, sr, expected)
            if bad:
                return bad
            assert sr is not None
            stats = sr.result.scenario_stats() if sr.result else []
            ok = sum(s.ok for s in stats)
            rate = ok / stage.duration_s
            per = {f"{s.name} (req/s)": round(s.rps, 1) for s in stats}
            return Outcome("pass" if rate >= min_rps else "fail",
                           f"{rate:.1f} successful responses/s ({ok} in {secs(stage.duration_s)})", expected, per,
                           {"throughput_rps": round(rate, 1)})

        out.append(ctx.run(f"load.throughput.{stage.name}", f"Throughput of {stage.title or stage.name}", probe,
                           severity="major", expected=expected, writes=True))
    return out


def check_db_connections(ctx: PhaseRun[LoadParams], run: LoadRun) -> list[Check]:
    """Peak database connections during the load against max_connections, and the app's pool limit."""
    cfg = ctx.settings.db_connections
    if cfg is None:
        ctx.note(not_configured("phases.load.db_connections", "the peak database connections during the load against "
                                                              "max_connections and the pool limit"))
        return []
    if not ctx.database_url:
        ctx.note("Database connections not sampled: target.database_url is not configured.")
        return []
    out = []
    expected = f"peak <= {cfg.max_usage_ratio:.0%} of max_connections"

    def peak() -> Outcome | None:
        run.ensure()
        if run.conn_hidden:  # the counts would leave out other roles' sessions: a low peak proves nothing
            from rehearsal_lib.probes.sql import hidden_sessions_reason

            return Outcome("error", hidden_sessions_reason(run.conn_hidden), expected)
        if not run.conn_samples:
            why = run.conn_error or "the sampler took none while the load ran"
            return Outcome("error", f"no pg_stat_activity sample: {why}", expected)
        return None

    def usage() -> Outcome:
        bad = peak()
        if bad:
            return bad
        peak_at = max(run.conn_samples, key=lambda s: s.total)
        top = peak_at.total
        limit = run.max_connections or 0
        ratio = top / limit if limit else 0.0
        metrics = {"peak_connections": top, "max_connections": limit, "samples": len(run.conn_samples)}
        evidence = {"peak": f"{plural(top, 'connection')} at {secs(peak_at.t_s)} ({peak_at.active} active)",
                    "max_connections": limit, "limit": f"{cfg.max_usage_ratio:.0%} of max_connections = "
                                                        f"{plural(int(limit * cfg.max_usage_ratio), 'connection')}",
                    "samples": f"{len(run.conn_samples)}, one every {secs(cfg.sample_interval_s)}",
                    "peak active": max(s.active for s in run.conn_samples)}
        return Outcome("pass" if ratio <= cfg.max_usage_ratio else "fail",
                       f"peak {top} of max_connections {limit} ({ratio:.0%}) over {len(run.conn_samples)} samples",
                       expected, evidence, metrics)

    out.append(ctx.run("load.db.connections", "Database connections under load", usage, severity="major",
                       expected=expected, writes=True))
    if cfg.application_name and cfg.pool_size:
        pool_size = cfg.pool_size
        pool_expected = f"{cfg.application_name} below its pool limit of {pool_size} connections"

        def pool() -> Outcome:
            bad = peak()
            if bad:
                return Outcome(bad.status, bad.observed, pool_expected)
            top = max(s.app or 0 for s in run.conn_samples)
            at_limit = sum(1 for s in run.conn_samples if (s.app or 0) >= pool_size)
            metrics = {"peak_app_connections": top, "pool_size": pool_size}
            evidence = {"application": cfg.application_name, "peak": plural(top, "connection"),
                        "pool limit": plural(pool_size, "connection"),
                        "samples at the limit": f"{at_limit} of {len(run.conn_samples)}"}
            if top >= pool_size:
                return Outcome("warn", f"pool exhausted: {cfg.application_name} held {top} of {pool_size} "
                                       "connections (requests waited for one)", pool_expected, evidence, metrics)
            return Outcome("pass", f"peak {top} of {plural(pool_size, 'connection')}", pool_expected, evidence,
                           metrics)

        out.append(ctx.run("load.db.pool", f"Connection pool of {cfg.application_name}", pool, severity="major",
                           expected=pool_expected, writes=True))
    _connections_figure(ctx, run)
    return out


# ------------------------------------------------------------------------------------------ charts


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _latency_figure(ctx: PhaseRun[LoadParams], run: LoadRun) -> None:
    """Grouped p50/p95/p99 bars per scenario on a log axis (a slow scenario must not hide the fast ones)."""
    rows = [(sr, st) for sr in run.stages if sr.result for st in sr.result.scenario_stats() if st.p50_ms is not None]
    if not rows:
        return
    import plotly.graph_objects as go

    names = [st.name for _, st in rows]
    fig = go.Figure()
    for pct, colour in ((50, "#9ecae1"), (95, "#3182bd"), (99, "#08519c")):
        values = [getattr(st, f"p{pct}_ms") for _, st in rows]
        fig.add_trace(go.Bar(x=names, y=values, name=f"p{pct}", marker_color=colour, text=[ms(v) for v in values],
                             textposition="outside", textangle=0, textfont_size=10, cliponaxis=False))
    limits = {sc.name: sc.p95_ms for st in ctx.settings.stages for sc in st.scenarios}
    fig.add_trace(go.Scatter(x=names, y=[limits.get(n) for n in names], mode="markers", name="p95 limit",
                             marker=dict(symbol="line-ew-open", size=40, color="crimson", line=dict(width=3))))
    import math

    shown = [v for _, st in rows for v in (st.p50_ms, st.p95_ms, st.p99_ms) if v] + [v for v in limits.values() if v]
    low, high = math.floor(math.log10(min(shown))), math.log10(max(shown)) + 0.25  # room for the value labels
    decades = [10.0 ** k for k in range(low, math.ceil(high) + 1)]
    fig.update_layout(title="Latency per scenario (from the intended send time; log scale)", barmode="group",
                      yaxis=dict(type="log", title="milliseconds (log scale)", range=[low, high], tickvals=decades,
                                 ticktext=[f"{d:g} ms" for d in decades]),
                      height=400, margin=dict(l=60, r=20, t=50, b=40))
    ctx.figure(fig)


def _timeline_figure(ctx: PhaseRun[LoadParams], run: LoadRun) -> None:
    """Requests/s and errors/s per scenario over time: one colour per scenario in both panels."""
    done = [sr for sr in run.stages if sr.result]
    if not done:
        return
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("requests per second, per scenario", "errors per second, per scenario"))
    colours: dict[str, str] = {}
    top_errors = 0
    for sr in done:
        assert sr.result is not None
        series: dict[str, dict[int, tuple[int, int]]] = {}
        for row in sr.result.timeline():
            series.setdefault(row["scenario"], {})[row["second"]] = (row["requests"], row["errors"])
        for name, by_sec in series.items():
            first = name not in colours
            colour = colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])
            xs = sorted(by_sec)
            t = [sr.offset_s + x for x in xs]
            errors = [by_sec[x][1] for x in xs]
            top_errors = max(top_errors, *errors)
            fig.add_trace(go.Scatter(x=t, y=[by_sec[x][0] for x in xs], name=name, mode="lines+markers",
                                     line=dict(color=colour), legendgroup=name, showlegend=first), row=1, col=1)
            fig.add_trace(go.Scatter(x=t, y=errors, name=f"{name} errors", mode="lines+markers",
                                     line=dict(color=colour, dash="dot"), legendgroup=name, showlegend=False),
                          row=2, col=1)
    fig.update_yaxes(title_text="req/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="errors/s", range=[0, max(1, top_errors) * 1.15], row=2, col=1)
    if not top_errors:
        fig.add_annotation(text="no errors in any scenario", x=0.5, y=0.5, xref="x2 domain", yref="y2 domain",
                           showarrow=False, font=dict(color="#1a7f37", size=13))
    fig.update_xaxes(title_text="seconds since the load began", row=2, col=1)
    fig.update_layout(title="Throughput and errors over time", height=480, legend_title_text="scenario",
                      margin=dict(l=60, r=20, t=70, b=50))
    ctx.figure(fig)


def _connections_figure(ctx: PhaseRun[LoadParams], run: LoadRun) -> None:
    if not run.conn_samples:
        return
    import plotly.graph_objects as go

    cfg = ctx.settings.db_connections
    if cfg is None:
        return
    t = [s.t_s for s in run.conn_samples]
    fig = go.Figure(go.Scatter(x=t, y=[s.total for s in run.conn_samples], name="all client connections"))
    fig.add_trace(go.Scatter(x=t, y=[s.active for s in run.conn_samples], name="active (running a query)"))
    if cfg.application_name:
        fig.add_trace(go.Scatter(x=t, y=[s.app for s in run.conn_samples], name=f"{cfg.application_name} (its pool)"))
    if cfg.pool_size:
        fig.add_hline(y=cfg.pool_size, line_dash="dot", annotation_text=f"pool limit {cfg.pool_size}")
    if run.max_connections:
        fig.add_hline(y=run.max_connections * cfg.max_usage_ratio, line_dash="dash",
                      annotation_text=f"{cfg.max_usage_ratio:.0%} of max_connections ({run.max_connections})")
    fig.update_layout(title="Database connections during the load", xaxis_title="seconds since the load began",
                      yaxis_title="connections", height=340, margin=dict(l=40, r=20, t=50, b=40))
    ctx.figure(fig)
