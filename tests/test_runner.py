"""Runner failure paths in a throwaway project: a crashing notebook, a cell timeout, Ctrl-C, parallel phases.

The notebooks here are real and run in real kernels under papermill (those tests are marked
``integration``: 30-60 s each on a busy machine); the target is an address that refuses connections,
so no service is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from conftest import finish, wait_for
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from rehearsal_lib.evidence import verify_manifest
from rehearsal_lib.runner import Runner

ROOT = Path(__file__).resolve().parent.parent

# Timeouts no busy machine reaches: a kernel start plus a cell can take tens of seconds with both cores
# busy. The cell-timeout test sets its own short one.
PARAMS = """
name: scratch
environment: {kind: staging}
target:
  base_url: http://127.0.0.1:9
  auth_token: ${SCRATCH_TOKEN}
  timeout_s: 1
run:
  cell_timeout_s: 600
  phase_timeout_s: 900
phases:
  integrity: {enabled: true}
"""

RECORD = """
from rehearsal_lib.phase import open_phase, Outcome
ph = open_phase("{phase}", env, run_dir)
ph.run("{phase}.first", "First check", lambda: Outcome("pass", "fine"))
"""


def _notebook(path: Path, phase: str, tail: str) -> None:
    params = new_code_cell('env = "scratch"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {phase}"), params,
                             new_code_cell(RECORD.format(phase=phase)), new_code_cell(tail)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with params/scratch.yaml and notebooks we control."""
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "scratch.yaml").write_text(PARAMS)
    shutil.copy(ROOT / "rehearsal_lib" / "notebooks" / "13_decision.ipynb", tmp_path / "notebooks")
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SCRATCH_TOKEN", "scratch-secret-token-42")
    return tmp_path


@pytest.mark.integration  # real kernels
def test_crashing_notebook_keeps_evidence_and_is_no_go(project: Path):
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "raise ValueError('boom in cell')")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    summary = Runner("scratch", root=project, progress=lambda s: None).run()
    outcomes = {p.name: p for p in summary.phases}
    assert outcomes["preflight"].outcome == "error" and "boom in cell" in outcomes["preflight"].reason
    assert outcomes["integrity"].outcome == "ok"  # the run went on after the crash
    by_id = {c.id: c for c in summary.checks}
    assert by_id["preflight.first"].status == "pass"  # evidence recorded before the crash is kept
    assert by_id["preflight.notebook.completed"].status == "error"
    assert summary.decision.decision == "NO-GO"
    report = (summary.run_dir / "report.html").read_text()
    assert "boom in cell" in report and "did not complete" in report
    executed = nbformat.read(str(summary.run_dir / "notebooks" / "01_preflight.ipynb"), as_version=4)
    assert "did not complete" in executed.cells[0].source  # the notebook itself says so
    assert verify_manifest(summary.run_dir) == []


@pytest.mark.integration  # real kernels
def test_cell_timeout_is_an_error_with_reason(project: Path):
    # 10 s: well above what the cell recording a check takes on a busy machine (~2 s), far below the sleep
    (project / "params" / "scratch.yaml").write_text(PARAMS.replace("cell_timeout_s: 600", "cell_timeout_s: 10"))
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "import time\ntime.sleep(600)")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    summary = Runner("scratch", root=project, progress=lambda s: None).run()
    pre = next(p for p in summary.phases if p.name == "preflight")
    assert pre.outcome == "error" and "longer than 10 s" in pre.reason  # the cell's timeout, not the phase's
    assert {c.id: c.status for c in summary.checks}["preflight.first"] == "pass"
    assert summary.decision.decision == "NO-GO"


