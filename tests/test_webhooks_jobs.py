"""Webhooks and jobs checks fail honestly, and the sandbox's webhook/job support is real.

Failure modes come from a small real HTTP server on 127.0.0.1 (refused connection, timeout, wrong
code, garbage body, a receiver that accepts anything, a limiter that never or too early says 429,
a status endpoint that never finishes or lacks fields) and from the real sandbox (PostgreSQL, Redis,
worker). The faulty sandbox's planted defects are proven end to end in test_rehearsal_sandbox.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import wait_for

from rehearsal_lib.checks import jobs, webhooks
from rehearsal_lib.config import ConfigError, SignatureScheme, load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.sandbox import start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.manager import _pid_alive

pytestmark = pytest.mark.integration  # a real HTTP server and the real sandbox (PostgreSQL, Redis, worker)

SECRET = "whsec-" + "s" * 24
DONE_ROW = ("SELECT 'done' AS status, 1 AS attempts, now() AS enqueued_at, now() AS picked_at, "
            "now() AS finished_at")
QUEUED_ROW = ("SELECT 'queued' AS status, 0 AS attempts, now() AS enqueued_at, NULL::timestamptz AS picked_at, "
              "NULL::timestamptz AS finished_at")


class Receiver(BaseHTTPRequestHandler):
    """Each path misbehaves in one way; `/github` verifies a GitHub-style signature for real."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        with srv.lock:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
            n = srv.hits[self.path]
        if self.path == "/accept-all":
            self._send(200, b'{"ok": true}')
        elif self.path == "/reject-all":
            self._send(401, b'{"error": "bad_signature"}')
        elif self.path == "/hang":
            time.sleep(2)
            self._send(200, b"{}")
        elif self.path == "/limit-after-3":
            self._send(429 if n > 3 else 200, b"{}")
        elif self.path == "/second-500":
            self._send(500 if n % 2 == 0 else 200, b"{}")
        elif self.path == "/github":
            mac = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(self.headers.get("X-Hub-Signature-256", ""), mac)
            self._send(200 if ok else 401, b"{}")
        elif self.path == "/jobs-garbage":
            self._send(200, b"<html>queued!</html>", "text/html")
        elif self.path == "/jobs-ok":
            self._send(201, b'{"id": 7}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/status-running/7":
            self._send(200, b'{"status": "running"}')
        elif self.path == "/status-thin/7":
            self._send(200, b'{"status": "done"}')
        elif self.path == "/status-garbage/7":
            self._send(200, b"not json", "text/plain")
        else:
            self._send(404, b"{}")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    httpd.hits, httpd.lock = {}, threading.Lock()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"



def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(tmp_path: Path, monkeypatch, name: str, base_url: str, block: dict, db_url: str | None = None,
         kind: str = "staging", token: str | None = None) -> PhaseRun:
    monkeypatch.setenv("PROBE_WEBHOOK_SECRET", SECRET)
    target = {"base_url": base_url, "timeout_s": 1}
    if db_url:
        monkeypatch.setenv("PROBE_DB", db_url)
        target["database_url"] = "${PROBE_DB}"
    if token:
        monkeypatch.setenv("PROBE_TOKEN", token)
        target["auth_token"] = "${PROBE_TOKEN}"
    doc = {"name": "probe", "environment": {"kind": kind}, "target": target, "phases": {name: block}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


def hook(endpoint: str, **extra) -> dict:
    return {"endpoint": endpoint, "secret": "${PROBE_WEBHOOK_SECRET}",
            "signature": {"header": "X-Sig", "format": "t={timestamp},v1={signature}",
                          "signed_payload": "{timestamp}.{body}"}, **extra}


# ----------------------------------------------------------------------------------- signing scheme


def test_scheme_expresses_github_stripe_and_slack_signatures():
    body, ts = b'{"id":"evt_1"}', 1700000000
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256)
    github = SignatureScheme(header="X-Hub-Signature-256", format="sha256={signature}")
    assert webhooks.signature_headers(github, SECRET, body, ts) == {"X-Hub-Signature-256": "sha256=" + mac.hexdigest()}
    stripe = SignatureScheme(header="Stripe-Signature", format="t={timestamp},v1={signature}",
                             signed_payload="{timestamp}.{body}")
    v1 = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature_headers(stripe, SECRET, body, ts) == {"Stripe-Signature": f"t=1700000000,v1={v1}"}
    slack = SignatureScheme(header="X-Slack-Signature", format="v0={signature}", signed_payload="v0:{timestamp}:{body}",
                            encoding="base64", timestamp_header="X-Slack-Request-Timestamp")
    b64 = base64.b64encode(hmac.new(SECRET.encode(), b"v0:1700000000:" + body, hashlib.sha256).digest()).decode()
    assert webhooks.signature_headers(slack, SECRET, body, ts) == {
        "X-Slack-Signature": f"v0={b64}", "X-Slack-Request-Timestamp": "1700000000"}


def test_secret_must_be_a_reference_and_rate_bound_above_count(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"\$\{VAR\} reference"):
        make(tmp_path, monkeypatch, "webhooks", "http://x", {"endpoint": "/h", "secret": "inline"})
    with pytest.raises(ConfigError, match="max_requests must exceed count"):
        make(tmp_path, monkeypatch, "webhooks", "http://x",
             hook("/h", rate_limit={"count": 10, "window_s": 1, "max_requests": 10}))


# ------------------------------------------------------------------------------ webhooks: failures


def test_github_style_receiver_passes_signature_checks_and_replay_is_skipped(tmp_path, monkeypatch, server):
    block = {"endpoint": "/github", "secret": "${PROBE_WEBHOOK_SECRET}",
             "signature": {"header": "X-Hub-Signature-256", "format": "sha256={signature}"},
             "delivery_id_header": "X-GitHub-Delivery"}
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block)
    assert [c.status for c in webhooks.check_signatures(ctx)] == ["pass", "pass", "pass"]
    replay = webhooks.check_replay(ctx)
    assert replay.status == "skip" and "signs no {timestamp}" in replay.observed
    assert SECRET not in json.dumps([c.model_dump(mode="json") for c in ctx.checks])


