"""Job queue & scheduler: a manually triggered job reaches `done` in time, attempts are tracked,
scheduled offsets follow the rule, concurrent triggers process a job once, the status endpoint
reports the run; and a timeline chart of every job this phase started.

Jobs are started through the params' trigger (an HTTP endpoint, or a command printing JSON) and
followed through the job row (`job_sql`, read-only). Triggering writes to the target: production
refuses it (`skip` with the reason) unless the run allows destructive steps.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

import httpx

from rehearsal_lib.checks.wording import not_configured, plural, secs, times
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.jobs.params import JobsParams
from rehearsal_lib.probes.http import HttpResult, request
from rehearsal_lib.probes.placeholders import expand, expand_text
from rehearsal_lib.probes.poll import poll_until
from rehearsal_lib.probes.sql import query, scalar, strip_statement
from rehearsal_lib.results import Check

UNITS_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
ROW_FIELDS = ("status", "attempts", "enqueued_at", "picked_at", "finished_at")


class TriggerFailed(Exception):
    """The trigger did not start a job (the message says why)."""


class Jobs:
    """The jobs this phase started, by label, and how to start and follow one."""

    def __init__(self, ctx: PhaseRun[JobsParams]):
        self.ctx = ctx
        self.s: JobsParams = ctx.settings
        self.run_id = ctx.run_id
        self.started: dict[str, list[Any]] = {}
        self.rows: dict[Any, dict[str, Any]] = {}

    def body(self, job: dict[str, Any], **extra: str) -> Any:
        return expand(job, {"run_id": self.run_id, **extra}, "job")

    def trigger(self, label: str, job: Any, client: httpx.Client | None = None) -> Any:
        """Start one job; return its id (raises TriggerFailed with the reason)."""
        t = self.s.trigger
        if t.command:
            argv = [expand_text(arg, {"job": json.dumps(job), "run_id": self.run_id}, "trigger.command")
                    for arg in t.command]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=t.command_timeout_s, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TriggerFailed(f"trigger command failed: {type(exc).__name__}: {exc}") from None
            if proc.returncode != 0:
                raise TriggerFailed(f"trigger command exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            try:
                answer = json.loads(lines[-1])
            except (IndexError, ValueError):
                raise TriggerFailed(f"trigger command printed no JSON: {proc.stdout.strip()[-300:]!r}") from None
        else:
            res = request(client or self.ctx.http, t.method, t.path or "/", json_body=job,
                          auth=self.ctx.auth_for(t.principal, t.auth))
            if res.error:
                raise TriggerFailed(f"trigger: {res.describe()}")
            if res.status not in t.expect_status:
                raise TriggerFailed(f"trigger answered HTTP {res.status}, not {t.expect_status}: {res.text[:200]}")
            answer = res.body
        if not isinstance(answer, dict) or answer.get(t.job_id_field) is None:
            raise TriggerFailed(f"trigger answer has no '{t.job_id_field}' field: {str(answer)[:200]}")
        job_id = answer[t.job_id_field]
        self.started.setdefault(label, []).append(job_id)
        return job_id

    def row(self, job_id: Any) -> dict[str, Any] | None:
        cols, rows = query(self.ctx.engine, self.s.job_sql, {"job_id": job_id}, limit=1)
        if not rows:
            return None
        out = dict(zip(cols, rows[0], strict=True))
        self.rows[job_id] = out
        return out

    def wait(self, job_id: Any) -> tuple[str, dict[str, Any] | None, float]:
        """Poll the job row until done / failed / timeout: (outcome word, last row, seconds waited)."""
        def ended(row: dict[str, Any] | None) -> bool:
            state = (row or {}).get("status")
            return state == self.s.done_status or state in self.s.failed_status

        polls = 0
        # a live line for a wait of more than a couple of seconds (rehearsal_lib/progress.py)
        with self.ctx.progress(f"job {job_id}: waiting for '{self.s.done_status}'", total_s=self.s.timeout_s,
                               delay_s=2) as bar:

            def read() -> dict[str, Any] | None:
                nonlocal polls
                row = self.row(job_id)
                polls += 1
                bar.update(f"status '{row.get('status') if row else 'no row'}' after {polls} poll(s)")
                return row

            r = poll_until(read, timeout_s=self.s.timeout_s, interval_s=self.s.poll_interval_s, done=ended)
        state = (r.value or {}).get("status")
        word = "done" if state == self.s.done_status else "failed" if state in self.s.failed_status else "timeout"
        return word, r.value, r.elapsed_s


def _jobs(ctx: PhaseRun[JobsParams]) -> Jobs:
    return ctx.cached("jobs.jobs", lambda: Jobs(ctx))


def _run_to_done(jobs: Jobs, label: str, job: dict[str, Any], expected: str) -> tuple[Any, Outcome | None]:
    """Trigger a job and wait for it; (job id, None) when done, else (id, the failing Outcome)."""
    try:
        job_id = jobs.trigger(label, jobs.body(job))
    except TriggerFailed as exc:
        return None, Outcome("error", str(exc), expected)
    word, row, waited = jobs.wait(job_id)
    evidence = {"job_id": job_id, "row": row, "waited_s": round(waited, 3)}
    if word == "done":
        return job_id, None
    if word == "failed":
        assert row is not None  # "failed" was read from the row's status
        return job_id, Outcome("fail", f"job {job_id} ended '{row.get('status')}'", expected, evidence)
    state = (row or {}).get("status", "no row")
    never = " (never picked up)" if row and not row.get("picked_at") else ""
    return job_id, Outcome("fail", f"job {job_id} still '{state}' after {secs(jobs.s.timeout_s)}{never}", expected,
                           evidence)


JOBS_WOULD_CHECK = {
    "run": "that a manually triggered job gets a row that reaches done within the timeout",
    "attempts": "that a job's attempts are counted (e.g. a job failing once then succeeding shows 2)",
    "schedule": "that the scheduled items a job plans sit at the offsets of its rule",
    "concurrency": "that triggers fired at once for one job key are processed exactly the expected number of times",
    "status": "that the status endpoint reports a triggered job's run to its end, with the required fields",
}


def _not_configured(ctx: PhaseRun[JobsParams], key: str) -> None:
    ctx.note(not_configured(f"phases.jobs.{key}", JOBS_WOULD_CHECK.get(key, "this part of the job queue")))


def check_run(ctx: PhaseRun[JobsParams]) -> Check | None:
    """A manually triggered job gets a row that reaches `done` within the timeout."""
    jobs = _jobs(ctx)
    spec = jobs.s.run
    if spec is None:
        _not_configured(ctx, "run")
        return None
    expected = f"'{jobs.s.done_status}' within {secs(jobs.s.timeout_s)}"

    def probe() -> Outcome:
        job_id, failed = _run_to_done(jobs, "run", spec.job, expected)
        if failed:
            return failed
        row = jobs.rows[job_id]
        return Outcome("pass", f"job {job_id} {jobs.s.done_status} after {plural(row.get('attempts') or 0, 'attempt')}",
                       expected,
                       {"job_id": job_id, "timeline": {k: row.get(k) for k in ROW_FIELDS}})

    return ctx.run("jobs.run.completes", "Triggered job runs to done", probe,
                   expected=expected, severity="blocker", writes=True)


def check_attempts(ctx: PhaseRun[JobsParams]) -> Check | None:
    """The job's attempts are counted (e.g. a job failing once then succeeding shows 2)."""
    jobs = _jobs(ctx)
    spec = jobs.s.attempts
    if spec is None:
        _not_configured(ctx, "attempts")
        return None
    expected = f"attempts = {spec.expected}"

    def probe() -> Outcome:
        job_id, failed = _run_to_done(jobs, "attempts", spec.job, expected)
        if failed:
            return failed
        n = scalar(ctx.engine, spec.sql, {"job_id": job_id}) if spec.sql else jobs.rows[job_id].get("attempts")
        evidence = {"job_id": job_id, "attempts": n, "row": jobs.rows[job_id]}
        ok = n is not None and int(n) == spec.expected
        return Outcome("pass" if ok else "fail", f"attempts = {n}", expected, evidence, {"attempts": n})

    return ctx.run("jobs.attempts.tracked", "Job attempts are tracked", probe, expected=expected, writes=True)


