"""A verdict needs evidence: probes that never reached the handler, percentiles without responses and
payloads echoed inside JSON are not findings or passes.

Each case runs the real check through PhaseRun against a small real HTTP server on 127.0.0.1 that
misbehaves like the services that exposed the gap: an API-key service that ignores our Bearer
token (401 everywhere), a framework that redirects to the trailing-slash path (307), FastAPI's 422
JSON error body echoing the input, a page echoing it raw as HTML, a target that dies mid-run.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.load.reference_server import free_port
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.backup_recovery import checks as backup_recovery
from rehearsal_lib.phases.load import checks as load
from rehearsal_lib.phases.preflight import checks as preflight
from rehearsal_lib.phases.security import checks as security

pytestmark = pytest.mark.integration

TOKEN = "bearer-the-service-ignores"
API_KEY = "the-real-api-key"
XSS = "<script>alert('x')</script>"


class ApiKeyService(BaseHTTPRequestHandler):
    """Wants X-API-Key and ignores `Authorization: Bearer` (401 under /api/); FastAPI-like elsewhere."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str | None = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _keyed(self) -> bool:
        if self.headers.get("X-API-Key") == API_KEY:
            return True
        self._send(401, b'{"detail": "Not authenticated"}')
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health":
            self._send(200, b'{"status": "ok"}')
        elif self.path == "/api/exam-mode" and self._keyed():
            self._send(200, b'{"exam_mode": true}')
        elif not self.path.startswith("/api/"):
            self._send(404, b'{"detail": "Not Found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if self.path.startswith("/api/"):
            if self._keyed():  # with the right key, malformed JSON crashes the handler
                try:
                    json.loads(body)
                    self._send(201, b'{"id": "s1"}')
                except ValueError:
                    self._send(500, b"Internal Server Error", "text/plain")
        elif self.path == "/items":  # FastAPI's redirect_slashes
            self._send(307, b"", headers={"Location": "/items/"})
        elif self.path == "/items/":
            self._send(201, b'{"id": "i1"}')
        elif self.path == "/sessions":  # FastAPI's validation error: the input inside a JSON body
            data = json.loads(body)
            detail = [{"type": "int_parsing", "loc": ["body", "exam_id"],
                       "msg": "Input should be a valid integer", "input": data.get("exam_id")}]
            self._send(422, json.dumps({"detail": detail}).encode())
        elif self.path == "/html-echo":
            self._send(400, b"<p>bad input: " + body + b"</p>", "text/html; charset=utf-8")
        elif self.path == "/untyped-echo":
            self._send(400, b"bad input: " + body, None)
        else:
            self._send(404, b'{"detail": "Not Found"}')


class DiesAfterThree(BaseHTTPRequestHandler):
    """Answers three requests, then the server stops listening (the target died)."""

    answered = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        DiesAfterThree.answered += 1
        if DiesAfterThree.answered == 3:  # the last answer: stop listening first (shutdown waits for the loop)
            self.server.shutdown()
            self.server.server_close()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def service() -> str:
    httpd = _serve(ApiKeyService)
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def phase(tmp_path: Path, name: str, base_url: str, phases: dict, **target) -> PhaseRun:
    doc = {"name": "probe", "environment": {"kind": "staging"},
           "target": {"base_url": base_url, "timeout_s": 1, "auth_token": "${PROBE_TOKEN}", **target},
           "phases": phases, "safety": {"allow_destructive": True}}  # the destructive phases' checks may write
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


@pytest.fixture(autouse=True)
def _token(monkeypatch) -> None:
    monkeypatch.setenv("PROBE_TOKEN", TOKEN)


# ------------------------------------------------------------ probes that never reached the handler


def test_bad_inputs_answered_401_are_errors_not_clean_refusals(tmp_path, service):
    probes = [{"name": "malformed_json", "path": "/api/sessions", "body": '{"candidate_id": "x", "exam_id": '},
              {"name": "xss", "path": "/api/sessions", "json": {"candidate_id": XSS}},
              {"name": "anonymous", "path": "/api/sessions", "json": {"candidate_id": XSS}, "auth": False}]
    ctx = phase(tmp_path, "security", service, {"security": {"bad_inputs": probes}})
    malformed, xss, anonymous = security.check_bad_inputs(ctx)
    for check in (malformed, xss):
        assert check.status == "error", check.observed
        assert check.observed.startswith("not authenticated, the behaviour under test was not exercised: HTTP 401")
        assert check.evidence["status"] == 401
    # a probe that declares it runs unauthenticated is judged on its answer: 401 is a clean 4xx
    assert anonymous.status == "pass" and anonymous.observed == "HTTP 401"
    assert TOKEN not in json.dumps([c.model_dump(mode="json") for c in ctx.checks])


def test_journey_and_freeze_flag_answered_401_are_errors(tmp_path, service):
    steps = [{"name": "create", "method": "POST", "path": "/api/sessions", "json": {"a": 1}, "expect_status": 201,
              "save": {"sid": "id"}},
             {"name": "read", "path": "/api/sessions/{sid}"}]
    ctx = phase(tmp_path, "preflight", service,
                {"preflight": {"journey": steps, "exam_mode": {"endpoint": "/api/exam-mode"}}})
    create, read = preflight.check_journey(ctx)
    assert create.status == "error"
    assert "not authenticated, the behaviour under test was not exercised" in create.observed
    assert read.status == "skip" and "step create failed" in read.observed
    flag = preflight.check_exam_mode(ctx)
    assert flag.status == "error" and flag.observed.startswith("not authenticated") and "HTTP 401" in flag.observed
    # declared unauthenticated: a 401 is the service's answer, judged as such (here: not the expected 201)
    anon = phase(tmp_path, "preflight", service, {"preflight": {"journey": [{**steps[0], "auth": False}]}})
    [step] = preflight.check_journey(anon)
    assert step.status == "fail" and "HTTP 401" in step.observed


def test_restart_service_check_answered_401_is_an_error(tmp_path, service):
    restart = {"command": "{python} -c pass", "timeout_s": 10, "rto_max_s": 10,
               "service_checks": [{"name": "create", "method": "POST", "path": "/api/sessions", "json": {"a": 1},
                                   "expect_status": 201}]}
    ctx = phase(tmp_path, "backup_recovery", service,
                {"backup_recovery": {"ready_endpoint": None, "restart": restart}})
    rto, create = backup_recovery.check_restart(ctx)
    assert rto.status == "pass", rto.observed
    assert create.id == "backup_recovery.restart.service.create"
    assert create.status == "error" and create.observed.startswith("not authenticated")


def test_redirect_is_an_error_naming_location_and_passes_when_followed(tmp_path, service):
    step = {"name": "create", "method": "POST", "path": "/items", "json": {"a": 1}, "expect_status": 201}
    ctx = phase(tmp_path, "preflight", service, {"preflight": {"journey": [step]}})
    [check] = preflight.check_journey(ctx)
    assert check.status == "error" and "HTTP 307 to /items/" in check.observed and "follow_redirects" in check.observed
    assert check.evidence["headers"]["location"] == "/items/"
    followed = phase(tmp_path, "preflight", service, {"preflight": {"journey": [step]}}, follow_redirects=True)
    [check] = preflight.check_journey(followed)
    assert check.status == "pass" and check.evidence["redirects followed"] == ["307 -> /items/"]
    per_step = phase(tmp_path, "preflight", service, {"preflight": {"journey": [{**step, "follow_redirects": True}]}})
    assert preflight.check_journey(per_step)[0].status == "pass"
    probe = {"name": "redirected", "path": "/items", "json": {"q": XSS}}
    sec = phase(tmp_path, "security", service, {"security": {"bad_inputs": [probe]}})
    [bad] = security.check_bad_inputs(sec)
    assert bad.status == "error" and "HTTP 307 to /items/" in bad.observed


# ------------------------------------------------------------ reflection judged by content type


def test_payload_inside_json_422_is_not_reflected_xss(tmp_path, service):
    probes = [{"name": "fastapi_422", "path": "/sessions", "json": {"candidate_id": "x", "exam_id": XSS}},
              {"name": "html_echo", "path": "/html-echo", "json": {"q": XSS}},
              {"name": "untyped_echo", "path": "/untyped-echo", "json": {"q": XSS}}]
    ctx = phase(tmp_path, "security", service, {"security": {"bad_inputs": probes}})
    fastapi, html_echo, untyped = security.check_bad_inputs(ctx)
    assert XSS in json.dumps(fastapi.evidence["body"])  # the payload is in the answer ...
    assert fastapi.status == "pass" and fastapi.observed == "HTTP 422"  # ... but inside JSON: not a finding
    assert "application/json" in fastapi.evidence["reflection"] and "not reflected as markup" in \
        fastapi.evidence["reflection"]
    assert html_echo.status == "fail" and "echoed verbatim as text/html" in html_echo.observed
    assert untyped.status == "fail" and "without content type" in untyped.observed


# ------------------------------------------------------------ percentiles of answered requests only


def test_load_against_a_dead_port_never_passes_latency(tmp_path):
    scenario = {"name": "submit_session", "path": "/", "auth": False, "p95_ms": 500, "p99_ms": 1000}
    stages = [{"name": "spike", "rate": 40, "duration_s": 1, "scenarios": [scenario]}]
    ctx = phase(tmp_path, "load", f"http://127.0.0.1:{free_port()}",
                {"load": {"generator": {"max_scheduler_lag_ms": 200, "min_rate_ratio": 0.8, "timeout_s": 1},
                          "stages": stages, "db_connections": None}})
    run = load.run_load_phase(ctx)
    got = {c.id: c for c in load.check_latency(ctx, run) + load.check_errors(ctx, run)}
    for cid in ("load.p95.submit_session", "load.p99.submit_session"):
        check = got[cid]
        assert check.status == "error", (cid, check.observed)
        assert check.observed.startswith("not enough responses: 0 of ") and "at least 10 needed" in check.observed
        assert "no response: error:" in check.observed and check.metrics["answered"] == 0
    assert got["load.errors.submit_session"].status == "fail"  # the connection errors gate here


def test_preflight_latency_of_a_target_that_dies_is_an_error(tmp_path):
    httpd = _serve(DiesAfterThree)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    ctx = phase(tmp_path, "preflight", url,
                {"preflight": {"latency": {"endpoints": ["/health"], "samples": 20, "p95_ms": 1000}}})
    check = preflight.check_latency(ctx)
    assert check.status == "error", check.observed
    assert check.observed.startswith("not enough responses: 3 of 20 requests answered 2xx, at least 10 needed")
    assert check.metrics["errors"] == 17 and "connection failed" in check.evidence["errors"][0]
    dead = phase(tmp_path, "preflight", f"http://127.0.0.1:{free_port()}", {})
    check = preflight.check_latency(dead)
    assert check.status == "error" and check.observed.startswith("not enough responses: 0 of 40")