@pytest.mark.integration  # real kernels
def test_parallel_phases_and_secret_never_written(project: Path):
    for name, phase in (("01_preflight.ipynb", "preflight"), ("08_integrity.ipynb", "integrity")):
        # the token is resolved in the kernel and even printed by careless code: it must still not land on disk
        _notebook(project / "notebooks" / name, phase, "print('token is', ph.auth_token)")
    summary = Runner("scratch", root=project, parallel=2, progress=lambda s: None).run()
    assert [p.outcome for p in summary.phases] == ["ok", "ok", "ok"]
    for path in summary.run_dir.rglob("*"):
        if path.is_file():
            assert b"scratch-secret-token-42" not in path.read_bytes(), path
    assert "token is ***" in (summary.run_dir / "notebooks" / "01_preflight.ipynb").read_text()
    nb = nbformat.read(str(summary.run_dir / "notebooks" / "01_preflight.ipynb"), as_version=4)
    assert set(nb.metadata.papermill.parameters) == {"env", "run_dir"}


@pytest.mark.integration  # real kernels
@pytest.mark.parametrize("parallel", ["1", "2"])
def test_interrupt_writes_report_of_what_finished(project: Path, tmp_path: Path, parallel: str):
    # preflight finishes, then the phases after it hang until interrupted; with --parallel 2 two of them
    # (integrity and security, one wave) hang side by side, so Ctrl-C stops a wave running in the pool
    hanging = ["integrity"] + (["security"] if parallel == "2" else [])
    (project / "params" / "scratch.yaml").write_text(PARAMS + "  security: {enabled: true}\n" * (parallel == "2"))
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    for name in hanging:
        nb = {"integrity": "08_integrity.ipynb", "security": "09_security.ipynb"}[name]
        _notebook(project / "notebooks" / nb, name, "import time\ntime.sleep(1800)")
    out = tmp_path / "out"
    env = {**os.environ, "REHEARSAL_PROJECT_DIR": str(project)}
    proc = subprocess.Popen([sys.executable, "-m", "rehearsal_lib.cli", "run", "scratch", "--outputs", str(out),
                             "--parallel", parallel],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def finished(name: str) -> str | None:
            """The phase's outcome once run.json records it as finished."""
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was interrupted:\n{proc.stdout.read()}", pytrace=False)
            metas = list(out.glob("scratch/*/run.json"))
            phases = json.loads(metas[0].read_text())["phases"] if metas else []
            outcome = next((p["outcome"] for p in phases if p["name"] == name), None)
            return outcome if outcome not in (None, "pending", "running") else None

        def first_check_recorded(name: str) -> bool:  # the next cell is the one that hangs
            finished(name)
            nbs = list(out.glob(f"scratch/*/notebooks/*_{name}.ipynb"))
            return bool(nbs) and f'"{name}.first"' in nbs[0].read_text()

        # waits on what the run recorded, never on the clock: a loaded machine only makes them longer
        assert wait_for(lambda: finished("preflight"), 300, "preflight did not finish") == "ok"
        for name in hanging:
            wait_for(lambda name=name: first_check_recorded(name), 300, f"{name} did not record its first check")
        proc.send_signal(signal.SIGINT)
        # the run stops on Ctrl-C, not when the hanging phases would end (1800 s from now)
        stdout, _ = finish(proc, 300, "the run did not stop after Ctrl-C")
    finally:
        if proc.poll() is None:  # a failed wait: stop the run the way that also stops its phase processes
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stdout
    run_dir = next(out.glob("scratch/*"))
    results = json.loads((run_dir / "results.json").read_text())
    outcomes = {p["name"]: p["outcome"] for p in results["phases"]}
    assert outcomes == {"preflight": "ok", **dict.fromkeys(hanging, "interrupted"), "decision": "not_run"}
    assert results["interrupted"] is True and results["decision"] == "NO-GO"
    assert "interrupted" in (run_dir / "report.html").read_text()
    assert verify_manifest(run_dir) == []


def test_sandbox_that_cannot_start_gives_a_no_go_report(project: Path, tmp_path: Path, monkeypatch):
    (project / "params" / "scratch.yaml").write_text(PARAMS + "sandbox: {variant: default}\n")
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the sandbox home must be a folder")
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(blocker))
    summary = Runner("scratch", root=project, progress=lambda s: None).run()
    assert summary.decision.decision == "NO-GO"
    assert {p.outcome for p in summary.phases} == {"not_run"}
    assert all("starting the sandbox target" in p.reason for p in summary.phases)
    assert "The run could not go on" in (summary.run_dir / "report.html").read_text()
    assert verify_manifest(summary.run_dir) == []


