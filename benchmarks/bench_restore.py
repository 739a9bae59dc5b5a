"""How long the backup_recovery restore check takes as the database grows (10k vs 1M rows).

For each size: a database on a temporary sandbox's PostgreSQL with one events-like table of N rows
(bigint id, uuid, text, timestamptz, jsonb payload; primary key and one index), dumped with
``pg_dump -Fc``; then the real check (``backup_recovery.check_restore``: create a scratch database,
``pg_restore``, count rows, compare with the source, drop the scratch database) runs RUNS times.
Writes benchmarks/results/restore.json (medians). Run: python benchmarks/bench_restore.py [sizes...]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.backup_recovery import checks as backup_recovery
from rehearsal_lib.probes.command import libpq_args, with_database
from rehearsal_lib.sandbox import start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.manager import _pg_bin

RUNS = 3
SIZES = [10_000, 1_000_000]
OUT = Path(__file__).resolve().parent / "results" / "restore.json"


def build(admin_url: str, n: int, dump: Path) -> tuple[str, float, int]:
    """Create database bench_<n> with n rows and dump it; returns (url, dump seconds, dump bytes)."""
    name = f"bench_{n}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = with_database(admin_url, name)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE events (id bigserial PRIMARY KEY, session_id uuid NOT NULL, type text NOT NULL, "
            "occurred_at timestamptz NOT NULL, payload jsonb NOT NULL)")
        conn.exec_driver_sql(
            f"INSERT INTO events (session_id, type, occurred_at, payload) SELECT gen_random_uuid(), "
            f"(ARRAY['started','answered','submitted'])[1 + mod(i, 3)], now() - make_interval(secs => i), "
            f"jsonb_build_object('question_id', mod(i, 30), 'n', i) FROM generate_series(1, {n}) AS i")
        conn.exec_driver_sql("CREATE INDEX idx_events_session_id ON events (session_id)")
    eng.dispose()
    args, env, db = libpq_args(url)
    t0 = time.perf_counter()
    subprocess.run([str(_pg_bin() / "pg_dump"), *args, "-d", db, "-Fc", "-f", str(dump)], check=True,
                   env={**os.environ, **env})
    return url, time.perf_counter() - t0, dump.stat().st_size


def main(sizes: list[int]) -> dict:
    results: dict = {"runs_per_size": RUNS, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        home = Path(tmp) / "home"
        state = start_sandbox("default", home=home)
        try:
            for n in sizes:
                bdir = Path(tmp) / f"b{n}"
                bdir.mkdir()
                url, dump_s, size = build(state.admin_db_url, n, bdir / "bench.dump")
                os.environ.update(BENCH_DB=url, BENCH_ADMIN=state.admin_db_url, BENCH_BIN=str(_pg_bin()))
                params = {"name": "bench", "target": {"base_url": "http://127.0.0.1:9", "database_url": "${BENCH_DB}",
                                                      "timeout_s": 10},
                          "safety": {"sql_statement_timeout_ms": 120_000},
                          "phases": {"backup_recovery": {
                              "backup": {"path": str(bdir)},
                              "restore": {"scratch_database_url": "${BENCH_ADMIN}", "pg_bin_dir": "${BENCH_BIN}",
                                          "tables": [{"name": "events", "as_of_column": "occurred_at"}]}}}}
                pfile = Path(tmp) / f"bench-{n}.yaml"
                pfile.write_text(yaml.safe_dump(params))
                check_s, restore_s = [], []
                for _ in range(RUNS):
                    ctx = PhaseRun("backup_recovery", str(pfile), params=load_params(str(pfile)))
                    t0 = time.perf_counter()
                    restored, counts = backup_recovery.check_restore(ctx)
                    check_s.append(time.perf_counter() - t0)
                    assert restored.status == "pass" and counts.status == "pass", (restored.observed, counts.observed)
                    restore_s.append(restored.metrics["restore_s"])
                    ctx.close()
                results["sizes"][str(n)] = {
                    "rows": n, "dump_bytes": size, "pg_dump_s": round(dump_s, 3),
                    "restore_check_s": round(statistics.median(check_s), 3),
                    "pg_restore_s": round(statistics.median(restore_s), 3),
                    "all_check_s": [round(x, 3) for x in check_s]}
                print(f"{n:>9} rows: dump {size / 1e6:.1f} MB; restore check {statistics.median(check_s):.2f} s "
                      f"(pg_restore {statistics.median(restore_s):.2f} s)", flush=True)
        finally:
            stop_sandbox("default", home=home)
    return results


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    res = main(sizes)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {OUT}")
