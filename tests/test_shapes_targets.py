"""Generic shapes against a small real HTTP server that misbehaves on purpose: journey bodies (form login,
multipart, raw) and every assertion kind failing with its message; the version read by JSON path, header or
regex; a release whose declared version is not the one running; freeze flags as a JSON path mapping; a
readiness gauge without a toggle; unique constraints and primary keys matched by columns (sandbox
PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.migrations import checks as migrations
from rehearsal_lib.phases.observability import checks as observability
from rehearsal_lib.phases.preflight import checks as preflight
from rehearsal_lib.probes.command import with_database
from rehearsal_lib.target import observed_version, read_identity

pytestmark = pytest.mark.integration  # a real HTTP server (and the sandbox PostgreSQL for the schema tests)

TOKEN = "tok-" + uuid.uuid4().hex


class Shapes(BaseHTTPRequestHandler):
    """A service of another shape: form login, nested version, flags, a gauge that disagrees."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object, ctype: str = "application/json", headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/me":
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"detail": "not authenticated"})
            return self._send(200, {"username": "alice", "role": 7, "items": [{"id": 2}, {"id": 1}],
                                    "bio": "x" * 400}, headers={"X-Request-ID": "req-1", "X-Version": "1.0"})
        if self.path == "/slow":
            time.sleep(0.3)
            return self._send(200, {})
        if self.path == "/version":
            return self._send(200, {"name": "shapes", "build": {"version": "2.0.0"}},
                              headers={"X-App-Version": "2.0.0"})
        if self.path == "/version.txt":
            return self._send(200, b"shapes version 2.0.0 (built today)", "text/plain")
        if self.path == "/flags":
            return self._send(200, {"maintenance_freeze": False, "jobs": {"state": "running"}})
        if self.path == "/ready":
            return self._send(200, {"ready": True})
        if self.path in ("/metrics", "/metrics-ok"):
            value = b"1" if self.path == "/metrics-ok" else b"0"
            return self._send(200, b"# TYPE app_ready gauge\napp_ready " + value + b"\n", "text/plain; version=0.0.4")
        return self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type", "")
        if self.path == "/token":
            if ctype != "application/x-www-form-urlencoded":
                return self._send(422, {"detail": f"form expected, got {ctype}"})
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            if form != {"username": "alice", "password": "pw-from-env"}:
                return self._send(401, {"detail": "wrong username or password"})
            return self._send(200, {"access_token": TOKEN, "token_type": "bearer"})
        # echo: what arrived, as the service saw it
        return self._send(201, {"content_type": ctype.split(";")[0], "size": len(raw),
                                "has_file": b'filename="report.csv"' in raw and b"a,b\r\n1,2" in raw,
                                "text": raw.decode(errors="replace")[:80]})


@pytest.fixture(scope="module")
def server() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Shapes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def phase(tmp_path: Path, name: str, base_url: str, phases: dict, **extra) -> PhaseRun:
    doc = {"name": "shapes", "target": {"base_url": base_url, "timeout_s": 2}, "phases": phases, **extra}
    path = tmp_path / f"shapes-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


LOGIN = {"name": "login", "method": "POST", "path": "/token", "auth": False,
         "form": {"username": "alice", "password": "${SHAPES_PW}"}, "save": {"access_token": "$.access_token"},
         "expect": {"$.token_type": {"equals": "bearer"}}}
ME = {"name": "me", "path": "/me", "auth": False, "headers": {"Authorization": "Bearer {access_token}"}}


def journey(tmp_path: Path, server: str, *steps: dict) -> list:
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"journey": [LOGIN, *steps]}})
    return ctx, preflight.check_journey(ctx)