def test_phases_that_change_or_disrupt_the_target_run_alone_under_parallel():
    from rehearsal_lib.phases import PHASES
    from rehearsal_lib.runner import PhaseJob, _waves

    jobs = [PhaseJob(p.name, Path(), Path(), Path()) for p in PHASES if p.name != "decision"]
    waves = [[j.name for j in w] for w in _waves(jobs)]
    assert waves == [["preflight"], ["migrations"], ["deploy"], ["webhooks", "jobs", "retention"], ["load"], ["faults"],
                     ["integrity", "security"], ["observability"], ["backup_recovery"], ["smoke", "ux"]]
    # catalogue order is kept across waves
    assert [n for w in waves for n in w] == [j.name for j in jobs]


@pytest.mark.integration  # a real phase executor and kernel
def test_phase_that_finished_before_the_interrupt_is_ok_without_a_note(project: Path):
    """Ctrl-C lands after preflight's executor exited 0 but before the runner read its verdict."""
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    runner = Runner("scratch", root=project)
    exit_codes: list[int] = []

    def progress(line: str) -> None:
        if "PASS" in line and "preflight.first" in line:  # echoed while the phase's process runs
            job = next(j for j in runner.jobs if j.name == "preflight")
            assert job.proc is not None
            exit_codes.append(job.proc.wait(timeout=60))  # the phase finishes...
            raise KeyboardInterrupt  # ...and Ctrl-C arrives before the runner took its verdict

    runner.progress = progress
    summary = runner.run()
    assert exit_codes == [0]
    outcomes = {p.name: (p.outcome, p.reason) for p in summary.phases}
    assert outcomes["preflight"] == ("ok", "")
    assert outcomes["integrity"][0] == "not_run" and "before this phase started" in outcomes["integrity"][1]
    assert runner.interrupted
    executed = nbformat.read(str(summary.run_dir / "notebooks" / "01_preflight.ipynb"), as_version=4)
    assert not any("rehearsal-runner-note" in c.metadata.get("tags", []) for c in executed.cells)
    meta = json.loads((summary.run_dir / "run.json").read_text())
    assert {p["name"]: p["outcome"] for p in meta["phases"]}["preflight"] == "ok"


# -- one owner per target: the runner's identity of the target, and one run per environment ------------------

SANDBOX_PARAMS = """
name: scratch
environment: {kind: sandbox}
target:
  base_url: ${REHEARSAL_SANDBOX_URL}
  database_url: ${REHEARSAL_SANDBOX_DB_URL}
  timeout_s: 2
sandbox: {variant: default}
run:
  cell_timeout_s: 30
  phase_timeout_s: 120
phases:
  integrity: {enabled: true}
"""

HEALTH = """
import httpx
ph.run(f"{ph.name}.health", "Health answers", lambda: Outcome(
    "pass" if httpx.get(ph.base_url + "/health", timeout=2).status_code == 200 else "fail", "health"))
"""


