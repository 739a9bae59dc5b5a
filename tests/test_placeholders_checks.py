"""An unknown placeholder is an `error` naming it, in every context: body, path, header, command.

Before the one placeholder language (rehearsal_lib/probes/placeholders.py) a webhook payload, a
signature header or a cleanup path sent `{typo}` to the target as text, and a command ran with it as
an argument. Each test uses a small real HTTP server on 127.0.0.1 that records what reached it, and
asserts that the request carrying the typo was never sent.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rehearsal_lib.checks.cleanup import check_cleanup
from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.preflight import checks as preflight
from rehearsal_lib.phases.smoke import checks as smoke
from rehearsal_lib.phases.webhooks import checks as webhooks

pytestmark = pytest.mark.integration  # a real HTTP server on 127.0.0.1


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 with a JSON object to everything; records (method, path, headers, body)."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append((self.command, self.path, dict(self.headers), body))
        out = b'{"id": "s1", "removed": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's naming


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def phase(tmp_path: Path, name: str, base_url: str, phases: dict) -> PhaseRun:
    doc = {"name": "probe", "target": {"base_url": base_url, "timeout_s": 2}, "phases": phases}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


def sent_text() -> str:
    return " ".join(f"{m} {p} {json.dumps(h)} {b.decode(errors='replace')}" for m, p, h, b in Recorder.seen)


def assert_named_error(check, name: str, where: str, known: str) -> None:
    assert check.status == "error", (check.status, check.observed)
    assert f"unknown placeholder {{{name}}} in {where}" in check.observed, check.observed
    assert known in check.observed, check.observed


def test_unknown_placeholder_in_a_body_is_error(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROBE_WEBHOOK_SECRET", "s3cret")
    ctx = phase(tmp_path, "webhooks", server, {"webhooks": {
        "endpoint": "/hooks", "secret": "${PROBE_WEBHOOK_SECRET}",
        "payload": {"id": "{delivery_id}", "meta": {"run": "{run_id}", "who": "{candidte_id}"}}}})
    valid = webhooks.check_signatures(ctx)[0]
    assert_named_error(valid, "candidte_id", "payload.meta.who", "{delivery_id}, {run_id}")
    assert "{candidte_id}" not in sent_text()  # never sent as text


def test_unknown_placeholder_in_a_path_is_error(tmp_path, server):
    ctx = phase(tmp_path, "preflight", server, {"preflight": {"journey": [
        {"name": "create", "method": "POST", "path": "/v1/sessions", "save": {"session_id": "id"}},
        {"name": "read", "path": "/v1/sessions/{sesion_id}"}]}})
    create, read = preflight.check_journey(ctx)
    assert create.status == "pass"
    assert_named_error(read, "sesion_id", "path", "{run_id}, {session_id}")
    assert [p for _, p, _, _ in Recorder.seen] == ["/v1/sessions"]


def test_unknown_placeholder_in_a_cleanup_path_is_error(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROBE_WEBHOOK_SECRET", "s3cret")
    ctx = phase(tmp_path, "webhooks", server, {"webhooks": {
        "endpoint": "/hooks", "secret": "${PROBE_WEBHOOK_SECRET}",
        "cleanup": {"api": [{"method": "DELETE", "path": "/v1/runs/{run_id}/{tenant}"}]}}})
    check = check_cleanup(ctx)
    assert check is not None
    assert_named_error(check, "tenant", "path", "{run_id}")
    assert Recorder.seen == []


def test_unknown_placeholder_in_a_header_is_error(tmp_path, server, monkeypatch):
    monkeypatch.setenv("PROBE_WEBHOOK_SECRET", "s3cret")
    ctx = phase(tmp_path, "webhooks", server, {"webhooks": {
        "endpoint": "/hooks", "secret": "${PROBE_WEBHOOK_SECRET}",
        "signature": {"header": "X-Sig", "format": "t={timestamp},v1={signture}"}}})
    valid, bad, missing = webhooks.check_signatures(ctx)
    assert_named_error(valid, "signture", "signature.format", "{signature}, {timestamp}")
    assert_named_error(bad, "signture", "signature.format", "{signature}, {timestamp}")
    assert missing.status == "fail"  # the unsigned delivery needs no header: sent, and the recorder took it
    assert all("X-Sig" not in h for _, _, h, _ in Recorder.seen)


def test_unknown_placeholder_in_a_command_is_error(tmp_path):
    marker = tmp_path / "ran"
    code = f"import pathlib, sys; pathlib.Path({str(marker)!r}).write_text(' '.join(sys.argv[1:]))"
    ctx = phase(tmp_path, "smoke", "http://127.0.0.1:9", {"smoke": {
        "command": f"{{python}} -c {json.dumps(code)} {{junit}} {{pakage}}", "timeout_s": 30}})
    command_check = smoke.check_smoke(ctx)[0]
    assert_named_error(command_check, "pakage", "command", "{junit}, {package}, {python}")
    assert not marker.exists()  # the command never ran


def test_unknown_placeholder_in_a_command_env_is_error(tmp_path):
    ctx = phase(tmp_path, "smoke", "http://127.0.0.1:9", {"smoke": {
        "command": f"{sys.executable} -c pass", "env": {"OUT": "{junit_dir}"}, "timeout_s": 30}})
    assert_named_error(smoke.check_smoke(ctx)[0], "junit_dir", "env.OUT", "{junit}")
