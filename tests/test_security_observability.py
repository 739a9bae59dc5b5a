"""Security and observability checks fail honestly, and say why.

HTTP and TLS failure modes come from small real servers on 127.0.0.1 (refused connection, timeout,
wrong code, garbage body, missing header, echoing server, TLS with an expired / untrusted /
wrong-host certificate); SQL ones from the real sandbox PostgreSQL; and every planted defect of
the real ``faulty`` sandbox is caught by its own check with the expected reason.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.observability import checks as observability
from rehearsal_lib.phases.security import checks as security
from rehearsal_lib.probes.sql import query
from rehearsal_lib.sandbox import stop_sandbox
from rehearsal_lib.sandbox.tls import make_certificates

pytestmark = pytest.mark.integration  # real HTTP and TLS servers, the real sandbox


class Handler(BaseHTTPRequestHandler):
    """Each path misbehaves in one way; `healthy` is a toggle that readiness ignores or follows."""

    healthy = True
    follow = True

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/metrics-garbage":
            self._send(200, b"this is { not prometheus\n", "text/plain")
        elif self.path == "/metrics":
            self._send(200, b"# TYPE up gauge\nup 0\n", "text/plain; version=0.0.4")
        elif self.path == "/metrics-bad-histogram":
            self._send(200, b"# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 5\nlat_bucket{le=\"1\"} 3\n"
                            b"lat_bucket{le=\"+Inf\"} 7\nlat_count 9\nlat_sum 2\n", "text/plain")
        elif self.path == "/metrics-500":
            self._send(500, b"oops", "text/plain")
        elif self.path == "/ready":
            ok = Handler.healthy or not Handler.follow
            self._send(200 if ok else 503, b"{}")
        elif self.path == "/weak-headers":
            self._send(200, b"{}", headers={"X-Frame-Options": "ALLOWALL"})
        elif self.path == "/hang":
            time.sleep(3)
            self._send(200, b"{}")
        else:  # no request id echoed, no security headers
            self._send(200, b'{"status": "ok"}')

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/echo":
            self._send(400, b"<p>bad input: " + body + b"</p>", "text/html")
        elif self.path == "/crash":
            self._send(500, b'{"error": "internal"}')
        else:  # accepts anything, credentials or not
            self._send(200, b"{}")

    def do_PUT(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        Handler.healthy = json.loads(self.rfile.read(length))["healthy"]
        self._send(200, b"{}")


def serve(httpd: ThreadingHTTPServer):
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd


@pytest.fixture(scope="module")
def server() -> str:
    httpd = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase(tmp_path: Path, name: str, base_url: str, phases: dict, kind: str = "staging", **target) -> PhaseRun:
    doc = {"name": "probe", "environment": {"kind": kind}, "target": {"base_url": base_url, "timeout_s": 1, **target},
           "phases": phases}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


# ------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """HTTPS servers: name -> (url, ca_file)."""
    out, servers = {}, []
    now = dt.datetime.now(dt.UTC)
    variants = {"good": {}, "expired": {"days": 1, "not_before": now - dt.timedelta(days=10)},
                "soon": {"days": 3}, "wrong_host": {"hosts": ("other.example",)}, "tls11": {}}
    for name, kw in variants.items():
        files = make_certificates(tmp_path_factory.mktemp(f"tls-{name}"), **kw)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if name == "tls11":  # a legacy server: TLS 1.0/1.1 only
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.load_cert_chain(files.cert_file, files.key_file)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        servers.append(serve(httpd))
        out[name] = (f"https://127.0.0.1:{httpd.server_address[1]}", str(files.ca_file))
    yield out
    for s in servers:
        s.shutdown()


def tls_checks(tmp_path, url: str, ca: str | None) -> dict:
    tls_cfg = {"url": url, "min_days": 14, **({"ca_file": ca} if ca else {})}
    ctx = phase(tmp_path, "security", url, {"security": {"tls": tls_cfg}})
    return {c.id.rsplit(".", 1)[1]: c for c in security.check_tls(ctx)}


def test_valid_certificate_passes_all_tls_checks(tmp_path, tls_servers):
    checks = tls_checks(tmp_path, *tls_servers["good"])
    assert {k: c.status for k, c in checks.items()} == {"certificate": "pass", "expiry": "pass", "protocol": "pass"}
    assert "TLS 1.3" in checks["protocol"].observed
    assert checks["protocol"].observed.endswith("; TLS 1.1 refused")  # the SSL library's words stay in evidence
    assert not {"error", "verify_error"} & set(checks["certificate"].evidence)  # no 'error: None' in the report


def test_expired_certificate_fails_chain_and_expiry(tmp_path, tls_servers):
    checks = tls_checks(tmp_path, *tls_servers["expired"])
    assert checks["certificate"].status == "fail" and "certificate has expired" in checks["certificate"].observed
    assert checks["expiry"].status == "fail" and checks["expiry"].observed.startswith("expired")


def test_certificate_expiring_soon_fails_expiry_only(tmp_path, tls_servers):
    checks = tls_checks(tmp_path, *tls_servers["soon"])
    assert checks["certificate"].status == "pass"
    assert checks["expiry"].status == "fail" and "expires in 3.0 days" in checks["expiry"].observed


def test_untrusted_issuer_fails(tmp_path, tls_servers):
    url, _ = tls_servers["good"]
    check = tls_checks(tmp_path, url, None)["certificate"]  # system CAs do not know the throwaway CA
    assert check.status == "fail" and "unable to get local issuer certificate" in check.observed


def test_wrong_hostname_fails(tmp_path, tls_servers):
    check = tls_checks(tmp_path, *tls_servers["wrong_host"])["certificate"]
    assert check.status == "fail" and "IP address mismatch" in check.observed


def test_legacy_protocol_fails_protocol_check(tmp_path, tls_servers):
    checks = tls_checks(tmp_path, *tls_servers["tls11"])
    assert checks["protocol"].status == "fail" and checks["protocol"].observed.startswith("negotiated TLS 1.1")
    assert checks["certificate"].status == "fail" and "protocol version" in checks["certificate"].observed
    assert checks["expiry"].status == "pass"  # the certificate itself is still read


def test_tls_handshake_timeout_is_error(tmp_path):
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        checks = tls_checks(tmp_path, f"https://127.0.0.1:{silent.getsockname()[1]}", None)
    assert {c.status for c in checks.values()} == {"error"} and "timed out" in checks["certificate"].observed


def test_tls_refused_and_plain_http_are_errors(tmp_path, server):
    refused = tls_checks(tmp_path, f"https://127.0.0.1:{closed_port()}", None)
    assert {c.status for c in refused.values()} == {"error"} and "refused" in refused["certificate"].observed
    plain = tls_checks(tmp_path, server.replace("http://", "https://"), None)
    assert {c.status for c in plain.values()} == {"error"} and "SSL" in plain["certificate"].observed


# ------------------------------------------------------------------------------- headers, auth, input


def test_missing_and_weak_headers_fail_refused_is_error(tmp_path, server):
    ctx = phase(tmp_path, "security", server, {"security": {"headers": {"path": "/weak-headers"}}})
    checks = {c.id: c for c in security.check_headers(ctx)}
    assert "security.headers.strict_transport_security" not in checks  # plain HTTP: HSTS not required
    nosniff = checks["security.headers.x_content_type_options"]
    assert nosniff.status == "fail" and "X-Content-Type-Options missing" in nosniff.observed
    frame = checks["security.headers.x_frame_options"]
    assert frame.status == "fail" and "'ALLOWALL' is not DENY or SAMEORIGIN" in frame.observed
    down = phase(tmp_path, "security", f"http://127.0.0.1:{closed_port()}", {"security": {"headers": {}}})
    assert {c.status for c in security.check_headers(down)} == {"error"}


def test_endpoint_accepting_anything_fails_auth(tmp_path, server):
    spec = {"name": "open", "method": "POST", "path": "/open", "json": {"a": 1}}
    ctx = phase(tmp_path, "security", server, {"security": {"protected_endpoints": [spec]}})
    [check] = security.check_auth(ctx)
    assert check.status == "fail" and "no credentials and wrong token" in check.observed
    down = phase(tmp_path, "security", f"http://127.0.0.1:{closed_port()}",
                 {"security": {"protected_endpoints": [spec]}})
    assert security.check_auth(down)[0].status == "error"


def test_bad_inputs_5xx_echo_and_timeout(tmp_path, server):
    probes = [{"name": "crash", "path": "/crash", "body": "{not json"},
              {"name": "echo", "path": "/echo", "json": {"q": "<script>alert(1)</script>"}},
              {"name": "hang", "method": "GET", "path": "/hang"}]
    ctx = phase(tmp_path, "security", server, {"security": {"bad_inputs": probes}})
    crash, echo, hang = security.check_bad_inputs(ctx)
    assert crash.status == "fail" and crash.observed == "server error: HTTP 500"
    assert echo.status == "fail" and "echoed verbatim" in echo.observed
    assert hang.status == "error" and "timed out" in hang.observed


# -------------------------------------------------------------------------------------- observability


def test_metrics_garbage_wrong_code_refused_and_missing_series(tmp_path, server):
    series = [{"name": "up", "type": "gauge", "min": 1}, {"name": "http_request_duration_seconds"}]
    cases = {"/metrics-garbage": ("fail", "does not parse"), "/metrics-500": ("fail", "HTTP 500")}
    for url, (status, reason) in cases.items():
        ctx = phase(tmp_path, "observability", server, {"observability": {"metrics": {"url": url, "series": series}}})
        parse, *rest = observability.check_metrics(ctx)
        assert parse.status == status and reason in parse.observed
        assert {c.status for c in rest} == {"error"}  # never a pass on metrics that were not read
    ctx = phase(tmp_path, "observability", server, {"observability": {"metrics": {"series": series}}})
    parse, up, missing = observability.check_metrics(ctx)
    assert parse.status == "pass"
    assert up.status == "fail" and "out of range" in up.observed
    assert missing.status == "fail" and "no metric family http_request_duration_seconds" in missing.observed
    hist = {"url": "/metrics-bad-histogram", "series": [{"name": "lat", "type": "histogram", "min": 1}]}
    _, lat = observability.check_metrics(phase(tmp_path, "observability", server, {"observability": {"metrics": hist}}))
    assert lat.status == "fail" and "buckets decrease" in lat.observed
    down = phase(tmp_path, "observability", f"http://127.0.0.1:{closed_port()}", {"observability": {"metrics": {}}})
    assert observability.check_metrics(down)[0].status == "error"


def test_readiness_that_ignores_the_toggle_fails_and_health_is_restored(tmp_path, server):
    cfg = {"readiness": {"endpoint": "/ready", "toggle_path": "/toggle", "within_s": 0.6, "poll_interval_s": 0.1}}
    Handler.follow = False
    try:
        check = observability.check_readiness_toggle(phase(tmp_path, "observability", server, {"observability": cfg}))
    finally:
        Handler.follow = True
    assert check.status == "fail" and "still reported ready" in check.observed
    assert Handler.healthy is True  # restored in the finally
    check = observability.check_readiness_toggle(phase(tmp_path, "observability", server, {"observability": cfg}))
    assert check.status == "pass" and check.metrics["unready_after_s"] is not None and Handler.healthy is True


def test_readiness_unreachable_is_error_and_not_ready_fails(tmp_path, server):
    cfg = {"readiness": {"endpoint": "/ready", "toggle_path": "/toggle", "within_s": 0.3, "poll_interval_s": 0.1}}
    down = phase(tmp_path, "observability", f"http://127.0.0.1:{closed_port()}", {"observability": cfg})
    check = observability.check_readiness_toggle(down)
    assert check.status == "error" and "gives no response before the toggle" in check.observed
    cfg["readiness"]["endpoint"] = "/metrics-500"
    check = observability.check_readiness_toggle(phase(tmp_path, "observability", server, {"observability": cfg}))
    assert check.status == "fail" and "answers HTTP 500 before the toggle" in check.observed


def test_readiness_toggle_refused_in_production(tmp_path, server, monkeypatch):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    Handler.healthy = True
    cfg = {"readiness": {"endpoint": "/ready", "toggle_path": "/toggle"}}
    ctx = phase(tmp_path, "observability", server, {"observability": cfg}, kind="production")
    check = observability.check_readiness_toggle(ctx)
    assert check.status == "skip" and "production" in check.observed


def test_request_id_not_echoed_not_logged_and_text_logs_fail(tmp_path, server):
    log = tmp_path / "app.log"
    log.write_text('{"msg": "ok"}\nplain text line\nplain text line\n')
    cfg = {"request_id": {"path": "/health"}, "logs": {"file": str(log), "wait_s": 0.3}}
    ctx = phase(tmp_path, "observability", server, {"observability": cfg})
    echo, logged = observability.check_request_id(ctx)
    assert echo.status == "fail" and echo.observed == "no X-Request-ID header"
    assert logged.status == "fail" and "not found in the last 3 log lines" in logged.observed
    assert logged.evidence["last_lines"][0] == {"msg": "ok"}  # a JSON line as its object, not escaped text
    check = observability.check_logs_json(ctx)
    assert check.status == "fail" and "1/3 lines are JSON" in check.observed
    assert check.evidence["examples"] == [{"line": "plain text line", "times": 2}]
    assert check.expected == "every recent non-empty log line is a JSON object"
    failing_cmd = {"logs": {"command": ["sh", "-c", "echo nope >&2; exit 3"]}}
    check = observability.check_logs_json(phase(tmp_path, "observability", server, {"observability": failing_cmd}))
    assert check.status == "error" and "log command exited 3: nope" in check.observed


# ---------------------------------------------------------------------------------- real sandbox SQL



def db_phase(tmp_path, monkeypatch, db_url: str, name: str, block: dict) -> PhaseRun:
    monkeypatch.setenv("PROBE_DB", db_url)
    return phase(tmp_path, name, "http://127.0.0.1:9", {name: block}, database_url="${PROBE_DB}")


def test_rls_missing_table_and_disabled_rls_fail(tmp_path, monkeypatch, sandbox):
    ctx = db_phase(tmp_path, monkeypatch, sandbox.db_url, "security", {"rls_tables": ["no_such", "exams", "answers"]})
    missing, exams, answers = security.check_rls(ctx)
    assert missing.status == "fail" and missing.observed == "table does not exist"
    assert exams.status == "fail" and exams.observed == ("row-level security is off "
                                                         "(0 policies defined but not enforced)")
    assert answers.status == "pass" and answers.observed == "row-level security on, 1 policy"
    assert {c.severity for c in (missing, exams, answers)} == {"blocker"}  # as migrations.post.rls


def test_database_without_ssl_fails_when_required(tmp_path, monkeypatch, sandbox):
    check = security.check_database_ssl(db_phase(tmp_path, monkeypatch, sandbox.db_url, "security",
                                                 {"database_ssl": True}))
    assert check.status == "fail" and "server setting ssl = off" in check.observed


def test_slow_statement_fails_and_missing_extension_skips(tmp_path, monkeypatch, sandbox):
    import sqlalchemy as sa

    engine = sa.create_engine(sandbox.db_url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_sleep(0.4) AS test_slow"))
    engine.dispose()
    ctx = db_phase(tmp_path, monkeypatch, sandbox.db_url, "observability",
                   {"slow_queries": {"threshold_ms": 300, "roles": ["rehearsal_app"]}})
    check = observability.check_slow_queries(ctx)
    assert check.status == "fail" and "pg_sleep" in check.observed and check.metrics["worst_mean_ms"] >= 400
    query(ctx.engine, "SELECT pg_sleep(0.45), 1 AS own_slow_probe")  # the tool's own statement: excluded
    check = observability.check_slow_queries(ctx)
    assert not any("own_slow_probe" in r["query"] for r in check.evidence["slowest"])
    assert check.evidence["Rehearsal's own statements excluded"] >= 1
    all_roles = db_phase(tmp_path, monkeypatch, sandbox.db_url, "observability",
                         {"slow_queries": {"threshold_ms": 300}})
    assert observability.check_slow_queries(all_roles).status == "fail"
    other_db = sandbox.db_url.rsplit("/", 1)[0] + "/postgres"  # no extension there
    check = observability.check_slow_queries(db_phase(tmp_path, monkeypatch, other_db, "observability",
                                                      {"slow_queries": {}}))
    assert check.status == "skip" and "not installed" in check.observed


# --------------------------------------------------------------------------------- faulty sandbox


def test_faulty_sandbox_defects_are_each_caught_with_the_reason(tmp_path_factory, monkeypatch):
    """The real faulty sandbox: each of this phase pair's planted defects fails its own check, and only it."""
    from rehearsal_lib.sandbox import PLANTED_DEFECTS

    home = tmp_path_factory.mktemp("sbx-faulty")
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(home))
    for var in ("REHEARSAL_SANDBOX_TOKEN", "REHEARSAL_SANDBOX_URL"):
        monkeypatch.delenv(var, raising=False)
    try:
        checks = {}
        for name, mod in (("security", security), ("observability", observability)):
            ctx = PhaseRun(name, "sandbox-faulty")
            for fn in (mod.check_tls, mod.check_headers, mod.check_auth, mod.check_bad_inputs, mod.check_rls,
                       mod.check_database_ssl) if name == "security" else (
                    mod.check_metrics, mod.check_readiness_toggle, mod.check_request_id, mod.check_logs_json,
                    mod.check_slow_queries):
                fn(ctx)
            checks.update({c.id: c for c in ctx.checks})
            ctx.close()
    finally:
        stop_sandbox("faulty", home=home)
    failing = {i for i, c in checks.items() if c.status != "pass"}
    assert failing == {d.check_id for d in PLANTED_DEFECTS if d.check_id.startswith(("security.", "observability."))}
    reasons = {
        "security.tls.expiry": "expires in 3.0 days",
        "security.headers.x_content_type_options": "X-Content-Type-Options missing",
        "security.auth.admin_health": "wrong token → HTTP 200",
        "security.inputs.malformed_json": "server error: HTTP 500",
        "security.rls.answers": "row-level security is off",
        "observability.series.http_request_duration_seconds": "did you mean http_server_latency_seconds",
        "observability.readiness.toggle": "still reported ready",
        "observability.request_id.logged": "not found in the last",
        "observability.logs.json": "scrape /metrics served",
        "observability.slow_queries": "pg_sleep",
    }
    for check_id, reason in reasons.items():
        assert checks[check_id].status == "fail" and reason in checks[check_id].observed, checks[check_id]