def test_form_login_saves_a_token_from_a_json_path_and_a_header_uses_it(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SHAPES_PW", "pw-from-env")
    me = {**ME, "expect": {"$.username": {"equals": "alice"}, "$.items[*].id": {"type": "integer"},
                           "$.items": {"ordered": {"by": "id", "order": "desc"}, "length": 2}},
          "expect_headers": {"X-Request-ID": {"regex": "^req-"}}, "max_ms": 2000,
          "save": {"request_id": "header:X-Request-ID"}}
    echo = {"name": "echo", "method": "POST", "path": "/echo/{request_id}", "auth": False,
            "json": {"seen": "{request_id}"}, "expect_status": 201,
            "expect": {"$.text": {"equals": '{"seen": "req-1"}'}}}
    ctx, checks = journey(tmp_path, server, me, echo)
    assert [(c.id, c.status) for c in checks] == [("preflight.journey.login", "pass"), ("preflight.journey.me", "pass"),
                                                  ("preflight.journey.echo", "pass")], [c.observed for c in checks]
    shown = json.dumps([c.model_dump(mode="json") for c in checks])
    assert TOKEN not in shown and "pw-from-env" not in shown  # a saved token and a ${VAR} are secrets
    assert checks[0].evidence["request_body"] == {"form": {"username": "alice", "password": "${SHAPES_PW}"}}


def test_a_wrong_form_login_fails_and_the_rest_is_skipped(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SHAPES_PW", "wrong")
    _, (login, me) = journey(tmp_path, server, ME)
    assert login.status == "fail" and "HTTP 401" in login.observed
    assert me.status == "skip" and me.observed == "not tried: step login failed"


@pytest.mark.parametrize(("rule", "message"), [
    ({"expect": {"$.username": {"equals": "bob"}}}, '$.username: expected "bob", observed "alice"'),
    ({"expect": {"$.email": {"exists": True}}}, "$.email: expected to exist, observed nothing at that path"),
    ({"expect": {"$.role": {"type": "string"}}}, "$.role: expected type string, observed integer 7"),
    ({"expect": {"$.username": {"regex": "^b"}}}, '$.username: expected to match /^b/, observed "alice"'),
    ({"expect": {"$.items": {"length": 3}}}, "$.items: expected length 3, observed length 2"),
    ({"expect": {"$.items": {"ordered": {"by": "id"}}}},
     "$.items: expected ordered by id asc, observed 2 before 1 at positions 0 and 1"),
    ({"expect": {"$.bio": {"equals": "short"}}}, '$.bio: expected "short", observed "' + "x" * 100),
    ({"expect_headers": {"X-Version": {"equals": "2.0"}}}, 'header X-Version: expected "2.0", observed "1.0"'),
    ({"expect_headers": {"ETag": {"exists": True}}}, "header ETag: expected present, observed no such header"),
])
def test_each_assertion_kind_fails_naming_path_expected_and_observed(tmp_path, server, monkeypatch, rule, message):
    monkeypatch.setenv("SHAPES_PW", "pw-from-env")
    _, (login, me) = journey(tmp_path, server, {**ME, **rule})
    assert login.status == "pass", login.observed
    assert me.status == "fail" and me.observed.startswith(message), me.observed
    assert len(me.observed) < 250  # observed values are truncated
    assert me.evidence["failed assertions"][0].startswith(message)


def test_latency_bound_fails(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SHAPES_PW", "pw-from-env")
    _, (_, slow) = journey(tmp_path, server, {"name": "slow", "path": "/slow", "auth": False, "max_ms": 100})
    assert slow.status == "fail" and slow.observed.startswith("latency: expected at most 100 ms, observed "), \
        slow.observed


def test_multipart_and_raw_bodies_arrive_as_declared(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SHAPES_PW", "pw-from-env")
    upload = {"name": "upload", "method": "POST", "path": "/upload", "auth": False, "expect_status": 201,
              "form": {"title": "run {run_id}"},
              "files": {"report": {"content": "a,b\r\n1,2", "filename": "report.csv", "content_type": "text/csv"}},
              "expect": {"$.content_type": {"equals": "multipart/form-data"}, "$.has_file": {"equals": True}}}
    raw = {"name": "raw", "method": "POST", "path": "/raw", "auth": False, "expect_status": 201,
           "body": "<note>{access_token}</note>", "content_type": "application/xml",
           "expect": {"$.content_type": {"equals": "application/xml"}, "$.text": {"regex": "^<note>tok-"}}}
    _, checks = journey(tmp_path, server, upload, raw)
    assert [c.status for c in checks] == ["pass", "pass", "pass"], [c.observed for c in checks]


def test_an_unknown_placeholder_in_a_header_is_an_error_and_nothing_is_sent(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SHAPES_PW", "pw-from-env")
    _, (_, me) = journey(tmp_path, server, {**ME, "headers": {"Authorization": "Bearer {acces_token}"}})
    assert me.status == "error" and "unknown placeholder {acces_token} in headers.Authorization" in me.observed


def test_version_by_json_path_header_and_regex(tmp_path, server):
    for version in ({"endpoint": "/version", "json_path": "$.build.version", "expect": "2.0.0"},
                    {"endpoint": "/version", "header": "X-App-Version", "expect": "2.0.0"},
                    {"endpoint": "/version.txt", "regex": r"version (\S+)", "expect": "2.0.0"}):
        check = preflight.check_identity(phase(tmp_path, "preflight", server, {"preflight": {"version": version}}))
        assert check.status == "pass" and "2.0.0" in check.observed, (version, check.observed)
    wrong = preflight.check_identity(phase(tmp_path, "preflight", server, {"preflight": {"version": {
        "endpoint": "/version", "json_path": "$.build.version", "expect": "2.1.0"}}}))
    assert wrong.status == "fail" and wrong.observed == "the service runs 2.0.0, not 2.1.0"
    missing = preflight.check_identity(phase(tmp_path, "preflight", server, {"preflight": {"version": {
        "endpoint": "/version", "json_path": "$.version"}}}))
    assert missing.status == "fail" and missing.observed == "/version: $.version selects nothing, not one version value"
    # the sandbox's shape still needs service/version fields; this service has neither
    legacy = preflight.check_identity(phase(tmp_path, "preflight", server, {"preflight": {
        "version_endpoint": "/version"}}))
    assert legacy.status == "fail" and "no 'version' field" in legacy.observed


def test_identity_of_a_service_without_service_field_uses_the_configured_extraction(tmp_path, server):
    params = phase(tmp_path, "preflight", server, {"preflight": {"version": {
        "endpoint": "/version.txt", "regex": r"version (\S+)"}}}).params
    ident = read_identity(params, server, None)
    assert ident["version"] == {"endpoint": "/version.txt", "answer": {"version": "2.0.0"}}
    assert observed_version(ident) == "2.0.0"


def test_release_version_that_is_not_running_fails_naming_both(tmp_path, server):
    release = {"name": "shapes", "version": "2.1.0", "commit": "abc123", "change_url": "https://example.org/pr/7"}
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"version": {
        "endpoint": "/version", "json_path": "$.build.version"}}}, release=release)
    identity = preflight.check_identity(ctx)
    assert identity.status == "pass"
    rel = next(c for c in ctx.checks if c.id == "preflight.release.version")
    assert (rel.status, rel.severity) == ("fail", "blocker")
    assert rel.observed == "the target runs 2.0.0, but the release under test is 2.1.0"
    unread = phase(tmp_path, "preflight", server, {"preflight": {"version": {
        "endpoint": "/version", "json_path": "$.nope"}}}, release=release)
    preflight.check_identity(unread)
    rel = next(c for c in unread.checks if c.id == "preflight.release.version")
    assert rel.status == "error" and rel.observed.startswith("the running version was not read")


def test_freeze_flags_mapping_each_path_its_check(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"freeze": {
        "endpoint": "/flags", "auth": False,
        "expect": {"$.maintenance_freeze": True, "$.jobs.state": "paused", "$.jobs.count": 0}}}})
    checks = {c.id: c for c in preflight.check_freeze(ctx)}
    assert {k: c.status for k, c in checks.items()} == {"preflight.freeze.maintenance_freeze": "fail",
                                                        "preflight.freeze.jobs_state": "fail",
                                                        "preflight.freeze.jobs_count": "fail"}
    assert checks["preflight.freeze.maintenance_freeze"].observed == (
        "$.maintenance_freeze: expected true, observed false")
    assert checks["preflight.freeze.jobs_state"].observed == '$.jobs.state: expected "paused", observed "running"'
    assert checks["preflight.freeze.jobs_count"].observed == (
        "$.jobs.count: expected 0, observed nothing at that path")
    assert "exam" not in json.dumps([c.model_dump(mode="json") for c in checks.values()]).lower()