def check_schedule(ctx: PhaseRun[JobsParams]) -> Check | None:
    """The scheduled items a job plans sit at the offsets of the rule (e.g. reminders at 0/2/4 days)."""
    jobs = _jobs(ctx)
    spec = jobs.s.schedule
    if spec is None:
        _not_configured(ctx, "schedule")
        return None
    rule = sorted(spec.expected_offsets)
    expected = f"offsets {'/'.join(f'{o:g}' for o in rule)} {spec.unit}"

    def probe() -> Outcome:
        job_id, failed = _run_to_done(jobs, "schedule", spec.job, expected)
        if failed:
            return failed
        _, rows = query(ctx.engine, spec.sql, {"job_id": job_id}, limit=1000)
        found = sorted(round(float(r[0]) / UNITS_S[spec.unit], 4) for r in rows if r and r[0] is not None)
        evidence = {"job_id": job_id, "query": strip_statement(spec.sql), f"offsets_{spec.unit}": found,
                    f"rule_{spec.unit}": rule}
        ok = len(found) == len(rule) and all(abs(a - b) <= spec.tolerance for a, b in zip(found, rule, strict=True))
        observed = f"offsets {'/'.join(f'{o:g}' for o in found) or 'none'} {spec.unit}"
        return Outcome("pass" if ok else "fail", observed, expected, evidence, {"items": len(found)})

    return ctx.run("jobs.schedule.offsets", "Scheduled offsets follow the rule", probe, expected=expected, writes=True)