@pytest.mark.integration
def test_sandbox_killed_between_phases_is_no_go_and_no_new_sandbox_starts(project: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """The app dies after preflight: integrity must not start a fresh sandbox and pass against it."""
    from rehearsal_lib.sandbox.manager import _pid_alive

    home = tmp_path / "sbx"
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(home))
    (project / "params" / "scratch.yaml").write_text(SANDBOX_PARAMS)
    for name, phase in (("01_preflight.ipynb", "preflight"), ("08_integrity.ipynb", "integrity")):
        _notebook(project / "notebooks" / name, phase, HEALTH)
    state_file = home / "default" / "state.json"
    seen: dict[str, dict] = {}

    def progress(line: str) -> None:
        if line.lstrip().startswith("done") and " preflight " in line:
            seen["before"] = json.loads(state_file.read_text())
            os.kill(seen["before"]["app_pid"], signal.SIGKILL)  # the target dies between phases
            wait_for(lambda: not _pid_alive(seen["before"]["app_pid"]), 60,  # _pid_alive reaps our child
                     "the killed sandbox app did not exit")
        elif " integrity " in line and "before" in seen:  # integrity's result, before the runner stops anything
            seen["after"] = json.loads(state_file.read_text()) if state_file.exists() else {}

    summary = Runner("scratch", root=project, progress=progress).run()
    same = ("started_at", "instance_id", "app_pid", "app_port", "pg_port", "base_url")
    # no kernel started (or replaced) the sandbox: same start, same ports, the dead app still on record
    assert {k: seen["after"].get(k) for k in same} == {k: seen["before"].get(k) for k in same}
    by_id = {c.id: c for c in summary.checks}
    assert by_id["preflight.target.identity"].status == "pass"
    ident = by_id["integrity.target.identity"]
    assert ident.status == "error" and ident.severity == "blocker"
    assert "sandbox instance no longer answers: the sandbox is not running" in ident.observed
    assert "integrity.health" not in by_id  # nothing probed after the identity failed
    integrity = next(p for p in summary.phases if p.name == "integrity")
    assert integrity.outcome == "error" and "TargetChanged" in integrity.reason
    assert summary.decision.decision == "NO-GO"
    meta = json.loads((summary.run_dir / "run.json").read_text())
    recorded = meta["target_identity"]
    assert recorded["sandbox"]["instance_id"] == seen["before"]["instance_id"]
    assert recorded["database"]["postmaster_start_time"] and recorded["version"]["answer"]["version"]
    assert "sandbox-dev-token" not in json.dumps(recorded) and ":***@" not in json.dumps(recorded)


class _VersionHandler(BaseHTTPRequestHandler):
    version = "1.0.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"service": "scratch", "version": type(self).version}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration
