"""Integration tests of the sandbox target: real PostgreSQL, real uvicorn, real HTTP and SQL."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import stat
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import run, wait_for
from prometheus_client.parser import text_string_to_metric_families

from rehearsal_lib.sandbox import (
    PLANTED_DEFECTS,
    VARIANTS,
    SandboxState,
    ensure_sandbox,
    hardening,
    sandbox_home,
    sandbox_status,
    start_sandbox,
    stop_sandbox,
)
from rehearsal_lib.sandbox.database import list_migrations

pytestmark = pytest.mark.integration

TOKEN = "test-" + secrets.token_hex(12)

ZERO_ROW_QUERIES = {
    "orphaned_answers": ("SELECT a.id FROM answers a LEFT JOIN sessions s ON s.id = a.session_id WHERE s.id IS NULL"),
    "duplicate_submits": (
        "SELECT session_id, count(*) FROM events WHERE type = 'submitted' GROUP BY session_id HAVING count(*) > 1"
    ),
    "answer_question_mismatch": (
        "SELECT a.id FROM answers a JOIN sessions s ON s.id = a.session_id"
        " JOIN questions q ON q.id = a.question_id WHERE q.exam_id <> s.exam_id"
    ),
    "inconsistent_status": ("SELECT id FROM sessions WHERE (status = 'submitted') <> (submitted_at IS NOT NULL)"),
    "submitted_without_event": (
        "SELECT s.id FROM sessions s WHERE s.status = 'submitted' AND NOT EXISTS"
        " (SELECT 1 FROM events e WHERE e.session_id = s.id AND e.type = 'submitted')"
    ),
    "unscored_sessions": "SELECT id FROM sessions WHERE status = 'submitted' AND score IS NULL",
}
INDEX_SQL = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = :t"
EXAM_MODE_SQL = "SELECT value FROM settings WHERE key = 'exam_mode'"


@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox home of its own for this test session; both variants are stopped at the end."""
    home = tmp_path_factory.mktemp("sandbox")
    yield home
    for v in VARIANTS:
        stop_sandbox(v, home)


@pytest.fixture(scope="session")
def sandboxes(sandbox_root: Path) -> dict[str, SandboxState]:
    """Both variants, started concurrently."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        states = list(pool.map(lambda v: start_sandbox(v, home=sandbox_root, token=TOKEN), VARIANTS))
    return dict(zip(VARIANTS, states, strict=True))


@pytest.fixture
def default(sandboxes: dict[str, SandboxState]) -> SandboxState:
    return sandboxes["default"]


@pytest.fixture
def faulty(sandboxes: dict[str, SandboxState]) -> SandboxState:
    return sandboxes["faulty"]


def client(st: SandboxState, auth: bool = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {st.token}"} if auth else {}
    return httpx.Client(base_url=st.base_url, headers=headers, timeout=10, trust_env=False)


def rows(st: SandboxState, query: str, **params: object) -> list[sa.Row]:
    engine = sa.create_engine(st.db_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params).all())
    finally:
        engine.dispose()


def seeded_digest(st: SandboxState) -> dict[str, str]:
    """Digest of each table's seeded content (rows of the seed candidates 'cand-*' only)."""
    queries = {
        "exams": "SELECT id, title, created_at FROM exams ORDER BY id",
        "questions": "SELECT * FROM questions ORDER BY id",
        "sessions": "SELECT * FROM sessions WHERE candidate_id LIKE 'cand-%' ORDER BY id",
        "answers": "SELECT a.* FROM answers a JOIN sessions s ON s.id = a.session_id"
        " WHERE s.candidate_id LIKE 'cand-%' ORDER BY a.id",
        "events": "SELECT e.* FROM events e JOIN sessions s ON s.id = e.session_id"
        " WHERE s.candidate_id LIKE 'cand-%' AND NOT (e.payload ? 'retry') ORDER BY e.id",
    }
    return {t: hashlib.sha256(repr(rows(st, q)).encode()).hexdigest() for t, q in queries.items()}


# ------------------------------------------------------------------------------------------ HTTP


