"""The disruption harness and the faults/deploy phases against a real misbehaving service.

The service is a small http.server in a thread with switches the test (and the phases' own inject/restore
commands, as real subprocesses) flip over HTTP: 5xx during a fault, no recovery after it, an answer
acknowledged but never stored (in the sandbox's PostgreSQL, looked up by the phase's read-only engine), a
warning logged or not, and two colours (blue/green) behind one listener for the cutover and the abort drill.
Each check is shown to pass on good behaviour and to FAIL on bad.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.disruption import run as disruption_run
from rehearsal_lib.disruption.harness import Clock, longest_gap, probe_until_green
from rehearsal_lib.disruption.params import Probe
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.deploy import checks as deploy
from rehearsal_lib.phases.faults import checks as faults
from rehearsal_lib.restores import Restore, pending, perform, record_registered

pytestmark = pytest.mark.integration  # real HTTP servers in threads, the sandbox's PostgreSQL


class Colour:
    """One app version's switches."""

    def __init__(self, version: str):
        self.version = version
        self.mode = "ok"  # ok | 5xx | degraded (answers, but logs a warning)
        self.healthy = True
        self.recovers = True  # False: /health stays 503 after the fault is undone
        self.lose = False  # acknowledge answers without storing them
        self.breaks = False  # 5xx while the fault lasts (else: degraded, still answering)
        self.down = False  # every request answers 503 (a colour stopped before the other serves)


class App:
    """The service's state: the colour that serves, the answers store, the log, a request counter."""

    def __init__(self, pg_url: str | None, log: Path):
        self.blue, self.green = Colour("1.0.0"), Colour("1.5.0")
        self.serving = self.blue
        self.pg_url, self.log = pg_url, log
        self.lock = threading.Lock()
        self.next_id = 0
        self.requests = 0
        self.log_warnings = True

    def reset(self) -> None:
        self.blue, self.green = Colour("1.0.0"), Colour("1.5.0")
        self.serving, self.log_warnings, self.requests = self.blue, True, 0

    def store(self, lose: bool) -> int:
        with self.lock:
            self.next_id += 1
            ident = 10_000_000 + self.next_id
        if not lose and self.pg_url:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute("INSERT INTO fault_probe_answers (id) VALUES (%s)", (ident,))
        return ident