def test_receiver_accepting_anything_fails_bad_missing_and_stale(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/accept-all"))
    valid, bad, missing = webhooks.check_signatures(ctx)
    assert valid.status == "pass"
    assert bad.status == "fail" and bad.observed == "a delivery signed with the wrong secret answered HTTP 200"
    assert missing.status == "fail" and missing.observed == "an unsigned delivery answered HTTP 200"
    stale = webhooks.check_replay(ctx)
    assert stale.status == "fail" and stale.observed == "a delivery signed 360 s ago answered HTTP 200"


def test_receiver_rejecting_valid_delivery_fails(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/reject-all"))
    valid = webhooks.check_signatures(ctx)[0]
    assert valid.status == "fail" and "answered HTTP 401" in valid.observed


def test_refused_and_timeout_are_errors(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", f"http://127.0.0.1:{closed_port()}", hook("/h"))
    assert {(c.status, "connection failed" in c.observed) for c in webhooks.check_signatures(ctx)} == {("error", True)}
    slow = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/hang"))
    check = webhooks.check_signatures(slow)[0]
    assert check.status == "error" and "timed out" in check.observed


def test_idempotency_second_send_failing_is_a_fail(tmp_path, monkeypatch, server, sandbox):
    block = hook("/second-500", idempotency={"sql": "SELECT 1"})
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block, db_url=sandbox.db_url)
    check = webhooks.check_idempotency(ctx)
    assert check.status == "fail" and check.observed == "second send answered HTTP 500"


def test_rate_limit_never_triggering_fails_within_the_bound(tmp_path, monkeypatch, server):
    rl = {"count": 5, "window_s": 10, "max_requests": 12}
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/accept-all", rate_limit=rl))
    before = server.hits.get("/accept-all", 0)
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "fail" and check.observed.startswith("no HTTP 429 in 12 deliveries")
    assert check.evidence["answers"] == "12 × HTTP 200, no 429" and check.metrics["accepted_past_limit"] == 7
    assert server.hits["/accept-all"] - before == 12  # bounded: never more than max_requests


def test_rate_limit_chart_shows_the_deliveries_accepted_past_the_limit_in_red(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server),
               hook("/accept-all", rate_limit={"count": 5, "window_s": 10, "max_requests": 12}))
    figs: list = []
    monkeypatch.setattr(ctx, "figure", figs.append)
    webhooks.check_rate_limit(ctx)
    bars = {t.name: (list(t.x), t.marker.color) for t in figs[0].data}
    assert bars["accepted within the limit"] == ([1, 2, 3, 4, 5], "#2da44e")
    assert bars["accepted past the limit (should be 429)"] == ([6, 7, 8, 9, 10, 11, 12], "#cf222e")


def test_rate_limit_triggering_before_the_count_fails_and_after_it_passes(tmp_path, monkeypatch, server):
    early = make(tmp_path, monkeypatch, "webhooks", url(server),
                 hook("/limit-after-3", rate_limit={"count": 5, "window_s": 10, "max_requests": 9}))
    check = webhooks.check_rate_limit(early)
    assert check.status == "fail" and check.observed == "HTTP 429 already at request 4 (configured count 5)"
    server.hits["/limit-after-3"] = 0
    right = make(tmp_path, monkeypatch, "webhooks", url(server),
                 hook("/limit-after-3", rate_limit={"count": 3, "window_s": 10, "max_requests": 9}))
    check = webhooks.check_rate_limit(right)
    assert check.status == "pass" and check.evidence["codes"] == [200, 200, 200, 429]


def test_storage_with_the_sentinel_found_fails(tmp_path, monkeypatch, server, sandbox):
    # the "stored payload" query finds the sentinel value: what a receiver storing it would show
    storage = {"plaintext_fields": {"email": "r-{run_id}@example.invalid"}, "sql": "SELECT :value AS stored"}
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/accept-all", storage=storage),
               db_url=sandbox.db_url)
    check = webhooks.check_storage(ctx)
    assert check.status == "fail" and check.observed == "plaintext stored: email"
    rejected = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/reject-all", storage=storage),
                    db_url=sandbox.db_url)
    check = webhooks.check_storage(rejected)
    assert check.status == "fail" and "not accepted (HTTP 401)" in check.observed


