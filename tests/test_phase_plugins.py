"""The phase-plugin architecture (issue #11), through the real CLI:

- a third-party phase package, pip-installed (into a target folder on PYTHONPATH), is found through
  the `rehearsal.phases` entry point: its params block is validated (a typo names the key), it runs
  against a real HTTP server and its checks and title are in results.json and the report;
- a broken phase package is named (its entry point) with exit 2, not an import traceback;
- a disruptive check's restore runs at the runner level when its phase is killed on timeout:
  the target gets its health back, and run.json / results.json say so;
- the one write-safety rule (`phase.write_refusal`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import finish, run, wait_for

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import write_refusal

ROOT = Path(__file__).resolve().parent.parent

PLUGIN_SPEC = '''
from pathlib import Path

from rehearsal_lib.api import PhaseParams, PhaseSpec


class CacheWarmupParams(PhaseParams):
    path: str = "/health"
    samples: int = 5
    max_ms: float = 2000


SPEC = PhaseSpec(name="cache_warmup", title="Cache warm-up", order=8.5, seed="(a team's own section)",
                 params=CacheWarmupParams, notebook=Path(__file__).parent / "cache_warmup.ipynb")
'''

PLUGIN_CHECKS = '''
from rehearsal_lib.api import Outcome, PhaseRun
from rehearsal_lib.probes import http

from acme_rehearsal import CacheWarmupParams


def check_warm(ctx: PhaseRun[CacheWarmupParams]):
    cfg = ctx.settings
    expected = f"{cfg.samples} answers from {cfg.path}, each within {cfg.max_ms:g} ms"

    def probe() -> Outcome:
        results = [http.request(ctx.http, "GET", cfg.path) for _ in range(cfg.samples)]
        worst = max(r.elapsed_ms for r in results)
        bad = [r.describe() for r in results if r.error or r.status != 200]
        if bad:
            return Outcome("fail", f"not answered: {bad[0]}", expected)
        return Outcome("pass" if worst <= cfg.max_ms else "fail", f"slowest {worst:.0f} ms", expected,
                       metrics={"slowest_ms": round(worst, 1)})

    return ctx.run("cache_warmup.warm.latency", "The cache answers when warm", probe, expected=expected)
'''


def _notebook() -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('env = "sandbox"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Cache warm-up\nA third-party phase."), params,
                nbformat.v4.new_code_cell("from acme_rehearsal import checks\n"
                                          "from rehearsal_lib.phase import open_phase\n\n"
                                          "ph = open_phase('cache_warmup', env, run_dir)"),
                nbformat.v4.new_code_cell("checks.check_warm(ph);"),
                nbformat.v4.new_code_cell("ph.summary()\nph.close()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


def _package(where: Path, spec: str = PLUGIN_SPEC, entry: str = "acme_rehearsal:SPEC") -> Path:
    pkg = where / "acme-rehearsal"
    (pkg / "acme_rehearsal").mkdir(parents=True)
    (pkg / "acme_rehearsal" / "__init__.py").write_text(spec)
    (pkg / "acme_rehearsal" / "checks.py").write_text(PLUGIN_CHECKS)
    (pkg / "acme_rehearsal" / "cache_warmup.ipynb").write_text(_notebook())
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "acme-rehearsal"
        version = "0.3.0"

        [project.entry-points."rehearsal.phases"]
        cache_warmup = "{entry}"

        [tool.setuptools.package-data]
        acme_rehearsal = ["*.ipynb"]
        """))
    return pkg


def _install(pkg: Path, site: Path) -> None:
    """A real `pip install` of the package, into a folder the test puts on PYTHONPATH (not the venv)."""
    proc = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                str(site), str(pkg)], 300, "pip install of the phase package did not finish")
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Target(BaseHTTPRequestHandler):
    """/health answers; PUT /toggle sets the health state (recorded); /ready never follows it."""

    toggles: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, {"status": "ok"})

    def do_PUT(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        Target.toggles.append(body)
        self._send(200, {"ok": True})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _rehearse(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "rehearsal_lib.cli", *args], timeout, f"rehearse {args[0]} did not end",
               cwd=ROOT, env=env)


def _env(tmp_path: Path, site: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "REHEARSAL_PROJECT_DIR": str(ROOT), "REHEARSAL_LOCK_DIR": str(tmp_path / "locks")}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _params(tmp_path: Path, name: str, base_url: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nenvironment: {{kind: staging}}\ntarget: {{base_url: '{base_url}', timeout_s: 2}}\n"
                    + textwrap.dedent(body))
    return path


