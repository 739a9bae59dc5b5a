"""The sandbox's disruption support (issue #13): fault proxy topology, two workers, blue/green, and the five
planted defects of the faulty variant, each proven directly against both variants.

One default and one faulty sandbox for the whole module (module-scoped: they cost two starts). The
checks that will catch the defects (faults.*, deploy.*) are built on another branch; these tests do
by hand what those checks do: disable the redis proxy, SIGKILL workers right after a 201, terminate the
app's PostgreSQL backends, deploy and abort under steady traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import run, wait_for

from rehearsal_lib import config
from rehearsal_lib.probes.toxiproxy import ToxiproxyClient
from rehearsal_lib.sandbox import SandboxState, start_sandbox, stop_sandbox
from rehearsal_lib.sandbox.defects import DISRUPTION_DEFECTS
from rehearsal_lib.sandbox.manager import _pid_alive

pytestmark = pytest.mark.integration
TOKEN = "disrupt-test-token"
VARIANTS = ("default", "faulty")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("sbx-disrupt")
    yield root
    for v in VARIANTS:
        stop_sandbox(v, root)


@pytest.fixture(scope="module")
def sandboxes(home: Path) -> dict[str, SandboxState]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        states = list(pool.map(lambda v: start_sandbox(v, home=home, token=TOKEN), VARIANTS))
    return dict(zip(VARIANTS, states, strict=True))


def _client(st: SandboxState) -> httpx.Client:
    return httpx.Client(base_url=st.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                        trust_env=False)


def _session(c: httpx.Client) -> str:
    r = c.post("/v1/sessions", json={"candidate_id": f"disrupt-{uuid.uuid4().hex[:8]}", "exam_id": 1})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _sql(st: SandboxState, query: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(st.admin_db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))
    finally:
        engine.dispose()


def _workers(st: SandboxState) -> list[int]:
    """The live worker processes of the serving colour (children of its supervisor)."""
    out = []
    for task in Path(f"/proc/{st.app_pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _state(st: SandboxState) -> SandboxState:
    return SandboxState.from_json(json.loads((st.home / "state.json").read_text()))


def _ops(st: SandboxState, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REHEARSAL_SANDBOX_HOME": str(st.home.parent)}
    return run([sys.executable, "-m", "rehearsal_lib.sandbox.ops", *args, "--variant", st.variant], 180,
               f"ops {' '.join(args)} did not finish", env=env)


class Traffic:
    """Steady GET /v1/version through `front` in a thread: (time, status or error, version) per request."""

    def __init__(self, st: SandboxState) -> None:
        self.st, self.results, self._stop = st, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.st.base_url, timeout=3, trust_env=False) as c:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = c.get("/v1/version")
                    self.results.append((t, r.status_code, r.json().get("version")))
                except httpx.HTTPError as err:
                    self.results.append((t, type(err).__name__, None))
                time.sleep(0.03)

    def __enter__(self) -> Traffic:
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join(10)

    def failed(self) -> list[Any]:
        return [r for r in self.results if r[1] != 200]

    def longest_gap_s(self) -> float:
        ok = [r[0] for r in self.results if r[1] == 200]
        return max((b - a for a, b in zip(ok, ok[1:], strict=False)), default=0.0)

    def versions(self) -> list[str]:
        """Versions served, in order, without repeats."""
        out: list[str] = []
        for r in self.results:
            if r[2] and (not out or out[-1] != r[2]):
                out.append(r[2])
        return out


# ----------------------------------------------------------------------------------------- topology


def test_planted_defects_name_their_checks() -> None:
    want = {"redis_down_5xx": "faults.redis_down.during",
            "answer_acked_before_commit": "faults.worker_killed.nothing_lost",
            "no_db_reconnect": "faults.db_backends_terminated.recovery",
            "cutover_drops_requests": "deploy.cutover.gap",
            "abort_leaves_new_version": "deploy.abort_drill.rollback"}
    assert {d.id: d.check_id for d in DISRUPTION_DEFECTS} == want
    assert {"REHEARSAL_SANDBOX_FAULT_PROXY_URL", "REHEARSAL_SANDBOX_WORKER_PID_FILE"} <= set(
        config.SANDBOX_PROVIDED_VARS)


def test_topology_app_reaches_redis_and_postgres_only_through_the_proxy(sandboxes: dict[str, SandboxState]) -> None:
    st = sandboxes["default"]
    env = st.env_vars()
    proxy = ToxiproxyClient(env["REHEARSAL_SANDBOX_FAULT_PROXY_URL"])
    proxies = proxy.proxies()
    assert {"redis", "postgres", "front"} <= set(proxies)
    assert proxies["redis"]["upstream"].startswith("unix:")
    assert proxies["postgres"]["upstream"] == f"127.0.0.1:{st.pg_port}"
    assert env["REHEARSAL_SANDBOX_URL"].endswith(f":{proxies['front']['listen'].rsplit(':', 1)[1]}")
    assert f":{st.pg_port}/" in env["REHEARSAL_SANDBOX_ADMIN_DB_URL"]  # Rehearsal's own SQL stays direct
    assert len(_workers(st)) == 2
    with _client(st) as c:
        assert c.get("/v1/ready").status_code == 200
        proxy.set_enabled("postgres", False)
        try:
            assert c.get("/v1/ready").status_code == 503  # the app's database goes through the proxy
            assert _sql(st, "SELECT 1") == [(1,)]  # the admin URL does not
        finally:
            proxy.set_enabled("postgres", True)
        wait_for(lambda: c.get("/v1/ready").status_code == 200, 20, "the app did not get its database back")


# ------------------------------------------------------------------------------------ redis_down_5xx


@pytest.mark.parametrize("variant", VARIANTS)
def test_redis_down(sandboxes: dict[str, SandboxState], variant: str) -> None:
    st = sandboxes[variant]
    proxy = ToxiproxyClient(st.fault_proxy_url)
    log = Path(st.app_log)
    size = log.stat().st_size
    with _client(st) as c:
        proxy.set_enabled("redis", False)
        try:
            statuses = [c.post("/v1/sessions", json={"candidate_id": "redis-down", "exam_id": 1}).status_code
                        for _ in range(4)]
        finally:
            proxy.set_enabled("redis", True)
        after = c.post("/v1/sessions", json={"candidate_id": "redis-back", "exam_id": 1}).status_code
    assert after == 201
    if variant == "default":  # the limiter is bypassed with a warning: auth and the API keep working
        assert statuses == [201] * 4
        wait_for(lambda: "rate limiter bypassed" in log.read_bytes()[size:].decode(), 10,
                 "no 'rate limiter bypassed' warning in the app log")
        lines = [json.loads(ln) for ln in log.read_bytes()[size:].decode().splitlines()
                 if "rate limiter bypassed" in ln]
        assert lines[0]["level"] == "warning"
    else:  # redis_down_5xx
        assert statuses == [503] * 4


# ------------------------------------------------------------------------ answer_acked_before_commit


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_killed_right_after_a_201(sandboxes: dict[str, SandboxState], variant: str) -> None:
    st = _state(sandboxes[variant])
    pid_file = Path(st.worker_pid_file)
    with _client(st) as c:
        sid = _session(c)
        r = c.post(f"/v1/sessions/{sid}/answers", json={"question_id": 1, "answer": "B"})
        assert r.status_code == 201
        for pid in _workers(st):  # whichever served it: both die right after the acknowledgement
            os.kill(pid, signal.SIGKILL)
        answer_id = r.json()["id"]
        old = int(pid_file.read_text())
        wait_for(lambda: len(_workers(st)) == 2, 30, "the killed workers were not replaced")

        def ready() -> bool:
            try:
                return c.get("/v1/ready").status_code == 200
            except httpx.TransportError:  # the kept-alive connection died with its worker
                return False

        wait_for(ready, 30, "the app did not serve again")
        # the pid file names the replacement that answered
        assert int(pid_file.read_text()) != old and _pid_alive(int(pid_file.read_text()))
    stored = _sql(st, "SELECT id FROM answers WHERE id = :i", i=answer_id)
    if variant == "default":
        assert stored == [(answer_id,)]  # acknowledged after the commit: never lost
    else:
        assert stored == []  # answer_acked_before_commit


def test_worker_pid_file_names_the_worker_serving_the_traffic(sandboxes: dict[str, SandboxState]) -> None:
    """One keep-alive connection: all of its requests reach one worker, and the pid file names that one, so
    killing the other leaves the connection as it was (the worker_killed fault used to kill worker 0, idle
    when the traffic's connection had landed on worker 1: faulty's lost answers went unseen)."""
    st = _state(sandboxes["default"])
    with httpx.Client(base_url=st.base_url, timeout=5, trust_env=False) as c:
        def local_addr() -> Any:
            r = c.get("/health")
            assert r.status_code == 200
            return r.extensions["network_stream"].get_extra_info("client_addr")

        first = [local_addr() for _ in range(5)]
        assert len(set(first)) == 1  # one connection
        serving = int(Path(st.worker_pid_file).read_text())
        others = [p for p in _workers(st) if p != serving]
        assert serving in _workers(st) and len(others) == 1
        os.kill(others[0], signal.SIGKILL)
        time.sleep(0.3)
        assert local_addr() == first[0]  # the connection was not on the killed worker
        assert int(Path(st.worker_pid_file).read_text()) == serving
    wait_for(lambda: len(_workers(st)) == 2, 30, "the killed worker was not replaced")


def test_one_worker_killed_the_other_serves(sandboxes: dict[str, SandboxState]) -> None:
    st = _state(sandboxes["default"])
    victim = int(Path(st.worker_pid_file).read_text())
    os.kill(victim, signal.SIGKILL)
    with httpx.Client(base_url=st.base_url, timeout=5, trust_env=False) as c:
        # fresh connections: every one lands on a live worker (the other, or the replacement)
        statuses = [c.get("/health", headers={"Connection": "close"}).status_code for _ in range(20)]
    assert statuses == [200] * 20
    wait_for(lambda: int(Path(st.worker_pid_file).read_text()) != victim, 30, "the worker was not replaced")


# ----------------------------------------------------------------------------------- no_db_reconnect


@pytest.mark.parametrize("variant", VARIANTS)
def test_backends_terminated(sandboxes: dict[str, SandboxState], variant: str) -> None:
    st = _state(sandboxes[variant])
    with _client(st) as c:
        sid = _session(c)
        for _ in range(6):  # pooled connections in both workers
            assert c.get("/v1/exam-mode").status_code == 200
        killed = _sql(st, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'exam-api'")
        assert killed and all(k[0] for k in killed)
        # the first calls to meet the dead connections are answers (faulty's own commit path): a lost
        # connection met there must latch too, or SQLAlchemy's pool invalidation lets the next call reconnect
        for _ in range(6):
            with _client(st) as fresh:  # a new connection each: both workers
                fresh.post(f"/v1/sessions/{sid}/answers", json={"question_id": 1, "answer": "B"})

        def healthy_run() -> bool:
            return all(c.get("/v1/exam-mode").status_code == 200 for _ in range(6))

        deadline = time.monotonic() + 5
        recovered = False
        while time.monotonic() < deadline and not recovered:
            recovered = healthy_run()
            time.sleep(0.2)
    if variant == "default":
        assert recovered  # the pool pre-pings: reconnects
    else:
        assert not recovered  # no_db_reconnect (the faulty abort drill below starts fresh processes anyway)
        # one app, one broken pool: each request on a new connection (either worker) fails, not only those of
        # the worker that lost its connection first (a rehearsal's recovery probe got 3 greens from the other)
        codes = []
        for _ in range(8):
            with _client(st) as fresh:
                codes.append(fresh.get("/v1/exam-mode").status_code)
        assert set(codes) == {503}, codes


# --------------------------------------------------------------------------------------- blue/green


def test_deploy_then_rollback_without_a_gap(sandboxes: dict[str, SandboxState]) -> None:
    st = _state(sandboxes["default"])
    before = st.colours[st.serving]["version"]
    with Traffic(st) as traffic:
        proc = _ops(st, "deploy", "--version", "1.5.0")
    assert proc.returncode == 0, proc.stderr
    assert traffic.failed() == [] and traffic.versions() == [before, "1.5.0"]
    status = json.loads(_ops(st, "status").stdout)
    assert status["version"] == "1.5.0" and status["previous"] == st.serving
    assert all(c["running"] for c in status["colours"].values())  # the old colour is kept for rollback
    old_port = st.colours[st.serving]["port"]  # switched away from: drains in-band, not by a cut connection
    assert httpx.get(f"http://127.0.0.1:{old_port}/health", trust_env=False).headers["connection"] == "close"
    pid_file = Path(st.worker_pid_file)
    assert pid_file.resolve().name == f"app-{status['serving']}-worker.pid"
    with Traffic(st) as traffic:
        assert _ops(st, "rollback").returncode == 0
    assert traffic.failed() == [] and traffic.versions()[-1] == before
    assert "connection" not in httpx.get(f"http://127.0.0.1:{old_port}/health", trust_env=False).headers


@pytest.mark.parametrize("variant", VARIANTS)
def test_abort_drill(sandboxes: dict[str, SandboxState], variant: str) -> None:
    """default: `ops abort` once the new version serves -> rolled back, no failed request. faulty: a deploy
    that aborts itself (--abort-after-s) leaves the new version serving, after a gap."""
    st = _state(sandboxes[variant])
    before = st.colours[st.serving]["version"]
    with Traffic(st) as traffic:
        if variant == "default":
            env = {**os.environ, "REHEARSAL_SANDBOX_HOME": str(st.home.parent)}
            deploy = subprocess.Popen([sys.executable, "-m", "rehearsal_lib.sandbox.ops", "deploy", "--version",
                                       "9.9.9", "--bake-s", "120", "--variant", variant], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(lambda: "9.9.9" in traffic.versions(), 120, "the new version never served")
                aborted = _ops(st, "abort")
                assert aborted.returncode == 0, aborted.stderr
            finally:
                out, err = deploy.communicate(timeout=60)
            assert deploy.returncode == 1, out + err
        else:
            aborted = _ops(st, "deploy", "--version", "9.9.9", "--abort-after-s", "0.5")
            assert aborted.returncode == 1, aborted.stdout + aborted.stderr
            out = aborted.stdout
    assert json.loads(out.strip().splitlines()[-1])["outcome"] == "aborted"
    served = json.loads(_ops(st, "status").stdout)["version"]
    if variant == "default":
        assert served == before and traffic.versions() == [before, "9.9.9", before]
        # cutover and rollback without an HTTP error; the switch closes each idle keep-alive connection (a TCP
        # proxy cannot see request boundaries), so a request sent at that very instant may meet the close
        # (ReadError/RemoteProtocolError, no answer): at most one such race, never a 5xx or a refused connection
        failed = traffic.failed()
        assert len(failed) <= 1 and all(f[1] in ("ReadError", "RemoteProtocolError") for f in failed), failed
        # the colour serving again presents a leaf of the CA in ca_file: the aborted colour must not have
        # replaced the sandbox's CA (it did: every HTTPS check then failed verification after a deploy)
        import ssl

        ctx = ssl.create_default_context(cafile=st.ca_file)
        assert httpx.get(f"{st.https_url}/health", verify=ctx, timeout=10).status_code == 200
    else:
        assert served == "9.9.9" and traffic.versions()[-1] == "9.9.9"  # abort_leaves_new_version
        assert traffic.failed() and traffic.longest_gap_s() > 0.5  # cutover_drops_requests


def test_sandbox_down_leaves_no_process(home: Path, sandboxes: dict[str, SandboxState]) -> None:
    pids = set()
    for v in VARIANTS:
        st = _state(sandboxes[v])
        pids |= {st.fault_proxy_pid, st.redis_pid, st.worker_pid, *_workers(st)}
        pids |= {int(c["pid"]) for c in st.colours.values() if c["pid"]}
        assert stop_sandbox(v, home) is True
    alive = [p for p in pids if _pid_alive(p)]
    assert alive == [], subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(map(str, alive))],
                                       capture_output=True, text=True).stdout