@pytest.mark.parametrize("variant", VARIANTS)
def test_health_ready_version(sandboxes: dict[str, SandboxState], variant: str) -> None:
    st = sandboxes[variant]
    with client(st, auth=False) as c:
        r = c.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert r.headers["x-request-id"]
        assert c.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        r = c.get("/v1/ready")
        assert r.status_code == 200 and r.json() == {"ready": True, "checks": {"database": "ok"}}
        v = c.get("/v1/version").json()
        assert v["service"] == "exam-api" and v["version"] == "1.4.2" and v["commit"]
        assert v["environment"] == "sandbox" and v["variant"] == variant
        r = c.get("/no/such/route")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_metrics_parse(sandboxes: dict[str, SandboxState]) -> None:
    for variant, mode in (("default", 1.0), ("faulty", 0.0)):
        with client(sandboxes[variant], auth=False) as c:
            c.get("/health")
            c.get("/v1/sessions/whatever")  # 401, still measured
            text = c.get("/metrics").text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        hist = fams[hardening.duration_metric_name(variant)]  # faulty: renamed (a planted defect)
        assert hist.type == "histogram"
        counts = [s for s in hist.samples if s.name.endswith("_count")]
        assert any(s.labels == {"method": "GET", "route": "/health", "status": "200"} for s in counts)
        assert any(s.labels["route"] == "/v1/sessions/{session_id}" and s.labels["status"] == "401" for s in counts)
        assert fams["http_requests"].type == "counter"
        assert sum(s.value for s in fams["http_requests"].samples if s.name == "http_requests_total") >= 2
        assert fams["app_ready"].samples[0].value == 1.0
        assert fams["app_exam_mode"].samples[0].value == mode


def test_auth_required(default: SandboxState) -> None:
    sid = rows(default, "SELECT id FROM sessions ORDER BY id LIMIT 1")[0].id
    calls = [
        ("POST", "/v1/sessions", {"candidate_id": "c", "exam_id": 1}),
        ("POST", f"/v1/sessions/{sid}/answers", {"question_id": 1, "answer": "x"}),
        ("POST", f"/v1/sessions/{sid}/submit", None),
        ("GET", f"/v1/sessions/{sid}", None),
        ("PUT", "/v1/exam-mode", {"exam_mode": False}),
    ]
    bad_headers = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {default.token}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {default.token}x"},
    ]
    with client(default, auth=False) as c:
        for method, path, body in calls:
            for headers in bad_headers:
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"
    assert rows(default, EXAM_MODE_SQL)[0].value == "true"  # the PUT did not go through
    assert default.token not in (default.home / "app.log").read_text()


def test_bad_requests(default: SandboxState) -> None:
    with client(default) as c:
        assert c.post("/v1/sessions", content=b"{not json").status_code == 400
        assert c.post("/v1/sessions", content=b"[" * 50_000).status_code == 400
        assert c.post("/v1/sessions", content=b"\xff\xfe").status_code == 400
        for body in (
            [1],
            {"candidate_id": "c"},
            {"candidate_id": "c", "exam_id": "1"},
            {"candidate_id": "", "exam_id": 1},
            {"candidate_id": "a\x00b", "exam_id": 1},
            {"candidate_id": "c", "exam_id": 2**40},
        ):
            r = c.post("/v1/sessions", json=body)
            assert r.status_code == 422, body
            assert r.json()["error"] == "validation_error"
        assert c.post("/v1/sessions", json={"candidate_id": "c", "exam_id": 9999}).status_code == 404
        assert c.get(f"/v1/sessions/{uuid.uuid4()}").status_code == 404
        assert c.get("/v1/sessions/not-a-uuid").status_code == 404
        assert c.post(f"/v1/sessions/{uuid.uuid4()}/submit").status_code == 404
        r = c.post(f"/v1/sessions/{uuid.uuid4()}/answers", json={"question_id": 1, "answer": "x"})
        assert r.status_code == 404
        assert c.put("/v1/exam-mode", json={"exam_mode": "yes"}).status_code == 422
        assert c.delete("/v1/sessions").status_code == 405


def test_session_flow_and_idempotent_submit(default: SandboxState) -> None:
    q = {
        r.position: r
        for r in rows(default, "SELECT id, position, correct_answer FROM questions WHERE exam_id = 2 ORDER BY position")
    }
    other_exam_q = rows(default, "SELECT id FROM questions WHERE exam_id = 1 LIMIT 1")[0].id
    with client(default) as c:
        r = c.post("/v1/sessions", json={"candidate_id": "test-flow", "exam_id": 2})
        assert r.status_code == 201
        sid = r.json()["id"]
        assert r.json() == {"id": sid, "status": "in_progress"}

        def answer(question_id: int, text: str) -> int:
            r = c.post(f"/v1/sessions/{sid}/answers", json={"question_id": question_id, "answer": text})
            return r.status_code

        assert answer(q[1].id, "wrong") == 201
        assert answer(q[1].id, q[1].correct_answer) == 201  # upsert of the same question
        assert answer(q[2].id, f" {q[2].correct_answer.upper()} ") == 201  # case and blanks ignored
        assert answer(q[3].id, "nope") == 201
        assert answer(other_exam_q, "x") == 422
        got = c.get(f"/v1/sessions/{sid}").json()
        assert got["status"] == "in_progress" and got["answer_count"] == 3 and got["score"] is None

        first = c.post(f"/v1/sessions/{sid}/submit")
        assert first.status_code == 200
        assert first.json()["status"] == "submitted" and first.json()["score"] == 2
        second = c.post(f"/v1/sessions/{sid}/submit")
        assert second.status_code == 200 and second.json() == first.json()
        assert answer(q[4].id, "late") == 409
        got = c.get(f"/v1/sessions/{sid}").json()
        assert got["status"] == "submitted" and got["score"] == 2 and got["answer_count"] == 3

    events = rows(default, "SELECT type, count(*) AS n FROM events WHERE session_id = :s GROUP BY type", s=sid)
    assert {e.type: e.n for e in events} == {"started": 1, "answered": 4, "submitted": 1}
    session = rows(default, "SELECT status, score, submitted_at FROM sessions WHERE id = :s", s=sid)[0]
    assert session.status == "submitted" and session.score == 2 and session.submitted_at is not None
    assert rows(default, "SELECT count(*) AS n FROM answers WHERE session_id = :s", s=sid)[0].n == 3
    for name, query in ZERO_ROW_QUERIES.items():  # API writes keep the data consistent
        assert rows(default, query) == [], name