class Handler(BaseHTTPRequestHandler):
    app: App

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        app, path = self.app, urlsplit(self.path).path
        c = app.serving
        app.requests += 1
        if c.down:
            self._send(503, {})
        elif path == "/health":
            self._send(200 if c.healthy else 503, {"ok": c.healthy})
        elif path == "/work":
            self._send(503 if c.mode == "5xx" else 200, {"mode": c.mode})
        elif path == "/auth":
            self._send(200, {"user": "u1"})
        elif path == "/ready":
            self._send(200 if c.healthy else 503, {})
        elif path == "/v1/version":
            self._send(200, {"version": c.version})
        else:
            self._send(404, {})

    def do_POST(self) -> None:  # noqa: N802
        app, url = self.app, urlsplit(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/_switch":  # the inject/restore commands and the cutover scripts
            for key, value in parse_qsl(url.query):
                self._switch(key, value)
            return self._send(200, {})
        app.requests += 1
        c = app.serving
        if url.path == "/answers":
            if c.mode == "5xx":
                return self._send(503, {})
            return self._send(201, {"id": app.store(c.lose)})
        self._send(404, {})

    def _switch(self, key: str, value: str) -> None:
        app = self.app
        if key == "serve":
            app.serving = app.green if value == "green" else app.blue
        elif key == "fault":  # inject: 5xx or degraded (with a warning logged when the app logs them)
            c = app.serving
            c.mode = "5xx" if c.breaks or value == "5xx" else "degraded"
            c.healthy = False
            if app.log_warnings:
                with app.log.open("a") as fh:
                    fh.write(json.dumps({"level": "WARNING", "message": "rate limiter bypassed"}) + "\n")
        elif key == "down":
            app.serving.down = True
        elif key == "restore":
            c = app.serving
            c.mode = "ok"
            c.healthy = c.recovers


@pytest.fixture(scope="module")
def pg(sandbox) -> str:
    """The sandbox's PostgreSQL with a table the test app stores answers in (read-only engine reads it)."""
    admin = libpq(sandbox.admin_db_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fault_probe_answers (id bigint PRIMARY KEY)")
        conn.execute("GRANT SELECT ON fault_probe_answers TO PUBLIC")
    return {"admin": admin, "read_only": sandbox.db_url}


def libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Any:
    log = tmp_path_factory.mktemp("svc") / "app.log"
    log.write_text("")
    app = App(None, log)
    handler = type("H", (Handler,), {"app": app})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    app.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield app
    httpd.shutdown()


def switch(url: str, query: str) -> str:
    """A real command (subprocess) that flips a switch of the service over HTTP."""
    code = f"import urllib.request as u; u.urlopen(u.Request('{url}/_switch?{query}', method='POST'), timeout=5)"
    return f"{{python}} -c \"{code}\""


TRAFFIC = {"rate": 25, "timeout_s": 1,
           "scenarios": [{"name": "work", "path": "/work", "weight": 2, "auth": False},
                         {"name": "auth", "path": "/auth", "auth": False},
                         {"name": "answer", "method": "POST", "path": "/answers", "json": {"a": 1}, "weight": 2,
                          "auth": False, "expect_status": 201, "ack_field": "id"}]}


def fault_scenario(url: str, log: Path, name: str = "dep_down") -> dict:
    return {"name": name, "before_s": 0.6, "during_s": 1.2, "after_s": 0.3,
            "inject": {"type": "command", "inject": switch(url, "fault=on"), "restore": switch(url, "restore=1")},
            "during": {"max_error_rate": 0.05, "no_5xx": True, "must_succeed": ["auth"]},
            "recovery": {"path": "/health", "consecutive": 2, "interval_s": 0.1, "within_s": 1.5},
            "logged": {"file": str(log), "pattern": "rate limiter bypassed", "within_s": 1.0},
            "nothing_lost": {"scenario": "answer", "table": "fault_probe_answers", "settle_s": 0.1}}


def make_phase(tmp_path: Path, name: str, block: dict, url: str, db_url: str | None = None,
               kind: str = "staging", release: str | None = None, run_dir: str = "") -> PhaseRun:
    doc: dict[str, Any] = {"name": "probe", "environment": {"kind": kind},
                           "target": {"base_url": url, "timeout_s": 2, **({"database_url": db_url} if db_url else {})},
                           "safety": {"allow_destructive": True}, "phases": {name: block}}
    if release:
        doc["release"] = {"version": release}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), run_dir, params=load_params(str(path)))


def by_id(checks: list) -> dict[str, Any]:
    return {c.id: c for c in checks}


# ------------------------------------------------------------------------------------------ faults


def test_faults_pass_on_a_service_that_degrades_gracefully(tmp_path, service, pg, monkeypatch):
    monkeypatch.setenv("PROBE_DB", pg["read_only"])
    service.reset()
    service.pg_url = pg["admin"]
    ctx = make_phase(tmp_path, "faults", {"traffic": TRAFFIC, "scenarios": [fault_scenario(service.url, service.log)]},
                     service.url, "${PROBE_DB}")
    got = by_id(faults.run_all(ctx))
    assert {k: c.status for k, c in got.items()} == {
        "faults.dep_down.during": "pass", "faults.dep_down.recovery": "pass",
        "faults.dep_down.nothing_lost": "pass", "faults.dep_down.logged": "pass"}, \
        {k: c.observed for k, c in got.items()}
    assert got["faults.dep_down.during"].metrics["requests"] >= 10
    assert got["faults.dep_down.nothing_lost"].metrics["acknowledged"] >= 10
    assert got["faults.dep_down.recovery"].metrics["recovery_s"] < 1.5
    assert service.serving.mode == "ok" and service.serving.healthy  # restored


