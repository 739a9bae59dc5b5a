"""Every preflight and integrity check can fail, and says why.

HTTP failure modes come from a small real HTTP server on 127.0.0.1 (refused connection, timeout,
wrong status, garbage body, missing field, slow responses); SQL failure modes from the real sandbox
PostgreSQL (missing table, too few rows, bad SQL, statement timeout, an attempted write refused by
the read-only session).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import wait_for

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.integrity import checks as integrity
from rehearsal_lib.phases.preflight import checks as preflight
from rehearsal_lib.sandbox import start_sandbox, stop_sandbox

pytestmark = pytest.mark.integration  # a real HTTP server and the real sandbox PostgreSQL


class Misbehaving(BaseHTTPRequestHandler):
    """Each path fails in one way."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health":
            self._send(500, b'{"status": "broken"}')
        elif self.path == "/ready":
            self._send(503, b'{"ready": false}')
        elif self.path == "/version-garbage":
            self._send(200, b"<html>not json</html>", "text/html")
        elif self.path == "/version-old":
            self._send(200, b'{"service": "api", "version": "1.0.0"}')
        elif self.path == "/flag-missing":
            self._send(200, b'{"something": "else"}')
        elif self.path == "/slow":
            time.sleep(0.06)
            self._send(200, b"{}")
        elif self.path == "/hang":
            time.sleep(3)
            self._send(200, b"{}")
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        self._send(401 if "Bearer right" not in self.headers.get("Authorization", "") else 201, b'{"id": "s1"}')


@pytest.fixture(scope="module")
def server() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase(tmp_path: Path, name: str, base_url: str, phases: dict, **target) -> PhaseRun:
    doc = {"name": "probe", "target": {"base_url": base_url, "timeout_s": 1, **target}, "phases": phases}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


def test_refused_connection_is_error_never_pass(tmp_path):
    ctx = phase(tmp_path, "preflight", f"http://127.0.0.1:{closed_port()}", {})
    for check in (preflight.check_health(ctx), preflight.check_ready(ctx), preflight.check_identity(ctx)):
        assert check.status == "error" and "connection failed" in check.observed


def test_wrong_status_fails_with_code(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"ready_endpoint": "/ready"}})
    health, ready = preflight.check_health(ctx), preflight.check_ready(ctx)
    assert health.status == "fail" and "HTTP 500" in health.observed
    assert ready.status == "fail" and "HTTP 503" in ready.observed
    assert health.evidence["body"] == {"status": "broken"}


def test_identity_garbage_body_and_wrong_version_fail(tmp_path, server):
    garbage = phase(tmp_path, "preflight", server, {"preflight": {"version_endpoint": "/version-garbage"}})
    assert preflight.check_identity(garbage).status == "fail"
    old = phase(tmp_path, "preflight", server,
                {"preflight": {"version_endpoint": "/version-old", "expected_version": "2.0.0"}})
    check = preflight.check_identity(old)
    assert check.status == "fail" and check.observed == "api runs 1.0.0, not 2.0.0"


def test_freeze_flag_missing_field_fails(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"exam_mode": {"endpoint": "/flag-missing"}}})
    check = preflight.check_exam_mode(ctx)
    assert check.status == "fail" and "no 'exam_mode' field" in check.observed


def test_timeout_is_error(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"health_endpoint": "/hang"}})
    check = preflight.check_health(ctx)
    assert check.status == "error" and "timed out" in check.observed


def test_slow_endpoint_fails_latency_gate(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server,
                {"preflight": {"latency": {"endpoints": ["/slow"], "samples": 3, "p95_ms": 20,
                                          "min_responses": 3}}})
    check = preflight.check_latency(ctx)
    assert check.status == "fail" and check.metrics["p95_ms"] >= 50 and check.observed.startswith("p95 ")
    assert check.evidence["limit"].startswith("p95 at most 20 ms") and "over 3 requests" in check.evidence["/slow"]