def test_readiness_gauge_without_a_toggle(tmp_path, server):
    block = {"metrics": {"url": "/metrics"}, "readiness_gauge": {"endpoint": "/ready", "gauge": "app_ready"}}
    check = observability.check_readiness_gauge(phase(tmp_path, "observability", server, {"observability": block}))
    assert check.status == "fail" and check.observed == "app_ready reads 0 while /ready answers HTTP 200 (ready)"
    block["readiness_gauge"]["gauge"] = "app_readiness"
    check = observability.check_readiness_gauge(phase(tmp_path, "observability", server, {"observability": block}))
    assert check.status == "fail" and check.observed.startswith("no gauge app_readiness on the metrics endpoint")
    ok = {"metrics": {"url": "/metrics-ok"}, "readiness_gauge": {"endpoint": "/ready", "gauge": "app_ready"}}
    check = observability.check_readiness_gauge(phase(tmp_path, "observability", server, {"observability": ok}))
    assert check.status == "pass" and check.observed == "app_ready reads 1 while /ready answers HTTP 200 (ready)"


def test_unique_constraints_and_primary_keys_matched_by_columns(tmp_path, sandbox, monkeypatch):
    dbname = f"shapes_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sandbox.admin_db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{dbname}"')
    url = with_database(sandbox.admin_db_url, dbname)
    try:
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with eng.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE account (id int, tenant int, email text, CONSTRAINT whatever_name "
                                 "UNIQUE (email, tenant))")
            conn.exec_driver_sql("CREATE TABLE item (sku text PRIMARY KEY, code text)")
            conn.exec_driver_sql("CREATE UNIQUE INDEX some_idx ON item (code)")
        eng.dispose()
        monkeypatch.setenv("SHAPES_DB", url)
        post = {"unique": [{"table": "account", "columns": ["tenant", "email"]}, {"table": "item", "columns": ["code"]},
                           {"table": "account", "columns": ["id"]}],
                "primary_keys": [{"table": "item", "columns": ["sku"]}, {"table": "account", "columns": ["id"]}]}
        ctx = phase(tmp_path, "migrations", "http://127.0.0.1:9",
                    {"migrations": {"sql_dir": {"directory": str(tmp_path)}, "postconditions": post}},
                    **{"target": {"base_url": "http://127.0.0.1:9", "database_url": "${SHAPES_DB}"}})
        checks = {c.id: c for c in migrations.check_postconditions(ctx)}
        unique, pks = checks["migrations.post.unique"], checks["migrations.post.primary_keys"]
        assert unique.status == "fail" and unique.observed == (
            "no unique constraint or unique index on account(id) (unique on account: (email, tenant))")
        assert pks.status == "fail" and pks.observed == "primary key of account is missing, not (id)"
        assert [r[1] for r in unique.evidence["sample"]] == ["yes", "yes", "no"]
        assert [r[1] for r in pks.evidence["sample"]] == ["yes", "no"]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.dispose()
