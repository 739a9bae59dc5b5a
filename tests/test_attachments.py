"""Evidence attachments (params `evidence.attach`): real files, globs and commands in a throwaway project, copied
into a real run folder, sealed by `finalize()` (what `rehearse run` ends with) and listed in the report; a missing
required one is a failing blocker. No server, no kernel."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.attachments import EvidenceBlock, collect_attachments
from rehearsal_lib.config import ConfigError, load_params
from rehearsal_lib.evidence import collect
from rehearsal_lib.results import Check
from rehearsal_lib.runner import Runner, finalize
from rehearsal_lib.runrecord import RunRecord, read_run_record, write_run_record
from rehearsal_lib.seal import verify_run
from rehearsal_lib.secrets import SecretSet

SECRET = "attach-secret-value-0042"


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "build").mkdir(parents=True)
    (root / "build" / "junit.xml").write_text(f"<testsuite tests='1'><!-- token {SECRET} --></testsuite>\n")
    (root / "exports" / "more").mkdir(parents=True)
    (root / "exports" / "latency.png").write_bytes(png())
    (root / "exports" / "more" / "errors.png").write_bytes(png(4, 4))
    (root / "exports" / "notes.txt").write_text("not matched by *.png\n")
    return root


def make_run(outputs: Path, run_id: str = "20261202T100000Z-aaaaaa") -> Path:
    """A run folder as the runner leaves it before finalize(): run.json and an executed notebook."""
    run = outputs / "t" / run_id
    (run / "notebooks").mkdir(parents=True)
    check = Check(id="integrity.index.idx", phase="integrity", title="index exists", status="pass",
                  severity="major", expected="present", observed="present")
    nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", data=check.bundle())])]),
                   str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({
        "env": "t", "run_id": run_id, "started_at": "2026-12-02T10:00:00+00:00",
        "phases": [{"name": "integrity", "outcome": "ok", "duration_s": 1.0}]}))
    return run


PLAN = ("{python} -c \"import json, sys; print(json.dumps({'resource_changes': [{'address': 'db.main', "
        "'change': {'actions': ['update']}}], 'token': sys.argv[1]}))\" " + SECRET)


def block(*entries: dict) -> EvidenceBlock:
    return EvidenceBlock.model_validate({"attach": list(entries)})


def _attach(run: Path, project: Path, evidence: EvidenceBlock) -> None:
    """What the runner does at the end of a run: collect, record in run.json."""
    record = read_run_record(run)
    record.attachments = collect_attachments(run, evidence, project, SecretSet([SECRET]))
    write_run_record(run, record)


def test_attachments_are_copied_hashed_into_the_manifest_scrubbed_and_shown_in_the_report(project, tmp_path):
    run = make_run(tmp_path / "outputs")
    _attach(run, project, block(
        {"name": "plan", "command": PLAN, "output": "plan.json", "required": True, "title": "Terraform plan"},
        {"name": "dashboards", "glob": "exports/**/*.png"},
        {"name": "ci_artefact", "path": "build/junit.xml", "required": True}))
    summary = finalize(run, SecretSet([SECRET]))

    assert summary.decision.decision == "GO"
    by_id = {c.id: c for c in summary.checks}
    assert {i: by_id[i].status for i in by_id if i.startswith("run.evidence.")} == {
        "run.evidence.plan": "pass", "run.evidence.dashboards": "pass", "run.evidence.ci_artefact": "pass"}
    att = run / "attachments"
    plan = json.loads((att / "plan" / "plan.json").read_text())  # the command's output, still valid JSON
    assert plan["resource_changes"][0]["address"] == "db.main" and plan["token"] == "***"
    assert (att / "dashboards" / "latency.png").read_bytes() == png()  # kept below the glob's fixed folder
    assert (att / "dashboards" / "more" / "errors.png").read_bytes() == png(4, 4)
    assert not (att / "dashboards" / "notes.txt").exists()
    assert (att / "ci_artefact" / "junit.xml").read_text().count("***") == 1
    for path in run.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path

    manifest = json.loads((run / "manifest.json").read_text())["files"]
    recorded = {f.path: f for r in read_run_record(run).attachments for f in r.files}
    assert set(recorded) == {"attachments/plan/plan.json", "attachments/dashboards/latency.png",
                             "attachments/dashboards/more/errors.png", "attachments/ci_artefact/junit.xml"}
    for rel, f in recorded.items():  # recorded, sealed and on disk agree
        assert manifest[rel]["sha256"] == f.sha256 and manifest[rel]["bytes"] == f.bytes == (run / rel).stat().st_size
    assert verify_run(run).intact

    results = json.loads((run / "results.json").read_text())
    assert [a["name"] for a in results["attachments"]] == ["plan", "dashboards", "ci_artefact"]
    report = (run / "report.html").read_text()
    assert "Evidence attachments" in report and "Terraform plan" in report
    assert re.search(r"href=.attachments/plan/plan\.json.", report)  # linked, relative to the folder
    assert recorded["attachments/plan/plan.json"].sha256 in report
    assert len(re.findall(r"<img [^>]*src=.data:image/png;base64,", report)) == 2  # images inline as thumbnails
    assert f"{len(png()):,}" in report  # with their size
    summary_md = (run / "summary.md").read_text()
    assert "## Evidence attachments" in summary_md and "`attachments/plan/plan.json`" in summary_md


def test_a_missing_required_attachment_is_a_failing_blocker_and_a_missing_optional_one_is_recorded(project, tmp_path):
    run = make_run(tmp_path / "outputs")
    _attach(run, project, block(
        {"name": "ci_artefact", "path": "build/missing-junit.xml", "required": True},
        {"name": "dashboards", "glob": "exports/*.jpg"},
        {"name": "plan", "command": "{python} -c \"import sys; print('partial'); sys.exit('plan.out: no such "
                                    "plan file')\"", "required": True},
        {"name": "tool", "command": "no-such-program-for-rehearsal --json"}))
    summary = collect(run)

    by_id = {c.id: c for c in summary.checks}
    ci, dash, plan, tool = (by_id[f"run.evidence.{n}"] for n in ("ci_artefact", "dashboards", "plan", "tool"))
    assert (ci.status, ci.severity) == ("fail", "blocker") and "no file at build/missing-junit.xml" in ci.observed
    assert (dash.status, dash.severity) == ("skip", "info") and "no file matches exports/*.jpg" in dash.observed
    assert plan.status == "fail" and "exited 1" in plan.observed and "no such plan file" in plan.observed
    assert tool.status == "skip" and "cannot run" in tool.observed
    assert summary.decision.decision == "NO-GO"
    assert {b.split(":")[0] for b in summary.decision.blockers} == {"run.evidence.ci_artefact", "run.evidence.plan"}
    # a failed command's output and stderr are still kept as evidence
    assert (run / "attachments" / "plan" / "plan.txt").read_text() == "partial\n"
    assert "no such plan file" in (run / "attachments" / "plan" / "plan.txt.stderr.txt").read_text()
    status = {r.name: r.status for r in read_run_record(run).attachments}
    assert status == {"ci_artefact": "missing", "dashboards": "missing", "plan": "failed", "tool": "missing"}


def test_evidence_attach_params_are_validated(tmp_path):
    (tmp_path / "params").mkdir()
    base = "name: t\ntarget: {base_url: 'http://127.0.0.1:9'}\nevidence:\n  attach:\n"
    cases = {
        "    - {name: plan, path: a.json, command: 'terraform show -json plan.out'}\n": "exactly one of path, glob",
        "    - {name: plan}\n": "exactly one of path, glob",
        "    - {name: a, path: x}\n    - {name: a, glob: '*.png'}\n": "used twice",
        "    - {name: 'Bad Name', path: x}\n": "evidence.attach[0].name",
        "    - {name: a, path: x, output: a.json}\n": "goes with command",
    }
    for body, message in cases.items():
        (tmp_path / "params" / "t.yaml").write_text(base + body)
        with pytest.raises(ConfigError, match="evidence") as err:
            load_params("t", tmp_path, check_env_vars=False)
        assert message in str(err.value), (body, str(err.value))
    (tmp_path / "params" / "t.yaml").write_text(base + "    - {name: plan, command: 'terraform show -json plan.out', "
                                                       "output: plan.json, required: true}\n")
    assert load_params("t", tmp_path, check_env_vars=False).evidence.attach[0].required is True


def test_attachments_are_collected_when_the_run_breaks_off(tmp_path, monkeypatch):
    """The run stops before any phase (its sandbox cannot start): the attachments are still collected, sealed and
    judged, and the decision says the required one is missing."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "build").mkdir()
    (root / "build" / "junit.xml").write_text("<testsuite tests='1'/>\n")
    (root / "params" / "scratch.yaml").write_text(
        "name: scratch\ntarget: {base_url: 'http://127.0.0.1:9', timeout_s: 1}\nsandbox: {variant: default}\n"
        "phases: {integrity: {enabled: true}}\n"
        "evidence:\n  attach:\n    - {name: ci_artefact, path: build/junit.xml, required: true}\n"
        "    - {name: plan, path: plan.json, required: true}\n")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the sandbox home must be a folder")
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(blocker))
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(root))
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    summary = Runner("scratch", root=root, outputs=tmp_path / "outputs", progress=lambda s: None).run()
    assert {p.outcome for p in summary.phases if p.name != "run"} == {"not_run"}
    by_id = {c.id: c.status for c in summary.checks}
    assert by_id["run.evidence.ci_artefact"] == "pass" and by_id["run.evidence.plan"] == "fail"
    assert (summary.run_dir / "attachments" / "ci_artefact" / "junit.xml").is_file()
    assert "attachments/ci_artefact/junit.xml" in json.loads((summary.run_dir / "manifest.json").read_text())["files"]
    assert verify_run(summary.run_dir).intact