def test_target_redeployed_mid_run_is_an_error_and_the_phase_stops(project: Path):
    """A real HTTP target whose version answer changes between phases (another deploy landed mid-run)."""
    handler = type("Handler", (_VersionHandler,), {"version": "1.0.0"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (project / "params" / "scratch.yaml").write_text(
            PARAMS.replace("http://127.0.0.1:9", f"http://127.0.0.1:{server.server_port}"))
        _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
        _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")

        def progress(line: str) -> None:
            if line.lstrip().startswith("done") and " preflight " in line:
                handler.version = "2.0.0"

        summary = Runner("scratch", root=project, progress=progress).run()
    finally:
        server.shutdown()
        server.server_close()
    by_id = {c.id: c for c in summary.checks}
    assert by_id["preflight.target.identity"].status == "pass"
    assert by_id["preflight.target.identity"].observed == "same version answer as at the start of the run"
    ident = by_id["integrity.target.identity"]
    assert ident.status == "error" and ident.severity == "blocker"
    assert 'version answer changed: answer {"service": "scratch", "version": "1.0.0"} at the start' in ident.observed
    assert "integrity.first" not in by_id
    assert summary.decision.decision == "NO-GO"


@pytest.mark.integration
def test_sandbox_api_restart_keeps_the_target_identity(sandbox, monkeypatch: pytest.MonkeyPatch):
    """backup_recovery restarts the API on purpose (same ports, same database): that is the same target."""
    from rehearsal_lib.config import load_params
    from rehearsal_lib.sandbox.manager import restart_app
    from rehearsal_lib.target import compare, read_identity

    for var, value in sandbox.env_vars().items():
        monkeypatch.setenv(var, value)
    params = load_params(str(ROOT / "rehearsal_lib" / "builtin_params" / "sandbox.yaml"))
    before = read_identity(params, sandbox.base_url, sandbox.db_url, sandbox)
    after_state = restart_app("default", home=sandbox.home.parent)
    assert after_state.app_pid != sandbox.app_pid and after_state.instance_id == sandbox.instance_id != ""
    after = read_identity(params, after_state.base_url, after_state.db_url, after_state)
    assert compare(before, after) == ([], ["version answer", "database server", "sandbox instance"])


def _hold_lock(env: str, run_id: str, variant: str | None = None) -> subprocess.Popen:
    """Another process holding the run lock of `env` (as a running `rehearse run` does)."""
    code = ("import sys, time; from rehearsal_lib import runlock; "
            f"lock = runlock.acquire({env!r}, {run_id!r}, {variant!r}); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _cli(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", *args], cwd=project,
                          env={**os.environ, "REHEARSAL_PROJECT_DIR": str(project)}, capture_output=True, text=True,
                          timeout=timeout)


def test_second_run_of_an_environment_exits_2_naming_the_holder_then_takes_over_a_dead_one(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    out = tmp_path / "out"
    holder = _hold_lock("scratch", "RUN-A")
    try:
        refused = _cli(project, "run", "scratch", "--outputs", str(out))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"run RUN-A of scratch (pid {holder.pid} on " in refused.stderr
        assert not out.exists()  # nothing started, nothing written
        t0 = time.monotonic()
        waited = _cli(project, "run", "scratch", "--outputs", str(out), "--wait-timeout", "2")
        assert waited.returncode == 2 and time.monotonic() - t0 >= 2
        assert "waiting: environment scratch is in use by run RUN-A" in waited.stdout
        assert "(waited 2 s)" in waited.stderr
    finally:
        holder.kill()  # the holder dies without releasing: its record stays behind
        holder.wait()
    took_over = _cli(project, "run", "scratch", "--outputs", str(out))
    assert took_over.returncode == 1, took_over.stdout + took_over.stderr  # ran (NO-GO: the target refuses)
    assert f"took over the lock of environment scratch left by run RUN-A of scratch (pid {holder.pid}" \
        in took_over.stdout
    meta = json.loads((next((out / "scratch").iterdir()) / "run.json").read_text())
    assert "that process is gone" in meta["lock"]["took_over"][0]
    # a run that ends releases its lock: the next one runs without a note
    again = _cli(project, "run", "scratch", "--outputs", str(tmp_path / "out2"), "--quiet")
    assert again.returncode == 1 and "took over" not in again.stdout


def test_wait_runs_once_the_holder_finishes(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    code = ("import time; from rehearsal_lib import runlock; l = runlock.acquire('scratch', 'RUN-A'); "
            "print('held', flush=True); time.sleep(3); l.release()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    waited = _cli(project, "run", "scratch", "--outputs", str(tmp_path / "out"), "--wait", "--quiet")
    holder.wait(timeout=30)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "waiting: environment scratch is in use by run RUN-A" in waited.stdout and "took over" not in waited.stdout
    assert time.monotonic() - t0 >= 2


def test_two_environments_sharing_a_sandbox_never_overlap(project: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """Another env file on the same sandbox variant holds it: this run and `sandbox down` both refuse."""
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(tmp_path / "sbx"))
    (project / "params" / "scratch.yaml").write_text(SANDBOX_PARAMS)
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    holder = _hold_lock("sandbox-faulty-copy", "RUN-B", "default")
    try:
        refused = _cli(project, "run", "scratch", "--outputs", str(tmp_path / "out"))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "sandbox default is in use by run RUN-B of sandbox-faulty-copy" in refused.stderr
        down = _cli(project, "sandbox", "down")
        assert down.returncode == 2 and "in use by run RUN-B" in down.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "sbx" / "default").exists()  # no sandbox was started for the refused run


def test_identity_compare_rules():
    from rehearsal_lib.target import compare

    db = {"server": "127.0.0.1:5432/exam", "postmaster_start_time": "t0", "system_identifier": "7"}
    start = {"base_url": "http://x", "version": {"error": "refused"}, "database": db}
    # system_identifier read only once (optional, may fail to read): not compared; unreadable twice: ignored
    assert compare(start, {**start, "database": {k: v for k, v in db.items() if k != "system_identifier"}}) == (
        [], ["database server"])
    diffs, same = compare(start, {**start, "database": {**db, "postmaster_start_time": "t1"}})
    assert same == [] and diffs == ['database server changed: postmaster_start_time "t0" at the start, now "t1"']
    diffs, _ = compare(start, {**start, "database": {"server": db["server"], "error": "refused"}})
    assert diffs == ["database server no longer answers: refused"]
    diffs, _ = compare(start, {**start, "version": {"endpoint": "/v", "answer": "1"}})
    assert diffs == ["version answer answers now but did not at the start of the run (refused)"]