def test_exam_mode_toggle(default: SandboxState) -> None:
    with client(default) as c:
        assert c.get("/v1/exam-mode").json() == {"exam_mode": True}
        try:
            assert c.put("/v1/exam-mode", json={"exam_mode": False}).json() == {"exam_mode": False}
            assert c.get("/v1/exam-mode").json() == {"exam_mode": False}
            assert rows(default, EXAM_MODE_SQL)[0].value == "false"
            assert "app_exam_mode 0.0" in c.get("/metrics").text
        finally:
            assert c.put("/v1/exam-mode", json={"exam_mode": True}).json() == {"exam_mode": True}


def test_access_log_lines(default: SandboxState) -> None:
    with client(default) as c:
        c.get("/v1/version", headers={"X-Request-ID": "log-probe-1"})

    def logged() -> list[dict]:
        text = (default.home / "app.log").read_text()
        return [rec for rec in (json.loads(ln) for ln in text.splitlines() if ln.startswith("{"))
                if rec.get("request_id") == "log-probe-1"]

    # the access line is written after the response is sent
    probe = wait_for(logged, 60, "the access line of request log-probe-1 was not written to app.log")
    assert len(probe) == 1
    assert {"ts", "level", "request_id", "method", "path", "status", "duration_ms"} <= probe[0].keys()
    assert probe[0]["path"] == "/v1/version" and probe[0]["status"] == 200


# ------------------------------------------------------------------------------------------- SQL


def test_zero_row_queries_on_default(default: SandboxState) -> None:
    for name, query in ZERO_ROW_QUERIES.items():
        assert rows(default, query) == [], name
    assert "idx_answers_session_id" in {r.indexname for r in rows(default, INDEX_SQL, t="answers")}
    assert "idx_events_session_id" in {r.indexname for r in rows(default, INDEX_SQL, t="events")}
    assert rows(default, EXAM_MODE_SQL)[0].value == "true"