@pytest.mark.integration
def test_third_party_phase_package_is_validated_run_and_reported(tmp_path: Path, target: str):
    site = tmp_path / "site"
    _install(_package(tmp_path), site)
    env = _env(tmp_path, site)
    catalogue = json.loads(_rehearse(["phases", "--json"], env).stdout)
    mine = next(p for p in catalogue if p["name"] == "cache_warmup")
    assert mine["package"] == "acme-rehearsal 0.3.0" and mine["state"] == "available"
    order = [p["name"] for p in catalogue]
    assert order.index("integrity") < order.index("cache_warmup") < order.index("security")
    assert order[-1] == "decision"
    typo = _params(tmp_path, "plugin-typo", target, """
        phases:
          preflight: {enabled: false}
          integrity: {enabled: false}
          cache_warmup: {pathh: /health}
        """)
    bad = _rehearse(["validate", str(typo)], env)
    assert bad.returncode == 2 and "phases.cache_warmup.pathh" in bad.stderr, bad.stdout + bad.stderr

    good = _params(tmp_path, "plugin-run", target, """
        phases:
          preflight: {enabled: false}
          integrity: {enabled: false}
          cache_warmup: {path: /health, samples: 3}
        """)
    out = tmp_path / "out"
    proc = _rehearse(["run", str(good), "--outputs", str(out)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run_dir] = list((out / "plugin-run").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert [p["name"] for p in results["phases"]] == ["cache_warmup", "decision"]
    check = next(c for c in results["checks"] if c["id"] == "cache_warmup.warm.latency")
    assert check["status"] == "pass" and check["metrics"]["slowest_ms"] >= 0
    assert (run_dir / "notebooks" / "cache_warmup.ipynb").is_file()
    report = (run_dir / "report.html").read_text()
    assert "Cache warm-up" in report and "cache_warmup.warm.latency" in report

    # without the package the same file names the unknown phase: the registry, not a hard-coded list
    plain = _rehearse(["validate", str(good)], _env(tmp_path))
    assert plain.returncode == 2 and "phases.cache_warmup" in plain.stderr


@pytest.mark.integration
def test_a_broken_phase_package_is_named_with_exit_2(tmp_path: Path, target: str):
    site = tmp_path / "site"
    _install(_package(tmp_path, spec=PLUGIN_SPEC + "\nraise RuntimeError('acme: missing dependency')\n"), site)
    params = _params(tmp_path, "plugin-broken", target, "phases: {preflight: {enabled: false}}\n")
    proc = _rehearse(["validate", str(params)], _env(tmp_path, site))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "entry point 'cache_warmup'" in proc.stderr and "acme: missing dependency" in proc.stderr
    assert "Traceback" not in proc.stderr
    listing = _rehearse(["phases"], _env(tmp_path, site))
    assert listing.returncode == 2 and "acme: missing dependency" in listing.stderr
    assert "preflight" in listing.stdout  # the built-ins are still listed


@pytest.mark.integration
def test_a_killed_disruptive_phase_is_restored_by_the_runner(tmp_path: Path, target: str):
    """/ready never turns unready, so the toggle check waits its 120 s and the runner kills the phase on its
    20 s timeout while the target is 'unhealthy'. The runner then sends the registered restore itself."""
    Target.toggles.clear()
    params = _params(tmp_path, "restore-drill", target, """
        run: {phase_timeout_s: 20}
        phases:
          preflight: {enabled: false}
          integrity: {enabled: false}
          observability:
            readiness: {endpoint: /ready, toggle_path: /toggle, within_s: 120, poll_interval_s: 0.5}
        """)
    out = tmp_path / "out"
    proc = _rehearse(["run", str(params), "--outputs", str(out)], _env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the phase was stopped: NO-GO
    assert Target.toggles == [{"healthy": False}, {"healthy": True}], Target.toggles
    assert "restored  observability: restore the target's health" in proc.stdout
    [run_dir] = list((out / "restore-drill").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    [restore] = meta["restores"]
    assert restore["ok"] and restore["check"] == "observability.readiness.toggle"
    assert "answered HTTP 200" in restore["observed"]
    phase = next(p for p in meta["phases"] if p["name"] == "observability")
    assert phase["outcome"] == "error" and "longer than 20 s" in phase["reason"]
    results = json.loads((run_dir / "results.json").read_text())
    check = next(c for c in results["checks"] if c["id"] == "run.restore.1")
    assert check["status"] == "pass" and "run by the runner" in check["observed"]


@pytest.mark.integration
def test_ctrl_c_during_a_disruption_still_restores_the_target(tmp_path: Path, target: str):
    """Ctrl-C (SIGINT to the runner) while the toggle check holds the target unhealthy: the runner passes the
    interrupt to the phase, whose check restores the target on its way out (or, had it not, the runner would
    run the registered restore); exactly one restore is sent and the record says who sent it."""
    Target.toggles.clear()
    params = _params(tmp_path, "restore-ctrl-c", target, """
        phases:
          preflight: {enabled: false}
          integrity: {enabled: false}
          observability:
            readiness: {endpoint: /ready, toggle_path: /toggle, within_s: 120, poll_interval_s: 0.5}
        """)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "rehearsal_lib.cli", "run", str(params), "--outputs", str(out)],
                            cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: Target.toggles == [{"healthy": False}], 180, "the toggle check did not disrupt the target")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = finish(proc, 180, "the interrupted run did not end")
    assert proc.returncode != 0, stdout + stderr
    assert Target.toggles == [{"healthy": False}, {"healthy": True}], (Target.toggles, stdout, stderr)
    [run_dir] = list((out / "restore-ctrl-c").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["interrupted"] is True
    events = [json.loads(line) for line in (run_dir / "restores" / "observability.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["registered", "done"] and events[1]["ok"] is True
    by_runner = events[1]["by"] == "runner"
    assert ("restored  observability" in stdout) == by_runner and bool(meta.get("restores")) == by_runner


def test_one_write_safety_rule(write_params):
    staging = load_params(str(write_params("name: stg\ntarget: {base_url: 'http://127.0.0.1:9'}\n"
                                           "safety: {allow_destructive: false}\n")))
    assert write_refusal(staging, "webhooks", allow_destructive=False) is None  # an ordinary write
    assert "safety.allow_destructive" in write_refusal(staging, "migrations", allow_destructive=False)
    assert write_refusal(staging, "migrations", allow_destructive=True) is None
    prod = load_params(str(write_params("name: prd\nenvironment: {kind: production}\ntarget: {base_url: 'http://127.0.0.1:9'}\n"
                                        "safety: {allow_destructive: true}\n")))
    assert "production" in write_refusal(prod, "webhooks", allow_destructive=False)
    assert "production" in write_refusal(prod, "migrations", allow_destructive=False)
    assert write_refusal(prod, "migrations", allow_destructive=True) is None
