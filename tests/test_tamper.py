"""Tampering corpus: each case edits a real sealed run folder the way someone might, and the seal
(manifest, SHA256SUMS, reseal log, ledger, signature) must say so; legitimate use stays intact.

The run folders are real: executed-notebook JSON with recorded checks, sealed by `finalize()` (the
same code `rehearse run` ends with) under a temporary outputs/<env>/ with its own ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.cli import main
from rehearsal_lib.evidence import write_manifest
from rehearsal_lib.results import Check
from rehearsal_lib.runner import finalize
from rehearsal_lib.runrecord import RunRecord, write_run_record
from rehearsal_lib.seal import RESEAL_LOG, entry_digest, ledger_path, verify_run

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = "Dana Auditor <dana@example.test>"


def _checks(n_fail: int = 6) -> list[Check]:
    out = [Check(id=f"integrity.zero_rows.q{i}", phase="integrity", title=f"query {i} returns no rows",
                 status="fail", severity="blocker", expected="0 rows", observed=f"{i + 1} row(s)")
           for i in range(n_fail)]
    out.append(Check(id="integrity.index.idx", phase="integrity", title="index exists", status="pass",
                     severity="major", expected="present", observed="present"))
    return out


def make_run(outputs: Path, run_id: str = "20261201T100000Z-aaaaaa", n_fail: int = 6) -> Path:
    """A run folder as the runner leaves it before finalize(): run.json and an executed notebook."""
    run = outputs / "t" / run_id
    (run / "notebooks").mkdir(parents=True)
    (run / "logs").mkdir()
    (run / "logs" / "integrity.log").write_text("12:00:00 integrity started\n")
    outputs_ = [new_output("display_data", data=c.bundle()) for c in _checks(n_fail)]
    nbformat.write(new_notebook(cells=[new_code_cell("ph.run(...)", outputs=outputs_)]),
                   str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({
        "env": "t", "run_id": run_id, "started_at": "2026-12-01T10:00:00+00:00",
        "phases": [{"name": "integrity", "outcome": "ok", "duration_s": 1.0}]}))
    return run


@pytest.fixture(autouse=True)
def _operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSAL_OPERATOR", OPERATOR)
    monkeypatch.delenv("REHEARSAL_SIGNING_KEY", raising=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sealed NO-GO run folder (six blocker failures), copied afresh for each test."""
    outputs = tmp_path_factory.mktemp("pristine") / "outputs"
    os.environ["REHEARSAL_OPERATOR"] = OPERATOR
    summary = finalize(make_run(outputs))
    assert summary.decision.decision == "NO-GO"
    return outputs


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    outputs = tmp_path / "outputs"
    shutil.copytree(pristine, outputs)
    return next((outputs / "t").glob("2026*"))


def rehearse(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_fail_to_pass(run: Path) -> None:
    nb = run / "notebooks" / "08_integrity.ipynb"
    text = nb.read_text()
    assert text.count('"status": "fail"') == 6
    nb.write_text(text.replace('"status": "fail"', '"status": "pass"').replace(">FAIL<", ">PASS<"))


def test_a_folder_sealed_legitimately_is_intact_for_verify_and_sha256sum(run: Path, capsys):
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 0, out
    assert out.strip().endswith(": intact")
    assert "note: ledger: t #1 manifest sha256:" in out
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=run, capture_output=True, text=True)
    assert sums.returncode == 0 and "manifest.json: OK" in sums.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["env"], manifest["run_id"], manifest["reseals"]) == ("t", run.name, 0)
    ledger = [json.loads(line) for line in ledger_path(run).read_text().splitlines()]
    assert [(e["seq"], e["run_id"]) for e in ledger] == [(1, run.name)]
    assert ledger[0]["prev_sha256"] == "0" * 64 and ledger[0]["entry_sha256"] == entry_digest(ledger[0])


def test_rebuilding_an_intact_folder_is_allowed_recorded_and_stays_intact(run: Path, capsys):
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("ledger: t #2 manifest sha256:") and " entry sha256:" in last
    history = [json.loads(line) for line in (run / RESEAL_LOG).read_text().splitlines()]
    assert [(e["kind"], e["changed"], e["old_manifest"]) for e in history] == [("rebuild", [], "manifest.1.json")]
    code, out, _ = rehearse(capsys, "verify", str(run), "--expect", last)
    assert code == 0, out
    assert "Rebuilt 1 time(s) after sealing" in (run / "report.html").read_text()


