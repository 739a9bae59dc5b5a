"""End to end through the CLI, without load: nothing here is judged on the machine's time, so unlike
test_rehearsal_sandbox.py (two whole rehearsals side by side, marked alone) it runs beside other modules.

- an unreachable target -> NO-GO with `error` results and a report that says why;
- a phase notebook under plain papermill with only `-p env sandbox` starts the sandbox itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import run
from test_rehearsal_sandbox import ROOT, TOKEN, rehearse, run_folder

from rehearsal_lib.results import checks_from_notebook

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI runs: an isolated sandbox home and a non-default API token."""
    home = tmp_path_factory.mktemp("sandbox-home")
    return {**os.environ, "REHEARSAL_SANDBOX_HOME": str(home), "REHEARSAL_SANDBOX_TOKEN": TOKEN,
            "REHEARSAL_PROJECT_DIR": str(ROOT)}


def test_unreachable_target_is_no_go_with_errors_and_says_why(env, tmp_path):
    params = tmp_path / "down.yaml"
    params.write_text(
        "name: down\ntarget:\n  base_url: http://127.0.0.1:9\n  database_url: ${DOWN_DB_URL}\n  timeout_s: 1\n"
        "phases:\n  preflight: {latency: {samples: 2}}\n  integrity:\n    zero_row_checks:\n"
        "      - {name: orphans, title: No orphans, sql: SELECT 1 WHERE false}\n")
    out = tmp_path / "out"
    proc = rehearse(["run", str(params), "--outputs", str(out)],
                    {**env, "DOWN_DB_URL": "postgresql://app:pw-never-shown@127.0.0.1:9/exam"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = run_folder(out, "down")
    results = json.loads((run / "results.json").read_text())
    assert results["decision"] == "NO-GO"
    statuses = {c["id"]: c["status"] for c in results["checks"]}
    assert statuses and set(statuses.values()) == {"error"}  # never a pass against nothing
    assert "Connection refused" in (run / "report.html").read_text()
    assert "pw-never-shown" not in "".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file())


def test_notebook_runs_under_plain_papermill_with_defaults(env, tmp_path):
    """An operator's path: plain papermill, only `-p env sandbox`; the notebook starts the sandbox itself."""
    out = tmp_path / "pre.ipynb"
    papermill = Path(sys.executable).with_name("papermill")
    try:
        notebook = ROOT / "rehearsal_lib" / "notebooks" / "01_preflight.ipynb"
        proc = run([str(papermill), str(notebook), str(out), "-p", "env", "sandbox"],
                   600, "papermill did not finish the preflight notebook", cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        checks = checks_from_notebook(nbformat.read(str(out), as_version=4))
        assert checks and {c.status for c in checks} == {"pass"}
    finally:
        rehearse(["sandbox", "down"], env)
