"""People after the run: `rehearse attest`, `rehearse signoff`, `rehearse status`, the decision notebook's
attestation cell, phase owners and the timeline.

One real run folder for the module: a rehearsal of a throwaway project with only the decision phase (one
kernel under papermill), sealed by the runner with its ledger. Each test works on a fresh copy of it (the
outputs folder, ledger included); the notebook-cell test starts one more kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rehearsal_lib.cli import main
from rehearsal_lib.config import ConfigError, load_params
from rehearsal_lib.people import PEOPLE_LOG
from rehearsal_lib.seal import RESEAL_LOG, read_chain, verify_run

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = "ci-runner@build"

PARAMS = """
name: people
environment: {kind: staging}
target:
  base_url: http://127.0.0.1:9
  timeout_s: 1
run:
  cell_timeout_s: 600
  phase_timeout_s: 900
phases:  # only the decision phase runs
  preflight: {enabled: false}
  migrations: {enabled: false}
  retention: {enabled: false}
  load: {enabled: false}
  integrity: {enabled: false}
  security: {enabled: false}
  observability: {enabled: false}
  backup_recovery: {enabled: false}
  smoke: {enabled: false}
  decision: {enabled: true, owner: Release Manager Rita}
attestations:
  - {check: frontend, title: Candidate UI has no spinner hangs, severity: blocker}
  - {check: runbook, title: Rollback runbook reviewed, severity: major}
  - {check: dpo, title: DPO consulted, by: Dana, at: "2026-12-01T09:00:00Z", status: pass}
signoff:
  required_roles: [Compliance Lead, DevOps Lead]
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose one real run (decision phase only) is sealed: CONDITIONAL GO, two checks awaiting
    attestation, two sign-offs awaited."""
    from rehearsal_lib.runner import Runner

    project = tmp_path_factory.mktemp("people")
    (project / "params").mkdir()
    (project / "params" / "people.yaml").write_text(PARAMS)
    saved = {k: os.environ.get(k) for k in ("REHEARSAL_PROJECT_DIR", "REHEARSAL_OPERATOR")}
    os.environ.update(REHEARSAL_PROJECT_DIR=str(project), REHEARSAL_OPERATOR=OPERATOR)
    try:
        summary = Runner("people", root=project, progress=lambda s: None).run()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert summary.decision.decision == "CONDITIONAL GO", summary.decision
    assert summary.decision.pending_attestations == ["attestation.frontend", "attestation.runbook"]
    assert summary.decision.awaiting_signoff == ["Compliance Lead", "DevOps Lead"]
    return project


@pytest.fixture
def run(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the sealed run folder (with its environment's ledger)."""
    shutil.copytree(pristine / "outputs", tmp_path / "outputs")
    shutil.copytree(pristine / "params", tmp_path / "params")
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("REHEARSAL_OPERATOR", OPERATOR)
    monkeypatch.delenv("REHEARSAL_SIGNING_KEY", raising=False)
    return next((tmp_path / "outputs" / "people").glob("2*"))


