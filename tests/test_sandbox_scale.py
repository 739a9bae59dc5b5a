"""The sandbox's scale seed (``--scale``), and the SQL checks' bounds at scale.

One real sandbox per module, seeded at 1k answers (never more in tests: benchmarks/bench_scale.py
measures 100k and 1M). Its data must pass the integrity and retention checks as the small seed does, and
a check whose statement outlives the statement timeout is an ``error`` with the reason, never a pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.integrity import checks as integrity
from rehearsal_lib.phases.retention import checks as retention
from rehearsal_lib.probes.sql import count_and_sample
from rehearsal_lib.sandbox import apply_sandbox_env, seed, start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.scale import parse_scale

BUILTIN = Path(__file__).resolve().parents[1] / "rehearsal_lib" / "builtin_params" / "sandbox.yaml"


def test_parse_scale() -> None:
    assert [parse_scale(s) for s in ("1k", "100K", "1M", "2500", "1.5k", 0)] == [1_000, 100_000, 1_000_000, 2_500,
                                                                                  1_500, 0]
    for bad in ("ten", "1G", "-5", "99M"):
        with pytest.raises(ValueError):
            parse_scale(bad)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("sbx-scale")
    state = start_sandbox("default", home=home, scale_rows=1000)
    yield state
    stop_sandbox("default", home=home)


def _admin(state: Any) -> psycopg.Connection:
    return psycopg.connect(state.admin_db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _counts(state: Any) -> dict[str, int]:
    with _admin(state) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("sessions", "answers", "events", "access_log", "data_exports")}


def _ctx(state: Any, tmp_path: Path, phase: str, block: dict[str, Any] | None = None,
         timeout_ms: int | None = None) -> PhaseRun[Any]:
    """A phase of the shipped sandbox params (its own block, or `block`) on the scaled sandbox."""
    apply_sandbox_env(state)
    doc = yaml.safe_load(BUILTIN.read_text())
    doc.pop("sandbox")
    doc["phases"] = {phase: block if block is not None else doc["phases"][phase]}
    if timeout_ms:
        doc["safety"]["sql_statement_timeout_ms"] = timeout_ms
    path = tmp_path / f"{phase}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(phase, str(path), params=load_params(str(path)))


@pytest.mark.integration
def test_scale_seeds_the_requested_rows(scaled) -> None:
    added = scaled.scale
    assert added["answers"] == 1000 and added["access_log"] == 1000 and added["data_exports"] == 1
    # two in three sessions submitted with 7-10 answers, the rest 0-6: ~6.7 answers per session
    assert 130 <= added["sessions"] <= 170
    # one started event per session, one answered per answer, one submitted per submitted session
    assert added["sessions"] + 1000 < added["events"] < 2 * added["sessions"] + 1000
    got = _counts(scaled)
    # on top of the unchanged deterministic seed (60 sessions) and the release's backfills (200 + 3)
    assert got["sessions"] == seed.N_SESSIONS + added["sessions"]
    assert got["answers"] > 1000 and got["answers"] - 1000 < seed.N_SESSIONS * 10
    assert got["access_log"] == 200 + 1000 and got["data_exports"] == 3 + 1
    with _admin(scaled) as conn:  # deterministic ids: the same scale gives the same rows
        assert conn.execute("SELECT count(*) FROM sessions WHERE id = md5('scale-session-1')::uuid").fetchone()[0] == 1


@pytest.mark.integration
def test_scaled_data_passes_the_integrity_and_retention_checks(scaled, tmp_path) -> None:
    """The scale seed's rows are consistent: every zero-row check and retention window passes on them."""
    ctx = _ctx(scaled, tmp_path, "integrity")
    checks = integrity.check_all_zero_rows(ctx) + integrity.check_critical_tables(ctx)
    assert {c.id: c.status for c in checks if c.status != "pass"} == {}
    ctx = _ctx(scaled, tmp_path, "retention")
    checks = [*retention.check_windows(ctx), retention.check_purge_dry_run(ctx), *retention.check_pii(ctx)]
    assert {c.id: (c.status, c.observed) for c in checks if c.status != "pass"} == {}


@pytest.mark.integration
def test_count_and_sample_in_one_execution_is_exact(scaled, tmp_path) -> None:
    """count_and_sample's window count is the exact count, whatever the sample's size (0 included)."""
    engine = _ctx(scaled, tmp_path, "integrity").engine
    sql = "SELECT id FROM sessions WHERE candidate_id IN ('cand-0001', 'cand-0002')"
    assert count_and_sample(engine, sql, 10)[0] == 2
    assert count_and_sample(engine, sql, 2)[0] == 2
    n = _counts(scaled)["sessions"]
    full = count_and_sample(engine, "SELECT id FROM sessions", 5)
    assert full[0] == n and len(full[2]) == 5
    assert count_and_sample(engine, "SELECT id FROM sessions", 0) == (n, ["id"], [])


