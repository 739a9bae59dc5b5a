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

from rehearsal_lib.config import ConfigError, load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.jobs import checks as jobs
from rehearsal_lib.phases.webhooks import checks as webhooks
from rehearsal_lib.phases.webhooks.params import SignatureScheme
from rehearsal_lib.sandbox import start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.manager import _pid_alive

# a real HTTP server and the real sandbox (PostgreSQL, Redis, worker); rate-limit windows and job timeouts
pytestmark = [pytest.mark.integration, pytest.mark.alone]

SECRET = "whsec-" + "s" * 24
SANDBOX_PARAMS = Path(__file__).parent.parent / "rehearsal_lib" / "builtin_params" / "sandbox.yaml"
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
        if self.path.startswith("/bucket/"):
            self._bucket(body)
        elif self.path == "/store-twice":
            self._store_twice(body)
        elif self.path == "/accept-all":
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

    def _bucket(self, body: bytes) -> None:
        """`/bucket/<limit>/<window s>/<tag>`: a sliding-window limiter per source (the X-Source header, else
        one shared bucket), counting every request it sees, signed or not, like a gateway in front of a receiver."""
        _, _, limit, window, _tag = self.path.split("/")
        key = (self.path, self.headers.get("X-Source", "shared"))
        now = time.monotonic()
        with self.server.lock:
            seen = [t for t in self.server.buckets.get(key, []) if t > now - float(window)] + [now]
            self.server.buckets[key] = seen
        over = len(seen) > int(limit)
        self._send(429 if over else 200, b'{"error": "rate_limited"}' if over else b'{"ok": true}')

    def _store_twice(self, body: bytes) -> None:
        """A receiver without a unique delivery id: every delivery, a redelivery too, becomes a row."""
        import psycopg

        event = json.loads(body)
        with psycopg.connect(self.server.db_url) as conn:
            conn.execute("INSERT INTO own_traffic_deliveries (delivery_id, payload) VALUES (%s, %s)",
                         (str(event["id"]), json.dumps(event)))
        self._send(200, b'{"status": "processed"}')

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
    httpd.hits, httpd.lock, httpd.buckets, httpd.db_url = {}, threading.Lock(), {}, ""
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
         kind: str = "staging", token: str | None = None, run_dir: str = "") -> PhaseRun:
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
    return PhaseRun(name, str(path), run_dir, params=load_params(str(path)))


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


# ------------------------------------------------------------ our own traffic: rate-limit buckets


def bucket_hook(limit: int, window_s: float, tag: str, **rate_limit) -> dict:
    """Receiver with a per-source bucket of `limit` per `window_s`; the params claim count 10 per window."""
    rl = {"count": 10, "window_s": window_s, "max_requests": 25, **rate_limit}
    return hook(f"/bucket/{limit}/{window_s}/{tag}-{time.time_ns()}", rate_limit=rl)


def test_rate_limit_counts_the_phase_own_deliveries_in_the_shared_bucket(tmp_path, monkeypatch, server):
    """The signature probes' 3 deliveries share the limiter's bucket: 429 at request 8 is 10 - 3 + 1, a pass
    (main judged it against 10 alone and reported a false 'already at request 8')."""
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(10, 30, "shared"))
    webhooks.check_signatures(ctx)
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "pass", check.observed
    assert check.metrics["limited_at"] == 8
    assert check.evidence["already_sent_in_window"] == 3 and check.evidence["allowed"] == 7
    assert check.observed == ("HTTP 429 at request 8 after 7 accepted (3 sent earlier by this run within the "
                              "window: 7 of 10 left)")


def test_rate_limit_stricter_than_configured_still_fails_after_accounting(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(6, 30, "strict"))
    webhooks.check_signatures(ctx)
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "fail" and check.metrics["limited_at"] == 4
    assert check.observed == ("HTTP 429 already at request 4 (configured count 10; 3 sent earlier by this run "
                              "within the window: 7 of 10 left)")


def test_rate_limit_far_above_configured_still_fails(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(100, 30, "loose"))
    webhooks.check_signatures(ctx)
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "fail" and check.observed.startswith("no HTTP 429 in 25 deliveries")
    assert check.metrics["accepted_past_limit"] == 25 - 7


