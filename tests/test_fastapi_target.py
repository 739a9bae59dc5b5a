"""A second target of a different shape (tests/targets/fastapi_app: FastAPI + SQLModel + alembic, OAuth2
password login, trailing slashes, 422 JSON, API-key admin, two roles) rehearsed end to end through the
real CLI with the params of docs/rehearsing-fastapi-alembic.md; the alembic driver runs in the app's own
interpreter (`python:`). The app runs under uvicorn on a free port against the sandbox's PostgreSQL, in a
database of its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import run

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.migrations import checks as migrations
from rehearsal_lib.phases.security import checks as security
from rehearsal_lib.probes.command import with_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(__file__).parent / "targets" / "fastapi_app"
DOC = ROOT / "docs" / "rehearsing-fastapi-alembic.md"


def doc_params() -> dict:
    """The params file shown in the docs page (its first ```yaml block)."""
    text = DOC.read_text(encoding="utf-8")
    return yaml.safe_load(re.search(r"^```yaml\n(.*?)^```", text, re.S | re.M).group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


USERS = {"alice": ("alice-pw-0001", "user"), "bob": ("bob-pw-0002", "user"), "root": ("root-pw-0003", "admin")}
TOKEN_PREFIX = base64.urlsafe_b64encode(b'{"sub": "').decode()[:11]  # every token the Notes API signs starts so


class NotesApp:
    """A copy of the Notes API with its own database, at revision 0002 with two users, under uvicorn."""

    def __init__(self, sandbox, base: Path, **extra_env: str):
        self.dir = base / "fastapi_app"
        shutil.copytree(TARGET, self.dir, ignore=shutil.ignore_patterns("__pycache__"))
        self.dbname = f"notes_{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(sandbox.admin_db_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.dbname}"')
        self.db_url = with_database(sandbox.admin_db_url, self.dbname)
        self.env = {"DATABASE_URL": self.db_url, "APP_SECRET": uuid.uuid4().hex, "ADMIN_API_KEY": uuid.uuid4().hex,
                    "APP_FREEZE": "1", "PATH": "/usr/bin:/bin", **extra_env}
        self.proc: subprocess.Popen | None = None

    def sh(self, *args: str) -> None:
        res = run([sys.executable, *args], 60, f"{' '.join(args)} in the Notes app", cwd=self.dir, env=self.env)
        assert res.returncode == 0, res.stderr[-2000:]

    def start(self) -> None:
        self.sh("-m", "alembic", "upgrade", "0002")  # one release behind: 0003 is pending
        self.sh("-m", "app.seed", *(f"{name}:{pw}:{role}" for name, (pw, role) in USERS.items()))
        self.url = f"http://127.0.0.1:{free_port()}"
        # its log goes to a file: a pipe nobody reads fills up (tracebacks of 500s) and stalls the server
        self.log = open(self.dir / "uvicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                                      "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning"],
                                     cwd=self.dir, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as res:
                    if res.status == 200:
                        return
            except OSError:
                assert self.proc.poll() is None, (self.dir / "uvicorn.log").read_text()[-2000:]
                time.sleep(0.2)
        raise AssertionError("the Notes app did not answer /health within 30 s")

    def principal_env(self) -> dict[str, str]:
        """The variables the docs page's principals read: passwords and the admin API key, no token."""
        return {f"NOTES_{name.upper()}_PASSWORD": pw for name, (pw, _) in USERS.items()} | {
            "NOTES_ADMIN_API_KEY": self.env["ADMIN_API_KEY"]}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        self.admin.dispose()

    def version(self) -> set[str]:
        with sa.create_engine(self.db_url, poolclass=sa.pool.NullPool).connect() as conn:
            return {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}


@pytest.fixture
def notes_app(sandbox, tmp_path):
    app = NotesApp(sandbox, tmp_path)
    try:
        app.start()
        yield app
    finally:
        app.stop()


def rehearse(app: NotesApp, params: dict, tmp_path: Path, python: str = sys.executable) -> tuple[int, dict]:
    """`python -m rehearsal_lib.cli run <params file> --outputs tmp` with the page's variables set."""
    path = tmp_path / "notes-staging.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
           "NOTES_URL": app.url, "NOTES_DATABASE_URL": app.db_url, "NOTES_MIGRATE_URL": app.db_url,
           "NOTES_ALEMBIC_INI": str(app.dir / "alembic.ini"), "NOTES_APP_PYTHON": python, **app.principal_env()}
    out = tmp_path / "outputs"
    res = run([sys.executable, "-m", "rehearsal_lib.cli", "run", str(path), "--outputs", str(out)], 240,
              "rehearse run notes-staging", cwd=ROOT, env=env)
    results = sorted(out.rglob("results.json"))
    assert results, f"no results.json (exit {res.returncode}): {res.stdout[-2000:]} {res.stderr[-2000:]}"
    app.run_dir = results[-1].parent
    return res.returncode, json.loads(results[-1].read_text())


def checks_of(results: dict) -> dict[str, dict]:
    return {c["id"]: c for c in results["checks"]}


def test_fastapi_alembic_service_rehearsed_end_to_end(notes_app, tmp_path):
    """The docs page's params, through the real CLI: 0003 applied by the app's interpreter, none pending,
    the round trip on a scratch database, integrity and security as the page says; GO."""
    assert notes_app.version() == {"0002"}
    code, results = rehearse(notes_app, doc_params(), tmp_path)
    checks = checks_of(results)
    statuses = {cid: c["status"] for cid, c in checks.items()}
    assert notes_app.version() == {"0003"}  # the pending revision is applied, in the app's database
    plan, apply = checks["migrations.plan.pending"], checks["migrations.apply"]
    assert plan["status"] == "pass" and plan["observed"] == "1 pending: 0003", plan
    assert apply["status"] == "pass" and [r["migration"] for r in apply["evidence"]["migrations"]] == ["0003"]
    assert statuses["migrations.none_pending"] == "pass"
    assert statuses["migrations.roundtrip"] == "pass", checks["migrations.roundtrip"]
    assert {statuses[f"migrations.post.{f}"] for f in ("tables", "columns", "indexes", "foreign_keys")} == {"pass"}
    assert statuses["integrity.zero_rows.notes_without_owner"] == "pass"
    assert statuses["integrity.zero_rows.users_with_unknown_role"] == "pass"
    for step in ("whoami", "create_note", "read_note", "admin_lists_users"):
        assert statuses[f"preflight.journey.{step}"] == "pass", checks[f"preflight.journey.{step}"]
    assert statuses["preflight.identity"] == "pass" and statuses["preflight.health"] == "pass"
    markup = checks["security.inputs.note_body_markup"]
    assert markup["status"] == "pass", markup  # FastAPI's 422 echoes the payload inside JSON: not a reflection
    assert "not reflected as markup" in markup["evidence"]["reflection"]
    # principals: logged in by the run itself (no token fetched before it); roles, API key and BOLA refused
    assert checks["preflight.journey.whoami"]["evidence"]["body"] == {"username": "alice", "role": "user"}
    assert checks["preflight.journey.admin_lists_users"]["evidence"]["as"] == "root"
    assert checks["security.auth.admin_stats"]["observed"] == (
        "no credentials → HTTP 403, wrong API key in X-API-Key → HTTP 403")
    assert checks["security.authz.admin_stats"]["observed"] == "ops → HTTP 200; alice → HTTP 403"
    assert checks["security.authz.admin_users"]["observed"] == "root → HTTP 200; alice → HTTP 403, bob → HTTP 403"
    assert checks["security.authz.note_of_another_user"]["observed"] == "alice → HTTP 200; bob → HTTP 404"
    leaked = [str(f.relative_to(notes_app.run_dir)) for f in notes_app.run_dir.rglob("*") if f.is_file()
              and any(s in f.read_bytes() for s in [TOKEN_PREFIX.encode(), notes_app.env["ADMIN_API_KEY"].encode(),
                                                    *(pw.encode() for pw, _ in USERS.values())])]
    assert leaked == []  # no token, key or password in any file of the run folder
    bad = {cid: s for cid, s in statuses.items() if s not in ("pass", "skip")}
    assert bad == {}, {cid: checks[cid]["observed"] for cid in bad}
    assert (code, results["decision"]) == (0, "GO"), results["reasons"]
    assert results["reasons"]["blockers"] == [] and results["reasons"]["conditions"] == []


RELEASE = {"name": "notes-api", "version": "2.1.0", "commit": "9f2c1ab", "change_url": "https://example.org/notes/pull/42"}


def shapes_params() -> dict:
    """The page's params with the generic shapes: a form login in the journey (its token saved from a JSON
    path and sent in a header), JSON path and header assertions, the version by JSON path, a freeze mapping,
    unique constraint and primary key post-conditions, and what is being released. Principals (target.auth)
    stay (no token is fetched before the run): a step `as: bob` with assertions beside the form login."""
    params = doc_params()
    params["release"] = RELEASE
    pre = params["phases"]["preflight"]
    del pre["version_endpoint"], pre["expected_version"]
    pre["version"] = {"endpoint": "/api/version/", "json_path": "$.version", "expect": "2.1.0"}
    pre["freeze"] = {"endpoint": "/admin/flags/", "auth": False,
                     "expect": {"$.maintenance_freeze": True, "$.background_jobs": "paused"}}
    pre["journey"] = [
        {"name": "login", "title": "OAuth2 password login", "method": "POST", "path": "/token", "auth": False,
         "form": {"username": "alice", "password": "${NOTES_ALICE_PASSWORD}"},
         "expect": {"$.token_type": {"equals": "bearer"}, "$.access_token": {"type": "string"}},
         "save": {"access_token": "$.access_token"}},
        {"name": "whoami", "path": "/users/me/", "auth": False,
         "headers": {"Authorization": "Bearer {access_token}"},
         "expect": {"$.username": {"equals": "alice"}, "$.role": {"regex": "^(user|admin)$"}}},
        {"name": "whoami_bob", "as": "bob", "path": "/users/me/",  # bob's credentials from target.auth
         "expect": {"$.username": {"equals": "bob"}, "$.role": {"equals": "user"}}},
        *[{"name": f"create_note_{i}", "method": "POST", "path": "/notes/", "auth": False,
           "headers": {"Authorization": "Bearer {access_token}"}, "json": {"body": f"rehearsal {{run_id}} {i}"},
           "expect_status": 201, "expect": {"$.id": {"type": "integer"}, "$.body": {"regex": "^rehearsal "}},
           "save": {f"note_{i}": "$.id"}} for i in (1, 2)],
        {"name": "list_notes", "path": "/notes/", "auth": False, "headers": {"Authorization": "Bearer {access_token}"},
         "expect": {"$": {"min_length": 2}, "$[*].id": {"ordered": "asc", "type": "integer"},
                    "$[*].body": {"type": "string"}},
         "expect_headers": {"content-type": {"regex": "^application/json"}}, "max_ms": 5000},
    ]
    mig = params["phases"]["migrations"]
    mig["roundtrip"] = False
    mig["postconditions"]["unique"] = [{"table": "app_user", "columns": ["username"]}]
    mig["postconditions"]["primary_keys"] = [{"table": "note", "columns": ["id"]},
                                             {"table": "app_user", "columns": ["id"]}]
    params["phases"]["security"] = {"enabled": False}
    params["phases"]["integrity"] = {"enabled": False}
    return params


def test_generic_shapes_and_release_on_the_fastapi_target(notes_app, tmp_path):
    """Bodies and assertions, generic shapes and the release under test on a service nobody here shaped:
    every new check passes, the release is in results.json and the report header, GO."""
    code, results = rehearse(notes_app, shapes_params(), tmp_path)
    checks = checks_of(results)
    statuses = {cid: c["status"] for cid, c in checks.items()}
    for cid in ("preflight.identity", "preflight.release.version", "preflight.freeze.maintenance_freeze",
                "preflight.freeze.background_jobs", "preflight.journey.login", "preflight.journey.whoami",
                "preflight.journey.whoami_bob",
                "preflight.journey.create_note_1", "preflight.journey.create_note_2", "preflight.journey.list_notes",
                "migrations.post.unique", "migrations.post.primary_keys"):
        assert statuses.get(cid) == "pass", (cid, checks.get(cid, {}).get("observed"))
    assert checks["preflight.identity"]["observed"] == "notes-api 2.1.0 (from $.version)"
    assert checks["preflight.release.version"]["observed"] == "the target runs 2.1.0, the declared release"
    assert checks["preflight.journey.login"]["evidence"]["saved"] == ["access_token"]
    assert checks["preflight.journey.whoami_bob"]["evidence"]["as"] == "bob"
    assert not any(pw in json.dumps(results) for pw, _ in USERS.values())
    assert results["release"] == {**RELEASE, "observed_version": "2.1.0"}
    assert results["project_commit"] and results["tool_versions"]
    run_dir = next((tmp_path / "outputs").rglob("results.json")).parent
    summary = (run_dir / "summary.md").read_text()
    header = [line for line in summary.splitlines() if line.startswith("**")]
    assert header[0].startswith("**Release under test:** notes-api 2.1.0; commit 9f2c1ab; change "
                                "https://example.org/notes/pull/42; target ran 2.1.0 at the start"), header[:2]
    assert "Rehearsal tool commit" in summary and "Project commit" not in summary
    assert "Release under test" in (run_dir / "report.html").read_text()
    bad = {cid: s for cid, s in statuses.items() if s not in ("pass", "skip")}
    assert bad == {}, {cid: checks[cid]["observed"] for cid in bad}
    assert (code, results["decision"]) == (0, "GO"), results["reasons"]


@pytest.fixture
def bola_app(sandbox, tmp_path):
    app = NotesApp(sandbox, tmp_path, APP_PLANTED_BOLA="1")
    try:
        app.start()
        yield app
    finally:
        app.stop()


def test_planted_bola_fails_authz_and_an_unknown_user_is_an_error(bola_app, tmp_path, monkeypatch):
    """The Notes API with its planted BOLA (any user reads any note): security.authz.note_of_another_user
    fails naming bob; the role and API-key refusals still pass; a principal whose login fails is `error`
    naming it and the status."""
    for key, value in {"NOTES_URL": bola_app.url, **bola_app.principal_env()}.items():
        monkeypatch.setenv(key, value)
    params = doc_params()
    params["target"].pop("database_url")
    params["phases"] = {"security": {"protected_endpoints": params["phases"]["security"]["protected_endpoints"]}}
    path = tmp_path / "bola.yaml"
    path.write_text(yaml.safe_dump(params))
    ctx = PhaseRun("security", str(path), params=load_params(str(path)))
    checks = {c.id: c for c in security.check_auth(ctx)}
    bola = checks["security.authz.note_of_another_user"]
    assert bola.status == "fail"
    assert bola.observed == "not refused: bob got HTTP 200 (alice → HTTP 200; bob → HTTP 200)"
    assert {checks[f"security.authz.{n}"].status for n in ("admin_stats", "admin_users")} == {"pass"}
    monkeypatch.setenv("NOTES_BOB_PASSWORD", "not-bobs-password")
    ctx = PhaseRun("security", str(path), params=load_params(str(path)))
    check = {c.id: c for c in security.check_auth(ctx)}["security.authz.admin_users"]
    assert check.status == "error"
    assert check.observed.startswith("AuthError: principal 'bob': login POST /token answered HTTP 401, not 200")


def test_a_failing_revision_fails_apply_and_gives_no_go(notes_app, tmp_path):
    """A deliberately broken release: revision 0004 alters a table that does not exist."""
    (notes_app.dir / "migrations" / "versions" / "0004_broken.py").write_text(
        '"""a broken revision"""\nfrom alembic import op\n\nrevision = "0004"\ndown_revision = "0003"\n\n\n'
        'def upgrade():\n    op.execute("ALTER TABLE no_such_table ADD COLUMN x int")\n\n\n'
        'def downgrade():\n    pass\n')
    params = doc_params()
    params["phases"] = {"preflight": {"enabled": False}, "integrity": {"enabled": False},
                        "migrations": {**params["phases"]["migrations"], "expected_pending": ["0003", "0004"],
                                       "roundtrip": False}}
    code, results = rehearse(notes_app, params, tmp_path)
    checks = checks_of(results)
    apply = checks["migrations.apply"]
    failed = 'migration 0004 failed: UndefinedTable: relation "no_such_table" does not exist'
    assert apply["status"] == "fail" and apply["observed"].startswith(failed), apply["observed"]
    assert [r["status"] for r in apply["evidence"]["migrations"]] == ["applied", "failed"]
    assert checks["migrations.none_pending"]["status"] == "skip"
    assert notes_app.version() == {"0003"}
    assert (code, results["decision"]) == (1, "NO-GO")
    assert [b.split(":")[0] for b in results["reasons"]["blockers"]] == ["migrations.apply"]


def make_run(tmp_path: Path, block: dict, db_url: str, monkeypatch) -> PhaseRun:
    monkeypatch.setenv("T_DB", db_url)
    doc = {"name": "probe", "environment": {"kind": "staging"},
           "target": {"base_url": "http://127.0.0.1:9", "database_url": "${T_DB}"},
           "safety": {"allow_destructive": True}, "phases": {"migrations": block}}
    path = tmp_path / f"m-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun("migrations", str(path), params=load_params(str(path)))


def test_missing_module_in_the_apps_interpreter_is_one_line(notes_app, tmp_path, monkeypatch):
    """`python:` pointing at an interpreter without the app's packages (a fresh venv): one line saying
    which module is missing there and how to fix it, an `error`, no traceback."""
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    bare = str(venv / "bin" / "python")
    block = {"driver": "alembic", "alembic": {"config": str(notes_app.dir / "alembic.ini"), "python": bare,
                                              "url_env": "DATABASE_URL"},
             "expected_pending": ["0003"], "apply_database_url": "${T_DB}"}
    run_ = migrations.MigrationsRun(make_run(tmp_path, block, notes_app.db_url, monkeypatch))
    plan = run_.plan()
    assert plan.status == "error"
    assert plan.observed == (f"module 'alembic' is missing in the app's interpreter {bare} "
                             "(phases.migrations.alembic.python): point `python:` at the interpreter that runs the "
                             "app (its virtualenv's bin/python), or install alembic there")
    assert not plan.evidence  # no traceback
    assert run_.apply().status == "skip" and notes_app.version() == {"0002"}


NO_SUCH_MODULE_REV = '''"""needs a package the kernel lacks"""
import rehearsal_no_such_app_pkg  # noqa: F401
revision, down_revision = "0004", "0003"
def upgrade():
    pass
def downgrade():
    pass
'''


def test_in_process_relative_script_location_and_missing_module(notes_app, tmp_path, monkeypatch):
    """Without `python:`: the relative script_location resolves beside alembic.ini whatever the working
    directory (kernels run in notebooks/), and a module missing in Rehearsal's environment is one line."""
    monkeypatch.chdir(tmp_path)  # not the ini's folder
    block = {"driver": "alembic", "alembic": {"config": str(notes_app.dir / "alembic.ini")},
             "expected_pending": ["0003"]}
    plan = migrations.MigrationsRun(make_run(tmp_path, block, notes_app.db_url, monkeypatch)).plan()
    assert plan.status == "pass" and plan.observed == "1 pending: 0003", plan.observed
    assert Path.cwd() == tmp_path  # the working directory is restored
    (notes_app.dir / "migrations" / "versions" / "0004_extra.py").write_text(NO_SUCH_MODULE_REV)
    block["expected_pending"] = ["0003", "0004"]
    plan = migrations.MigrationsRun(make_run(tmp_path, block, notes_app.db_url, monkeypatch)).plan()
    assert plan.status == "error" and plan.observed.startswith(
        f"module 'rehearsal_no_such_app_pkg' is missing in Rehearsal's own environment ({sys.executable}), where "
        "alembic runs when phases.migrations.alembic.python is not set: set `python:` to the app's interpreter")
    assert not plan.evidence  # no traceback