def test_notebook_flipped_fail_to_pass_then_report_is_refused_and_nothing_rewritten(run: Path, capsys):
    flip_fail_to_pass(run)
    before = snapshot(run.parent)
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 2
    assert "no longer matches its seal; nothing was rewritten" in err
    assert "notebooks/08_integrity.ipynb: sha256 differs from the manifest" in err
    assert "--reseal --reason TEXT" in err
    assert snapshot(run.parent) == before  # neither the folder nor the ledger changed
    assert json.loads((run / "results.json").read_text())["decision"] == "NO-GO"
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1 and "notebooks/08_integrity.ipynb: sha256 differs from the manifest" in out


def test_reseal_with_reason_keeps_old_manifest_logs_who_when_why_and_the_report_shows_it(run: Path, capsys):
    old_manifest = (run / "manifest.json").read_bytes()
    flip_fail_to_pass(run)
    code, _, err = rehearse(capsys, "report", str(run), "--reseal")
    assert code == 2 and "--reseal needs --reason" in err
    code, out, err = rehearse(capsys, "report", str(run), "--reseal", "--reason", "ticket OPS-7: rows fixed by hand")
    assert code == 0, err
    assert out.startswith("GO:")  # the flipped notebook now says GO, and the report says how it got there
    assert (run / "manifest.1.json").read_bytes() == old_manifest
    [entry] = [json.loads(line) for line in (run / RESEAL_LOG).read_text().splitlines()]
    assert entry["who"] == OPERATOR and entry["why"] == "ticket OPS-7: rows fixed by hand"
    assert entry["kind"] == "reseal" and entry["time"].startswith("20")
    assert "notebooks/08_integrity.ipynb: sha256 differs from the manifest" in entry["changed"]
    report = (run / "report.html").read_text()
    assert "Resealed 1 time(s)" in report and "ticket OPS-7: rows fixed by hand" in report
    assert "Dana Auditor" in report and "notebooks/08_integrity.ipynb: sha256 differs" in report
    assert "**Resealed** #1" in (run / "summary.md").read_text()
    assert json.loads((run / "results.json").read_text())["reseals"][0]["why"] == "ticket OPS-7: rows fixed by hand"
    ledger = [json.loads(line) for line in ledger_path(run).read_text().splitlines()]
    assert [e["seq"] for e in ledger] == [1, 2] and ledger[1]["reseals"] == 1
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 0, out  # resealed in the open: consistent, and the history is in the folder


