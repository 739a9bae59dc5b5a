"""Cost of the SQL-heavy checks as the sandbox's data grows (issue #18 item 4).

For each scale (answers rows; sessions ~N/6.7, events ~1.25 N, access_log N, data_exports N/1000; see
rehearsal_lib/sandbox/scale.py) a sandbox starts in a temporary home with every migration applied and
the ``--scale`` seed, then the real checks run with the shipped sandbox params (statement timeout as
shipped, 5000 ms) through the same functions the phase notebooks call:

- integrity: every zero-row check, the critical tables' row counts, the expected indexes;
- retention: the windows, the purge dry run, the PII sample of each column;
- backup_recovery: the restore of the sandbox's backup (taken after the scale seed) with row counts;
- migrations: the post-conditions (catalog queries).

Before/after: each round runs every check twice, alternating "shipped" (this branch) and "main" (what
the checks did before: migration 016_scale_indexes.sql's indexes dropped, re-created for the next
round; the zero-row checks' count_and_sample as on main, a count then a bare ``LIMIT`` query for the
sample), so the two sides share the machine's load. Times are medians of ``--runs`` rounds (``Check.duration_s``);
the restore check runs ``--restore-runs`` times, on the shipped side only (its cost is pg_restore's).

Writes benchmarks/results/scale.json. Run under the shared lock:
    flock /tmp/bench.lock python benchmarks/bench_scale.py --scales 1k,100k,1M
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.backup_recovery import checks as backup_recovery
from rehearsal_lib.phases.integrity import checks as integrity
from rehearsal_lib.phases.migrations import checks as migrations
from rehearsal_lib.phases.retention import checks as retention
from rehearsal_lib.probes import sql as sqlprobe
from rehearsal_lib.results import Check
from rehearsal_lib.sandbox import apply_sandbox_env, start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.database import MIGRATIONS_DIR
from rehearsal_lib.sandbox.scale import parse_scale

OUT = Path(__file__).resolve().parent / "results" / "scale.json"
BUILTIN = Path(__file__).resolve().parents[1] / "rehearsal_lib" / "builtin_params" / "sandbox.yaml"
INDEX_MIGRATION = MIGRATIONS_DIR / "016_scale_indexes.sql"

PHASES: dict[str, list[Callable[[PhaseRun[Any]], Any]]] = {
    "integrity": [integrity.check_all_zero_rows, integrity.check_critical_tables, integrity.check_expected_indexes],
    "retention": [retention.check_windows, retention.check_purge_dry_run, retention.check_pii],
    "migrations": [migrations.check_postconditions],
}


def added_indexes() -> list[str]:
    """The index names migration 016 creates (the ones the "main" side drops)."""
    if not INDEX_MIGRATION.exists():
        return []
    return re.findall(r"CREATE INDEX (\w+)", INDEX_MIGRATION.read_text())


def count_then_sample_main(engine: Any, sql: str, sample: int) -> tuple[int, list[str], list[list[Any]]]:
    """count_and_sample as on main (before this change): a count, then a bare LIMIT query for the sample."""
    import sqlalchemy as sa

    inner = sqlprobe.strip_statement(sql)
    with engine.connect() as conn:
        sqlprobe.guard_session_visibility(conn, inner)
        count = conn.execute(sa.text(f"SELECT count(*) FROM ({inner}) AS rehearsal_q")).scalar_one()
        result = conn.execute(sa.text(f"SELECT * FROM ({inner}) AS rehearsal_q LIMIT {int(sample)}"))
        columns = list(result.keys())
        rows = [[sqlprobe._jsonable(v) for v in row] for row in result.fetchall()]
    return int(count), columns, rows


def params_file(tmp: Path) -> Path:
    """The shipped sandbox params without the `sandbox:` block (the bench starts its own sandbox)."""
    doc = yaml.safe_load(BUILTIN.read_text())
    doc.pop("sandbox", None)
    doc["phases"] = {k: v for k, v in doc["phases"].items() if k in {*PHASES, "backup_recovery"}}
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def as_list(res: Any) -> list[Check]:
    return [c for c in (res if isinstance(res, list) else [res]) if c is not None]


def run_checks(pfile: Path) -> dict[str, Check]:
    out: dict[str, Check] = {}
    params = load_params(str(pfile))
    for phase, funcs in PHASES.items():
        ctx = PhaseRun(phase, str(pfile), params=params)
        try:
            for f in funcs:
                for c in as_list(f(ctx)):
                    out[c.id] = c
        finally:
            ctx.close()
    return out


def set_indexes(admin_url: str, present: bool) -> float:
    """Create (the migration's own SQL, IF NOT EXISTS) or drop migration 016's indexes; returns the seconds it took."""
    names = added_indexes()
    if not names:
        return 0.0
    url = admin_url.replace("postgresql+psycopg://", "postgresql://")
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        if present:
            conn.execute(INDEX_MIGRATION.read_text().replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ").encode())
        else:
            for n in names:
                conn.execute(f'DROP INDEX IF EXISTS "{n}"')
        conn.execute("ANALYZE")
    return time.perf_counter() - t0


def measure(n: int, runs: int, restore_runs: int, tmp: Path) -> dict[str, Any]:
    home = tmp / f"home-{n}"
    t0 = time.perf_counter()
    state = start_sandbox("default", home=home, scale_rows=n)
    start_s = time.perf_counter() - t0
    sides = ["shipped", "main"]
    times: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    status: dict[str, dict[str, set[str]]] = {s: {} for s in sides}
    observed: dict[str, str] = {}
    index_s: list[float] = []
    try:
        apply_sandbox_env(state)
        pfile = params_file(tmp)
        timeout_ms = load_params(str(pfile)).safety.sql_statement_timeout_ms
        for r in range(runs):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                index_s.append(set_indexes(state.admin_db_url, side == "shipped"))
                integrity.count_and_sample = sqlprobe.count_and_sample if side == "shipped" else count_then_sample_main
                for cid, c in run_checks(pfile).items():
                    times[side].setdefault(cid, []).append(c.duration_s)
                    status[side].setdefault(cid, set()).add(c.status)
                    if c.status != "pass":
                        observed[f"{side}:{cid}"] = c.observed
        set_indexes(state.admin_db_url, True)
        integrity.count_and_sample = sqlprobe.count_and_sample
        restore: dict[str, list[float]] = {}
        for _ in range(restore_runs):
            ctx = PhaseRun("backup_recovery", str(pfile), params=load_params(str(pfile)))
            try:
                for c in backup_recovery.check_restore(ctx):
                    restore.setdefault(c.id, []).append(c.duration_s)
                    status["shipped"].setdefault(c.id, set()).add(c.status)
                    if c.status != "pass":
                        observed[f"shipped:{c.id}"] = c.observed
            finally:
                ctx.close()
        for cid, xs in restore.items():
            times["shipped"][cid] = xs
        rows = count_rows(state.admin_db_url)
    finally:
        stop_sandbox("default", home=home)
    return {
        "answers_requested": n, "rows": rows, "scale_seed": state.scale, "sandbox_start_s": round(start_s, 2),
        "statement_timeout_ms": timeout_ms, "index_toggle_s": [round(x, 2) for x in index_s],
        "checks": {side: {cid: {"median_s": round(statistics.median(xs), 4), "runs_s": [round(x, 4) for x in xs],
                                "statuses": sorted(status[side][cid])}
                          for cid, xs in times[side].items()} for side in sides},
        "not_passed": observed,
    }


def count_rows(admin_url: str) -> dict[str, int]:
    url = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("sessions", "answers", "events", "access_log", "data_exports")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1k,100k,1M", help="comma-separated answers rows, e.g. 1k,100k,1M")
    ap.add_argument("--runs", type=int, default=3, help="rounds of every SQL check per side (default 3)")
    ap.add_argument("--restore-runs", type=int, default=1, help="runs of the restore check (default 1)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    scales = [parse_scale(s) for s in args.scales.split(",") if s.strip()]
    res: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()], "runs": args.runs,
        "restore_runs": args.restore_runs, "added_indexes": added_indexes(), "scales": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in scales:
            load = os.getloadavg()
            res["scales"][str(n)] = {**measure(n, args.runs, args.restore_runs, Path(tmp)),
                                     "loadavg": [round(x, 2) for x in load]}
            sc = res["scales"][str(n)]
            print(f"{n:>9,} answers: seed {sc['scale_seed'].get('seconds', 0):.1f} s, sandbox start "
                  f"{sc['sandbox_start_s']:.1f} s; slowest shipped check "
                  + max(((c, v["median_s"]) for c, v in sc["checks"]["shipped"].items()), key=lambda x: x[1]).__str__(),
                  flush=True)
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