def test_faults_fail_on_5xx_no_recovery_lost_write_and_no_log(tmp_path, service, pg, monkeypatch):
    monkeypatch.setenv("PROBE_DB", pg["read_only"])
    service.reset()
    service.pg_url = pg["admin"]
    service.blue.lose = True  # acknowledged, never stored
    service.blue.breaks = True  # 5xx while the fault lasts
    service.blue.recovers = False
    service.log_warnings = False
    sc = fault_scenario(service.url, service.log, "dep_down_bad")
    sc["during_s"], sc["recovery"]["within_s"] = 0.8, 0.6
    ctx = make_phase(tmp_path, "faults", {"traffic": TRAFFIC, "scenarios": [sc]}, service.url, "${PROBE_DB}")
    got = by_id(faults.run_all(ctx))
    assert {k: c.status for k, c in got.items()} == {
        "faults.dep_down_bad.during": "fail", "faults.dep_down_bad.recovery": "fail",
        "faults.dep_down_bad.nothing_lost": "fail", "faults.dep_down_bad.logged": "fail"}
    assert "5xx" in got["faults.dep_down_bad.during"].observed
    assert "auth" not in got["faults.dep_down_bad.during"].observed  # auth kept succeeding
    assert "no 2 consecutive green" in got["faults.dep_down_bad.recovery"].observed
    assert got["faults.dep_down_bad.recovery"].severity == "blocker"
    lost = got["faults.dep_down_bad.nothing_lost"]
    assert lost.metrics["missing"] == lost.metrics["acknowledged"] > 0 and "missing" in lost.observed
    assert "no matching line" in got["faults.dep_down_bad.logged"].observed


def test_restore_runs_when_the_check_raises_mid_disruption(tmp_path, service, monkeypatch):
    service.reset()
    sc = fault_scenario(service.url, service.log, "crashes")
    del sc["nothing_lost"], sc["logged"]
    real = disruption_run._sleep_until

    def crash_after_injection(clock: Clock, t: float) -> None:
        if "inject" in clock.markers:
            assert service.serving.mode != "ok"  # the fault is in place
            raise KeyError("the kernel fell over mid-disruption")
        real(clock, t)

    monkeypatch.setattr(disruption_run, "_sleep_until", crash_after_injection)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = make_phase(tmp_path, "faults", {"traffic": TRAFFIC, "scenarios": [sc]}, service.url, run_dir=str(run_dir))
    during = faults.check_during(ctx, ctx.settings.scenarios[0])
    assert during.status == "error" and "fell over" in during.observed
    assert service.serving.mode == "ok" and service.serving.healthy  # the registered restore ran
    assert pending(run_dir, "faults") == []  # ... and is recorded done
    monkeypatch.setattr(disruption_run, "_sleep_until", real)


def test_process_fault_kills_the_pid_the_file_names_at_injection_not_at_set_up(tmp_path, service):
    """A pid file that follows the process serving the traffic (the sandbox's worker pid file) may name another
    process once the traffic runs: the harness reads it again right before the injection (it read it before the
    traffic, so faulty's lost answers went unseen when the file had moved to the other worker)."""
    import subprocess

    service.reset()
    first, second = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2))
    pid_file = tmp_path / "worker.pid"
    pid_file.write_text(f"{first.pid}\n")
    try:
        sc = {"name": "worker_killed", "before_s": 0.8, "during_s": 0.3, "after_s": 0.1,
              "inject": {"type": "process", "pid_file": str(pid_file), "signal": "SIGKILL", "back_within_s": 5},
              "recovery": {"path": "/health", "consecutive": 1, "interval_s": 0.1, "within_s": 2}}
        ctx = make_phase(tmp_path, "faults", {"traffic": TRAFFIC, "scenarios": [sc]}, service.url)
        threading.Timer(0.3, lambda: pid_file.write_text(f"{second.pid}\n")).start()  # during the first window
        during = faults.check_during(ctx, ctx.settings.scenarios[0])
        assert f"pid {second.pid}" in during.observed, during.observed
        assert second.wait(5) == -signal.SIGKILL and first.poll() is None
    finally:
        for p in (first, second):
            p.kill()
            p.wait()


