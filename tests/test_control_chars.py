"""Control characters from the target (NUL, BEL, ESC[2J) never reach junit.xml, report.html or the
operator's terminal raw: the result model shows them as visible escapes where target text enters it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.evidence import collect, write_junit
from rehearsal_lib.results import Check, checks_from_notebook, printable
from rehearsal_lib.runrecord import RunRecord, write_run_record

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "\x00\x07\x1b[2J\x7f\x9b\r"
RAW = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def test_check_shows_control_characters_as_visible_escapes():
    c = Check(id="preflight.identity", phase="preflight", title=f"t{HOSTILE}", status="pass",
              observed=f"svc 1.0{HOSTILE}", expected="e\x1b", evidence={"body": [f"a{HOSTILE}", {"k\x1b": "\x00"}],
                                                                     "n": 3, "tab\tand\nnewline": "kept\t\n"})
    assert c.observed == "svc 1.0\\x00\\x07\\x1b[2J\\x7f\\x9b\\x0d"
    assert c.title == "t\\x00\\x07\\x1b[2J\\x7f\\x9b\\x0d" and c.expected == "e\\x1b"
    assert c.evidence == {"body": ["a\\x00\\x07\\x1b[2J\\x7f\\x9b\\x0d", {"k\\x1b": "\\x00"}], "n": 3,
                          "tab\tand\nnewline": "kept\t\n"}
    assert printable("a\r\nb\ud800\uffff") == "a\nb\\ud800\\uffff"
    assert Check.model_validate(c.model_dump()) == c  # idempotent: a notebook read back is unchanged
    for text in (c.text(), c.badge_html(), json.dumps(c.bundle())):
        assert not RAW.search(text)


def test_junit_stays_well_formed_even_for_a_check_that_skipped_validation(tmp_path: Path):
    """write_junit itself never writes what XML 1.0 cannot carry (a second line of defence)."""
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[])]), str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({"env": "t", "run_id": "r1",
                                                    "phases": [{"name": "integrity", "outcome": "ok"}]}))
    summary = collect(run)
    raw = Check.model_construct(id="integrity.raw", phase="integrity", title=f"raw{HOSTILE}", status="fail",
                                severity="blocker", expected="", observed=f"seen{HOSTILE}", evidence={"b": HOSTILE},
                                metrics={}, started_at="", duration_s=0.0, waiver=None)
    summary.phase_checks["integrity"] = [raw]
    root = ET.parse(write_junit(summary)).getroot()
    failure = root.find(".//testcase[@name='integrity.raw']/failure")
    assert failure is not None and "seen\\x00\\x07\\x1b[2J" in failure.get("message")


def test_an_old_notebook_with_raw_controls_reads_back_neutralised():
    payload = {"id": "a.b", "phase": "a", "title": "x", "status": "fail", "observed": f"o{HOSTILE}"}
    nb = new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data",
                                                                    data={"application/vnd.rehearsal.check+json":
                                                                          payload})])])
    assert checks_from_notebook(nb)[0].observed.startswith("o\\x00\\x07\\x1b[2J")


# ---- a real target answering with control characters, through `rehearse run` -------------------


class HostileHandler(BaseHTTPRequestHandler):
    """/v1/version names itself with control characters; /health and /v1/ready answer with them raw."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/v1/version":
            body, ctype, status = json.dumps({"service": f"svc{HOSTILE}", "version": f"1.0{HOSTILE}"}).encode(), \
                "application/json", 200
        elif self.path == "/v1/ready":
            body, ctype, status = f"not ready{HOSTILE}".encode(), "text/plain", 503
        else:
            body, ctype, status = f"ok{HOSTILE}".encode(), "text/plain", 200
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_control_characters_from_a_real_target_stay_escaped_everywhere(tmp_path: Path, hostile_target: str):
    project = tmp_path / "project"
    (project / "params").mkdir(parents=True)
    (project / "notebooks").mkdir()
    for nb in ("01_preflight.ipynb", "13_decision.ipynb"):
        shutil.copy(ROOT / "rehearsal_lib" / "notebooks" / nb, project / "notebooks")
    (project / "params" / "hostile.yaml").write_text(f"""
name: hostile-target
environment: {{kind: staging, description: "A target that answers with control characters"}}
target: {{base_url: "{hostile_target}", timeout_s: 2}}
run: {{cell_timeout_s: 60, phase_timeout_s: 180}}
phases:
  preflight: {{latency: {{samples: 2}}}}
  integrity: {{enabled: false}}
""")
    out = tmp_path / "outputs"
    env = {**os.environ, "REHEARSAL_PROJECT_DIR": str(project)}
    proc = subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", "run", "hostile", "--outputs", str(out)],
                          cwd=project, env=env, capture_output=True, timeout=600)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode == 1, terminal.decode(errors="replace")  # NO-GO: /v1/ready answers 503
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", terminal), terminal
    assert b"svc\\x00\\x07\\x1b[2J" in terminal  # the check's echo line shows what came, visibly

    run_dir = next((out / "hostile-target").iterdir())
    root = ET.parse(run_dir / "junit.xml").getroot()  # well-formed: CI keeps every result
    identity = root.find(".//testcase[@name='preflight.identity']")
    ready = root.find(".//testcase[@name='preflight.ready']/failure")
    assert identity is not None and ready is not None
    assert json.dumps(f"not ready{printable(HOSTILE)}")[1:-1] in ready.text  # the body, in the evidence JSON

    results = json.loads((run_dir / "results.json").read_text())
    by_id = {c["id"]: c for c in results["checks"]}
    assert by_id["preflight.identity"]["observed"] == f"svc{printable(HOSTILE)} 1.0{printable(HOSTILE)}"
    assert by_id["preflight.identity"]["evidence"]["body"]["version"] == f"1.0{printable(HOSTILE)}"

    report = (run_dir / "report.html").read_text(encoding="utf-8")
    page = report.split('<script type="text/javascript">', 1)[0] if "plotly" in report else report
    assert not RAW.search(page.replace("\r", "")), RAW.search(page)
    assert not RAW.search(re.sub(r"<script.*?</script>", "", report, flags=re.S))
    assert "svc\\x00\\x07\\x1b[2J" in report
    assert "A target that answers with control characters" in report  # environment.description
    assert "A target that answers with control characters" in (run_dir / "summary.md").read_text()
