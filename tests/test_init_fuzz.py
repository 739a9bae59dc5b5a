"""`rehearse init` against the second target (the Notes API, which serves OpenAPI) and the sandbox, and the
security phase's schema-driven fuzzing (Schemathesis) against the Notes API with and without its planted
500 on a malformed date (`APP_PLANTED_DATE_500=1`, `GET /notes/day/?day=…`).

One sandbox (its PostgreSQL hosts the Notes API's databases) and two Notes apps per module: the planted one
records the method of every request it gets (`APP_REQUEST_LOG`), so the test proves init sent GETs only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run
from test_fastapi_target import NotesApp

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.security import fuzz

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "rehearsal-pw-0004"
PASSWORD_VAR = "NOTES_OAUTH2PASSWORDBEARER_PASSWORD"  # derived by init: <env>_<principal>_PASSWORD


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    return run([sys.executable, "-m", "rehearsal_lib.cli", *args], timeout, f"rehearse {args[0]}", cwd=cwd,
               env={**env, "REHEARSAL_PROJECT_DIR": str(cwd)})


def start_notes(sandbox, base: Path, **extra: str) -> NotesApp:
    app = NotesApp(sandbox, base, **extra)
    app.start()
    app.sh("-m", "app.seed", f"rehearsal:{PASSWORD}:admin")  # the account the generated file logs in as
    return app


@pytest.fixture(scope="module")
def planted(sandbox, tmp_path_factory):
    base = tmp_path_factory.mktemp("planted")
    app = start_notes(sandbox, base, APP_PLANTED_DATE_500="1", APP_REQUEST_LOG=str(base / "requests.log"))
    app.request_log = base / "requests.log"
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def clean(sandbox, tmp_path_factory):
    app = start_notes(sandbox, tmp_path_factory.mktemp("clean"))
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def generated(planted, tmp_path_factory):
    """`rehearse init notes` against the planted Notes API, with its database catalogue; the requests it sent."""
    project = tmp_path_factory.mktemp("project")
    planted.request_log.write_text("")
    env = {**os.environ, "NOTES_DB": planted.db_url}
    res = cli("init", "notes", "--base-url", planted.url, "--database-url-env", "NOTES_DB", cwd=project, env=env)
    assert res.returncode == 0, res.stderr
    sent = planted.request_log.read_text().split("\n")
    again = cli("init", "notes", "--base-url", planted.url, cwd=project, env=env)
    return project, res.stdout, [line for line in sent if line], again


def test_init_sends_only_gets_and_refuses_to_overwrite(generated, planted):
    project, out, sent, again = generated
    assert sent and {line.split()[0] for line in sent} == {"GET"}, sent  # never a POST /token, /notes/
    assert "GET /openapi.json" in sent and "GET /health" in sent
    assert f"sent {len(sent)} requests, all GET; wrote nothing to the target" in out
    assert again.returncode == 2 and "does not overwrite it without --force" in again.stderr
    assert len(planted.request_log.read_text().split()) // 2 == len(sent)  # the refusal sent nothing


def test_init_file_says_what_the_service_declares(generated, planted):
    project, out, _, _ = generated
    text = (project / "params" / "notes.yaml").read_text()
    doc = yaml.safe_load(text)
    assert "TODO" in text and planted.db_url not in text and PASSWORD not in text
    principal = doc["target"]["auth"]["principals"]["oauth2passwordbearer"]
    assert principal == {"scheme": "oauth2_password", "token_url": "/token", "username": "rehearsal",
                         "password": f"${{{PASSWORD_VAR}}}"}
    assert doc["target"]["database_url"] == "${NOTES_DB}"
    pre = doc["phases"]["preflight"]
    assert pre["version"] == {"endpoint": "/api/version/", "json_path": "$.version"}
    assert pre["health_endpoint"] == "/health"
    assert {s["path"] for s in pre["journey"]} >= {"/users/me/", "/notes/", "/admin/flags/"}
    sec = doc["phases"]["security"]
    assert {p["path"] for p in sec["protected_endpoints"]} >= {"/users/me/", "/notes/", "/admin/users/"}
    assert "GET /notes/day/" in sec["fuzz"]["operations"]
    assert not [op for op in sec["fuzz"]["operations"] if not op.startswith("GET ")]
    integ = doc["phases"]["integrity"]
    assert {t["name"] for t in integ["critical_tables"]} == {"app_user", "note"}
    mig = doc["phases"]["migrations"]
    assert mig["driver"] == "alembic" and mig["enabled"] is False
    post = mig["postconditions"]
    assert {"table": "note", "columns": ["owner_id"], "references": "app_user"} in post["foreign_keys"]
    assert {"table": "app_user", "columns": ["id"]} in post["primary_keys"]
    assert {"table": "app_user", "columns": ["username"]} in post["unique"]
    assert "migration tool: alembic (alembic_version table)" in out
    assert "could not decide" in out and PASSWORD_VAR in out


def test_generated_file_validates_and_its_run_finds_the_planted_500(generated, planted):
    """As written: `rehearse validate` accepts it. Its security phase through `rehearse run` (the other phases
    switched off to keep the test short) logs in as the principal the file names, passes the auth refusals,
    and the fuzzing finds the 500 on a malformed date: a condition of CONDITIONAL GO."""
    project, _, _, _ = generated
    env = {**os.environ, "NOTES_DB": planted.db_url, PASSWORD_VAR: PASSWORD}
    val = cli("validate", "notes", cwd=project, env=env, timeout=120)
    assert val.returncode == 0, val.stderr
    assert "phases: preflight, integrity, security, decision" in val.stdout, val.stdout
    bare = cli("validate", "notes", cwd=project, env={k: v for k, v in env.items() if k != PASSWORD_VAR}, timeout=120)
    assert bare.returncode == 2 and PASSWORD_VAR in bare.stderr  # a secret it reads is named, not guessed
    doc = yaml.safe_load((project / "params" / "notes.yaml").read_text())
    doc["name"] = "notes-security"
    doc["phases"]["preflight"]["enabled"] = doc["phases"]["integrity"]["enabled"] = False
    (project / "params" / "notes-security.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    res = cli("run", "notes-security", cwd=project, env=env, timeout=400)
    results = json.loads(next((project / "outputs").rglob("results.json")).read_text())
    checks = {c["id"]: c for c in results["checks"]}
    statuses = {cid: c["status"] for cid, c in checks.items()}
    for cid in ("security.target.identity", "security.auth.users_me", "security.auth.notes",
                "security.auth.admin_users", "security.fuzz.schema", "security.fuzz.latency"):
        assert statuses.get(cid) == "pass", (cid, checks.get(cid, {}).get("observed"), sorted(statuses))
    found = checks["security.fuzz.server_errors"]
    assert found["status"] == "fail", found
    day = [f for f in found["evidence"]["findings"] if f["operation"] == "GET /notes/day/"]
    assert day and day[0]["status"] == 500, found["evidence"]["findings"]
    assert day[0]["reproduce"].startswith("curl -X GET") and "/notes/day/?day=" in day[0]["reproduce"]
    assert found["evidence"]["answered 401/403 (not exercised)"] == 0  # all ran as the logged-in principal
    assert PASSWORD not in json.dumps(results) and "Bearer ey" not in json.dumps(results)
    # major findings (missing security headers, the 500): conditions, not blockers
    assert (res.returncode, results["decision"]) == (3, "CONDITIONAL GO"), results["reasons"]
    assert any(c.startswith("security.fuzz.server_errors: ") for c in results["reasons"]["conditions"])


def fuzz_run(app: NotesApp, tmp_path: Path, monkeypatch, **block) -> dict[str, object]:
    monkeypatch.setenv("FZ_URL", app.url)
    monkeypatch.setenv("FZ_PW", PASSWORD)
    doc = {"name": "fuzz", "target": {"base_url": "${FZ_URL}", "auth": {"principals": {
        "ops": {"scheme": "oauth2_password", "token_url": "/token", "username": "rehearsal", "password": "${FZ_PW}"}}}},
        "phases": {"preflight": {"enabled": False}, "integrity": {"enabled": False},
                   "security": {"fuzz": {"max_examples": 10, "time_budget_s": 30, **block}}}}
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    ctx = PhaseRun("security", str(path), params=load_params(str(path)))
    return {c.id: c for c in fuzz.check_fuzz(ctx)}


def test_fuzz_finds_the_planted_500_and_the_clean_app_gives_none(planted, clean, tmp_path, monkeypatch):
    ops = ["GET /notes/day/", "GET /notes/", "GET /users/me/"]
    monkeypatch.chdir(tmp_path)  # the project folder: Hypothesis' cache must not land in it
    bad = fuzz_run(planted, tmp_path, monkeypatch, operations=ops)
    assert not (tmp_path / ".hypothesis").exists()
    assert bad["security.fuzz.server_errors"].status == "fail"
    finding = bad["security.fuzz.server_errors"].evidence["findings"][0]
    assert finding["operation"] == "GET /notes/day/" and finding["status"] == 500
    assert "Authorization" in finding["reproduce"] and "Bearer ey" not in finding["reproduce"]
    good = fuzz_run(clean, tmp_path, monkeypatch, operations=ops)
    for kind in ("server_errors", "schema", "latency"):
        check = good[f"security.fuzz.{kind}"]
        assert check.status == "pass", (kind, check.observed, check.evidence)
        assert check.metrics["requests"] >= 10
    assert "401/403" not in good["security.fuzz.server_errors"].observed  # the principal was accepted


def test_fuzz_with_a_principal_the_service_refuses_is_an_error(clean, tmp_path, monkeypatch):
    """Every generated request answered 401: nothing was exercised, so no verdict."""
    monkeypatch.setenv("FZ_TOKEN", "not-a-token-of-this-service")
    monkeypatch.setenv("FZ_URL", clean.url)
    doc = {"name": "fuzz", "target": {"base_url": "${FZ_URL}", "auth_token": "${FZ_TOKEN}"},
           "phases": {"security": {"fuzz": {"operations": ["GET /users/me/"], "max_examples": 5}}}}
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(doc))
    checks = fuzz.check_fuzz(PhaseRun("security", str(path), params=load_params(str(path))))
    assert {c.status for c in checks} == {"error"}
    assert "no generated request reached a handler" in checks[0].observed and "401/403" in checks[0].observed


def test_init_against_the_sandbox_validates_and_its_checks_pass(sandbox, tmp_path, monkeypatch):
    """The sandbox serves no OpenAPI: init still finds health, ready and version by their usual paths, the
    catalogue (tables, keys, checks, indexes, RLS, the function, schema_migrations -> sql_dir) and /metrics
    with its readiness gauge. The file validates; its integrity and observability checks pass in-process
    (a whole `rehearse run` of it, measured by hand, is GO with 42 checks: README)."""
    from rehearsal_lib.phases.integrity import checks as integrity
    from rehearsal_lib.phases.observability import checks as observability

    env = {**os.environ, "SBX_DB": sandbox.db_url}
    res = cli("init", "sbx", "--base-url", sandbox.base_url, "--database-url-env", "SBX_DB", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert "no OpenAPI document at /openapi.json (HTTP 404)" in res.stdout
    assert "migration tool: a schema_migrations table (sql_dir)" in res.stdout
    path = tmp_path / "params" / "sbx.yaml"
    doc = yaml.safe_load(path.read_text())
    assert sandbox.db_url not in path.read_text()
    pre = doc["phases"]["preflight"]
    assert (pre["health_endpoint"], pre["ready_endpoint"]) == ("/health", "/v1/ready")
    assert pre["version"] == {"endpoint": "/v1/version", "json_path": "$.version"}
    post = doc["phases"]["migrations"]["postconditions"]
    assert {"table": "answers", "columns": ["session_id", "question_id"]} in post["unique"]
    assert {"table": "sessions"} in post["rls"] and post["functions"] == ["retention_purge"]
    assert doc["phases"]["migrations"]["driver"] == "sql_dir"
    assert doc["phases"]["observability"]["readiness_gauge"] == {"endpoint": "/v1/ready", "gauge": "app_ready"}
    val = cli("validate", "sbx", cwd=tmp_path, env=env, timeout=120)
    assert val.returncode == 0 and "phases: preflight, integrity, security, observability" in val.stdout, val
    monkeypatch.setenv("SBX_DB", sandbox.db_url)
    params = load_params(str(path))
    ran = [*integrity.check_critical_tables(PhaseRun("integrity", str(path), params=params)),
           *integrity.check_expected_indexes(PhaseRun("integrity", str(path), params=params))]
    obs = PhaseRun("observability", str(path), params=params)
    ran += [*observability.check_metrics(obs), observability.check_readiness_gauge(obs)]
    assert len(ran) >= 25 and {c.status for c in ran} == {"pass"}, [(c.id, c.observed) for c in ran
                                                                     if c.status != "pass"]


def test_init_orphan_check_finds_the_orphan_row(sandbox, tmp_path, monkeypatch):
    """A `*_id` column without a foreign key, one row pointing at no parent: init writes the zero-row check
    (with the TODO) and that check, run as written, fails counting the orphan."""
    import uuid

    import sqlalchemy as sa

    from rehearsal_lib.phases.integrity import checks as integrity
    from rehearsal_lib.probes.command import with_database

    name = f"orphans_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sandbox.admin_db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = with_database(sandbox.admin_db_url, name)
    try:
        db = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with db.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE customers (id int PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE orders (id int PRIMARY KEY, customer_id int)")
            conn.exec_driver_sql("INSERT INTO customers VALUES (1); INSERT INTO orders VALUES (1, 1), (2, 99)")
        env = {**os.environ, "ORPHAN_DB": url}
        res = cli("init", "orph", "--base-url", sandbox.base_url, "--database-url-env", "ORPHAN_DB", cwd=tmp_path,
                  env=env)
        assert res.returncode == 0, res.stderr
        path = tmp_path / "params" / "orph.yaml"
        assert "TODO: confirm customers.id is the parent of orders.customer_id" in path.read_text()
        monkeypatch.setenv("ORPHAN_DB", url)
        params = load_params(str(path))
        [check] = integrity.check_all_zero_rows(PhaseRun("integrity", str(path), params=params))
        assert check.id == "integrity.zero_rows.orders_customer_id_orphans"
        assert check.status == "fail" and check.observed.startswith("1 row"), check.observed
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
