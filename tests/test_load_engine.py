"""The load engine against real local servers: counts, stalls, timeouts, self-check, processes."""

from __future__ import annotations

import pytest

from rehearsal_lib.load.engine import LoadSpec, Scenario, _Template, run_load, validate_templates
from rehearsal_lib.load.reference_server import free_port, reference_server

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # reference servers in subprocesses


@pytest.fixture(scope="module")
def fast() -> str:
    with reference_server() as url:
        yield url


@pytest.fixture(scope="module")
def stalling() -> str:
    with reference_server("--stall-every", "1.0", "--stall", "0.25") as url:
        yield url


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
def test_open_model_sends_the_scheduled_arrivals_and_counts_statuses(fast, transport):
    spec = LoadSpec(fast, [Scenario("ok", "/a/{seq}", weight=3), Scenario("bad", "/status/500", expect_status=[200])],
                    model="open", rate=200, duration_s=1.0, transport=transport)
    r = run_load(spec)
    # every arrival is sent or counted as dropped; a starved loop (both cores busy: 60 of 200 in one run)
    # drops those over 1 s late at the end, and the engine must then say its figures are the client's
    assert r.scheduled == 200 and r.sent + r.dropped == 200 and r.sent > 0
    assert r.dropped == 0 or any("dropped" in reason for reason in r.saturation())
    ok, bad = r.scenario_stats()
    assert ok.count + bad.count == r.sent and ok.count > bad.count > 0
    assert ok.status_mix == {"200": ok.count} and ok.error_rate == 0
    assert bad.status_mix == {"500": bad.count} and bad.error_rate == 1.0
    assert sum(row["requests"] for row in r.timeline()) == r.sent


def test_open_model_sees_stalls_a_closed_loop_hides(stalling):
    """250 ms stalls every second: from the intended send time, p99 shows them; a closed loop barely does."""
    open_ = run_load(LoadSpec(stalling, [Scenario("s", "/")], model="open", rate=200, duration_s=2.0))
    closed = run_load(LoadSpec(stalling, [Scenario("s", "/")], model="closed", users=2, duration_s=2.0))
    p99_open, p99_closed = open_.scenario_stats()[0].p99_ms, closed.scenario_stats()[0].p99_ms
    assert p99_open > 150, p99_open
    assert p99_closed < p99_open / 2, (p99_closed, p99_open)


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
def test_timeouts_and_refused_connections_are_errors(transport):
    with reference_server("--delay", "0.5") as slow:
        r = run_load(LoadSpec(slow, [Scenario("s", "/")], model="open", rate=20, duration_s=0.5, timeout_s=0.1,
                              transport=transport))
    st = r.scenario_stats()[0]
    assert st.status_mix == {"timeout": st.count} and st.error_rate == 1.0
    assert st.count == r.sent and r.sent + r.dropped == 10 and r.sent > 0  # drops: as above
    refused = run_load(LoadSpec(f"http://127.0.0.1:{free_port()}", [Scenario("s", "/")], model="closed", users=1,
                                duration_s=0.3, transport=transport))
    st = refused.scenario_stats()[0]
    expected = "error:ConnectError" if transport == "httpcore" else "error:ClientConnectorError"
    assert st.errors == st.count > 0 and list(st.status_mix) == [expected]


def test_saturation_trips_when_the_rate_is_far_beyond_one_core(fast):
    r = run_load(LoadSpec(fast, [Scenario("s", "/")], model="open", rate=50_000, duration_s=1.0, max_in_flight=64))
    reasons = r.saturation()
    assert reasons, r.generator_figures()
    assert any("achieved" in x or "dropped" in x or "lag" in x for x in reasons)


def test_two_processes_merge_their_samples(fast):
    r = run_load(LoadSpec(fast, [Scenario("s", "/")], model="open", rate=200, duration_s=1.0), processes=2)
    assert r.processes == 2 and r.scheduled == 200 and r.sent + r.dropped == 200 and r.sent > 0
    assert r.dropped == 0 or any("dropped" in reason for reason in r.saturation())
    assert len(r.cpu_s_per_process) == 2


def test_templates_render_placeholders_and_keep_types():
    sc = Scenario("t", "/s/{session_id}/a", "POST", json={"q": "{randint:3:3}", "c": "cand-{seq}", "v": "{worker}"})
    tpl = _Template(sc, {}, {"session_id": ["x", "y"]}, 0)
    path, headers, body = tpl.render()
    assert path == "/s/x/a" and headers["content-type"] == "application/json"
    assert body == b'{"q": 3, "c": "cand-1", "v": 0}'
    assert tpl.render()[0] == "/s/y/a"
    assert validate_templates(LoadSpec("http://x", [sc])) == ["t: {session_id}"]


def test_closed_model_runs_longer_than_the_request_timeout(fast):
    r = run_load(LoadSpec(fast, [Scenario("s", "/")], model="closed", users=2, duration_s=1.5, timeout_s=0.5))
    assert r.wall_s >= 1.45 and max(r.samples.offset_s) > 1.2 and r.scenario_stats()[0].errors == 0


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
def test_a_request_that_cannot_be_built_is_an_error_of_its_scenario(fast, transport):
    """A non-ASCII header value (a secret with 'ä') cannot be encoded: each such request is a named error
    of its scenario, not a task exception that leaves the generator at 0 req/s looking saturated."""
    spec = LoadSpec(fast, [Scenario("key", "/", headers={"X-API-Key": "p\"a\\s&s<w'o>rd-ä"})],
                    model="open", rate=20, duration_s=0.5, transport=transport)
    r = run_load(spec)
    st = r.scenario_stats()[0]
    assert r.sent > 0 and st.count == r.sent and st.errors == st.count
    assert list(st.status_mix) == ["error:UnicodeEncodeError"], st.status_mix
    assert not any("rate" in reason for reason in r.saturation()), r.saturation()
