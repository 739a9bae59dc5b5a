"""The Locust driver against a real local server; skipped (with the reason) when locust is absent.

Locust is in the `bench` extra, not `dev`: it brings gevent (~30 s to install) and monkey-patches
whatever process imports it, so it only ever runs in its own subprocess here.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from rehearsal_lib.load.engine import LoadSpec, Scenario
from rehearsal_lib.load.reference_server import reference_server

pytestmark = [pytest.mark.integration, pytest.mark.alone,  # a reference server subprocess, locust in another
              pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                 reason="locust is not installed (pip install -e '.[bench]')")]


def test_locust_results_map_into_the_same_figures(tmp_path):
    from rehearsal_lib.load.locust_driver import run_locust

    with reference_server() as url:
        spec = LoadSpec(url, [Scenario("ok", "/a/{seq}", weight=3),
                              Scenario("bad", "/status/500", "POST", json={"id": "{uuid}"}, expect_status=[200])],
                        model="closed", users=4, duration_s=2)
        r = run_locust(spec, command=[sys.executable, "-m", "locust"], workdir=str(tmp_path))
    ok, bad = r.scenario_stats()
    assert ok.count > 50 and ok.errors == 0 and ok.p95_ms is not None
    assert bad.count > 10 and bad.error_rate == 1.0 and bad.status_mix == {"500": bad.count}
    assert r.sent == ok.count + bad.count and r.cpu_us_per_request()
    assert (tmp_path / "locustfile.py").is_file() and (tmp_path / "locustfile.py.json").is_file()


def test_load_phase_on_locust_fails_the_p95_gate_of_a_slow_endpoint(tmp_path):
    from tests.test_load_checks import judge, phase, stage

    with reference_server("--delay", "0.3") as slow:
        closed = {**stage("slow", "/", p95_ms=100), "model": "closed", "users": 4, "duration_s": 3}
        ctx = phase(tmp_path, slow, [closed])
        ctx.params.phases.load.generator.engine = "locust"
        got = judge(ctx)
    p95 = got["load.p95.slow_req"]
    # every answer takes at least the server's 300 ms delay (more on a busy machine)
    assert p95.status == "fail" and p95.metrics["p95_ms"] >= 300, p95.observed