def check_concurrency(ctx: PhaseRun[JobsParams]) -> Check | None:
    """Triggers fired at once (threads) for one job key: it is processed exactly `expected` times."""
    jobs = _jobs(ctx)
    spec = jobs.s.concurrency
    if spec is None:
        _not_configured(ctx, "concurrency")
        return None
    expected = f"{spec.triggers} concurrent triggers, processed {times(spec.expected)}"

    def probe() -> Outcome:
        key = expand_text(spec.dedupe_key, {"run_id": jobs.run_id}, "dedupe_key")
        body = jobs.body(spec.job, dedupe_key=key)
        barrier = threading.Barrier(spec.triggers)
        results: list[Any] = [None] * spec.triggers

        def fire(i: int) -> None:
            with httpx.Client(base_url=ctx.base_url, timeout=ctx.params.target.timeout_s,
                              verify=ctx.params.target.verify_tls) as client:
                barrier.wait(timeout=10)
                try:
                    results[i] = jobs.trigger("concurrency", body, client)
                except TriggerFailed as exc:
                    results[i] = exc

        threads = [threading.Thread(target=fire, args=(i,)) for i in range(spec.triggers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=jobs.s.trigger.command_timeout_s + 15)
        errors = [str(r) for r in results if isinstance(r, TriggerFailed) or r is None]
        if errors:
            return Outcome("error", errors[0], expected, {"triggers": [str(r) for r in results]})
        ids = list(dict.fromkeys(results))
        waits = {str(i): jobs.wait(i)[0] for i in ids}
        n = scalar(ctx.engine, spec.sql, {"dedupe_key": key})
        evidence = {"dedupe_key": key, "job_ids_returned": results, "jobs": waits, "query": strip_statement(spec.sql),
                    "processed": n}
        if any(w != "done" for w in waits.values()):
            return Outcome("fail", f"not every job reached '{jobs.s.done_status}': "
                           + ", ".join(f"job {k} {w}" for k, w in waits.items()), expected, evidence)
        count = int(n or 0)
        return Outcome("pass" if count == spec.expected else "fail",
                       f"{spec.triggers} triggers → {plural(len(ids), 'job')}, processed {times(count)}", expected,
                       evidence, {"jobs": len(ids), "processed": count})

    return ctx.run("jobs.concurrency.once", "Concurrent triggers process a job once", probe,
                   expected=expected, severity="blocker", writes=True)


def check_status(ctx: PhaseRun[JobsParams]) -> Check | None:
    """The status endpoint reports a triggered job's run to its end, with the required fields."""
    jobs = _jobs(ctx)
    spec = jobs.s.status
    if spec is None:
        _not_configured(ctx, "status")
        return None
    expected = f"{spec.status_field} = '{jobs.s.done_status}' with {', '.join(spec.required_fields)}"

    def probe() -> Outcome:
        try:
            job_id = jobs.trigger("status", jobs.body(spec.job))
        except TriggerFailed as exc:
            return Outcome("error", str(exc), expected)
        path = expand_text(spec.path, {"job_id": str(job_id), "run_id": jobs.run_id}, "path")
        auth = ctx.auth_for(jobs.s.trigger.principal, jobs.s.trigger.auth)
        seen: list[Any] = []

        def answered(res: HttpResult) -> bool:  # HTTP 200 with a JSON object: a state to read
            return not res.error and res.status == 200 and isinstance(res.body, dict)

        def fetch() -> HttpResult:
            res = request(ctx.http, "GET", path, auth=auth)
            if answered(res):
                state = res.body.get(spec.status_field)
                if not seen or seen[-1] != state:
                    seen.append(state)
            return res

        def finished(res: HttpResult) -> bool:  # done, or an answer that ends the check
            return not answered(res) or res.body.get(spec.status_field) == jobs.s.done_status

        res = poll_until(fetch, timeout_s=jobs.s.timeout_s, interval_s=jobs.s.poll_interval_s, done=finished).value
        if res.error:
            return Outcome("error", res.describe(), expected, res.evidence())
        if res.status != 200 or not isinstance(res.body, dict):
            return Outcome("fail", f"{res.describe()} without a JSON object", expected, res.evidence())
        state = res.body.get(spec.status_field)
        jobs.row(job_id)
        evidence = {"job_id": job_id, "states_seen": seen, "response": res.evidence()}
        if state != jobs.s.done_status:
            shown = f"'{state}'" if state is not None else "missing"
            return Outcome("fail", f"{spec.status_field} = {shown} after {secs(jobs.s.timeout_s)}", expected,
                           evidence)
        missing = [f for f in spec.required_fields if res.body.get(f) is None]
        if missing:
            return Outcome("fail", f"done, but the report lacks {', '.join(missing)}", expected, evidence)
        return Outcome("pass", f"job {job_id} reported {state} with every required field", expected, evidence)

    return ctx.run("jobs.status.reports", "Status endpoint reports the run", probe, expected=expected, writes=True)


def show_timeline(ctx: PhaseRun[JobsParams]) -> None:
    """Plotly chart: per job started by this phase, waiting (enqueued → picked) then running (→ done).

    A job never picked up is drawn waiting until the timeout, in red; every bar has a minimum width and its
    final state written at its end, so a 1 ms run or a job that never started is still visible."""
    import datetime as dt

    import plotly.graph_objects as go

    jobs = _jobs(ctx)
    items = [(label, jid) for label, ids in jobs.started.items() for jid in ids]
    if not items:
        ctx.note("No job was started by this phase: no timeline.")
        return
    for _, jid in items:
        try:
            jobs.row(jid)
        except Exception:  # noqa: BLE001 - the chart shows what it can; the checks carry the failures
            pass

    def ts(value: Any) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

    rows = [(label, jid, jobs.rows.get(jid, {})) for label, jid in dict.fromkeys(items)]
    starts = [t for t in (ts(r.get("enqueued_at")) for _, _, r in rows) if t is not None]
    if not starts:
        ctx.note("No job row was found: no timeline.")
        return
    origin = min(starts)

    def ms(value: Any) -> float | None:
        t = ts(value)
        return None if t is None else (t - origin).total_seconds() * 1000

    timeout_ms = jobs.s.timeout_s * 1000
    spans = []  # (name, kind, start, end, end label)
    for label, jid, r in rows:
        name = f"{label} #{jid}"
        enq, picked, done = ms(r.get("enqueued_at")), ms(r.get("picked_at")), ms(r.get("finished_at"))
        state, attempts = r.get("status", "no row"), r.get("attempts")
        tail = f"{state}, {plural(attempts, 'attempt')}" if attempts is not None else str(state)
        if enq is None:
            continue
        if picked is None:
            spans.append((name, "never", enq, enq + timeout_ms, f"never picked up ({state})"))
            continue
        spans.append((name, "waiting", enq, picked, ""))
        end = done if done is not None else picked + timeout_ms
        spans.append((name, "running" if done is not None else "unfinished", picked, end, tail))
    axis = max([e for *_, e, _ in spans] + [1.0])
    min_w = axis * 0.006  # a bar narrower than this would be invisible
    styles = {"waiting": ("waiting (enqueued → picked)", "#bf8700"),
              "running": ("running (picked → finished)", "#2da44e"),
              "unfinished": ("still running at the timeout", "#d1242f"),
              "never": (f"never picked up (drawn to the {secs(jobs.s.timeout_s)} timeout)", "#cf222e")}
    fig = go.Figure()
    for kind, (legend, colour) in styles.items():
        mine = [sp for sp in spans if sp[1] == kind]
        if not mine:
            continue
        fig.add_trace(go.Bar(
            name=legend, orientation="h", y=[sp[0] for sp in mine], base=[sp[2] for sp in mine],
            x=[max(sp[3] - sp[2], min_w) for sp in mine], marker_color=colour,
            hovertext=[f"{sp[0]}: {legend}, {sp[3] - sp[2]:.0f} ms" for sp in mine], hoverinfo="text"))
    ends = {}
    for name, _kind, _start, end, tail in spans:
        if tail:
            ends[name] = (end, tail)
    fig.add_trace(go.Scatter(
        x=[e + min_w for e, _ in ends.values()], y=list(ends), mode="text", text=[t for _, t in ends.values()],
        textposition="middle right", showlegend=False, hoverinfo="skip", cliponaxis=False))
    names = list(dict.fromkeys(sp[0] for sp in spans))
    fig.update_layout(title="Job timeline (ms since the first enqueue; final state at the end of each bar)",
                      barmode="overlay", height=170 + 36 * len(names), xaxis_title="ms since the first enqueue",
                      xaxis_range=[0, axis * 1.3], yaxis={"categoryorder": "array", "categoryarray": names[::-1]},
                      margin=dict(l=120, r=40, t=80, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    ctx.figure(fig)


def check_cleanup(ctx: PhaseRun[JobsParams]) -> Check | None:
    """Remove this run's jobs and what they produced (`jobs.cleanup`), at the end of the phase."""
    from rehearsal_lib.checks.cleanup import check_cleanup as cleanup

    return cleanup(ctx, created=sum(len(ids) for ids in _jobs(ctx).started.values()))