def test_production_refuses_every_write_and_sends_nothing(tmp_path, monkeypatch, server):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    before = dict(server.hits)
    block = hook("/accept-all", rate_limit={"count": 1, "window_s": 1, "max_requests": 3},
                 idempotency={"sql": "SELECT 1"}, storage={"plaintext_fields": {"e": "x"}, "sql": "SELECT 1"})
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block, kind="production")
    checks = [*webhooks.check_signatures(ctx), webhooks.check_replay(ctx), webhooks.check_idempotency(ctx),
              webhooks.check_rate_limit(ctx), webhooks.check_storage(ctx)]
    jctx = make(tmp_path, monkeypatch, "jobs", url(server), {"job_sql": DONE_ROW, "run": {"job": {"type": "x"}},
                                                           "trigger": {"path": "/jobs-ok"}}, kind="production")
    checks.append(jobs.check_run(jctx))
    assert all(c.status == "skip" and "production" in c.observed for c in checks)
    assert server.hits == before


# ---------------------------------------------------------------------------------- jobs: failures


def jobs_block(**extra) -> dict:
    return {"trigger": {"path": "/jobs-ok"}, "job_sql": DONE_ROW, "timeout_s": 0.5, "poll_interval_s": 0.05,
            **extra}


def test_trigger_refused_garbage_wrong_code_and_timeout_are_errors(tmp_path, monkeypatch, server, sandbox):
    run = {"job": {"type": "noop"}}
    refused = make(tmp_path, monkeypatch, "jobs", f"http://127.0.0.1:{closed_port()}", jobs_block(run=run),
                   db_url=sandbox.db_url)
    check = jobs.check_run(refused)
    assert check.status == "error" and "connection failed" in check.observed
    garbage = make(tmp_path, monkeypatch, "jobs", url(server),
                   jobs_block(run=run, trigger={"path": "/jobs-garbage"}), db_url=sandbox.db_url)
    check = jobs.check_run(garbage)
    assert check.status == "error" and "trigger answer has no 'id' field" in check.observed
    wrong = make(tmp_path, monkeypatch, "jobs", url(server), jobs_block(run=run, trigger={"path": "/nowhere"}),
                 db_url=sandbox.db_url)
    check = jobs.check_run(wrong)
    assert check.status == "error" and "trigger answered HTTP 404" in check.observed
    slow = make(tmp_path, monkeypatch, "jobs", url(server), jobs_block(run=run, trigger={"path": "/hang"}),
                db_url=sandbox.db_url)
    check = jobs.check_run(slow)
    assert check.status == "error" and "timed out" in check.observed


