"""A role that cannot see other roles' sessions in pg_stat_activity gets `error`, never a pass on what it
cannot see: the load phase's connection count and any zero-row check over pg_stat_activity (a freeze check)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from rehearsal_lib.config import ZeroRowCheck, load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.integrity.checks import check_zero_rows
from rehearsal_lib.phases.load import checks as load

pytestmark = pytest.mark.integration  # the real sandbox database

LONG_QUERIES = ("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND now() - query_start > interval '1 second'")


@pytest.fixture(scope="module")
def roles(sandbox):
    """The sandbox's app role (sees its own sessions) and a monitoring role without pg_read_all_stats."""
    admin = sa.create_engine(sandbox.admin_db_url)
    with admin.begin() as conn:
        conn.execute(sa.text("DROP ROLE IF EXISTS rehearsal_blind"))
        conn.execute(sa.text("CREATE ROLE rehearsal_blind LOGIN PASSWORD 'blind-pw-123'"))
        conn.execute(sa.text("GRANT CONNECT ON DATABASE exam TO rehearsal_blind"))
    admin.dispose()
    blind = sa.engine.make_url(sandbox.db_url).set(username="rehearsal_blind", password="blind-pw-123")
    return {"app": sandbox.db_url, "blind": blind.render_as_string(hide_password=False), "admin": sandbox.admin_db_url}


def _ctx(tmp_path: Path, base_url: str, phases: dict) -> PhaseRun:
    doc = {"name": "probe", "environment": {"kind": "staging"},
           "target": {"base_url": base_url, "database_url": "${VIS_DB_URL}", "timeout_s": 5}, "phases": phases,
           "safety": {"allow_destructive": True}}  # the load phase's checks write
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(next(iter(phases)), str(path), params=load_params(str(path)))


def _hold_session_running(admin_url: str):
    """Another role's query running for 30 s: what a freeze check must see."""
    import threading

    eng = sa.create_engine(admin_url)
    started = threading.Event()

    def run() -> None:
        with eng.connect() as conn:
            started.set()
            try:
                conn.execute(sa.text("SELECT pg_sleep(30)"))
            except Exception:  # noqa: BLE001 - cancelled at the end of the test
                pass

    threading.Thread(target=run, daemon=True).start()
    started.wait(10)
    return eng


def test_zero_row_check_over_pg_stat_activity_by_a_blind_role_is_an_error(tmp_path, sandbox, roles, monkeypatch):
    eng = _hold_session_running(roles["admin"])
    try:
        spec = ZeroRowCheck(name="no_long_running_queries", title="No long query", sql=LONG_QUERIES)
        monkeypatch.setenv("VIS_DB_URL", roles["blind"])
        ctx = _ctx(tmp_path, sandbox.base_url, {"integrity": {"enabled": True}})
        import time

        time.sleep(1.5)  # the held query is now older than the check's 1 s bound
        blind = check_zero_rows(ctx, spec)
        assert blind.status == "error", blind.observed  # today: pass, "0 row(s)"
        assert "cannot see" in blind.observed and "pg_read_all_stats" in blind.observed
        monkeypatch.setenv("VIS_DB_URL", roles["admin"])
        admin_ctx = _ctx(tmp_path, sandbox.base_url, {"integrity": {"enabled": True}})
        seeing = check_zero_rows(admin_ctx, spec)
        admin_ctx.close()  # its pooled session would be another role's session for the next test
        ctx.close()
        assert seeing.status == "fail"  # a role that can see finds the running query
    finally:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                                 "'SELECT pg_sleep(30)%' AND pid <> pg_backend_pid()"))
        eng.dispose()


def test_load_connection_count_by_a_blind_role_is_an_error(tmp_path, sandbox, roles, monkeypatch):
    stage = {"name": "ready", "rate": 10, "duration_s": 1,
             "scenarios": [{"name": "ready_req", "path": "/v1/ready", "auth": False}]}
    load_block = {"enabled": True, "stages": [stage],
                  "generator": {"max_scheduler_lag_ms": 2000, "min_rate_ratio": 0.5, "timeout_s": 2},
                  "db_connections": {"sample_interval_s": 0.2, "max_usage_ratio": 0.9}}
    monkeypatch.setenv("VIS_DB_URL", roles["blind"])
    ctx = _ctx(tmp_path, sandbox.base_url, {"load": load_block})
    blind = next(c for c in load.check_db_connections(ctx, load.run_load_phase(ctx)) if c.id == "load.db.connections")
    assert blind.status == "error", blind.observed  # today: pass, "peak 0 of max_connections"
    assert "cannot see" in blind.observed
    ctx.close()  # its pooled session is another role's session for the app role
    monkeypatch.setenv("VIS_DB_URL", roles["app"])  # the app's own role sees the app's sessions
    ctx = _ctx(tmp_path, sandbox.base_url, {"load": load_block})
    seeing = next(c for c in load.check_db_connections(ctx, load.run_load_phase(ctx)) if c.id == "load.db.connections")
    assert seeing.status == "pass" and seeing.metrics["peak_connections"] > 0, (seeing.observed, seeing.metrics)