def rehearse(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def check(run: Path, cid: str) -> dict:
    return next(c for c in results(run)["checks"] if c["id"] == cid)


def last_reseal(run: Path) -> dict:
    entries, problems = read_chain(run / RESEAL_LOG, RESEAL_LOG)
    assert not problems
    return entries[-1]


@pytest.mark.integration  # the module's run folder comes from a real kernel
def test_attest_flips_the_check_and_the_decision_and_reseals_in_the_open(run: Path, capsys):
    assert rehearse(capsys, "status", str(run))[0] == 4  # awaiting attestation and sign-off
    code, out, err = rehearse(capsys, "attest", str(run), "attestation.frontend", "--by", "Ana Ops",
                              "--status", "pass", "--note", "three journeys in Chromium, no spinner over 2 s")
    assert code == 0, err
    assert "DECISION: GO — awaiting sign-off: Compliance Lead, DevOps Lead" in out
    c = check(run, "attestation.frontend")
    assert c["status"] == "pass" and "Ana Ops" in c["observed"] and "no spinner over 2 s" in c["observed"]
    data = results(run)
    assert data["decision"] == "GO" and data["reasons"]["pending_attestations"] == ["attestation.runbook"]
    assert data["status_code"] == 4
    entry = data["people"][-1]
    assert (entry["kind"], entry["check"], entry["status"], entry["by"]) == ("attestation", "attestation.frontend",
                                                                           "pass", "Ana Ops")
    cases = {c.get("name"): c for c in ET.parse(run / "junit.xml").iter("testcase")}
    assert cases["attestation.frontend"].find("skipped") is None  # was "awaiting attestation"
    assert cases["attestation.runbook"].find("skipped") is not None
    # the seal: a recorded rebuild whose reason names the attestation; the folder verifies with its ledger
    reseal = last_reseal(run)
    assert reseal["why"] == "attestation: attestation.frontend by Ana Ops" and reseal["kind"] == "rebuild"
    assert reseal["who"] == OPERATOR
    assert rehearse(capsys, "verify", str(run))[0] == 0
    report = (run / "report.html").read_text()
    assert "Ana Ops" in report and "attestation: attestation.frontend by Ana Ops" in report
    # a later answer wins (both stay in the log): a failed blocker attestation is NO-GO
    assert rehearse(capsys, "attest", str(run), "attestation.frontend", "--by", "Bo QA", "--status", "fail",
                    "--note", "spinner hangs after a token refresh")[0] == 0
    assert results(run)["decision"] == "NO-GO" and check(run, "attestation.frontend")["status"] == "fail"
    assert len(read_chain(run / PEOPLE_LOG, PEOPLE_LOG)[0]) == 2
    code, out, _ = rehearse(capsys, "status", str(run))
    assert code == 1 and "spinner hangs after a token refresh" in out


@pytest.mark.integration
def test_unknown_or_non_manual_check_is_exit_2_and_changes_nothing(run: Path, capsys):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = rehearse(capsys, "attest", str(run), "attestation.nope", "--by", "Ana", "--status", "pass")
    assert code == 2 and "attestation.frontend, attestation.runbook" in err and "attestation.nope" in err
    code, _, err = rehearse(capsys, "attest", str(run), "attestation.dpo", "--by", "Ana", "--status", "fail")
    assert code == 2 and "not awaiting attestation" in err and "pass" in err  # decided before the run
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.integration
def test_attesting_tampered_evidence_is_refused_unless_the_reseal_route_says_why(run: Path, capsys):
    log = run / "logs" / "decision.log"
    log.write_text(log.read_text() + "edited by hand\n")
    code, _, err = rehearse(capsys, "attest", str(run), "attestation.runbook", "--by", "Ana", "--status", "pass")
    assert code == 2 and "logs/decision.log" in err and "--reseal --reason" in err
    assert not (run / PEOPLE_LOG).exists() and not (run / RESEAL_LOG).exists()
    code, _, err = rehearse(capsys, "attest", str(run), "attestation.runbook", "--by", "Ana", "--status", "pass",
                            "--reseal", "--reason", "log line added by the on-call engineer")
    assert code == 0, err
    reseal = last_reseal(run)
    assert reseal["kind"] == "reseal" and any("logs/decision.log" in c for c in reseal["changed"])
    assert reseal["why"] == "attestation: attestation.runbook by Ana; log line added by the on-call engineer"
    assert verify_run(run).intact
    # the answers file is append-only: an edited entry breaks verify
    text = (run / PEOPLE_LOG).read_text().replace('"Ana"', '"Someone Else"')
    (run / PEOPLE_LOG).write_text(text)
    problems = verify_run(run).problems
    assert any(PEOPLE_LOG in p and "edited" in p for p in problems), problems


@pytest.mark.integration
def test_signoff_awaiting_then_approved_gives_status_codes_and_fills_the_table(run: Path, capsys):
    code, out, _ = rehearse(capsys, "signoff", str(run), "--role", "Compliance Lead", "--by", "Carla Compliance",
                            "--approve", "--note", "retention evidence attached")
    assert code == 0
    code, out, _ = rehearse(capsys, "status", str(run))
    assert code == 4 and "awaiting sign-off: DevOps Lead" in out and "pending sign-offs (1): DevOps Lead" in out
    for cid in ("attestation.frontend", "attestation.runbook"):
        assert rehearse(capsys, "attest", str(run), cid, "--by", "Ana Ops", "--status", "pass")[0] == 0
    assert rehearse(capsys, "status", str(run))[0] == 4  # DevOps Lead still to sign
    assert rehearse(capsys, "signoff", str(run), "--role", "devops lead", "--by", "Dev Ops", "--approve")[0] == 0
    code, out, _ = rehearse(capsys, "status", str(run))
    assert code == 0 and "DECISION: GO\n" in out and "seal: intact" in out
    summary_md = (run / "summary.md").read_text()
    assert "| Sign-off: Compliance Lead | APPROVED | Carla Compliance |" in summary_md
    assert "| Sign-off: DevOps Lead | APPROVED | Dev Ops |" in summary_md
    assert last_reseal(run)["why"] == "sign-off: DevOps Lead approved by Dev Ops"
    assert rehearse(capsys, "verify", str(run))[0] == 0


@pytest.mark.integration
def test_a_rejected_signoff_is_no_go_with_role_who_and_reason(run: Path, capsys):
    code, _, err = rehearse(capsys, "signoff", str(run), "--role", "DevOps Lead", "--by", "Bo", "--reject")
    assert code == 2 and "reason" in err  # a rejection says why
    assert rehearse(capsys, "signoff", str(run), "--role", "DevOps Lead", "--by", "Bo", "--reject",
                    "--note", "rollback not rehearsed on the new schema")[0] == 0
    code, out, _ = rehearse(capsys, "status", str(run))
    assert code == 1 and out.startswith("DECISION: NO-GO\n")
    blockers = results(run)["reasons"]["blockers"]
    assert any(b.startswith("sign-off rejected: DevOps Lead by Bo at ") and
               b.endswith(": rollback not rehearsed on the new schema") for b in blockers), blockers


@pytest.mark.integration
def test_unknown_role_is_exit_2_naming_the_required_roles(run: Path, capsys):
    code, _, err = rehearse(capsys, "signoff", str(run), "--role", "Chief Vibes Officer", "--by", "X", "--approve")
    assert code == 2 and "Compliance Lead, DevOps Lead" in err
    assert not (run / PEOPLE_LOG).exists()


@pytest.mark.integration
def test_owner_and_timeline_in_the_overview_and_the_run_lists_what_awaits_people(run: Path):
    record = json.loads((run / "run.json").read_text())
    assert record["owners"] == {"decision": "Release Manager Rita"}
    assert record["signoff_roles"] == ["Compliance Lead", "DevOps Lead"]
    nb = json.loads((run / "notebooks" / "13_decision.ipynb").read_text())
    start = nb["metadata"]["papermill"]["start_time"][:19].replace("T", " ")
    end = nb["metadata"]["papermill"]["end_time"][:19].replace("T", " ")
    row = next(line for line in (run / "summary.md").read_text().splitlines() if line.startswith("| Go / No-Go"))
    assert f"| Release Manager Rita | {start} | {end} |" in row
    assert "Release Manager Rita" in (run / "report.html").read_text()
    text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in nb["cells"] for o in c.get("outputs", []))
    assert "awaiting attestation: attestation.frontend (blocker)" in text
    assert "sign-off DevOps Lead: awaiting" in text
    assert "Decision from the phases before this one: CONDITIONAL GO — awaiting sign-off: Compliance Lead, " \
           "DevOps Lead" in text