def test_production_refuses_faults_and_deploy_without_the_flag(tmp_path, service, monkeypatch):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    service.reset()
    sc = fault_scenario(service.url, service.log)
    ctx = make_phase(tmp_path, "faults", {"traffic": TRAFFIC, "scenarios": [sc]}, service.url, kind="production")
    checks = faults.run_all(ctx)
    assert checks and all(c.status == "skip" and "production" in c.observed for c in checks)
    green = switch(service.url, "serve=green")
    dctx = make_phase(tmp_path, "deploy", {"traffic": TRAFFIC, "cutover": {"command": green},
                                           "abort_drill": {"command": green}},
                      service.url, kind="production", release="1.5.0")
    checks = deploy.check_cutover(dctx) + [deploy.check_abort_drill(dctx)]
    assert len(checks) == 5 and all(c.status == "skip" and "production" in c.observed for c in checks)
    assert service.requests == 0 and service.serving is service.blue and service.blue.mode == "ok"  # nothing sent


# ------------------------------------------------------------------------------------------ harness


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recovery_never_counts_connection_errors_as_green():
    clock = Clock()
    rec = probe_until_green(f"http://127.0.0.1:{closed_port()}", Probe(consecutive=1, interval_s=0.05, within_s=0.3),
                            clock, 0.0, timeout_s=0.5)
    assert rec.recovered_s is None and rec.answered == 0 and len(rec.attempts) >= 2
    v = rec.verdict(Probe(consecutive=1, within_s=0.3))
    assert v.status == "fail" and "no probe got an answer" in v.observed and "connection failed" in v.observed


def test_longest_gap_counts_only_successful_answers():
    from rehearsal_lib.disruption.harness import Req

    reqs = [Req(t, t + 0.01, "w", 200 if ok else 503, 10, ok) for t, ok in
            [(0.1, True), (0.5, False), (1.0, False), (1.6, True), (1.7, True)]]
    assert longest_gap(reqs, 0.0, 2.0) == (1.5, 0.11, 1.61)


def test_url_restore_reaches_a_toxiproxy_api_and_survives_a_killed_kernel(tmp_path):
    """The proxy injector's restore is data (kind url, no target token): the runner re-reads it and re-enables
    the proxy through a real Toxiproxy-API stand-in; a 404 on a toxic already removed is not a failure."""
    seen: list[tuple[str, str, Any]] = []

    class Toxi(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, json.loads(body) if body else None,
                         self.headers.get("Authorization")))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:  # noqa: N802
            self._answer(200)

        def do_DELETE(self) -> None:  # noqa: N802
            self._answer(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Toxi)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        from rehearsal_lib.disruption.injectors import ProxyFault
        from rehearsal_lib.disruption.params import ProxyInjector

        api = f"http://127.0.0.1:{httpd.server_address[1]}"
        disable = ProxyFault(ProxyInjector(type="proxy", api_url="${TOXI_URL}", proxy="redis"), lambda v: api)
        record_registered(tmp_path, "faults", disable.restore(), "faults.redis_down.during")
        [(check, restore)] = pending(tmp_path, "faults")
        assert restore.kind == "url" and "${TOXI_URL}" in restore.url  # written unresolved
        import os

        os.environ["TOXI_URL"] = api
        try:
            assert perform(restore, base_url="http://127.0.0.1:9", auth_token="secret")[0]
            toxic = ProxyFault(ProxyInjector(type="proxy", api_url=api, proxy="postgres", action="toxic",
                                             toxic={"type": "latency", "attributes": {"latency": 200}}), str)
            ok, what = perform(toxic.restore(), base_url="http://127.0.0.1:9", auth_token="secret")
        finally:
            del os.environ["TOXI_URL"]
        assert ok and "404" in what
        assert seen[0] == ("POST", "/proxies/redis", {"enabled": True}, None)  # never the target's token
        assert seen[1][:2] == ("DELETE", "/proxies/postgres/toxics/rehearsal_latency")
    finally:
        httpd.shutdown()
    with pytest.raises(ValueError, match="absolute"):
        Restore("x", kind="url", url="/relative")


