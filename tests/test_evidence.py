"""Result round trip through a notebook, JUnit, manifest and secret scrubbing."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.evidence import collect, verify_manifest, write_junit, write_manifest, write_results_json
from rehearsal_lib.results import CHECK_MIME, Check, checks_from_notebook
from rehearsal_lib.runrecord import RunRecord, write_run_record
from rehearsal_lib.secrets import SecretSet, mask_url


def check(cid: str, status: str, severity: str = "blocker", **kw) -> Check:
    return Check(id=cid, phase=cid.split(".")[0], title=f"title of {cid}", status=status, severity=severity, **kw)


def notebook_with(checks: list[Check]) -> nbformat.NotebookNode:
    outputs = [new_output("display_data", data=c.bundle()) for c in checks]
    return new_notebook(cells=[new_code_cell("x", outputs=outputs)])


def make_run(tmp_path: Path, checks: list[Check]) -> Path:
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    nbformat.write(notebook_with(checks), str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({"env": "t", "run_id": "r1",
                                                    "phases": [{"name": "integrity", "outcome": "ok"}]}))
    return run


def test_check_round_trips_through_a_notebook(tmp_path):
    original = [check("integrity.zero_rows.orphans", "fail", expected="0 rows", observed="2 row(s)",
                      evidence={"sample": [[1], [2]]}, metrics={"rows": 2}),
                check("integrity.index.idx", "pass", "major")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook_with(original), str(path))
    back = checks_from_notebook(nbformat.read(str(path), as_version=4))
    assert [c.model_dump() for c in back] == [c.model_dump() for c in original]


def test_bundle_has_fallbacks_and_bounded_evidence():
    big = check("a.b", "fail", evidence={"blob": "x" * 50_000})
    bundle = big.bundle()
    assert set(bundle) == {CHECK_MIME, "text/html", "text/plain"}
    assert bundle[CHECK_MIME]["evidence"]["truncated"] is True
    assert len(json.dumps(bundle[CHECK_MIME])) < 25_000
    assert "FAIL" in bundle["text/html"]
    assert "<script" not in Check(id="a.c", phase="a", title="<script>", status="pass").badge_html()


def test_junit_has_one_testcase_per_check_with_expected_and_observed(tmp_path):
    run = make_run(tmp_path, [check("integrity.a", "pass"), check("integrity.b", "fail", expected="0 rows",
                                                                 observed="3 row(s)"),
                              check("integrity.c", "error", "major", observed="refused"),
                              check("integrity.d", "manual", "major")])
    summary = collect(run)
    root = ET.parse(write_junit(summary)).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"integrity.a", "integrity.b", "integrity.c", "integrity.d"}
    failure = cases["integrity.b"].find("failure")
    assert "expected: 0 rows" in failure.text and "observed: 3 row(s)" in failure.text
    assert cases["integrity.d"].find("skipped").get("message") == "awaiting attestation"


def test_results_json_matches_checks_and_decision(tmp_path):
    run = make_run(tmp_path, [check("integrity.a", "pass"), check("integrity.b", "fail")])
    data = json.loads(write_results_json(collect(run)).read_text())
    assert data["decision"] == "NO-GO" and data["env"] == "t" and data["run_id"] == "r1"
    assert [c["id"] for c in data["checks"]] == ["integrity.a", "integrity.b"]
    assert data["phases"][0]["counts"] == {"pass": 1, "fail": 1}


def test_manifest_detects_tampering_added_and_missing_files(tmp_path):
    run = make_run(tmp_path, [check("integrity.a", "pass")])
    write_manifest(run)
    assert verify_manifest(run) == []
    import subprocess

    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=run, capture_output=True, text=True)
    assert sums.returncode == 0 and "manifest.json: OK" in sums.stdout  # auditors need no tool of ours
    nb = run / "notebooks" / "08_integrity.ipynb"
    nb.write_text(nb.read_text().replace("PASS", "FAIL"))
    (run / "extra.txt").write_text("x")
    (run / "run.json").unlink()
    problems = "\n".join(verify_manifest(run))
    assert "08_integrity.ipynb: sha256 differs" in problems
    assert "extra.txt: not in the manifest" in problems and "run.json: missing" in problems


def test_secret_set_scrubs_values_passwords_and_encoded_forms(tmp_path):
    secrets = SecretSet(["postgresql://app:p%40ss%2Fw0rd@db:5432/x", "tok3n-value"])
    text = "url postgresql://app:p%40ss%2Fw0rd@db:5432/x pw p@ss/w0rd enc p%40ss%2Fw0rd tok tok3n-value"
    scrubbed = secrets.scrub(text)
    assert "p@ss/w0rd" not in scrubbed and "tok3n-value" not in scrubbed and "p%40ss%2Fw0rd" not in scrubbed
    (tmp_path / "a.json").write_text(text)
    assert secrets.scrub_tree(tmp_path) == [tmp_path / "a.json"]
    assert not secrets.found_in((tmp_path / "a.json").read_text())
    assert mask_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert SecretSet(["ab"]).scrub("ab") == "ab"  # too short to be a secret worth masking


def test_a_phase_that_checked_nothing_is_not_coverage(tmp_path):
    """Integrity on by default against a service with no integrity block records only its target identity
    guard: the report must not show that as a passed phase (found by a new-user trial)."""
    from rehearsal_lib.evidence import write_summary_md

    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    identity = check("integrity.target.identity", "pass", "blocker")
    real = check("preflight.health", "pass", "blocker")
    for name, number, checks in (("integrity", "08", [identity]), ("preflight", "01", [real])):
        outputs = [new_output("display_data", data=c.bundle()) for c in checks]
        nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=outputs)]),
                       str(run / "notebooks" / f"{number}_{name}.ipynb"))
    write_run_record(run, RunRecord.model_validate({
        "env": "t", "run_id": "r1", "phases": [{"name": "preflight", "outcome": "ok"},
                                               {"name": "integrity", "outcome": "ok"}]}))
    summary = collect(run)
    assert summary.nothing_checked() == ["integrity"]
    assert "integrity" in summary.not_covered() and "preflight" not in summary.not_covered()
    assert "checked nothing" in summary.not_covered_reason("integrity")
    md = write_summary_md(summary).read_text()
    assert "| Data Integrity | not covered |" in md and "checked nothing" in md