@pytest.mark.integration  # one kernel
def test_decision_notebook_cell_records_an_answer_under_papermill(run: Path, tmp_path: Path):
    import papermill

    out = tmp_path / "desk.ipynb"  # the operator's copy, outside the run folder
    answer = {"check": "attestation.runbook", "by": "Nora Notebook", "status": "pass", "note": "read it twice"}
    papermill.execute_notebook(str(ROOT / "rehearsal_lib" / "notebooks" / "13_decision.ipynb"), str(out),
                               parameters={"env": str(run.parents[2] / "params" / "people.yaml"),
                                           "run_dir": str(run), "answer": answer},
                               cwd=str(run.parents[2]), progress_bar=False, log_output=False)
    assert check(run, "attestation.runbook")["status"] == "pass"
    assert last_reseal(run)["why"] == "attestation: attestation.runbook by Nora Notebook"
    assert verify_run(run).intact
    shown = out.read_text()
    assert "Decision now: CONDITIONAL GO — awaiting sign-off: Compliance Lead, DevOps Lead" in shown


def test_signoff_and_owner_params_are_validated(tmp_path: Path):
    base = textwrap.dedent("""
        name: p
        target: {base_url: http://127.0.0.1:9}
        phases:
          decision: {owner: Release Manager}
        """)
    ok = tmp_path / "ok.yaml"
    ok.write_text(base + "signoff: {required_roles: [Compliance Lead, Executive Sponsor]}\n")
    params = load_params(str(ok))
    assert params.signoff.required_roles == ["Compliance Lead", "Executive Sponsor"]
    assert params.phases.decision.owner == "Release Manager"
    for bad, words in (("signoff: {required_roles: []}", "required_roles"),
                       ("signoff: {required_roles: [DevOps Lead, devops lead]}", "once"),
                       ("signoff: {roles: [x]}", "roles")):
        path = tmp_path / "bad.yaml"
        path.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=words):
            load_params(str(path))