def test_latency_with_failing_endpoint_is_not_a_pass(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server,
                {"preflight": {"latency": {"endpoints": ["/health"], "samples": 2, "p95_ms": 1000}}})
    check = preflight.check_latency(ctx)
    assert check.status == "error" and check.metrics["errors"] == 2 and "no successful response" in check.observed
    assert check.evidence["requests"] == "2 sent one after another, 2 failed"


def test_journey_wrong_token_fails_and_later_steps_skip(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROBE_TOKEN", "wrong")
    steps = [{"name": "create", "method": "POST", "path": "/sessions", "expect_status": 201, "save": {"sid": "id"}},
             {"name": "answer", "method": "POST", "path": "/sessions/{sid}/answers", "expect_status": 201}]
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"journey": steps}}, auth_token="${PROBE_TOKEN}")
    create, answer = preflight.check_journey(ctx)
    # answered 401 with our credentials: the step never reached its handler, so it proves nothing either way
    assert create.status == "error" and "HTTP 401" in create.observed and "not authenticated" in create.observed
    assert answer.status == "skip" and "step create failed" in answer.observed
    monkeypatch.setenv("PROBE_TOKEN", "right")
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"journey": steps}}, auth_token="${PROBE_TOKEN}")
    assert [c.status for c in preflight.check_journey(ctx)] == ["pass", "pass"]
    assert "right" not in json.dumps([c.model_dump() for c in ctx.checks])  # the token is never evidence


def test_journey_refused_in_production_without_flag(tmp_path, server, monkeypatch):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    steps = [{"name": "create", "method": "POST", "path": "/sessions", "expect_status": 201}]
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump({"name": "prod", "environment": {"kind": "production"},
                                    "target": {"base_url": server}, "phases": {"preflight": {"journey": steps}}}))
    ctx = PhaseRun("preflight", str(path), params=load_params(str(path)))
    [check] = preflight.check_journey(ctx)
    assert check.status == "skip" and "production" in check.observed


def test_database_unreachable_is_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_DB", f"postgresql://u:pw@127.0.0.1:{closed_port()}/x")
    ctx = phase(tmp_path, "preflight", "http://127.0.0.1:9", {}, database_url="${PROBE_DB}")
    check = preflight.check_database(ctx)
    assert check.status == "error" and "refused" in check.observed.lower()


@pytest.fixture(scope="module")
def sandbox_db(tmp_path_factory) -> str:
    home = tmp_path_factory.mktemp("sbx")
    state = start_sandbox("default", home=home)
    yield state.db_url
    stop_sandbox("default", home=home)


def integrity_phase(tmp_path: Path, monkeypatch, db_url: str, block: dict, timeout_ms: int = 5000) -> PhaseRun:
    monkeypatch.setenv("PROBE_DB", db_url)
    doc = {"name": "probe", "target": {"base_url": "http://127.0.0.1:9", "database_url": "${PROBE_DB}"},
           "safety": {"sql_statement_timeout_ms": timeout_ms}, "phases": {"integrity": block}}
    path = tmp_path / "integrity.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun("integrity", str(path), params=load_params(str(path)))


def test_missing_table_and_too_few_rows_fail(tmp_path, monkeypatch, sandbox_db):
    ctx = integrity_phase(tmp_path, monkeypatch, sandbox_db, {"critical_tables": [
        {"name": "no_such_table"}, {"name": "sessions", "min_rows": 1_000_000}, {"name": "exams", "min_rows": 1}]})
    missing, few, ok = integrity.check_critical_tables(ctx)
    assert missing.status == "fail" and missing.observed == "table does not exist"
    assert few.status == "fail" and few.metrics["rows"] < 1_000_000
    assert ok.status == "pass"


def test_missing_index_fails_listing_what_exists(tmp_path, monkeypatch, sandbox_db):
    ctx = integrity_phase(tmp_path, monkeypatch, sandbox_db,
                          {"expected_indexes": [{"name": "idx_nope", "table": "answers"}]})
    [check] = integrity.check_expected_indexes(ctx)
    assert check.status == "fail" and "idx_answers_session_id" in check.evidence["indexes_on_table"]