# ------------------------------------------------------------------------------------------ deploy


def cutover_block(url: str, good: bool) -> dict:
    gap = "" if good else "import time; " + switch_code(url, "down=1") + "; time.sleep(1.2); "
    return {"traffic": TRAFFIC | {"scenarios": TRAFFIC["scenarios"][:2]},
            "cutover": {"command": f"{{python}} -c \"{gap}{switch_code(url, 'serve=green')}\"", "timeout_s": 10,
                        "before_s": 0.5, "after_s": 0.3, "max_gap_s": 0.6,
                        "readiness": {"path": "/ready", "consecutive": 2, "interval_s": 0.1, "within_s": 2},
                        "version_within_s": 1},
            "version": {"interval_s": 0.1},
            # the deploy switches to green at once (python starts in well under abort_after_s), the abort follows
            "abort_drill": {"command": f"{{python}} -c \"import time; {switch_code(url, 'serve=green')}; "
                                       "time.sleep(1.5)\"",
                            "abort_after_s": 1.2, "abort_command": switch(url, "serve=blue" if good else "noop=1"),
                            "before_s": 0.4, "after_s": 0.2, "rollback_within_s": 3.0, "consecutive": 2}}


def switch_code(url: str, query: str) -> str:
    return f"import urllib.request as u; u.urlopen(u.Request('{url}/_switch?{query}', method='POST'), timeout=5)"


def test_deploy_cutover_and_abort_drill_pass_on_a_clean_blue_green_switch(tmp_path, service):
    service.reset()
    ctx = make_phase(tmp_path, "deploy", cutover_block(service.url, good=True), service.url, release="1.5.0")
    got = by_id(deploy.check_cutover(ctx))
    assert {k: c.status for k, c in got.items()} == {
        "deploy.cutover.gap": "pass", "deploy.cutover.errors": "pass", "deploy.cutover.version": "pass",
        "deploy.cutover.readiness": "pass"}, {k: c.observed for k, c in got.items()}
    assert service.serving is service.green
    service.reset()  # blue (1.0.0) serves; the drill deploys green and its abort switches back
    drill = deploy.check_abort_drill(ctx)
    assert drill.status == "pass" and "back on 1.0.0" in drill.observed, drill.observed
    assert drill.evidence["versions seen"] == ["1.0.0", "1.5.0"] and "rollback" in drill.evidence["markers"]


def test_deploy_fails_on_a_gap_and_an_abort_that_leaves_the_new_version(tmp_path, service):
    service.reset()
    ctx = make_phase(tmp_path, "deploy", cutover_block(service.url, good=False), service.url, release="2.0.0")
    got = by_id(deploy.check_cutover(ctx))
    assert got["deploy.cutover.gap"].status == "fail" and got["deploy.cutover.gap"].metrics["gap_s"] > 0.8
    assert got["deploy.cutover.errors"].status == "fail" and "5xx >" in got["deploy.cutover.errors"].observed
    assert got["deploy.cutover.version"].status == "fail" and "1.5.0" in got["deploy.cutover.version"].observed
    assert got["deploy.cutover.readiness"].status == "pass"
    service.reset()  # blue (1.0.0) serves; the drill deploys green and its abort does not switch back
    drill = deploy.check_abort_drill(ctx)
    assert drill.status == "fail" and "not back on 1.0.0" in drill.observed, drill.observed
    assert drill.evidence["versions seen"] == ["1.0.0", "1.5.0"]


