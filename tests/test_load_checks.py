"""Every load check can fail, and says why: real local servers and the real sandbox database."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rehearsal_lib.config import load_params
from rehearsal_lib.load.reference_server import reference_server
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.load import checks as load

# a reference server subprocess; one test uses the real sandbox
pytestmark = [pytest.mark.integration, pytest.mark.alone]

# The generator's self-check is loose here: these tests judge the server's answers, and on a machine with
# both cores busy a 40 req/s loop lags by hundreds of ms. Saturation itself is tested at 50,000 req/s.
GEN = {"max_scheduler_lag_ms": 2000, "min_rate_ratio": 0.5, "timeout_s": 2}


def phase(tmp_path: Path, base_url: str, stages: list, kind: str = "sandbox", **extra) -> PhaseRun:
    doc = {"name": "probe", "environment": {"kind": kind}, "target": {"base_url": base_url, "timeout_s": 2, **extra.pop(
        "target", {})}, "phases": {"load": {"enabled": True, "generator": GEN, "stages": stages, **extra}},
           "safety": {"allow_destructive": True}}  # load is destructive: its checks write (production still refuses)
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun("load", str(path), params=load_params(str(path)))


def stage(name: str, path: str, rate: float = 40, **scenario) -> dict:
    return {"name": name, "rate": rate, "duration_s": 1, "min_throughput_rps": 30,
            "scenarios": [{"name": f"{name}_req", "path": path, "auth": False, **scenario}]}


def by_id(checks: list) -> dict:
    return {c.id: c for c in checks}


def judge(ctx: PhaseRun) -> dict:
    run = load.run_load_phase(ctx)  # as the notebook: the first check sends the load, then the table shows it
    checks = load.check_generator(ctx, run)
    load.show_run(ctx, run)
    checks += (load.check_latency(ctx, run) + load.check_errors(ctx, run) + load.check_throughput(ctx, run)
               + load.check_db_connections(ctx, run))
    return by_id(checks)


def test_slow_endpoint_fails_p95_and_p99_gates(tmp_path, capsys):
    with reference_server("--delay", "0.3") as slow:
        got = judge(phase(tmp_path, slow, [stage("slow", "/", p95_ms=100, p99_ms=200)]))
    p95, p99 = got["load.p95.slow_req"], got["load.p99.slow_req"]
    # every answer takes at least the server's 300 ms delay (more on a busy machine)
    assert p95.status == "fail" and p95.observed.startswith("p95 ") and p95.severity == "blocker"
    assert p95.metrics["p50_ms"] >= 300 and p95.metrics["p95_ms"] >= 300
    assert p95.evidence["limit"] == "p95 at most 100 ms" and p95.evidence["requests"] == p95.metrics["requests"]
    assert p95.evidence["percentiles"].startswith("p50 ") and p95.evidence["status mix"].startswith("200 × ")
    gen = got["load.generator.slow"]
    assert "% of a core" in gen.observed and "client_cpu_pct" in gen.metrics and "client_cpu" not in gen.metrics
    assert "1 stage, " in capsys.readouterr().out  # the "Run the load" summary
    assert p99.status == "fail" and p99.observed.startswith("p99 ") and p99.metrics["p99_ms"] >= 300
    assert got["load.errors.slow_req"].status == "pass" and got["load.generator.slow"].status == "pass"


def test_errors_and_low_throughput_fail(tmp_path):
    with reference_server() as fast:
        got = judge(phase(tmp_path, fast, [stage("broken", "/status/500")]))
    err, tput = got["load.errors.broken_req"], got["load.throughput.broken"]
    assert err.status == "fail" and "(100.0%)" in err.observed and "answers 500 × " in err.observed
    assert tput.status == "fail" and tput.observed.startswith("0.0 successful responses/s")
    assert got["load.p95.broken_req"].status == "pass"


def test_saturated_generator_is_an_error_never_a_latency_verdict(tmp_path):
    with reference_server() as fast:
        got = judge(phase(tmp_path, fast, [stage("flood", "/", rate=50_000)]))
    for cid in ("load.generator.flood", "load.p95.flood_req", "load.errors.flood_req", "load.throughput.flood"):
        assert got[cid].status == "error" and got[cid].observed.startswith("load generator saturated: "), cid
    assert got["load.generator.flood"].metrics["target_rps"] == 50_000


def test_refused_connection_is_error_and_production_refuses(tmp_path, monkeypatch):
    from rehearsal_lib.load.reference_server import free_port

    got = judge(phase(tmp_path, f"http://127.0.0.1:{free_port()}", [stage("down", "/")]))
    down = got["load.errors.down_req"]
    assert down.status == "fail" and ("ConnectError" in down.observed or "ClientConnectorError" in down.observed)
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    prod = judge(phase(tmp_path, "http://127.0.0.1:1", [stage("p", "/")], kind="production"))
    assert prod and all(c.status == "skip" and "production" in c.observed for c in prod.values())


def test_setup_failure_is_an_error_for_every_stage(tmp_path):
    with reference_server() as fast:
        got = judge(phase(tmp_path, fast, [stage("s", "/x/{session_id}")],
                          setup=[{"name": "session_id", "path": "/status/500", "count": 1, "auth": False}]))
    assert got["load.p95.s_req"].status == "error" and "setup session_id" in got["load.p95.s_req"].observed



def test_db_connections_over_limit_fail_and_pool_exhaustion_warns(tmp_path, sandbox, monkeypatch):
    monkeypatch.setenv("LOAD_TEST_DB_URL", sandbox.db_url)
    ctx = phase(tmp_path, sandbox.base_url, [stage("ready", "/v1/ready", rate=20)],
                target={"database_url": "${LOAD_TEST_DB_URL}"},
                db_connections={"sample_interval_s": 0.2, "max_usage_ratio": 0.01, "application_name": "exam-api",
                                "pool_size": 1})
    got = judge(ctx)
    conn, pool = got["load.db.connections"], got["load.db.pool"]
    assert conn.status == "fail" and "of max_connections" in conn.observed
    assert " connection" in conn.evidence["peak"]
    assert conn.evidence["max_connections"] == conn.metrics["max_connections"]
    assert pool.status == "warn" and pool.observed.startswith("pool exhausted: exam-api held")
    assert pool.evidence["pool limit"] == "1 connection" and pool.evidence["application"] == "exam-api"


class _SlowConnectProxy:
    """A TCP proxy that holds each new connection for `delay_s` before it reaches the upstream server:
    a database that is slow to open a connection (a busy server, a far network, a pooler queue)."""

    def __init__(self, upstream: tuple[str, int], delay_s: float):
        import socket
        import threading

        self.upstream, self.delay_s = upstream, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import time

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return

            def serve(client: socket.socket = client) -> None:
                time.sleep(self.delay_s)
                with socket.create_connection(self.upstream) as up, client:
                    pipes = [self._threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                             for a, b in ((client, up), (up, client))]
                    for p in pipes:
                        p.start()
                    for p in pipes:
                        p.join()

            self._threading.Thread(target=serve, daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(1)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def test_a_database_slow_to_connect_is_still_sampled_during_the_load(tmp_path, sandbox, monkeypatch):
    """The sampler's connection opens 2 s late, after a 1 s load would be over: the load waits for the
    first sample, so the peak is measured under load instead of 'no pg_stat_activity sample'."""
    from sqlalchemy.engine import make_url

    url = make_url(sandbox.db_url)
    proxy = _SlowConnectProxy((url.host, url.port), delay_s=2.0)
    try:
        monkeypatch.setenv("LOAD_TEST_DB_URL", url.set(port=proxy.port).render_as_string(hide_password=False))
        ctx = phase(tmp_path, sandbox.base_url, [stage("ready", "/v1/ready", rate=20)],
                    target={"database_url": "${LOAD_TEST_DB_URL}", "timeout_s": 5},
                    db_connections={"sample_interval_s": 0.2, "max_usage_ratio": 0.9})
        run = load.run_load_phase(ctx)
        conn = by_id(load.check_db_connections(ctx, run))["load.db.connections"]
    finally:
        proxy.close()
    assert conn.status == "pass", conn.observed
    stage_start = run.stages[0].offset_s
    assert stage_start >= 2.0  # the load waited for the sampler's late connection
    assert any(s.t_s <= stage_start for s in run.conn_samples)  # a sample before the load
    assert any(s.t_s >= stage_start for s in run.conn_samples)  # and samples while and after it ran