def test_rate_limit_with_its_bucket_already_full_of_own_traffic_is_an_error_and_sends_nothing(tmp_path, monkeypatch,
                                                                                            server):
    block = hook(f"/bucket/3/30/full-{time.time_ns()}", rate_limit={"count": 3, "window_s": 30, "max_requests": 9})
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block)
    webhooks.check_signatures(ctx)
    before = server.hits[block["endpoint"]]
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "error" and "the limit cannot be judged" in check.observed
    assert check.evidence["already_sent_in_window"] == 3 and server.hits[block["endpoint"]] == before


def test_rate_limit_with_its_own_bucket_counts_only_that_bucket(tmp_path, monkeypatch, server):
    """Bucket headers select the probe's own bucket: the earlier deliveries (other bucket) are not counted,
    so a limiter 2 stricter than configured is still caught."""
    own = {"headers": {"X-Source": "rate-probe"}}
    right = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(10, 30, "own", **own))
    webhooks.check_signatures(right)
    check = webhooks.check_rate_limit(right)
    assert check.status == "pass" and check.metrics["limited_at"] == 11
    assert check.evidence["already_sent_in_window"] == 0
    strict = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(8, 30, "own-strict", **own))
    webhooks.check_signatures(strict)
    check = webhooks.check_rate_limit(strict)
    assert check.status == "fail" and check.observed == "HTTP 429 already at request 9 (configured count 10)"


def test_rate_limit_cooldown_waits_the_phase_own_deliveries_out_of_the_window(tmp_path, monkeypatch, server):
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server),
               hook(f"/bucket/5/1/cool-{time.time_ns()}",
                    rate_limit={"count": 5, "window_s": 1, "max_requests": 12, "cooldown_s": 1.5}))
    webhooks.check_signatures(ctx)
    check = webhooks.check_rate_limit(ctx)
    assert check.status == "pass" and check.metrics["limited_at"] == 6, check.observed
    assert check.evidence["already_sent_in_window"] == 0 and 0 < check.evidence["waited_s"] <= 1.1
    assert "for this run's earlier deliveries to leave the window" in check.observed


# ------------------------------------------------- our own traffic: run ids, cleanup, integrity marks


RUN = "20261201T120000Z-a1b2c3"
OLD_RUN = "20261130T100000Z-0f0f0f"


def test_run_id_is_the_run_folder_name_or_an_interactive_stamp(tmp_path, monkeypatch):
    from rehearsal_lib.phase import RUN_ID_RE

    ran = make(tmp_path, monkeypatch, "webhooks", "http://x", hook("/h"), run_dir=str(tmp_path / RUN) + "/")
    assert ran.run_id == RUN and webhooks._sender(ran).delivery()[0] == f"rehearsal-{RUN}-1"
    alone = make(tmp_path, monkeypatch, "webhooks", "http://x", hook("/h"))
    assert alone.run_id.startswith("interactive-") and RUN_ID_RE.fullmatch(alone.run_id)


def test_cleanup_must_be_scoped_to_the_run_and_use_a_reference(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="must bind :run_id"):
        make(tmp_path, monkeypatch, "webhooks", "http://x",
             hook("/h", cleanup={"database_url": "${PROBE_DB}", "sql": ["DELETE FROM webhook_deliveries"]}))
    with pytest.raises(ConfigError, match="reference"):
        make(tmp_path, monkeypatch, "webhooks", "http://x",
             hook("/h", cleanup={"database_url": "postgresql://u:p@h/db", "sql": ["DELETE FROM t WHERE r = :run_id"]}))


@pytest.fixture
def dup_table(sandbox, server):
    """A scratch table in the sandbox's PostgreSQL that `/store-twice` writes to, with a real duplicate and
    one an earlier rehearsal run left behind."""
    import psycopg

    admin = sandbox.admin_db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin) as conn:
        conn.execute("CREATE TABLE own_traffic_deliveries (id bigserial PRIMARY KEY, delivery_id text NOT NULL,"
                     " payload jsonb NOT NULL)")
        for d in ("evt_real_1", "evt_real_1", f"rehearsal-{OLD_RUN}-4", f"rehearsal-{OLD_RUN}-4"):
            conn.execute("INSERT INTO own_traffic_deliveries (delivery_id, payload) VALUES (%s, '{}')", (d,))
    server.db_url = admin
    yield admin
    with psycopg.connect(admin) as conn:
        conn.execute("DROP TABLE own_traffic_deliveries")


