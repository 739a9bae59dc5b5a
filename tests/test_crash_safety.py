"""Crash safety: a runner killed with SIGKILL, the orphan sandbox it leaves, `--resume`, corrupt run-folder files.

Real processes throughout: `rehearse run` in a subprocess against the real sandbox, killed with a real
SIGKILL once a phase is seen running; the next run replaces the orphan; `--resume` finishes the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_runner import PARAMS, ROOT, SANDBOX_PARAMS, _notebook

from rehearsal_lib.evidence import crash_info
from rehearsal_lib.runrecord import RunRecord


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with params/scratch.yaml and the decision notebook (as in test_runner)."""
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "scratch.yaml").write_text(PARAMS)
    shutil.copy(ROOT / "rehearsal_lib" / "notebooks" / "13_decision.ipynb", tmp_path / "notebooks")
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SCRATCH_TOKEN", "scratch-secret-token-42")
    return tmp_path

# integrity waits for a file the test creates: killed while it waits; resumed once the file exists
WAIT_FOR_GATE = """
import os, time
gate = os.environ["CRASH_TEST_GATE"]
deadline = time.monotonic() + 300
while not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.2)
ph.run("integrity.gate", "The test's gate file exists", lambda: Outcome(
    "pass" if os.path.exists(gate) else "error", "gate file " + ("present" if os.path.exists(gate) else "missing")))
ph.summary()
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _until(what: str, probe: Callable[[], object], timeout: float = 120.0, every: float = 0.2) -> object:
    """Poll `probe` until it returns something truthy; fail naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _cli(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", *args], cwd=project,
                          env={**os.environ, "REHEARSAL_PROJECT_DIR": str(project), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _read_lines_until(proc: subprocess.Popen, seen: list[str], wanted: Callable[[str], bool], what: str,
                      timeout: float = 180.0) -> None:
    """Read the process's stdout (without blocking past the deadline) until a line satisfies `wanted`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if wanted(line):
                return
        elif proc.poll() is not None:
            break
    pytest.fail(f"no line with {what} (exit {proc.poll()}); output so far:\n{''.join(seen)}")


@pytest.mark.integration
def test_sigkill_leaves_a_crashed_run_that_report_names_the_next_run_replaces_the_orphan_and_resume_finishes(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "sbx"
    out = tmp_path / "out"
    gate = tmp_path / "gate"
    env = {"REHEARSAL_SANDBOX_HOME": str(home), "REHEARSAL_LOCK_DIR": str(tmp_path / "locks"),
           "CRASH_TEST_GATE": str(gate)}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    (project / "params" / "scratch.yaml").write_text(SANDBOX_PARAMS)
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", WAIT_FOR_GATE)
    runner = subprocess.Popen([sys.executable, "-m", "rehearsal_lib.cli", "run", "scratch", "--outputs", str(out)],
                              cwd=project, env={**os.environ, "REHEARSAL_PROJECT_DIR": str(project)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state_file = home / "default" / "state.json"
    try:
        seen: list[str] = []
        _read_lines_until(runner, seen, lambda line: line.lstrip().startswith("done") and " preflight " in line,
                          "'done preflight'")
        run_dir = next((out / "scratch").iterdir())
        _until("run.json to show integrity running", lambda: {p["name"]: p["outcome"] for p in json.loads(
            (run_dir / "run.json").read_text())["phases"]}.get("integrity") == "running")
        orphan = json.loads(state_file.read_text())
        assert orphan["owner"] == {"run_id": run_dir.name, "pid": runner.pid, "host": socket.gethostname()}
        os.kill(runner.pid, signal.SIGKILL)  # the runner only: what it started is left behind
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    try:
        # the phase it was running notices its runner is gone and stops (it does not go on unowned)
        _until("integrity's executor to stop after its runner died",
               lambda: '"exit": 13' in (run_dir / "logs" / "integrity.log").read_text())
        assert _alive(orphan["app_pid"]) and _alive(orphan["redis_pid"]), "the sandbox should be left running"
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["runner_pid"] == runner.pid and meta["heartbeat_at"] and "finished_at" not in meta

        # `rehearse list` and `rehearse report` say it crashed, and which phases never ran or did not finish
        listed = _cli(project, "list", "scratch", "--outputs", str(out))
        assert listed.returncode == 0 and "(crashed)" in listed.stdout, listed.stdout + listed.stderr
        report = _cli(project, "report", str(run_dir))
        assert report.returncode == 0, report.stdout + report.stderr
        assert f"CRASHED: the run crashed at about {meta['heartbeat_at']}" in report.stdout
        assert "phase(s) integrity did not finish; phase(s) decision never ran" in report.stdout
        results = json.loads((run_dir / "results.json").read_text())
        assert results["decision"] == "NO-GO" and results["interrupted"] is False
        assert results["crashed"]["did_not_finish"] == ["integrity"] and results["crashed"]["never_ran"] == ["decision"]
        assert results["reasons"]["blockers"][0].startswith(f"the run crashed at about {meta['heartbeat_at']}")
        phases = {p["name"]: p for p in results["phases"]}
        assert phases["preflight"]["outcome"] == "ok"
        assert phases["integrity"]["outcome"] == "error" and "did not finish" in phases["integrity"]["reason"]
        assert phases["decision"]["outcome"] == "not_run" and "never ran" in phases["decision"]["reason"]
        assert "Crashed" in (run_dir / "report.html").read_text()
        assert _cli(project, "verify", str(run_dir)).returncode == 0  # sealed as it stands: a first seal

        # --resume: the orphan sandbox is stopped and replaced; only integrity and the decision run again
        preflight_nb = _sha(run_dir / "notebooks" / "01_preflight.ipynb")
        gate.write_text("open")
        resumed = _cli(project, "run", "scratch", "--resume", str(run_dir), "--outputs", str(out), "--quiet")
        text = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, text
        assert (f"note: stopped the orphan sandbox default started at {orphan['started_at']} by run {run_dir.name} "
                f"(pid {runner.pid} on {socket.gethostname()}, which is gone)") in text
        assert "resuming after the run crashed at about" in text
        assert "running integrity, decision; keeping preflight" in text
        _until("the orphan's app and redis to be stopped",
               lambda: not _alive(orphan["app_pid"]) and not _alive(orphan["redis_pid"]), timeout=30)
        assert [p.name for p in (out / "scratch").iterdir()] == [run_dir.name]  # the same folder
        assert _sha(run_dir / "notebooks" / "01_preflight.ipynb") == preflight_nb  # kept untouched
        meta = json.loads((run_dir / "run.json").read_text())
        (entry,) = meta["resumed"]
        assert entry["phases"] == ["integrity", "decision"] and entry["kept"] == ["preflight"]
        assert entry["after"].startswith("the run crashed at about")
        assert "the target is not the one the first attempt ran against" in entry["note"]  # a fresh sandbox instance
        assert meta["sandbox"]["replaced"].startswith("stopped the orphan sandbox default")
        results = json.loads((run_dir / "results.json").read_text())
        assert results["crashed"] is None and results["decision"] == "GO"
        assert {p["name"]: p["outcome"] for p in results["phases"]} == {
            "preflight": "ok", "integrity": "ok", "decision": "ok"}
        assert {c["id"]: c["status"] for c in results["checks"]}["integrity.gate"] == "pass"
        assert "Resumed" in (run_dir / "report.html").read_text()
        reseals = [json.loads(line) for line in (run_dir / "reseal.log").read_text().splitlines()]
        assert reseals[-1]["kind"] == "reseal" and reseals[-1]["why"].startswith("resumed run: phases integrity")
        verified = _cli(project, "verify", str(run_dir))
        assert verified.returncode == 0, verified.stdout
        assert not state_file.exists()  # the resumed run stopped the sandbox it started
        again = _cli(project, "run", "scratch", "--resume", str(run_dir), "--outputs", str(out))
        assert again.returncode == 2 and "only a crashed or interrupted run can be resumed" in again.stderr
    finally:
        from rehearsal_lib.sandbox import stop_sandbox

        stop_sandbox("default", home=home)


def test_crash_info_rules():
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = {"started_at": "2026-12-01T11:00:00+00:00", "heartbeat_at": "2026-12-01T11:59:58+00:00",
            "phases": [{"name": "preflight", "outcome": "ok"}, {"name": "integrity", "outcome": "running"},
                       {"name": "decision", "outcome": "pending"}]}
    alive = {**base, "runner_pid": os.getpid(), "runner_host": host}

    def crash(record: dict) -> dict | None:
        return crash_info(RunRecord.model_validate(record), now)

    assert crash(alive) is None  # a live runner with a fresh heartbeat: still going
    assert crash({**alive, "finished_at": "x", "runner_pid": dead.pid}) is None  # finished
    crashed = crash({**base, "runner_pid": dead.pid, "runner_host": host})
    assert crashed is not None and crashed["at"] == base["heartbeat_at"]
    assert crashed["did_not_finish"] == ["integrity"] and crashed["never_ran"] == ["decision"]
    other = {**base, "runner_pid": 1, "runner_host": "elsewhere"}
    assert crash(other) is None  # another host, fresh heartbeat: cannot say it died
    stale = crash({**other, "heartbeat_at": "2026-12-01T11:50:00+00:00"})
    assert stale is not None and "no heartbeat for 600 s" in stale["how"]
    stuck = crash({**alive, "heartbeat_at": "2026-12-01T11:50:00+00:00"})
    assert stuck is not None  # pid alive (or reused) but no heartbeat for 10 minutes
    assert crash({**base, "runner_host": host}) is None  # no runner_pid (an older rehearse): not judged


def test_corrupt_run_folder_files_give_one_line_and_the_rest_is_still_reported(project: Path, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    (project / "params" / "scratch.yaml").write_text(PARAMS.replace("cell_timeout_s: 3", "cell_timeout_s: 60"))
    _notebook(project / "notebooks" / "01_preflight.ipynb", "preflight", "ph.summary()")
    _notebook(project / "notebooks" / "08_integrity.ipynb", "integrity", "ph.summary()")
    out = tmp_path / "out"
    first = _cli(project, "run", "scratch", "--outputs", str(out), "--quiet")
    assert first.returncode == 1, first.stdout + first.stderr  # NO-GO: the target refuses connections
    good = next((out / "scratch").iterdir())
    refused = _cli(project, "run", "scratch", "--resume", str(good), "--outputs", str(out))
    assert refused.returncode == 2 and "only a crashed or interrupted run can be resumed" in refused.stderr
    folders = {}
    for name in ("nb", "meta", "results", "manifest"):
        folders[name] = good.parent / f"{good.name[:-6]}{name:x<6}"[:len(good.name)]
        shutil.copytree(good, folders[name])

    # a truncated notebook: that phase is "notebook unreadable", every other phase is still reported
    nb = folders["nb"] / "notebooks" / "08_integrity.ipynb"
    nb.write_bytes(nb.read_bytes()[: nb.stat().st_size // 2])
    report = _cli(project, "report", str(folders["nb"]), "--reseal", "--reason", "truncated on purpose")
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stdout + report.stderr
    results = json.loads((folders["nb"] / "results.json").read_text())
    phases = {p["name"]: p for p in results["phases"]}
    assert phases["integrity"]["outcome"] == "error"
    assert phases["integrity"]["reason"].startswith("notebook unreadable: notebooks/08_integrity.ipynb: not valid JSON")
    assert phases["preflight"]["outcome"] == "ok" and phases["preflight"]["counts"]
    assert phases["decision"]["outcome"] == "ok"
    assert results["decision"] == "NO-GO"

    # a corrupt run.json, results.json or manifest.json: one line naming the file, exit 2, never a traceback
    (folders["meta"] / "run.json").write_text('{"env": "scratch", "run_id": ')
    (folders["results"] / "results.json").write_text("[1, 2")
    (folders["manifest"] / "manifest.json").write_text("{not json")
    for name, problem in (("meta", "run.json: unreadable: not valid JSON"),
                          ("manifest", "manifest.json: not a manifest (unreadable JSON or no files list)")):
        broken = _cli(project, "report", str(folders[name]))
        assert broken.returncode == 2, broken.stdout + broken.stderr
        assert "Traceback" not in broken.stderr and problem in broken.stderr, broken.stderr
    meta_line = _cli(project, "report", str(folders["meta"])).stderr.strip()
    assert meta_line == f"rehearse: {folders['meta'] / 'run.json'}: unreadable: not valid JSON (truncated or " \
                        f"edited?): {meta_line.split('edited?): ', 1)[1]}" and "\n" not in meta_line
    assert _cli(project, "verify", str(folders["manifest"])).returncode == 1
    verify_meta = _cli(project, "verify", str(folders["meta"]))  # a problem of the folder (1), not a usage error
    assert verify_meta.returncode == 1 and "run.json: sha256 differs from the manifest" in verify_meta.stdout
    listed = _cli(project, "list", "scratch", "--outputs", str(out))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {good.name, *(f.name for f in folders.values())}
    assert "(unreadable)" in lines[folders["results"].name] and "results.json" in lines[folders["results"].name]
    assert "NO-GO" in lines[good.name] and "NO-GO" in lines[folders["nb"].name]
    resumed = _cli(project, "run", "scratch", "--resume", str(folders["meta"]), "--outputs", str(out))
    assert resumed.returncode == 2 and "run.json: unreadable" in resumed.stderr and "Traceback" not in resumed.stderr
    # the next run's decision phase compares with the newest earlier run it can read, naming the one it skipped
    nxt = _cli(project, "run", "scratch", "--outputs", str(out), "--quiet")
    assert nxt.returncode == 1, nxt.stdout + nxt.stderr
    newest = max((out / "scratch").iterdir())
    outcomes = {p["name"]: p for p in json.loads((newest / "results.json").read_text())["phases"]}
    assert outcomes["decision"]["outcome"] == "ok", outcomes["decision"]
    decision_nb = (newest / "notebooks" / "13_decision.ipynb").read_text()
    assert f"Skipped earlier run(s) whose results.json cannot be read: {folders['results'].name}" in decision_nb


@pytest.mark.integration
def test_sandbox_up_replaces_an_orphan_but_a_sandbox_without_owner_is_kept(tmp_path: Path):
    """A sandbox whose owning run is gone is stopped and replaced with a note; `sandbox up`'s own is never an orphan."""
    from rehearsal_lib.sandbox import ensure_sandbox, stop_sandbox

    home = tmp_path / "sbx"
    env = {"REHEARSAL_SANDBOX_HOME": str(home), "REHEARSAL_LOCK_DIR": str(tmp_path / "locks")}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a real run process that has ended
    gone.wait()
    try:
        orphan, started = ensure_sandbox("default", home=home,
                                         owner={"run_id": "RUN-GONE", "pid": gone.pid, "host": socket.gethostname()})
        assert started and orphan.owner["run_id"] == "RUN-GONE"
        status = _cli(ROOT, "sandbox", "status", env=env)
        assert status.returncode == 0 and "started by run RUN-GONE: an orphan left by run RUN-GONE" in status.stdout
        up = _cli(ROOT, "sandbox", "up", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (f"note: stopped the orphan sandbox default started at {orphan.started_at} by run RUN-GONE "
                f"(pid {gone.pid} on {socket.gethostname()}, which is gone) and started a fresh one") in up.stdout
        _until("the orphan's app, redis and worker to be stopped", lambda: not any(
            _alive(pid) for pid in (orphan.app_pid, orphan.redis_pid, orphan.worker_pid)), timeout=30)
        fresh = json.loads((home / "default" / "state.json").read_text())
        assert fresh["owner"] == {} and fresh["instance_id"] != orphan.instance_id and _alive(fresh["app_pid"])
        again = _cli(ROOT, "sandbox", "up", env=env)  # no owner: not an orphan, kept as it is
        assert again.returncode == 0 and "note:" not in again.stdout
        assert json.loads((home / "default" / "state.json").read_text())["app_pid"] == fresh["app_pid"]
    finally:
        stop_sandbox("default", home=home)
