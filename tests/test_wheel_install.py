"""Installed like a tool (issue #19): the wheel, installed NOT editable into a fresh venv, works from an
empty folder: `rehearse validate sandbox`, a short rehearsal of the built-in sandbox, `rehearse list`
and `rehearse report`, with outputs/ under that folder and nothing taken from this clone.

The fresh venv reuses the dependencies already installed in the test's own environment through a
path (.pth) line and $JUPYTER_PATH (their data files: nbconvert's templates), so nothing is downloaded;
a .pth line adds the folder without running the .pth files inside it, so the editable install of this
clone is not active there (the test checks where `rehearsal_lib` is imported from).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # starts the sandbox and phase kernels
ROOT = Path(__file__).resolve().parent.parent

PACKAGE_DATA = ("rehearsal_lib/notebooks/01_preflight.ipynb", "rehearsal_lib/notebooks/13_decision.ipynb",
                "rehearsal_lib/builtin_params/sandbox.yaml", "rehearsal_lib/builtin_params/sandbox-faulty.yaml",
                "rehearsal_lib/sandbox/migrations/001_init.sql", "rehearsal_lib/sandbox/migrations/down/",
                "rehearsal_lib/sandbox/faulty/plant_defects.sql", "rehearsal_lib/sandbox/smoke/test_smoke.py",
                "rehearsal_lib/sandbox/seed.py", "rehearsal_lib/templates/")

SHORT = """\
# the built-in sandbox with only a few phases: preflight, migrations (the package's migrations dir),
# smoke (the package's smoke suite) and the decision
extends: {builtin}/sandbox.yaml
name: short
phases:
  integrity: {{enabled: false}}
  webhooks: {{enabled: false}}
  jobs: {{enabled: false}}
  retention: {{enabled: false}}
  load: {{enabled: false}}
  security: {{enabled: false}}
  observability: {{enabled: false}}
  backup_recovery: {{enabled: false}}
  ux: {{enabled: false}}
  deploy: {{enabled: false}}
  faults: {{enabled: false}}
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd[:4])} did not end within {timeout:g} s: {exc.stdout!s:.2000}", pytrace=False)


def test_wheel_installed_into_a_fresh_venv_runs_from_an_empty_folder(tmp_path: Path):
    timings: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("REHEARSAL_PROJECT_DIR", "REHEARSAL_OUTPUTS",
                                                             "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(REHEARSAL_SANDBOX_HOME=str(tmp_path / "sandbox-home"), REHEARSAL_LOCK_DIR=str(tmp_path / "locks"))

    t0 = time.monotonic()
    wheels = tmp_path / "wheels"
    proc = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(wheels)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("rehearsal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in PACKAGE_DATA:
        assert any(n.startswith(wanted) for n in names), f"{wanted} is not in {wheel.name}"
    assert not any(n.startswith(("tests/", "params/", "notebooks/")) for n in names)
    timings["build wheel"] = time.monotonic() - t0

    t0 = time.monotonic()
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).stdout.strip())
    (site / "_rehearsal_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # and their data files (nbconvert's templates, the kernel spec), which an install puts in the venv's share/
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(Path(sys.prefix) / "share" / "jupyter"),
                                                      env.get("JUPYTER_PATH")) if p)
    proc = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = _run([str(python), "-c", "import rehearsal_lib; print(rehearsal_lib.__file__)"], tmp_path, env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr  # not this clone
    timings["venv + install"] = time.monotonic() - t0

    rehearse = str(venv / "bin" / "rehearse")
    project = tmp_path / "my-service"
    project.mkdir()
    t0 = time.monotonic()
    proc = _run([rehearse, "validate", "sandbox"], project, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sandbox: OK (sandbox)" in proc.stdout
    assert list(project.iterdir()) == []  # validating writes nothing

    builtin = Path(_run([str(python), "-c", "from rehearsal_lib.config import BUILTIN_PARAMS; print(BUILTIN_PARAMS)"],
                        project, env).stdout.strip())
    assert builtin.is_relative_to(site)
    (project / "params").mkdir()
    (project / "params" / "short.yaml").write_text(SHORT.format(builtin=builtin))
    try:
        proc = _run([rehearse, "run", "short", "--quiet"], project, env, timeout=900)
    finally:
        _run([rehearse, "sandbox", "down"], project, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DECISION: GO" in proc.stdout
    (run_dir,) = (project / "outputs" / "short").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    phases = {p["name"]: p["outcome"] for p in results["phases"]}
    assert phases == {"preflight": "ok", "migrations": "ok", "smoke": "ok", "decision": "ok"}
    statuses = {c["id"]: c["status"] for c in results["checks"]}
    assert statuses["migrations.plan.pending"] == statuses["migrations.apply"] == "pass"  # the package's migrations
    assert statuses["smoke.command"] == "pass" and statuses["smoke.junit"] == "pass"  # the package's smoke suite
    meta = json.loads((run_dir / "run.json").read_text())
    assert Path(meta["params_file"]) == project / "params" / "short.yaml"
    timings["short rehearsal"] = time.monotonic() - t0

    t0 = time.monotonic()
    proc = _run([rehearse, "list", "short"], project, env)
    assert proc.returncode == 0 and run_dir.name in proc.stdout and " GO " in proc.stdout, proc.stdout
    proc = _run([rehearse, "report", str(run_dir.relative_to(project))], project, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"GO: {run_dir / 'report.html'}" in proc.stdout
    assert sorted(p.name for p in project.iterdir()) == ["outputs", "params"]  # nothing else written here
    timings["list + report"] = time.monotonic() - t0
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