def test_job_never_picked_up_fails_after_the_timeout(tmp_path, monkeypatch, server, sandbox):
    ctx = make(tmp_path, monkeypatch, "jobs", url(server), jobs_block(run={"job": {"type": "noop"}},
                                                                      job_sql=QUEUED_ROW), db_url=sandbox.db_url)
    t0 = time.monotonic()
    check = jobs.check_run(ctx)
    assert check.status == "fail" and check.observed == "job 7 still 'queued' after 0.5 s (never picked up)"
    # it gave up at its 0.5 s timeout instead of polling on: the bound only has to tell those apart, on any machine
    assert check.evidence["waited_s"] < 60 and time.monotonic() - t0 < 60
    figs: list = []
    monkeypatch.setattr(ctx, "figure", figs.append)
    jobs.show_timeline(ctx)  # the job that never started is drawn waiting until the timeout, in red, labelled
    never = next(t for t in figs[0].data if (t.name or "").startswith("never picked up"))
    assert list(never.x) == [500.0] and never.marker.color == "#cf222e"
    assert "never picked up (queued)" in list(figs[0].data[-1].text)


def test_status_endpoint_failures(tmp_path, monkeypatch, server, sandbox):
    def status(path: str) -> PhaseRun:
        return make(tmp_path, monkeypatch, "jobs", url(server), jobs_block(status={
            "job": {"type": "noop"}, "path": path, "required_fields": ["status", "finished_at"]}),
            db_url=sandbox.db_url)

    check = jobs.check_status(status("/status-running/{job_id}"))
    assert check.status == "fail" and check.observed == "status = 'running' after 0.5 s"
    check = jobs.check_status(status("/status-thin/{job_id}"))
    assert check.status == "fail" and check.observed == "done, but the report lacks finished_at"
    check = jobs.check_status(status("/status-garbage/{job_id}"))
    assert check.status == "fail" and "without a JSON object" in check.observed


def test_command_trigger_runs_a_real_job_and_reports_failures(tmp_path, monkeypatch, sandbox):
    enqueue = ("import json, os, sys, httpx; r = httpx.post(os.environ['SBX'] + '/v1/jobs', json=json.loads("
               "sys.argv[1]), headers={'Authorization': 'Bearer ' + os.environ['SBX_TOKEN']}, verify=False);"
               " print(r.text)")
    monkeypatch.setenv("SBX", sandbox.base_url)
    monkeypatch.setenv("SBX_TOKEN", sandbox.token)
    job_sql = "SELECT status, attempts, enqueued_at, picked_at, finished_at FROM jobs WHERE id = :job_id"
    ctx = make(tmp_path, monkeypatch, "jobs", sandbox.base_url, {
        "trigger": {"command": [sys.executable, "-c", enqueue, "{job}"]}, "job_sql": job_sql, "timeout_s": 60,
        "run": {"job": {"type": "noop"}}, "attempts": {"job": {"type": "flaky", "payload": {"fail_times": 2}},
                                                       "expected": 3}}, db_url=sandbox.db_url)
    run, attempts = jobs.check_run(ctx), jobs.check_attempts(ctx)
    assert run.status == "pass" and "done after 1 attempt" in run.observed
    assert attempts.status == "pass" and attempts.observed == "attempts = 3"
    broken = make(tmp_path, monkeypatch, "jobs", sandbox.base_url, {
        "trigger": {"command": [sys.executable, "-c", "import sys; sys.exit('queue is down')"]}, "job_sql": job_sql,
        "run": {"job": {"type": "noop"}}}, db_url=sandbox.db_url)
    check = jobs.check_run(broken)
    assert check.status == "error" and check.observed == "trigger command exited 1: queue is down"


def test_schedule_offsets_against_a_different_rule_fail(tmp_path, monkeypatch, sandbox):
    params = yaml.safe_load((Path(__file__).parent.parent / "params" / "sandbox.yaml").read_text())
    block = params["phases"]["jobs"]
    block["schedule"]["expected_offsets"] = [0, 1, 3]
    ctx = make(tmp_path, monkeypatch, "jobs", sandbox.base_url, block, db_url=sandbox.db_url, token=sandbox.token)
    check = jobs.check_schedule(ctx)
    assert check.status == "fail" and check.observed == "offsets 0/2/4 days" and check.expected == "offsets 0/1/3 days"


# ------------------------------------------------------------------------------ the sandbox support


def test_rate_limit_probe_leaves_other_senders_unlimited(sandbox):
    from rehearsal_lib.sandbox.webhooks import RATE_LIMIT_COUNT, WEBHOOK_PATH, sign

    def send(n: int, source: str | None) -> int:
        body = json.dumps({"id": f"lim-{source}-{n}-{time.time_ns()}", "type": "t"}).encode()
        headers = {"X-Exam-Signature": sign(sandbox.webhook_secret, int(time.time()), body)}
        if source:
            headers["X-Exam-Source"] = source
        return httpx.post(sandbox.base_url + WEBHOOK_PATH, content=body, headers=headers, timeout=5,
                          verify=False).status_code

    codes = [send(i, "probe-bucket") for i in range(RATE_LIMIT_COUNT * 2 + 2)]
    assert 429 in codes  # the dedicated bucket trips ...
    assert send(0, None) == 200  # ... and the default bucket does not


