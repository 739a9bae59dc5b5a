"""Backup & recovery: newest backup's age (the measured RPO) and size, restore into a scratch database
and compare row counts, rollback then health and ready, a full restart drill (the measured RTO,
nothing lost, the service checks pass again).

Restore writes (a temporary database, dropped afterwards); rollback and restart disrupt the service.
Each of them is a check declared with ``writes=True``: where writes are refused (production without
--allow-destructive) it records ``skip`` with the reason.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rehearsal_lib.checks.wording import not_configured, plural, secs
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.backup_recovery.params import BackupRecoveryParams
from rehearsal_lib.probes import command, http
from rehearsal_lib.probes import steps as steps_probe
from rehearsal_lib.probes.poll import poll_until
from rehearsal_lib.probes.sql import query, quote_ident
from rehearsal_lib.results import FAILING, Check, StatusName


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def newest_backup(ctx: PhaseRun[BackupRecoveryParams]) -> tuple[Path, dict[str, Any]]:
    """The newest backup (file or folder) from `backup.path` or `backup.command`; raises if there is none."""
    cfg = ctx.settings.backup
    if cfg is None:
        raise RuntimeError("phases.backup_recovery.backup is not configured")
    if cfg.command:
        res = command.run(cfg.command, 60)
        if not res.ok or not res.output.strip():
            raise RuntimeError(f"backup command: {res.describe()} {res.output.strip()[-200:]}")
        path = Path(res.output.strip().splitlines()[-1].strip())
    else:
        root = Path(ctx.resolve(cfg.path or "", secret=False) or "")
        if not root.exists():
            raise RuntimeError(f"backup location {root} does not exist")
        if root.is_dir():
            candidates = [p for p in root.glob(cfg.pattern) if not p.name.startswith(".")]
            if not candidates:
                raise RuntimeError(f"no backup matching {cfg.pattern} in {root}")
            path = max(candidates, key=lambda p: p.stat().st_mtime)
        else:
            path = root
    if not path.exists():
        raise RuntimeError(f"backup {path} does not exist")
    mtime = path.stat().st_mtime
    info = {"backup": path.name, "modified_at": datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds"),
            "age_s": round(time.time() - mtime, 1), "size_bytes": _size(path), "mtime": mtime}
    return path, info


def check_backup(ctx: PhaseRun[BackupRecoveryParams]) -> list[Check]:
    """The newest backup is no older than the RPO objective and not empty."""
    cfg = ctx.settings.backup
    if cfg is None:
        ctx.note(not_configured("phases.backup_recovery.backup", "that the newest backup is no older than the "
                                                                 "recovery point objective and not empty"))
        return []
    found: dict[str, Any] = {}

    def age() -> Outcome:
        expected = f"newest backup at most {cfg.max_age_hours:g} h old (RPO objective)"
        _, info = newest_backup(ctx)
        found.update(info)
        hours = info["age_s"] / 3600
        evidence = {"backup": info["backup"], "modified at": info["modified_at"], "age": f"{hours:.1f} h",
                    "size": f"{info['size_bytes']} bytes", "RPO objective": f"{cfg.max_age_hours:g} h"}
        metrics = {"rpo_h": round(hours, 1), "rpo_max_h": cfg.max_age_hours, "rpo_s": round(info["age_s"])}
        status: StatusName = "pass" if hours <= cfg.max_age_hours else "fail"
        return Outcome(status, f"{info['backup']} is {hours:.1f} h old", expected, evidence, metrics)

    def size() -> Outcome:
        expected = f"at least {cfg.min_size_bytes} bytes"
        if not found:
            return Outcome("skip", "not tried: no backup found", expected)
        n = found["size_bytes"]
        return Outcome("pass" if n >= cfg.min_size_bytes else "fail", f"{n} bytes", expected,
                       {"backup": found["backup"], "size_bytes": n}, {"size_bytes": n})

    return [ctx.run("backup_recovery.backup.age", "Newest backup's age (RPO)", age, severity="blocker",
                    expected=f"newest backup at most {cfg.max_age_hours:g} h old (RPO objective)"),
            ctx.run("backup_recovery.backup.size", "Newest backup's size", size, severity="major")]


def _restore_argv(ctx: PhaseRun[BackupRecoveryParams], path: Path, url: str) -> tuple[list[str], dict[str, str]]:
    cfg = ctx.settings.restore
    assert cfg is not None  # check_restore returns before restoring when restore is not configured
    bindir = ctx.resolve(cfg.pg_bin_dir, secret=False) if cfg.pg_bin_dir else None
    args, env, db = command.libpq_args(url)
    tool = (lambda name: str(Path(bindir) / name)) if bindir else (lambda name: name)
    custom = path.is_dir() or path.read_bytes()[:5] == b"PGDMP"
    if custom:
        return [tool("pg_restore"), *args, "-d", db, "--no-owner", "--no-acl", "--exit-on-error", str(path)], env
    return [tool("psql"), *args, "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)], env


def check_restore(ctx: PhaseRun[BackupRecoveryParams]) -> list[Check]:
    """Restore the newest backup into a temporary database and compare critical tables with the source."""
    cfg, bcfg = ctx.settings.restore, ctx.settings.backup
    if cfg is None or bcfg is None:
        ctx.note(not_configured("phases.backup_recovery.restore", "that the newest backup restores into a temporary "
                                                                  "database whose critical tables match the source "
                                                                  "(it needs phases.backup_recovery.backup too)"))
        return []
    counts: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {}

    expected = "the newest backup restores into a scratch database"

    def restore() -> Outcome:
        path, info = newest_backup(ctx)
        state["backup_time"] = info["mtime"]
        admin_url = ctx.resolve(cfg.scratch_database_url) or ""
        name = f"rehearsal_restore_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                scratch_url = command.with_database(admin_url, name)
                argv, env = _restore_argv(ctx, path, scratch_url)
                res = command.run(argv, cfg.timeout_s, env=env)
                evidence = {**res.evidence(), "backup": path.name, "scratch_database": name}
                if not res.ok:
                    return Outcome("error" if res.error else "fail", res.describe(), expected, evidence,
                                   {"restore_s": round(res.duration_s, 3)})
                # the restored counts are bounded like every other statement of the rehearsal
                scratch = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool, connect_args={
                    "options": f"-c statement_timeout={int(ctx.params.safety.sql_statement_timeout_ms)}"})
                try:
                    with scratch.connect() as sc:
                        for t in cfg.tables:
                            counts[t.name] = {"restored": int(sc.execute(sa.text(
                                f"SELECT count(*) FROM {quote_ident(t.name)}")).scalar_one())}
                finally:
                    scratch.dispose()
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.dispose()
        return Outcome("pass", f"restored {path.name} in {secs(res.duration_s)} (scratch database dropped)",
                       expected, evidence, {"restore_s": round(res.duration_s, 3), "size_bytes": info["size_bytes"]})

    first = ctx.run("backup_recovery.restore.restored", "Restore into a scratch database", restore,
                    severity="blocker", expected=expected, writes=True)
    expected = f"restored rows >= source rows at backup time (tolerance {cfg.tolerance_pct:g}%)"

    def compare() -> Outcome:
        if not counts:
            return Outcome("skip", f"not tried: the restore {first.status}", expected)
        as_of = datetime.fromtimestamp(state["backup_time"], UTC)
        short = []
        for t in cfg.tables:
            if t.as_of_column:
                sql = f"SELECT count(*) FROM {quote_ident(t.name)} WHERE {quote_ident(t.as_of_column)} <= :at"
                _, rows = query(ctx.engine, sql, {"at": as_of})
            else:
                _, rows = query(ctx.engine, f"SELECT count(*) FROM {quote_ident(t.name)}")
            src = int(rows[0][0])
            got = counts[t.name]["restored"]
            counts[t.name]["source"] = src
            if got < src * (1 - cfg.tolerance_pct / 100):
                short.append(f"{t.name}: {got} restored vs {src} in the source")
        _counts_chart(ctx, counts)
        evidence = {"source counted as of": as_of.strftime("%Y-%m-%d %H:%M:%S UTC") + " (the backup's time)",
                    "columns": ["table", "source", "restored", "missing"],
                    "sample": [[t, v["source"], v["restored"], max(0, v["source"] - v["restored"])]
                               for t, v in counts.items()]}
        metrics = {f"{k}.missing": max(0, v["source"] - v["restored"]) for k, v in counts.items()}
        if short:
            return Outcome("fail", "; ".join(short), expected, evidence, metrics)
        return Outcome("pass", f"{plural(len(counts), 'table')} agree with the source at backup time", expected,
                       evidence,
                       metrics)

    return [first, ctx.run("backup_recovery.restore.row_counts", "Restored row counts match the source", compare,
                           severity="blocker", expected=expected)]


def _counts_chart(ctx: PhaseRun[BackupRecoveryParams], counts: dict[str, dict[str, Any]]) -> None:
    """Source vs restored rows per table, every value written on its bar (a 0 bar is otherwise invisible)."""
    import plotly.graph_objects as go

    names = list(counts)
    source = [counts[n]["source"] for n in names]
    restored = [counts[n]["restored"] for n in names]
    short = ["#cf222e" if r < s else "#2da44e" for r, s in zip(restored, source, strict=True)]
    fig = go.Figure([go.Bar(name="source (at backup time)", x=names, y=source, marker_color="#8c959f",
                            text=[str(v) for v in source], textposition="outside", cliponaxis=False),
                     go.Bar(name="restored copy (red: rows missing)", x=names, y=restored, marker_color=short,
                            text=[str(v) for v in restored], textposition="outside", cliponaxis=False)])
    fig.update_layout(title="Rows per table: source vs restored copy", barmode="group", yaxis_title="rows",
                      yaxis_range=[0, max(source + restored + [1]) * 1.2], height=340,
                      margin=dict(l=50, r=20, t=50, b=40))
    ctx.figure(fig)


def _wait_up(ctx: PhaseRun[BackupRecoveryParams], t0: float, timeout_s: float) -> tuple[float | None, list[str]]:
    """Seconds from t0 until health and ready both answer 2xx (None if not within the timeout)."""
    s = ctx.settings
    paths = [s.health_endpoint] + ([s.ready_endpoint] if s.ready_endpoint else [])
    seen: list[str] = []
    import httpx

    with httpx.Client(base_url=ctx.base_url, timeout=2, verify=ctx.params.target.verify_tls) as client:
        def ask() -> list[http.HttpResult]:
            results = [http.request(client, "GET", p) for p in paths]
            last = "; ".join(r.describe() for r in results if not r.ok)
            if last and (not seen or seen[-1] != last):
                seen.append(last)
            return results

        r = poll_until(ask, timeout_s=timeout_s, interval_s=0.1, done=lambda rs: all(x.ok for x in rs),
                       clock=time.perf_counter, started=t0)
        return (None, seen[-5:]) if r.timed_out else (r.elapsed_s, seen)


def _ops(ctx: PhaseRun[BackupRecoveryParams], cfg: Any, what: str) -> tuple[Outcome, float | None]:
    """Run a disruptive command, then wait for health and ready."""
    expected = f"{what} command exits 0; health and ready answer within {cfg.timeout_s:g} s"
    t0 = time.perf_counter()
    res = command.run(cfg.command, cfg.timeout_s, cwd=os.getcwd())
    if "http" in ctx.__dict__:  # its pooled connections went down with the service
        ctx.__dict__.pop("http").close()
    if not res.ok:
        return Outcome("error" if res.error else "fail", res.describe(), expected, res.evidence()), None
    took, seen = _wait_up(ctx, t0, cfg.timeout_s)
    evidence = {**res.evidence(), "while down": "; ".join(seen) or "health and ready answered at the first try"}
    if took is None:
        return Outcome("fail", f"health/ready not answering {cfg.timeout_s:g} s after the {what}", expected,
                       evidence), None
    return Outcome("pass", f"{what} done; healthy and ready after {secs(took)}", expected, evidence,
                   {"seconds_to_ready": round(took, 3)}), took


def check_rollback(ctx: PhaseRun[BackupRecoveryParams]) -> Check | None:
    cfg = ctx.settings.rollback
    if cfg is None:
        ctx.note(not_configured("phases.backup_recovery.rollback", "that the release can be rolled back and the "
                                                                   "previous version answers again"))
        return None
    return ctx.run("backup_recovery.rollback", "Rollback, then health and ready", lambda: _ops(ctx, cfg, "rollback")[0],
                   severity="blocker", expected=f"rollback command exits 0; health and ready answer within "
                                                f"{cfg.timeout_s:g} s", writes=True)


def _counts(ctx: PhaseRun[BackupRecoveryParams], tables: list[str]) -> dict[str, int]:
    return {t: int(query(ctx.engine, f"SELECT count(*) FROM {quote_ident(t)}")[1][0][0]) for t in tables}


def check_restart(ctx: PhaseRun[BackupRecoveryParams]) -> list[Check]:
    """Restart drill: RTO against its objective, row counts before = after, service checks pass again."""
    cfg = ctx.settings.restart
    if cfg is None:
        ctx.note(not_configured("phases.backup_recovery.restart", "a restart drill: recovery time against its "
                                                                  "objective, row counts before = after, service "
                                                                  "checks passing again"))
        return []
    state: dict[str, Any] = {}

    def restart() -> Outcome:
        if cfg.count_tables:
            state["before"] = _counts(ctx, cfg.count_tables)
        out, took = _ops(ctx, cfg, "restart")
        out.expected = f"healthy and ready within {cfg.rto_max_s:g} s of the restart (RTO objective)"
        state["restarted"] = out.status == "pass" or "not answering" in out.observed
        if took is None:
            return out
        out.metrics = {"rto_s": round(took, 3), "rto_max_s": cfg.rto_max_s}
        if took > cfg.rto_max_s:
            out.status, out.observed = "fail", f"ready after {secs(took)}, over the {cfg.rto_max_s:g} s RTO"
        else:
            out.observed = f"ready after {secs(took)} (RTO objective {cfg.rto_max_s:g} s)"
        return out

    checks = [ctx.run("backup_recovery.restart.rto", "Restart drill: time to health and ready (RTO)", restart,
                      severity="blocker", writes=True,
                      expected=f"healthy and ready within {cfg.rto_max_s:g} s of the restart (RTO objective)")]
    expected = "no table has fewer rows after the restart than before"

    def counts() -> Outcome:
        if "before" not in state or not state.get("restarted"):
            return Outcome("skip", f"not tried: restart {checks[0].status}", expected)
        after = _counts(ctx, cfg.count_tables)
        diff = {t: after[t] - state["before"][t] for t in after}
        lost = {t: d for t, d in diff.items() if d < 0}
        grew = {t: d for t, d in diff.items() if d > 0}  # other writers meanwhile: nothing lost
        evidence = {"columns": ["table", "rows before", "rows after", "change"],
                    "sample": [[t, state["before"][t], after[t], f"{diff[t]:+d}"] for t in after]}
        metrics = {f"{t}.lost": -d for t, d in lost.items()}
        if lost:
            return Outcome("fail", "rows lost: " + ", ".join(f"{t} {d:+d}" for t, d in lost.items()), expected,
                           evidence, metrics)
        extra = f" ({', '.join(f'{t} {d:+d}' for t, d in grew.items())} written meanwhile)" if grew else ""
        return Outcome("pass", f"{plural(len(after), 'table')}: nothing lost{extra}", expected, evidence, metrics)

    if cfg.count_tables:
        checks.append(ctx.run("backup_recovery.restart.counts", "Nothing lost across the restart", counts,
                              severity="blocker", expected=expected))
    saved: dict[str, Any] = {"run_id": os.path.basename(ctx.run_dir.rstrip("/")) or f"adhoc-{uuid.uuid4().hex[:8]}"}
    broken: str | None = None
    for step in cfg.service_checks:

        def probe(step=step, broken=broken) -> Outcome:
            expected = steps_probe.expected_text(step, " after the restart")
            if not state.get("restarted"):
                return Outcome("skip", f"not tried: restart {checks[0].status}", expected)
            if broken:
                return Outcome("skip", f"not tried: step {broken} failed", expected)
            return steps_probe.run_step(ctx.http, step, saved, principals=ctx.principals,
                                        resolve=lambda text: ctx.resolve(text) or "", secret=ctx.secrets.add,
                                        expected=expected)[0]

        check = ctx.run(f"backup_recovery.restart.service.{step.name}", step.title or f"After restart: {step.name}",
                        probe, severity=step.severity)
        if check.status in FAILING and broken is None:
            broken = step.name
        checks.append(check)
    return checks


def show_objectives(ctx: PhaseRun[BackupRecoveryParams]) -> None:
    """RPO and RTO as measured against their objectives (gauges), from this phase's checks."""
    found = {c.id: c.metrics for c in ctx.checks}
    gauges: list[tuple[str, float, float, str]] = []
    rpo = found.get("backup_recovery.backup.age", {})
    rpo_s, rpo_max_h = rpo.get("rpo_s"), rpo.get("rpo_max_h")  # the age check sets both together
    if rpo_s is not None and rpo_max_h is not None:
        gauges.append(("RPO: newest backup's age", rpo_s / 3600, rpo_max_h, "h"))
    rto = found.get("backup_recovery.restart.rto", {})
    rto_s, rto_max_s = rto.get("rto_s"), rto.get("rto_max_s")  # the restart check sets both together
    if rto_s is not None and rto_max_s is not None:
        gauges.append(("RTO: restart until ready", rto_s, rto_max_s, "s"))
    if not gauges:
        ctx.note("No RPO or RTO was measured in this run.")
        return
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (title, value, limit, unit) in enumerate(gauges):
        ok = value <= limit
        fig.add_trace(go.Indicator(
            mode="number+gauge", value=round(value, 1),
            title={"text": f"{title}<br><span style='font-size:11px;color:#57606a'>objective ≤ {limit:g} {unit}"
                           "</span>", "font": {"size": 14}},
            number={"font": {"size": 24, "color": "#2da44e" if ok else "#cf222e"}, "suffix": f" {unit}",
                    "valueformat": ".1f"},
            domain={"x": [0.25, 1], "y": [i / len(gauges) + 0.08, (i + 1) / len(gauges) - 0.08]},
            gauge={"shape": "bullet", "axis": {"range": [0, max(limit, value) * 1.2], "ticksuffix": f" {unit}"},
                   "threshold": {"line": {"color": "#cf222e", "width": 3}, "value": limit},
                   "bar": {"color": "#2da44e" if ok else "#cf222e"}}))
    fig.update_layout(title="Measured RPO and RTO against their objectives (red line)", height=130 + 100 * len(gauges),
                      margin=dict(l=20, r=30, t=50, b=20))
    ctx.figure(fig)