def test_report_edited_and_manifest_updated_to_match_is_caught(run: Path, capsys):
    report = run / "report.html"
    report.write_text(report.read_text().replace("Decision: NO-GO", "Decision: GO"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["report.html"]["sha256"] = __import__("hashlib").sha256(report.read_bytes()).hexdigest()
    manifest["files"]["report.html"]["bytes"] = report.stat().st_size
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1
    assert "SHA256SUMS: manifest.json: digest differs from the manifest.json on disk" in out
    assert "SHA256SUMS: report.html: digest differs from manifest.json" in out
    assert "is not the manifest the ledger sealed last for this run" in out
    # the careful forger regenerates SHA256SUMS too: the ledger still disagrees
    write_manifest(run, {k: v for k, v in manifest.items() if k not in ("algorithm", "files")})
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1 and "SHA256SUMS" not in out
    assert "is not the manifest the ledger sealed last for this run (#1" in out
    code, _, err = rehearse(capsys, "report", str(run))
    assert code == 2 and "the ledger sealed last" in err  # and rebuilding will not launder it


def test_sha256sums_edited_is_caught(run: Path, capsys):
    sums = run / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    forged = ["0" * 64 + line[64:] if line.endswith("  results.json") else line for line in lines]
    sums.write_text("\n".join(forged + ["f" * 64 + "  extra.txt"]) + "\n")
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1
    assert "SHA256SUMS: results.json: digest differs from manifest.json" in out
    assert "SHA256SUMS: extra.txt is listed but not in manifest.json" in out


@pytest.fixture(scope="module")
def pristine_resealed(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pristine run rebuilt once (intact) and resealed once (after the notebook was edited)."""
    outputs = tmp_path_factory.mktemp("resealed") / "outputs"
    shutil.copytree(pristine, outputs)
    run = next((outputs / "t").glob("2026*"))
    assert main(["report", str(run)]) == 0
    flip_fail_to_pass(run)
    assert main(["report", str(run), "--reseal", "--reason", "second look"]) == 0
    assert main(["verify", str(run)]) == 0
    return outputs


@pytest.fixture
def resealed(pristine_resealed: Path, tmp_path: Path) -> Path:
    outputs = tmp_path / "outputs"
    shutil.copytree(pristine_resealed, outputs)
    return next((outputs / "t").glob("2026*"))


def test_reseal_log_truncated_is_caught(resealed: Path, capsys):
    log = resealed / RESEAL_LOG
    log.write_text(log.read_text().splitlines()[0] + "\n")  # hide the reseal, keep the harmless rebuild
    code, out, _ = rehearse(capsys, "verify", str(resealed))
    assert code == 1
    assert "reseal.log: sha256 differs from the manifest" in out
    assert "manifest.2.json: an archived manifest that reseal.log does not name" in out
    assert "reseal.log: 1 entry but manifest.json was sealed after 2" in out
    log.unlink()
    code, out, _ = rehearse(capsys, "verify", str(resealed))
    assert code == 1 and "reseal.log is missing (manifest.json records 2 reseal(s))" in out


def test_reseal_log_entry_edited_is_caught(resealed: Path, capsys):
    log = resealed / RESEAL_LOG
    log.write_text(log.read_text().replace("second look", "routine rebuild"))
    code, out, _ = rehearse(capsys, "verify", str(resealed))
    assert code == 1
    assert "reseal.log line 2 (#2): its digest does not match its content (the entry was edited)" in out
    assert "reseal.log: sha256 differs from the manifest" in out


def test_archived_manifest_edited_is_caught(resealed: Path, capsys):
    old = resealed / "manifest.2.json"
    old.write_text(old.read_text().replace('"reseals": 1', '"reseals": 0'))
    code, out, _ = rehearse(capsys, "verify", str(resealed))
    assert code == 1 and "reseal.log #2: manifest.2.json differs from the digest the log recorded" in out


def test_ledger_entry_edited_is_caught(run: Path, capsys):
    ledger = ledger_path(run)
    entry = json.loads(ledger.read_text())
    entry["manifest_sha256"] = "a" * 64
    ledger.write_text(json.dumps(entry) + "\n")
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1
    assert "ledger t.ledger.jsonl line 1 (#1): its digest does not match its content" in out
    assert "is not the manifest the ledger sealed last for this run" in out


def test_ledger_entry_removed_is_caught(run: Path, capsys, tmp_path: Path):
    # two more runs of the same environment after ours: #1 ours, #2 and #3 others
    for rid in ("20261201T110000Z-bbbbbb", "20261201T120000Z-cccccc"):
        finalize(make_run(run.parent.parent, rid))
    ledger = ledger_path(run)
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join([lines[0], lines[2]]) + "\n")  # someone removes run #2
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1 and "ledger t.ledger.jsonl line 2 (#3): seq 3 where 2 was expected" in out
    assert "previous-entry digest does not match" in out
    ledger.write_text("\n".join(lines[1:]) + "\n")  # or removes ours (and the chain head is now #2)
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1 and f"run {run.name} is not in the ledger" in out


def test_ledger_rewritten_with_recomputed_chain_is_caught_by_the_ci_log_line(run: Path, capsys):
    printed = rehearse(capsys, "report", str(run))[1].strip().splitlines()[-1]  # what CI logged
    report = run / "report.html"
    report.write_text(report.read_text().replace("Decision: NO-GO", "Decision: GO"))
    write_manifest(run, {k: v for k, v in json.loads((run / "manifest.json").read_text()).items()
                         if k not in ("algorithm", "files")})
    ledger = ledger_path(run)  # the forger rebuilds the whole chain around the forged manifest
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    entries[-1]["manifest_sha256"] = __import__("hashlib").sha256((run / "manifest.json").read_bytes()).hexdigest()
    prev = "0" * 64
    for e in entries:
        e["prev_sha256"] = prev
        e["entry_sha256"] = prev = entry_digest(e)
    ledger.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert rehearse(capsys, "verify", str(run))[0] == 0  # consistent with itself: the folder alone cannot tell
    code, out, _ = rehearse(capsys, "verify", str(run), "--expect", printed)
    assert code == 1 and "is not the expected entry sha256:" in out


def test_run_not_in_any_ledger_is_not_intact_unless_asked_to_skip_it(run: Path, capsys, tmp_path: Path):
    elsewhere = tmp_path / "copied" / run.name
    shutil.copytree(run, elsewhere)
    code, out, _ = rehearse(capsys, "verify", str(elsewhere))
    assert code == 1 and "no ledger at" in out and "--no-ledger" in out
    code, out, _ = rehearse(capsys, "verify", str(elsewhere), "--ledger", str(ledger_path(run)))
    assert code == 0, out
    code, out, _ = rehearse(capsys, "verify", str(elsewhere), "--no-ledger")
    assert code == 0 and "ledger not checked" in out
    code, _, err = rehearse(capsys, "verify", str(elsewhere), "--ledger", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such ledger file" in err


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_signature_checks_with_the_right_key_and_fails_with_a_wrong_or_missing_one(tmp_path: Path, capsys,
                                                                                  monkeypatch):
    ci_key, ci_pub = _keypair(tmp_path, "ci")
    _, other_pub = _keypair(tmp_path, "other")
    monkeypatch.setenv("REHEARSAL_SIGNING_KEY", str(ci_key))
    summary = finalize(make_run(tmp_path / "outputs"))
    run = summary.run_dir
    assert summary.sealed.signed_by and (run / "manifest.sig").is_file()
    code, out, _ = rehearse(capsys, "verify", str(run), "--public-key", str(ci_pub))
    assert code == 0 and "signed by key sha256:" in out
    code, out, _ = rehearse(capsys, "verify", str(run), "--public-key", str(other_pub))
    assert code == 1 and "manifest.sig: the signature does not verify with the given public key" in out
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 0 and "manifest.sig present but not checked" in out
    signature = (run / "manifest.sig").read_bytes()
    (run / "manifest.sig").unlink()  # stripping the signature shows even without the public key
    code, out, _ = rehearse(capsys, "verify", str(run))
    assert code == 1 and "the ledger records this seal as signed by key sha256:" in out
    (run / "manifest.sig").write_bytes(signature)
    # the forger with write access but without the key: resealing in the open drops the signature
    monkeypatch.delenv("REHEARSAL_SIGNING_KEY")
    flip_fail_to_pass(run)
    assert rehearse(capsys, "report", str(run), "--reseal", "--reason", "no key here")[0] == 0
    code, out, _ = rehearse(capsys, "verify", str(run), "--public-key", str(ci_pub))
    assert code == 1 and "manifest.sig: missing: manifest.json is not signed" in out
    assert (run / "manifest.1.sig").is_file()  # the old signature is kept with the old manifest


def test_an_unusable_signing_key_stops_report_before_anything_is_written(run: Path, capsys, monkeypatch,
                                                                         tmp_path: Path):
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello")
    monkeypatch.setenv("REHEARSAL_SIGNING_KEY", str(bad))
    before = snapshot(run.parent)
    code, _, err = rehearse(capsys, "report", str(run))
    assert code == 2 and "REHEARSAL_SIGNING_KEY" in err and "not a usable PEM private key" in err
    assert snapshot(run.parent) == before
    code, _, err = rehearse(capsys, "verify", str(run), "--public-key", str(bad))
    assert code == 2 and "not a PEM public key" in err


def test_rehearse_run_prints_the_ledger_line_last(tmp_path: Path):
    """A real (tiny) `rehearse run`: two real kernels under papermill, nothing listening at the target."""
    project = tmp_path / "project"
    (project / "params").mkdir(parents=True)
    (project / "notebooks").mkdir()
    (project / "params" / "scratch.yaml").write_text(
        "name: scratch\nenvironment: {kind: staging}\ntarget: {base_url: 'http://127.0.0.1:9', timeout_s: 1}\n"
        "phases:\n  preflight: {enabled: false}\n  integrity: {enabled: true}\n")
    shutil.copy(ROOT / "rehearsal_lib" / "notebooks" / "13_decision.ipynb", project / "notebooks")
    params = new_code_cell('env = "scratch"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell('from rehearsal_lib.phase import open_phase, Outcome\nph = open_phase("integrity", env, '
                         'run_dir)\nph.run("integrity.first", "First", lambda: Outcome("pass", "fine"))')
    nb = new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(project / "notebooks" / "08_integrity.ipynb"))
    out = tmp_path / "out"
    env = {**os.environ, "REHEARSAL_PROJECT_DIR": str(project)}
    env.pop("REHEARSAL_SIGNING_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", "run", "scratch", "--outputs", str(out),
                           "--quiet"], cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert proc.stdout.strip(), proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ledger: scratch #1 manifest sha256:"), proc.stdout + proc.stderr
    [entry] = [json.loads(line) for line in (out / "scratch.ledger.jsonl").read_text().splitlines()]
    assert last.endswith(f"entry sha256:{entry['entry_sha256']}")
    run = next(p for p in (out / "scratch").iterdir() if p.is_dir())
    assert verify_run(run, expect_entry=last).intact


@pytest.mark.parametrize("name", ["manifest.json", "SHA256SUMS", "reseal.log", "ledger"])
@pytest.mark.parametrize("garbage", [b"", b"[]\n", b"\xff\x00 not text", b'{"seq": "x"}\n'])
def test_garbage_in_any_seal_file_is_a_problem_line_never_a_traceback(resealed: Path, capsys, name: str,
                                                                       garbage: bytes):
    target = ledger_path(resealed) if name == "ledger" else resealed / name
    target.write_bytes(garbage)
    code, out, err = rehearse(capsys, "verify", str(resealed))
    assert code == 1 and out.strip().endswith("problem(s)") and not err
    code, _, err = rehearse(capsys, "report", str(resealed))
    assert code == 2 and "no longer matches its seal" in err