DUPLICATES = ("SELECT delivery_id, count(*) AS copies FROM own_traffic_deliveries GROUP BY delivery_id "
              "HAVING count(*) > 1 ORDER BY delivery_id")
CLEANUP = {"database_url": "${PROBE_ADMIN_DB}",
           "sql": ["DELETE FROM own_traffic_deliveries WHERE delivery_id LIKE 'rehearsal-' || :run_id || '-%'"]}


def test_duplicate_delivery_rows_are_removed_by_the_cleanup_and_marked_by_integrity(tmp_path, monkeypatch, server,
                                                                                   dup_table):
    """A receiver storing every redelivery: the idempotency probe fails honestly, the phase's cleanup removes
    both of this run's rows, and the integrity check marks what earlier rehearsal runs left behind."""
    import psycopg

    monkeypatch.setenv("PROBE_ADMIN_DB", dup_table)
    block = hook("/store-twice", cleanup=CLEANUP,
                 idempotency={"sql": "SELECT count(*) FROM own_traffic_deliveries WHERE delivery_id = :delivery_id"})
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block, db_url=dup_table, run_dir=str(tmp_path / RUN))
    idem = webhooks.check_idempotency(ctx)
    assert idem.status == "fail" and idem.observed == "sent twice, processed twice"
    assert idem.evidence["delivery_id"] == f"rehearsal-{RUN}-1"
    cleanup = webhooks.check_cleanup(ctx)
    assert cleanup.id == "webhooks.cleanup" and cleanup.status == "pass", cleanup.observed
    assert cleanup.observed == f"removed 2 records of run {RUN}" and cleanup.metrics["removed"] == 2
    with psycopg.connect(dup_table) as conn:
        left = conn.execute("SELECT delivery_id FROM own_traffic_deliveries ORDER BY 1").fetchall()
    assert [r[0] for r in left] == ["evt_real_1", "evt_real_1", f"rehearsal-{OLD_RUN}-4", f"rehearsal-{OLD_RUN}-4"]

    from rehearsal_lib.phases.integrity import checks as integrity

    spec = {"name": "duplicate_deliveries", "title": "No delivery stored twice", "sql": DUPLICATES,
            "rehearsal_rows": {"column": "delivery_id"}}
    ictx = make(tmp_path, monkeypatch, "integrity", url(server), {"zero_row_checks": [spec]}, db_url=dup_table)
    check = integrity.check_all_zero_rows(ictx)[0]
    assert check.status == "fail" and check.observed == "2 row(s), 1 created by rehearsal runs"
    marked = check.evidence["rehearsal_rows"]
    assert marked["rows"] == 1 and marked["run_ids"] == [OLD_RUN]
    assert marked["sample_created_by_rehearsal"] == [False, True]
    assert marked["note"] == f"1 of these rows were created by rehearsal runs (run ids {OLD_RUN})"


def test_cleanup_that_matches_nothing_warns_and_production_skips_it(tmp_path, monkeypatch, server, dup_table):
    monkeypatch.setenv("PROBE_ADMIN_DB", dup_table)
    wrong = {**CLEANUP, "sql": ["DELETE FROM own_traffic_deliveries WHERE delivery_id = 'evt-' || :run_id"]}
    block = hook("/store-twice", cleanup=wrong)
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), block, db_url=dup_table)
    webhooks.check_signatures(ctx)  # one accepted delivery (the unsigned and wrongly signed ones too)
    check = webhooks.check_cleanup(ctx)
    assert check.status == "warn" and check.observed.startswith("removed nothing, though this phase created 3 records")
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    prod = make(tmp_path, monkeypatch, "webhooks", url(server), hook("/store-twice", cleanup=CLEANUP),
                db_url=dup_table, kind="production")
    check = webhooks.check_cleanup(prod)
    assert check.status == "skip" and "production" in check.observed