def test_seed_shape(default: SandboxState) -> None:
    counts = rows(
        default, "SELECT status, count(*) AS n FROM sessions WHERE candidate_id LIKE 'cand-%' GROUP BY status"
    )
    assert {r.status: r.n for r in counts} == {"submitted": 40, "in_progress": 20}
    assert rows(default, "SELECT count(*) AS n FROM exams")[0].n == 3
    started = rows(
        default,
        "SELECT count(*) AS n FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM events e"
        " WHERE e.session_id = s.id AND e.type = 'started')",
    )
    assert started[0].n == 0
    versions = [r.version for r in rows(default, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions[:10] == [f"{i:03d}" for i in range(1, 11)]
    assert versions == [m.version for m in list_migrations()]  # later phases add their own


def test_faulty_has_exactly_the_planted_defects(faulty: SandboxState) -> None:
    found = {name: len(rows(faulty, query)) for name, query in ZERO_ROW_QUERIES.items()}
    assert found == {
        "orphaned_answers": 1,
        "duplicate_submits": 1,
        "answer_question_mismatch": 0,
        "inconsistent_status": 0,
        "submitted_without_event": 0,
        "unscored_sessions": 0,
    }
    indexes = {r.indexname for r in rows(faulty, INDEX_SQL, t="answers")}
    assert "idx_answers_session_id" not in indexes
    assert "idx_events_session_id" in {r.indexname for r in rows(faulty, INDEX_SQL, t="events")}
    assert rows(faulty, EXAM_MODE_SQL)[0].value == "false"
    with client(faulty, auth=False) as c:
        assert c.get("/v1/exam-mode").json() == {"exam_mode": False}
    assert [d.id for d in PLANTED_DEFECTS][:4] == ["orphaned_answer", "duplicate_submit", "missing_index",
                                                   "exam_mode_off"]  # then the later phases' defects
    assert [d.check_id for d in PLANTED_DEFECTS][:4] == [
        "integrity.zero_rows.orphaned_answers",
        "integrity.zero_rows.duplicate_submits",
        "integrity.index.idx_answers_session_id",
        "preflight.exam_mode",
    ]


def test_variants_differ_only_by_planted_defects(default: SandboxState, faulty: SandboxState) -> None:
    assert seeded_digest(default) == seeded_digest(faulty)
    schema = (
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY 1, 2"
    )
    assert rows(default, schema) == rows(faulty, schema)
    all_idx = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    assert {r.indexname for r in rows(default, all_idx)} - {r.indexname for r in rows(faulty, all_idx)} == {
        "idx_answers_session_id",
        "uq_webhook_deliveries_delivery_id",  # webhook_processed_twice
        "uq_jobs_dedupe_key",  # job_dedupe_missing
    }
    assert {r.indexname for r in rows(faulty, all_idx)} <= {r.indexname for r in rows(default, all_idx)}


def test_app_role_is_least_privilege(default: SandboxState) -> None:
    assert default.db_url.startswith("postgresql+psycopg://rehearsal_app:")
    assert rows(default, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0].rolsuper is False
    engine = sa.create_engine(default.db_url, poolclass=sa.NullPool)
    try:
        for stmt in ("DELETE FROM events", "DROP TABLE settings", "CREATE TABLE x (i int)"):
            with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
                conn.execute(sa.text(stmt))
    finally:
        engine.dispose()
    admin = sa.create_engine(default.admin_db_url, poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    finally:
        admin.dispose()


# ------------------------------------------------------------------------------------- lifecycle


def test_state_file(default: SandboxState, sandbox_root: Path) -> None:
    home = sandbox_home("default", sandbox_root)
    assert default.home == home
    path = home / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SandboxState.from_json(json.loads(path.read_text())) == default
    assert json.loads(path.read_text()) == default.to_json()
    assert default.token == TOKEN
    cmdline = Path(f"/proc/{default.app_pid}/cmdline").read_bytes().decode()
    assert TOKEN not in cmdline and "rehearsal_app:" not in cmdline
    ports = [p for st in (sandbox_status(v, sandbox_root) for v in VARIANTS) if st for p in (st.pg_port, st.app_port)]
    assert len(ports) == 4 and len(set(ports)) == 4  # both variants up at once, on distinct ports


def test_start_twice_returns_same_state(default: SandboxState, sandbox_root: Path) -> None:
    assert start_sandbox("default", home=sandbox_root) == default
    state, started_now = ensure_sandbox("default", home=sandbox_root)
    assert state == default and started_now is False
    assert sandbox_status("default", sandbox_root) == default


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status not in ("Z", "X")


def test_stop_really_stops_and_restart_is_deterministic(default: SandboxState, sandbox_root: Path) -> None:
    before = seeded_digest(default)
    pg_pid = int((default.home / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert stop_sandbox("default", sandbox_root) is True
    assert not _alive(default.app_pid) and not _alive(pg_pid)
    assert not _port_open(default.app_port) and not _port_open(default.pg_port)
    assert not (default.home / "state.json").exists()
    assert sandbox_status("default", sandbox_root) is None
    assert stop_sandbox("default", sandbox_root) is False

    state, started_now = ensure_sandbox("default", home=sandbox_root, token=TOKEN)
    assert started_now is True and state.app_pid != default.app_pid
    assert state.db_url != default.db_url  # fresh app password on every start
    assert seeded_digest(state) == before  # same deterministic data
    for name, query in ZERO_ROW_QUERIES.items():
        assert rows(state, query) == [], name


def test_sandbox_outlives_the_process_that_started_it(faulty: SandboxState, sandbox_root: Path) -> None:
    assert stop_sandbox("faulty", sandbox_root) is True
    code = (
        "import sys; from pathlib import Path; from rehearsal_lib.sandbox import start_sandbox;"
        "start_sandbox('faulty', home=Path(sys.argv[1]))"
    )
    env = {**os.environ, "REHEARSAL_SANDBOX_TOKEN": "token-from-env"}
    proc = run([sys.executable, "-c", code, str(sandbox_root)], 300, "the sandbox did not start in another process",
               env=env)
    assert proc.returncode == 0, proc.stderr
    state = sandbox_status("faulty", sandbox_root)
    assert state is not None and state.token == "token-from-env"
    with client(state) as c:
        assert c.post("/v1/sessions", json={"candidate_id": "t", "exam_id": 1}).status_code == 201
    assert stop_sandbox("faulty", sandbox_root) is True  # stopped from another process than the starter
    assert not _alive(state.app_pid) and not _port_open(state.pg_port)
    assert sandbox_status("faulty", sandbox_root) is None
