"""`rehearse init` against a small real HTTP service (http.server in a thread) that records the method of every
request: only GETs; every security scheme kind becomes a principal with `${VAR}` secrets; the file validates;
an existing file is kept. And the fuzz block's write-safety rules (no server needed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rehearsal_lib.config import ConfigError, load_params
from rehearsal_lib.init_params import InitError, init
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.security import fuzz

DOC = {
    "openapi": "3.1.0", "info": {"title": "Shop", "version": "1"},
    "components": {"securitySchemes": {
        "Bearer": {"type": "http", "scheme": "bearer"},
        "Key": {"type": "apiKey", "in": "header", "name": "X-Shop-Key"},
        "Basic": {"type": "http", "scheme": "basic"},
        "Cookie": {"type": "apiKey", "in": "cookie", "name": "sid"}}},
    "paths": {
        "/healthz": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/meta/version": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/orders": {"get": {"security": [{"Bearer": []}], "responses": {"200": {"description": "ok"}}},
                    "post": {"security": [{"Bearer": []}], "responses": {"201": {"description": "made"}}}},
        "/orders/{id}": {"get": {"security": [{"Key": []}], "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "example": 7}}],
            "responses": {"200": {"description": "ok"}}},
            "delete": {"security": [{"Key": []}], "responses": {"204": {"description": "gone"}}}},
        "/reports": {"get": {"security": [{"Basic": []}], "parameters": [
            {"name": "day", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "ok"}}}},
    },
}
ANSWERS = {"/openapi.json": DOC, "/healthz": {"ok": True}, "/readyz": {"ready": True},
           "/meta/version": {"build": {"version": "3.2.1"}}}
METRICS = "# TYPE shop_ready gauge\nshop_ready 1\n# TYPE shop_orders_total counter\nshop_orders_total 4\n"


@pytest.fixture
def shop():
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            if self.path == "/metrics":
                body, kind, code = METRICS.encode(), "text/plain; version=0.0.4", 200
            elif self.path in ANSWERS:
                body, kind, code = json.dumps(ANSWERS[self.path]).encode(), "application/json", 200
            else:
                body, kind, code = b'{"detail": "not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_init_reads_with_gets_only_and_writes_a_valid_file(shop, tmp_path, monkeypatch):
    url, seen = shop
    path, report = init("shop", url, tmp_path)
    assert seen and {s.split()[0] for s in seen} == {"GET"}, seen  # never the POST or DELETE operations
    assert len(report.requests) == len(seen)
    doc = yaml.safe_load(path.read_text())
    assert doc["target"]["auth"]["default"] == "bearer"
    principals = doc["target"]["auth"]["principals"]
    assert principals == {
        "bearer": {"scheme": "bearer", "token": "${SHOP_BEARER_TOKEN}"},
        "key": {"scheme": "api_key", "header": "X-Shop-Key", "key": "${SHOP_KEY_KEY}"},
        "basic": {"scheme": "basic", "username": "rehearsal", "password": "${SHOP_BASIC_PASSWORD}"}}
    assert any("'Cookie'" in line and "no principal" in line for line in report.undecided)
    pre = doc["phases"]["preflight"]
    assert (pre["health_endpoint"], pre["ready_endpoint"]) == ("/healthz", "/readyz")
    assert pre["version"] == {"endpoint": "/meta/version", "json_path": "$.build.version"}
    assert [(s["name"], s["path"], s.get("as")) for s in pre["journey"]] == [
        ("orders", "/orders", "bearer"), ("orders_id", "/orders/7", "key")]  # /reports: `day` has no example
    protected = doc["phases"]["security"]["protected_endpoints"]
    assert [(p["path"], p["as"]) for p in protected] == [("/orders", "bearer"), ("/orders/7", "key")]
    assert any("POST /orders" in line and "DELETE /orders/{id}" in line for line in report.undecided)
    obs = doc["phases"]["observability"]
    assert {s["name"] for s in obs["metrics"]["series"]} == {"shop_ready", "shop_orders"}
    assert obs["readiness_gauge"] == {"endpoint": "/readyz", "gauge": "shop_ready"}
    for var in ("SHOP_BEARER_TOKEN", "SHOP_KEY_KEY", "SHOP_BASIC_PASSWORD"):
        monkeypatch.setenv(var, f"value-of-{var}")
    params = load_params(str(path))
    assert params.enabled_phases() == ["preflight", "integrity", "security", "observability", "decision"]
    before = path.read_text()
    with pytest.raises(InitError, match="does not overwrite it without --force"):
        init("shop", url, tmp_path)
    assert path.read_text() == before
    seen.clear()
    init("shop", url, tmp_path, force=True)
    assert {s.split()[0] for s in seen} == {"GET"}


def _fuzz_params(tmp_path: Path, kind: str, block: dict) -> Path:
    doc = {"name": "fz", "environment": {"kind": kind}, "target": {"base_url": "http://127.0.0.1:9"},
           "phases": {"security": {"fuzz": block}}}
    path = tmp_path / "fz.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_fuzz_refuses_unsafe_operations_without_allow_writes(tmp_path):
    path = _fuzz_params(tmp_path, "staging", {"operations": ["GET /a", "POST /orders"]})
    with pytest.raises(ConfigError, match="POST /orders: only GET, HEAD and OPTIONS are fuzzed unless allow_writes"):
        load_params(str(path))


def test_fuzz_with_writes_is_skipped_in_production_without_the_flag(tmp_path, monkeypatch):
    """allow_writes makes the checks write: production refuses them before any request (the target here
    answers nothing, so a probe that ran would be `error`)."""
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    path = _fuzz_params(tmp_path, "production", {"operations": ["POST /orders"], "allow_writes": True})
    checks = fuzz.check_fuzz(PhaseRun("security", str(path), params=load_params(str(path))))
    assert [c.id for c in checks] == ["security.fuzz.server_errors", "security.fuzz.schema", "security.fuzz.latency"]
    assert {c.status for c in checks} == {"skip"}
    assert "writes refused in a production environment" in checks[0].observed


def test_orphan_checks_for_id_columns_without_a_foreign_key_name_the_guessed_parent(tmp_path):
    """`*_id` without a foreign key: a zero-row check against the guessed parent, with a TODO to confirm it;
    no parent found: said, no check. The file validates."""
    from rehearsal_lib.init_params import Catalogue, Report, Writer, guess_parent, render_integrity

    names = [("public", t, t) for t in ("orders", "customers", "category")]
    cat = Catalogue(tables={"orders": 3, "customers": 2, "category": 1})
    assert guess_parent("customer", cat, names) == "customers" and guess_parent("category", cat, names) == "category"
    cat.orphans = [("orders", "customer_id", "customers"), ("orders", "tenant_id", None)]
    w, report = Writer(), Report()
    w(0, "name: orphans")
    w(0, "target: {base_url: 'http://127.0.0.1:9', database_url: '${DB}'}")
    w(0, "phases:")
    render_integrity(w, cat, report)
    assert "TODO: confirm customers.id is the parent of orders.customer_id" in w.text()
    (tmp_path / "o.yaml").write_text(w.text())
    params = load_params(str(tmp_path / "o.yaml"), check_env_vars=False)
    check = params.phases.integrity.zero_row_checks[0]
    assert check.name == "orders_customer_id_orphans"
    assert check.sql == ("SELECT c.customer_id FROM orders c WHERE c.customer_id IS NOT NULL AND NOT EXISTS "
                         "(SELECT 1 FROM customers p WHERE p.id = c.customer_id)")
    assert any("orders.tenant_id has no foreign key and no table looks like its parent" in u for u in report.undecided)


def test_init_refuses_a_target_that_does_not_answer_and_writes_nothing(tmp_path):
    """Tried as a new user: init against a dead port exited 0 and wrote a file of guesses."""
    with pytest.raises(InitError, match=r"no answer .*Nothing was written"):
        init("dead", "http://127.0.0.1:1", tmp_path)  # port 1: nothing listens (connection refused)
    assert not (tmp_path / "params" / "dead.yaml").exists()
