"""The operator's interactive path (#15): cells re-run after "Run All", live progress, `rehearse lab`,
`rehearse report NOTEBOOK`, and the stop hint of a sandbox a notebook started.

Real kernels (nbclient, papermill), a real JupyterLab server, the real sandbox and a real HTTP server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import ROOT, finish, run, wait_for

from rehearsal_lib.results import CHECK_MIME, checks_from_notebook

pytestmark = pytest.mark.integration

PY = sys.executable
NOTEBOOKS = ROOT / "rehearsal_lib" / "notebooks"  # shipped with the package
SANDBOX_PARAMS = ROOT / "rehearsal_lib" / "builtin_params" / "sandbox.yaml"
REHEARSE = str(Path(sys.executable).with_name("rehearse"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kernel_env(sandbox) -> dict[str, str]:
    """The sandbox fixture's home for the kernel (its first cell attaches to that sandbox, started already)."""
    return {**os.environ, "REHEARSAL_SANDBOX_HOME": str(Path(sandbox.home).parent), "REHEARSAL_PROJECT_DIR": str(ROOT)}


def text_of(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(str(o["data"].get("text/plain", "")))
    return "\n".join(parts)


def badges(outputs: list) -> list[dict]:
    return [o["data"][CHECK_MIME] for o in outputs if "data" in o and CHECK_MIME in o["data"]]


# ------------------------------------------------ a phase notebook cell by cell, then re-run after the end


def test_check_cell_rerun_after_the_closing_cell_keeps_the_summary(sandbox, monkeypatch):
    """Shift+Enter through 01_preflight, then re-run the health cell after `ph.summary(); ph.close()`.

    main: the re-run recorded `ERROR: Cannot send a request, as the client has been closed` and those
    errors replaced the passes in the summary. Now the clients reopen and the summary is unchanged."""
    from nbclient import NotebookClient

    for key, value in kernel_env(sandbox).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / "01_preflight.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    health = next(i for i in code if "check_health" in nb.cells[i].source)
    last = code[-1]
    assert "ph.close()" in nb.cells[last].source
    with client.setup_kernel():
        for i in code:
            client.execute_cell(nb.cells[i], i)
        first_summary = text_of(nb.cells[last].outputs)
        first_health = badges(nb.cells[health].outputs)
        assert first_health and all(b["status"] == "pass" for b in first_health), first_health
        client.execute_cell(nb.cells[health], health)  # after ph.close()
        rerun = badges(nb.cells[health].outputs)
        client.execute_cell(nb.cells[last], last)
        second_summary = text_of(nb.cells[last].outputs)
    assert [b["status"] for b in rerun] == ["pass"] * len(first_health), text_of(nb.cells[health].outputs)
    assert "client has been closed" not in text_of(nb.cells[health].outputs)
    assert second_summary.splitlines()[0] == first_summary.splitlines()[0], (first_summary, second_summary)
    assert "error" not in second_summary.splitlines()[0]


# ---------------------------------------------------------------- PhaseRun in this process, real HTTP server


class _Flaky(BaseHTTPRequestHandler):
    """/ok answers 200 until the server is told to break, then /ok answers 500 with no body."""

    def do_GET(self) -> None:  # noqa: N802
        code = 500 if self.server.broken else 200  # type: ignore[attr-defined]
        body = b'{"ok": true}'
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_target():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    httpd.broken = False  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def _phase(tmp_path: Path, base_url: str):
    from rehearsal_lib.phase import PhaseRun

    doc = {"name": "probe", "environment": {"kind": "staging"}, "target": {"base_url": base_url, "timeout_s": 2},
           "phases": {"preflight": {"enabled": True}}}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun("preflight", str(path))


def test_close_leaves_the_phase_usable(tmp_path, http_target):
    from rehearsal_lib.phase import Outcome

    ctx = _phase(tmp_path, f"http://127.0.0.1:{http_target.server_address[1]}")

    def probe() -> Outcome:
        return Outcome("pass", f"HTTP {ctx.http.get('/ok').status_code}", "HTTP 200")

    assert ctx.run("preflight.x", "x", probe).status == "pass"
    ctx.close()
    again = ctx.run("preflight.x", "x", probe)
    assert again.status == "pass" and again.observed == "HTTP 200", again.observed
    ctx.close()


def test_rerun_error_does_not_replace_a_real_result_but_a_real_result_does(tmp_path, http_target, capsys):
    from rehearsal_lib.phase import Outcome

    ctx = _phase(tmp_path, f"http://127.0.0.1:{http_target.server_address[1]}")

    def probe() -> Outcome:
        res = ctx.http.get("/ok")
        res.raise_for_status()
        return Outcome("pass", f"HTTP {res.status_code}", "HTTP 200")

    first = ctx.run("preflight.y", "Health answers 200", probe)
    http_target.broken = True
    rerun = ctx.run("preflight.y", "Health answers 200", probe)  # raises: an error, not a result
    assert rerun is first and [c.status for c in ctx.checks] == ["pass"]
    shown = capsys.readouterr().out
    assert "gave an error, not a result" in shown and "500 Internal Server Error" in shown

    def failing() -> Outcome:
        return Outcome("fail", "HTTP 500", "HTTP 200")

    real = ctx.run("preflight.y", "Health answers 200", failing)  # a real result replaces it
    assert [c.status for c in ctx.checks] == ["fail"] and real.observed == "HTTP 500"


def test_error_badge_of_a_raising_probe_keeps_expected(tmp_path, http_target):
    """README: `expected` is kept when a probe raises. main left it blank for checks that state it only in
    their Outcome (most of them): the title says what is required."""
    ctx = _phase(tmp_path, f"http://127.0.0.1:{http_target.server_address[1]}")

    def boom():
        raise RuntimeError("probe broke")

    check = ctx.run("preflight.z", "The health endpoint answers 200", boom)
    assert check.status == "error" and check.expected == "The health endpoint answers 200"


# ------------------------------------------------------------------------------------------ rehearse lab


def test_rehearse_lab_with_port_as_in_its_help_serves_lab(tmp_path):
    """`rehearse lab --port N` (two words, the example in --help): main reordered it into
    `jupyter lab N --port` and jupyter died with 'expected one argument'."""
    port = free_port()
    args = [REHEARSE, "lab", "--port", str(port), "--no-browser", "--IdentityProvider.token="]
    if os.geteuid() == 0:
        args.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        def lab_page() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"rehearse lab exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as resp:
                    return resp.read().decode() if resp.status == 200 else None
            except OSError:
                return None

        page = wait_for(lab_page, 120, "JupyterLab did not answer /lab", interval=0.5)
        assert "JupyterLab" in page or "jupyter-config-data" in page
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        finish(proc, 60, "rehearse lab did not stop on SIGTERM")


# ------------------------------------------------------------------------------ rehearse report NOTEBOOK


def test_report_of_an_interactively_executed_notebook_inlines_its_chart(tmp_path, sandbox):
    """papermill on its own (as Lab's Run All would): no run folder, so no report.html. `rehearse report
    NB` writes NB.report.html beside it, plotly inlined, saying it is not a sealed run."""
    env = kernel_env(sandbox)
    out = tmp_path / "01_preflight.ipynb"
    run([PY, "-m", "papermill", str(NOTEBOOKS / "01_preflight.ipynb"), str(out), "-p", "env", "sandbox",
         "--cwd", str(NOTEBOOKS)], 300, "papermill of 01_preflight did not finish", env=env)
    nb = json.loads(out.read_text())
    assert checks_from_notebook(nb)
    assert "application/vnd.plotly.v1+json" in out.read_text()  # the notebook holds a chart
    done = run([REHEARSE, "report", str(out)], 300, "rehearse report NOTEBOOK did not finish", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "01_preflight.report.html").read_text()
    assert "Plotly.newPlot" in page and "plotly.js v" in page.lower() or "plotly.js" in page
    assert "open this notebook in JupyterLab" not in page  # the figure itself, not the fallback note
    assert "Not a rehearsal run" in page and "no seal" in page
    assert "not a run: no seal, no ledger" in done.stdout
    folder = run([REHEARSE, "report", str(tmp_path), "--out", str(tmp_path / "all.html")], 300,
                 "rehearse report FOLDER did not finish", env=env)
    assert folder.returncode == 0 and "Plotly.newPlot" in (tmp_path / "all.html").read_text(), folder.stderr


# ------------------------------------------------------------------- the stop hint of a started sandbox


def test_plain_papermill_run_that_starts_the_sandbox_says_how_to_stop_it_on_stderr(tmp_path):
    home = tmp_path / "sbx"
    env = {**os.environ, "REHEARSAL_SANDBOX_HOME": str(home), "REHEARSAL_PROJECT_DIR": str(ROOT)}
    out = tmp_path / "out.ipynb"
    try:
        done = run([PY, "-m", "papermill", str(NOTEBOOKS / "01_preflight.ipynb"), str(out),
                    "-p", "env", "sandbox", "--cwd", str(NOTEBOOKS)], 300, "papermill did not finish",
                   env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "it keeps running after this notebook. Stop it with: rehearse sandbox down" in done.stderr
        target = json.dumps(json.loads(out.read_text())["cells"][3]["outputs"])
        assert "stop it with: rehearse sandbox down" in target
    finally:
        run([REHEARSE, "sandbox", "down"], 120, "sandbox down did not finish", env=env)


def test_stop_command_names_the_variant():
    from rehearsal_lib.phase import stop_command

    assert stop_command("default") == "rehearse sandbox down"
    assert stop_command("faulty") == "rehearse sandbox down --variant faulty"


# --------------------------------------------------------------------- progress in `rehearse run` output


def test_rehearse_run_prints_the_load_progress_when_stdout_is_not_a_tty(tmp_path, sandbox):
    """Preflight + load only, one short stage: the CI log gets the load phase's progress line."""
    base = yaml.safe_load((SANDBOX_PARAMS).read_text())
    phases: dict = {name: {"enabled": False} for name in base["phases"] if name not in ("preflight", "load")}
    stage = {**base["phases"]["load"]["stages"][0], "duration_s": 3, "ramp_s": 0}
    phases["load"] = {"stages": [stage]}
    params = tmp_path / "quick.yaml"
    params.write_text(yaml.safe_dump({"extends": str(SANDBOX_PARAMS), "name": "quick-progress",
                                      "phases": phases}))
    env = {**kernel_env(sandbox), "REHEARSAL_LOCK_DIR": str(tmp_path / "locks")}
    done = run([REHEARSE, "run", str(params), "--outputs", str(tmp_path / "out")], 600,
               "rehearse run of preflight + load did not finish", env=env)
    lines = [ln for ln in done.stdout.splitlines() if "progress load · stage" in ln]
    assert lines, done.stdout[-3000:]
    assert re.search(r"progress load · stage steady \(25 req/s\): \d+ s( of 3 s)?", lines[0]), lines
    assert any(re.search(r"\d+ sent, \d+ req/s", ln) for ln in lines) or len(lines) == 1, lines
    assert "\r" not in done.stdout and "\x1b" not in done.stdout  # plain lines, not a terminal's live line