def test_plan_drift_fails_and_keeps_the_output(tmp_path):
    code = "import sys; print('Plan: 1 to change'); sys.exit(2)"
    ctx = make_phase(tmp_path, "deploy", {"plan": {"command": f"{sys.executable} -c \"{code}\""}}, "http://127.0.0.1:9")
    check = deploy.check_plan(ctx)
    assert check.status == "fail" and "drift" in check.observed and "1 to change" in check.evidence["output_tail"]
    ok = make_phase(tmp_path, "deploy", {"plan": {"command": "{python} -c pass"}}, "http://127.0.0.1:9")
    assert deploy.check_plan(ok).status == "pass"


# ------------------------------------------------------------------------------------------ injectors


def test_process_injector_stops_and_continues_a_real_process(tmp_path):
    import subprocess

    from rehearsal_lib.disruption.injectors import ProcessFault
    from rehearsal_lib.disruption.params import ProcessInjector

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "w.pid").write_text(str(proc.pid))
        fault = ProcessFault(ProcessInjector(type="process", pid_file=str(tmp_path / "w.pid")), str)
        restore = fault.restore()
        fault.inject()
        state = lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # noqa: E731
        deadline = time.monotonic() + 5
        while state() != "T" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state() == "T"  # stopped
        ok, what = perform(restore, base_url="http://127.0.0.1:9", auth_token=None)
        assert ok and what.startswith("`kill` exited 0") and state() in ("S", "R")  # running again
    finally:
        proc.kill()
        proc.wait()


def test_killed_process_restore_waits_for_a_live_replacement_and_fails_without_one(tmp_path):
    import subprocess

    from rehearsal_lib.disruption.injectors import ProcessFault
    from rehearsal_lib.disruption.params import ProcessInjector

    pid_file = tmp_path / "w.pid"
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid_file.write_text(str(victim.pid))
    start = (f"{{python}} -c \"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
             f"'import time; time.sleep(30)'], start_new_session=True); open('{pid_file}', 'w').write(str(p.pid))\"")
    fault = ProcessFault(ProcessInjector(type="process", pid_file=str(pid_file), signal="SIGKILL",
                                         start_command=start, back_within_s=5), str)
    restore = fault.restore()
    fault.inject()
    victim.wait(5)
    ok, what = perform(restore, base_url="http://127.0.0.1:9", auth_token=None)
    new = int(pid_file.read_text())
    try:
        assert ok and new != victim.pid, what
    finally:
        import os
        import signal

        os.kill(new, signal.SIGKILL)
    # nobody restarts it: the restore fails with the reason (the runner records run.restore.N as fail)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid_file.write_text(str(victim.pid))
    fault = ProcessFault(ProcessInjector(type="process", pid_file=str(pid_file), signal="SIGKILL",
                                         back_within_s=0.5), str)
    restore = fault.restore()
    fault.inject()
    victim.wait(5)
    ok, what = perform(restore, base_url="http://127.0.0.1:9", auth_token=None)
    assert not ok and "exited 1" in what and f"no live process other than {victim.pid}" in what


def test_pg_terminate_injector_terminates_the_named_backends_only(pg):
    from rehearsal_lib.disruption.injectors import PgTerminateFault
    from rehearsal_lib.disruption.params import PgTerminateInjector

    cfg = PgTerminateInjector(type="pg_terminate", database_url="${ADMIN}", application_name="faults-probe")
    fault = PgTerminateFault(cfg, lambda v: pg["admin"])
    assert fault.restore() is None  # nothing to undo: the service must reconnect
    with pytest.raises(RuntimeError, match="nothing to terminate"):
        fault.inject()
    app = psycopg.connect(pg["admin"], application_name="faults-probe", autocommit=True)
    other = psycopg.connect(pg["admin"], application_name="someone-else", autocommit=True)
    try:
        assert "terminated 1 of 1" in fault.inject()
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
        assert other.execute("SELECT 1").fetchone() == (1,)
    finally:
        app.close()
        other.close()