def test_worker_and_redis_live_and_die_with_the_sandbox(tmp_path):
    home = tmp_path / "life"
    state = start_sandbox("default", home=home)
    try:
        assert _pid_alive(state.redis_pid) and _pid_alive(state.worker_pid)
        assert state.env_vars()["REHEARSAL_SANDBOX_WEBHOOK_SECRET"] == state.webhook_secret
        assert state.webhook_secret in state.secret_values()
        cmdline = Path(f"/proc/{state.app_pid}/cmdline").read_bytes().decode()
        assert state.webhook_secret not in cmdline
        assert "worker started" in (state.home / "worker.log").read_text()
        assert os.stat(state.home / "state.json").st_mode & 0o077 == 0
    finally:
        assert stop_sandbox("default", home=home) is True
    wait_for(lambda: not _pid_alive(state.redis_pid), 60, "redis did not stop with the sandbox")
    wait_for(lambda: not _pid_alive(state.worker_pid), 60, "the worker did not stop with the sandbox")


def test_each_planted_defect_fails_its_own_check_with_its_reason(tmp_path, monkeypatch):
    """In-process, against the real faulty sandbox: every webhooks/jobs check fails, each for its defect."""
    from rehearsal_lib.sandbox import PLANTED_DEFECTS

    home = tmp_path / "faulty-home"
    state = start_sandbox("faulty", home=home)
    try:
        monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(home))
        doc = yaml.safe_load((Path(__file__).parent.parent / "params" / "sandbox.yaml").read_text())
        doc.update(name="faulty-probe", sandbox={"variant": "faulty"})

        def params(jobs_timeout_s: float):
            doc["phases"]["jobs"]["timeout_s"] = jobs_timeout_s
            path = tmp_path / f"faulty-probe-{jobs_timeout_s:g}.yaml"
            path.write_text(yaml.safe_dump(doc))
            return str(path), load_params(str(path))

        # the job that is never picked up is waited for 1.5 s; the jobs that do run get a timeout no busy
        # machine reaches, so each of those checks fails for its defect, not for being slow
        never, generous = params(1.5), params(120)
        hooks = PhaseRun("webhooks", never[0], params=never[1])
        checks = [*webhooks.check_signatures(hooks), webhooks.check_replay(hooks), webhooks.check_idempotency(hooks),
                  webhooks.check_rate_limit(hooks), webhooks.check_storage(hooks)]
        checks.append(jobs.check_run(PhaseRun("jobs", never[0], params=never[1])))
        jctx = PhaseRun("jobs", generous[0], params=generous[1])
        checks += [jobs.check_attempts(jctx), jobs.check_schedule(jctx), jobs.check_concurrency(jctx),
                   jobs.check_status(jctx)]
        jobs.show_timeline(jctx)
        assert hooks.base_url == state.base_url
    finally:
        stop_sandbox("faulty", home=home)
    observed = {c.id: (c.status, c.observed) for c in checks}
    mine = {d.check_id for d in PLANTED_DEFECTS if d.check_id.startswith(("webhooks.", "jobs."))}
    assert {i for i, (s, _) in observed.items() if s != "pass"} == mine
    assert observed["webhooks.signature.valid"][0] == observed["webhooks.signature.bad"][0] == "pass"
    assert observed["webhooks.signature.missing"][1] == "an unsigned delivery answered HTTP 200"
    assert observed["webhooks.replay.stale_timestamp"][1] == "a delivery signed 360 s ago answered HTTP 200"
    assert observed["webhooks.idempotency.duplicate"][1] == "sent twice, processed twice"
    assert observed["webhooks.rate_limit.enforced"][1].startswith("no HTTP 429 in 45 deliveries")
    assert observed["webhooks.storage.no_plaintext"][1] == "plaintext stored: candidate_email, candidate_name"
    assert observed["jobs.run.completes"][1].endswith("after 1.5 s (never picked up)")
    assert observed["jobs.attempts.tracked"][1] == "attempts = 0"
    assert observed["jobs.schedule.offsets"][1] == "offsets 0/1/4 days"
    assert observed["jobs.concurrency.once"][1] == "2 triggers → 2 jobs, processed twice"
    assert observed["jobs.status.reports"][1] == "done, but the report lacks finished_at"