def test_zero_row_check_with_rows_fails_with_sample(tmp_path, monkeypatch, sandbox_db):
    ctx = integrity_phase(tmp_path, monkeypatch, sandbox_db, {"evidence_rows": 3, "zero_row_checks": [
        {"name": "all_sessions", "title": "t", "sql": "SELECT id FROM sessions;"}]})
    [check] = integrity.check_all_zero_rows(ctx)
    assert check.status == "fail" and check.metrics["rows"] >= 60 and len(check.evidence["sample"]) == 3


def test_bad_sql_and_statement_timeout_are_errors(tmp_path, monkeypatch, sandbox_db):
    ctx = integrity_phase(tmp_path, monkeypatch, sandbox_db, {"zero_row_checks": [
        {"name": "typo", "title": "t", "sql": "SELEC id FROM sessions"},
        {"name": "slow", "title": "t", "sql": "SELECT 1 FROM pg_sleep(120)"}]}, timeout_ms=300)
    typo, slow = integrity.check_all_zero_rows(ctx)
    assert typo.status == "error" and "syntax error" in typo.observed
    assert slow.status == "error" and "statement timeout" in slow.observed
    # the statement was cut off, not run to its end: the bound holds on any machine (120 s sleep vs 60 s)
    assert slow.duration_s < 60


def test_sql_checks_cannot_write(tmp_path, monkeypatch, sandbox_db):
    from rehearsal_lib.probes.sql import query

    ctx = integrity_phase(tmp_path, monkeypatch, sandbox_db, {"zero_row_checks": [
        {"name": "sneaky", "title": "t", "sql": "SELECT n FROM (SELECT nextval('events_id_seq') AS n) q WHERE n < 0"}]})
    [check] = integrity.check_all_zero_rows(ctx)
    assert check.status == "error" and "read-only transaction" in check.observed
    with pytest.raises(Exception, match="read-only transaction"):
        query(ctx.engine, "DELETE FROM events RETURNING id")
    ctx2 = integrity_phase(tmp_path, monkeypatch, sandbox_db, {"critical_tables": [{"name": "events", "min_rows": 1}]})
    assert integrity.check_critical_tables(ctx2)[0].status == "pass"  # nothing was deleted


def test_freeze_quiet_fails_while_a_long_query_runs(tmp_path, monkeypatch, sandbox_db):
    import sqlalchemy as sa

    monkeypatch.setenv("PROBE_DB", sandbox_db)
    spec = {"name": "no_long_queries", "title": "t", "sql":
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND now() - query_start > interval '1 second'"}
    doc = {"name": "probe", "target": {"base_url": "http://127.0.0.1:9", "database_url": "${PROBE_DB}"},
           "phases": {"preflight": {"freeze_quiet": [spec]}}}
    path = tmp_path / "freeze.yaml"
    path.write_text(yaml.safe_dump(doc))
    ctx = PhaseRun("preflight", str(path), params=load_params(str(path)))
    assert [c.status for c in preflight.check_freeze_quiet(ctx)] == ["pass"]
    engine = sa.create_engine(sandbox_db)
    long_sql = "SELECT pg_sleep(600) AS freeze_quiet_probe"

    def long_query() -> None:
        with engine.connect() as conn, contextlib.suppress(sa.exc.OperationalError):  # cancelled below
            conn.execute(sa.text(long_sql))

    def running_for_over_a_second() -> list:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE query = :q AND state = 'active' "
                                        "AND now() - query_start > interval '1.5 seconds'"), {"q": long_sql}).all()

    busy = threading.Thread(target=long_query, daemon=True)
    busy.start()
    try:
        [(pid,)] = wait_for(running_for_over_a_second, 120, "the long query was not running for 1.5 s")
        [check] = preflight.check_freeze_quiet(ctx)
        assert check.id == "preflight.freeze.no_long_queries"
        assert check.status == "fail" and check.metrics["rows"] == 1
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = :q"),
                         {"q": long_sql})
        busy.join(timeout=60)
        engine.dispose()
