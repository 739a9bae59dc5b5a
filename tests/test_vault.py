"""The release vault: `rehearse archive RUN_DIR DEST` on a real sealed run folder, to a local folder and to fsspec's
in-memory filesystem (a real fsspec backend); a folder that does not verify is refused, and an archive that does not
read back intact is a failure. No server, no kernel."""

from __future__ import annotations

import shutil
import tarfile
import uuid
from pathlib import Path

import fsspec
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.cli import main
from rehearsal_lib.evidence import collect, sha256_file, write_results_json
from rehearsal_lib.results import Check
from rehearsal_lib.runrecord import RunRecord, write_run_record
from rehearsal_lib.seal import seal, verify_run

RUN_ID = "20261202T100000Z-aaaaaa"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """outputs/ holding one run folder sealed by seal() (manifest, SHA256SUMS, ledger), as a run leaves it."""
    outputs = tmp_path_factory.mktemp("vault") / "outputs"
    run = outputs / "t" / RUN_ID
    (run / "notebooks").mkdir(parents=True)
    (run / "attachments" / "plan").mkdir(parents=True)
    (run / "attachments" / "plan" / "plan.json").write_text('{"resource_changes": []}\n')
    check = Check(id="integrity.index.idx", phase="integrity", title="index exists", status="pass",
                  severity="major", expected="present", observed="present")
    nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", data=check.bundle())])]),
                   str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({
        "env": "t", "run_id": RUN_ID, "started_at": "2026-12-02T10:00:00+00:00", "finished_at": "2026-12-02T10:00:01Z",
        "phases": [{"name": "integrity", "outcome": "ok", "duration_s": 1.0}]}))
    write_results_json(collect(run))
    seal(run)
    assert verify_run(run).intact
    return outputs


@pytest.fixture
def run(sealed: Path, tmp_path: Path) -> Path:
    """A fresh copy of the sealed outputs/ (run folder and ledger) for one test."""
    shutil.copytree(sealed, tmp_path / "outputs")
    return tmp_path / "outputs" / "t" / RUN_ID


def _name(run: Path) -> str:
    return f"t-{RUN_ID}-{sha256_file(run / 'manifest.json')[:12]}.tar.gz"


def test_archive_to_a_local_folder_is_one_tar_gz_named_with_the_digest_that_verifies_on_its_own(run, tmp_path,
                                                                                                capsys):
    vault = tmp_path / "vault" / "releases"
    assert main(["archive", str(run), str(vault)]) == 0
    out = capsys.readouterr().out
    assert [p.name for p in vault.iterdir()] == [_name(run)]
    assert f"wrote: {vault / _name(run)}" in out and "verified: read back" in out and "intact" in out
    assert sha256_file(run / "manifest.json") in out
    # an auditor with only the archive: unpack and verify, ledger included
    with tarfile.open(vault / _name(run)) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert "t.ledger.jsonl" in names and f"t/{RUN_ID}/attachments/plan/plan.json" in names
    assert verify_run(tmp_path / "unpacked" / "t" / RUN_ID).intact
    # the vault keeps what it has: a second archive of the same seal is not rewritten, the copy there is verified
    before = (vault / _name(run)).stat().st_mtime_ns
    assert main(["archive", str(run), str(vault)]) == 0
    assert "already in the vault" in capsys.readouterr().out
    assert (vault / _name(run)).stat().st_mtime_ns == before


def test_archive_to_an_fsspec_url_reads_it_back_from_there(run, capsys):
    url = f"memory://rehearsal-vault-{uuid.uuid4().hex[:8]}/staging"
    assert main(["archive", str(run), url]) == 0
    out = capsys.readouterr().out
    fs = fsspec.filesystem("memory")
    listed = [p.rsplit("/", 1)[-1] for p in fs.ls(url.removeprefix("memory://"), detail=False)]
    assert listed == [_name(run)]
    assert f"wrote: {url}/{_name(run)}" in out and f"verified: read back from {url}" in out


def test_a_folder_that_does_not_verify_is_refused_and_nothing_is_written(run, tmp_path, capsys):
    nb = run / "notebooks" / "08_integrity.ipynb"
    nb.write_text(nb.read_text().replace("present", "absent"))
    vault = tmp_path / "vault"
    assert main(["archive", str(run), str(vault)]) == 1
    out = capsys.readouterr().out
    assert "refused, it does not verify" in out and "notebooks/08_integrity.ipynb: sha256 differs" in out
    assert not vault.exists()
    url = f"memory://rehearsal-vault-{uuid.uuid4().hex[:8]}"
    assert main(["archive", str(run), url]) == 1
    assert not fsspec.filesystem("memory").exists(url.removeprefix("memory://"))


def test_an_archive_in_the_vault_that_does_not_verify_is_a_failure(run, tmp_path, capsys):
    """A damaged archive already under the run's name: reading back from DEST says so (exit 1), it is not
    replaced behind anyone's back."""
    vault = tmp_path / "vault"
    assert main(["archive", str(run), str(vault)]) == 0
    capsys.readouterr()
    damaged = tmp_path / "damaged"
    with tarfile.open(vault / _name(run)) as tar:
        tar.extractall(damaged, filter="data")
    (damaged / "t" / RUN_ID / "attachments" / "plan" / "plan.json").write_text('{"resource_changes": ["edited"]}\n')
    with tarfile.open(vault / _name(run), "w:gz") as tar:
        tar.add(damaged / "t", arcname="t")
        tar.add(damaged / "t.ledger.jsonl", arcname="t.ledger.jsonl")
    assert main(["archive", str(run), str(vault)]) == 1
    out = capsys.readouterr().out
    assert "already in the vault" in out and "attachments/plan/plan.json: sha256 differs from the manifest" in out


def test_archive_usage_errors_exit_2(tmp_path, capsys):
    assert main(["archive", str(tmp_path), str(tmp_path / "vault")]) == 2
    assert "not a run folder" in capsys.readouterr().err