RECORD = """
from rehearsal_lib.phase import open_phase, Outcome
ph = open_phase("preflight", env, run_dir)
ph.run("preflight.first", "First check", lambda: Outcome("pass", "fine"))
raise ValueError("boom in cell")
"""


@pytest.mark.integration  # real kernels: a crashing phase, then the decision phase
def test_attachments_are_collected_after_a_crashed_phase_and_judged_by_the_decision_phase(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "build").mkdir()
    (root / "build" / "junit.xml").write_text("<testsuite tests='1'/>\n")
    (root / "params" / "scratch.yaml").write_text(
        "name: scratch\ntarget: {base_url: 'http://127.0.0.1:9', timeout_s: 1}\n"
        "run: {cell_timeout_s: 600, phase_timeout_s: 900}\n"
        "phases: {preflight: {enabled: true}, integrity: {enabled: false}}\n"
        "evidence:\n  attach:\n    - {name: ci_artefact, path: build/junit.xml, required: true}\n"
        "    - {name: plan, command: \"{python} -c \\\"import sys; sys.exit('no plan.out')\\\"\", required: true}\n")
    params = new_code_cell('env = "scratch"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(RECORD)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / "notebooks" / "01_preflight.ipynb"))
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(root))
    monkeypatch.setenv("REHEARSAL_LOCK_DIR", str(tmp_path / "locks"))
    summary = Runner("scratch", root=root, outputs=tmp_path / "outputs", progress=lambda s: None).run()
    outcomes = {p.name: p.outcome for p in summary.phases}
    assert outcomes["preflight"] == "error" and outcomes["decision"] == "ok"
    by_id = {c.id: c for c in summary.checks}
    assert by_id["run.evidence.ci_artefact"].status == "pass" and by_id["run.evidence.plan"].status == "fail"
    assert (summary.run_dir / "attachments" / "ci_artefact" / "junit.xml").is_file()
    # collected before the decision phase: its notebook names the failing attachment too
    decision = (summary.run_dir / "notebooks" / "13_decision.ipynb").read_text()
    assert "run.evidence.plan" in decision and "no plan.out" in decision
    assert verify_run(summary.run_dir).intact