@pytest.mark.integration
def test_timed_out_retention_and_table_checks_are_errors(scaled, tmp_path) -> None:
    """A statement cut off by the statement timeout makes the window, PII and row-count checks `error` with the
    reason (they read a relation whose every read sleeps 3 s; the timeout is 200 ms)."""
    with _admin(scaled) as conn:
        conn.execute("CREATE OR REPLACE VIEW slow_log AS SELECT now() - interval '1 day' AS created_at, "
                     "'{}'::jsonb AS payload FROM pg_sleep(3)")
        conn.execute("GRANT SELECT ON slow_log TO rehearsal_app")
    try:
        ctx = _ctx(scaled, tmp_path, "retention", {
            "windows": [{"table": "slow_log", "column": "created_at", "days": 30}],
            "pii_scan": {"columns": [{"table": "slow_log", "column": "payload"}]}}, timeout_ms=200)
        checks = [*retention.check_windows(ctx), *retention.check_pii(ctx)]
        ctx = _ctx(scaled, tmp_path, "integrity", {"critical_tables": [{"name": "slow_log", "min_rows": 1}]},
                   timeout_ms=200)
        checks += integrity.check_critical_tables(ctx)
        assert [(c.id, c.status) for c in checks] == [
            ("retention.window.slow_log", "error"), ("retention.pii.slow_log.payload", "error"),
            ("integrity.table.slow_log", "error")]
        assert all("statement timeout" in c.observed and c.duration_s < 3 for c in checks), [c.observed for c in checks]
    finally:
        with _admin(scaled) as conn:
            conn.execute("DROP VIEW slow_log")


@pytest.mark.integration
def test_restored_row_counts_run_under_the_statement_timeout(scaled, tmp_path) -> None:
    """The counts on the restored scratch copy are bounded by the statement timeout like every other statement:
    a count that outlives it is an `error` with the reason (before: unbounded, it passed after 3 s)."""
    import os
    import subprocess

    from rehearsal_lib.phases.backup_recovery import checks as backup_recovery
    from rehearsal_lib.probes.command import libpq_args
    from rehearsal_lib.sandbox.manager import _pg_bin

    with _admin(scaled) as conn:
        conn.execute("CREATE OR REPLACE VIEW slow_count AS SELECT 1 AS one FROM pg_sleep(3)")
    try:
        args, env, db = libpq_args(scaled.admin_db_url)
        subprocess.run([str(_pg_bin() / "pg_dump"), *args, "-d", db, "-Fc", "-f", str(tmp_path / "exam.dump")],
                       check=True, env={**os.environ, **env})
    finally:
        with _admin(scaled) as conn:
            conn.execute("DROP VIEW slow_count")
    ctx = _ctx(scaled, tmp_path, "backup_recovery", {
        "backup": {"path": str(tmp_path), "pattern": "*.dump"},
        "restore": {"scratch_database_url": "${REHEARSAL_SANDBOX_ADMIN_DB_URL}",
                    "pg_bin_dir": "${REHEARSAL_SANDBOX_PG_BIN}", "tables": [{"name": "slow_count"}]}}, timeout_ms=200)
    restored, counts = backup_recovery.check_restore(ctx)
    assert restored.status == "error" and "statement timeout" in restored.observed, restored.observed
    assert counts.status == "skip"


@pytest.mark.integration
def test_pii_sample_includes_the_newest_rows(scaled, tmp_path) -> None:
    """On a table bigger than the sample, the PII scan reads the newest rows too (before: only the first
    sample_rows in heap order, so a release writing plaintext PII into a big table passed)."""
    with _admin(scaled) as conn:
        conn.execute("INSERT INTO access_log (candidate_id, path, status, created_at, payload) VALUES ('cand-0012', "
                     "'/v1/sessions', 201, now(), '{\"contact\": \"jane.doe@example.org\"}')")
    try:
        block = {"pii_scan": {"sample_rows": 100, "columns": [{"table": "access_log", "column": "payload"}]}}
        [check] = retention.check_pii(_ctx(scaled, tmp_path, "retention", block))
        assert check.status == "fail" and check.metrics["email"] == 1, (check.observed, check.evidence)
        assert check.metrics["rows_scanned"] == 100 and check.evidence["rows_picked"].startswith("the newest 50 ")
        # a sample as big as the table reads it whole: every row once
        block["pii_scan"]["sample_rows"] = 5000
        [whole] = retention.check_pii(_ctx(scaled, tmp_path, "retention", block))
        assert whole.metrics["rows_scanned"] == _counts(scaled)["access_log"] and whole.metrics["email"] == 1
    finally:
        with _admin(scaled) as conn:
            conn.execute("DELETE FROM access_log WHERE payload ? 'contact'")
