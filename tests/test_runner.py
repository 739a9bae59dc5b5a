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
    shutil.copy(ROOT / "notebooks" / "13_decision.ipynb", tmp_path / "notebooks")
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
            return outcome if outcome not in (None, "pending") else None

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
    assert waves == [["preflight"], ["migrations"], ["webhooks", "jobs", "retention"], ["load"], ["faults"],
                     ["integrity", "security"], ["observability"], ["backup_recovery"], ["smoke"]]
    # catalogue order is kept across waves
    assert [n for w in waves for n in w] == [j.name for j in jobs]