def test_jobs_carry_the_run_id_and_their_cleanup_removes_them(tmp_path, monkeypatch, sandbox):
    import psycopg

    monkeypatch.setenv("PROBE_ADMIN_DB", sandbox.admin_db_url)
    block = yaml.safe_load((SANDBOX_PARAMS).read_text())["phases"]["jobs"]
    block["cleanup"]["database_url"] = "${PROBE_ADMIN_DB}"
    ctx = make(tmp_path, monkeypatch, "jobs", sandbox.base_url, block, db_url=sandbox.db_url, token=sandbox.token,
               run_dir=str(tmp_path / RUN))
    assert jobs.check_schedule(ctx).status == "pass" and jobs.check_concurrency(ctx).status == "pass"
    admin = sandbox.admin_db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    mine = "SELECT count(*) FROM jobs WHERE payload->>'rehearsal_run' = %s"
    with psycopg.connect(admin) as conn:
        assert conn.execute(mine, (RUN,)).fetchone()[0] == 2  # schedule + the deduplicated concurrent job
    check = jobs.check_cleanup(ctx)
    assert check.status == "pass", check.observed
    assert [s["rows_removed"] for s in check.evidence["statements"]] == [2, 3, 2]  # effects, reminders, jobs
    with psycopg.connect(admin) as conn:
        assert conn.execute(mine, (RUN,)).fetchone()[0] == 0
        reminders = "SELECT count(*) FROM reminders WHERE target = %s"
        assert conn.execute(reminders, (f"rehearsal-{RUN}",)).fetchone()[0] == 0


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
    params = yaml.safe_load((SANDBOX_PARAMS).read_text())
    block = params["phases"]["jobs"]
    block["schedule"]["expected_offsets"] = [0, 1, 3]
    monkeypatch.setenv("REHEARSAL_SANDBOX_ADMIN_DB_URL", sandbox.admin_db_url)  # the block's cleanup write URL
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
        doc = yaml.safe_load((SANDBOX_PARAMS).read_text())
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


# ------------------------------------------- a quick re-run: the bucket is still full of earlier traffic (#15)


def test_rate_limit_rerun_by_a_new_kernel_with_the_bucket_full_waits_the_window_and_passes(tmp_path, monkeypatch,
                                                                                          server):
    """Two runs back to back (two kernels: two senders): the second's first delivery meets a bucket the first
    filled. main: 'HTTP 429 already at request 1', a false fail. Now: it waits the (2 s) window and judges."""
    block = bucket_hook(10, 2, "rerun", headers={"X-Source": "rerun"})
    first = webhooks.check_rate_limit(make(tmp_path, monkeypatch, "webhooks", url(server), block))
    assert first.status == "pass" and first.metrics["limited_at"] == 11
    again = webhooks.check_rate_limit(make(tmp_path, monkeypatch, "webhooks", url(server), block))
    assert again.status == "pass", again.observed
    assert again.metrics["limited_at"] == 11 and again.evidence["full_bucket_waited_s"] >= 2
    assert "bucket full of earlier traffic" in again.observed and "waited 2 s" in again.observed


def test_rate_limit_rerun_with_a_window_too_long_to_wait_is_an_error_naming_the_cause(tmp_path, monkeypatch,
                                                                                     server):
    block = bucket_hook(10, 30, "rerun-long", headers={"X-Source": "rerun-long"})
    first = webhooks.check_rate_limit(make(tmp_path, monkeypatch, "webhooks", url(server), block))
    assert first.status == "pass"
    again = webhooks.check_rate_limit(make(tmp_path, monkeypatch, "webhooks", url(server), block))
    assert again.status == "error", again.observed
    assert again.observed.startswith("HTTP 429 already at request 1: the bucket was full before this probe sent")
    assert "rate_limit.cooldown_s" in again.observed and again.expected


def test_rate_limit_cell_rerun_in_the_same_kernel_waits_its_own_burst_out(tmp_path, monkeypatch, server):
    """The same kernel re-runs the cell right away: its own burst fills the window, so it says so and waits."""
    ctx = make(tmp_path, monkeypatch, "webhooks", url(server), bucket_hook(10, 2, "cell", headers={"X-Source": "c"}))
    assert webhooks.check_rate_limit(ctx).status == "pass"
    again = webhooks.check_rate_limit(ctx)
    assert again.status == "pass" and again.metrics["limited_at"] == 11, again.observed
    assert "for this run's earlier deliveries to leave the window" in again.observed


def test_rate_limit_first_delivery_limited_even_after_the_wait_still_fails(tmp_path, monkeypatch, server):
    """A limiter that answers 429 to the first delivery of a fresh window is broken: the wait does not hide it."""
    block = bucket_hook(0, 1, "zero", headers={"X-Source": "zero"})
    check = webhooks.check_rate_limit(make(tmp_path, monkeypatch, "webhooks", url(server), block))
    assert check.status == "fail" and check.metrics["limited_at"] == 1, check.observed
    assert check.evidence["full_bucket_waited_s"] >= 1
