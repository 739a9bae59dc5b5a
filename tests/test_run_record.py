"""run.json as a RunRecord (rehearsal_lib/runrecord.py): a real run's file reads and writes back
unchanged, keys it does not know are kept, a partial file from a crashed run still reports `crashed`,
and a file of the wrong shape is one line naming the file and the key (exit 2), never a traceback.

`run_records/sandbox.run.json` is the run.json of a real `rehearse run sandbox` (healthy variant,
GO), copied as written (it holds no secret: the runner scrubs it and the sandbox's passwords never
reach it)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.cli import main
from rehearsal_lib.evidence import collect
from rehearsal_lib.results import Check, UnreadableFile
from rehearsal_lib.runrecord import PhaseRecord, Resumption, RunRecord, read_run_record, write_run_record

HERE = Path(__file__).resolve().parent
REAL = HERE / "run_records" / "sandbox.run.json"


def rehearse(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_folder(outputs: Path, record: dict, notebooks: tuple[str, ...] = ("01_preflight.ipynb",)) -> Path:
    """outputs/sandbox/<run id>/ with `record` as run.json and one passing check per executed notebook."""
    run = outputs / "sandbox" / str(record.get("run_id") or "20261202T000000Z-000000")
    (run / "notebooks").mkdir(parents=True)
    (run / "logs").mkdir()
    for name in notebooks:
        phase = name.split("_", 1)[1].removesuffix(".ipynb")
        ok = Check(id=f"{phase}.ok", phase=phase, title="ok", status="pass", severity="major")
        nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", data=ok.bundle())])]),
                       str(run / "notebooks" / name))
    (run / "run.json").write_text(json.dumps(record, indent=2))
    return run


@pytest.fixture(autouse=True)
def _no_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REHEARSAL_SIGNING_KEY", raising=False)


def test_a_real_run_json_reads_into_its_typed_fields_and_writes_back_the_same_json(tmp_path: Path):
    raw = json.loads(REAL.read_text())
    shutil.copy(REAL, tmp_path / "run.json")
    record = read_run_record(tmp_path)
    assert record.env == "sandbox" and record.run_id == raw["run_id"] and record.finished_at == raw["finished_at"]
    assert [p.name for p in record.phases][:2] == ["preflight", "migrations"] and record.phases[-1].name == "decision"
    assert all(isinstance(p, PhaseRecord) and p.outcome == "ok" and p.notebook for p in record.phases)
    assert record.lock is not None and record.lock.files == raw["lock"]["files"]
    assert record.sandbox is not None and record.sandbox.variant == "default" and record.sandbox.started_by_run
    assert record.target is not None and record.target.base_url == raw["target"]["base_url"]
    assert record.target_identity == raw["target_identity"] and record.tool_versions == raw["tool_versions"]
    assert record.runner_pid == raw["runner_pid"] and record.duration_s == raw["duration_s"]
    assert record.interrupted is False and record.resumed == [] and record.secret_found_in == []
    assert record.gate_policy().warn_is_condition is False
    assert not record.model_extra, f"keys the model does not describe: {sorted(record.model_extra or {})}"
    write_run_record(tmp_path, record)
    written = (tmp_path / "run.json").read_text()
    assert json.loads(written) == raw and list(json.loads(written)) == list(raw)  # same keys, values, order
    assert written == REAL.read_text().rstrip("\n")  # byte for byte, as the runner wrote it
    assert not (tmp_path / "run.json.tmp").exists()


def test_unknown_keys_of_an_older_or_newer_rehearse_are_kept_and_the_report_still_renders(
        tmp_path: Path, capsys: pytest.CaptureFixture):
    raw = json.loads(REAL.read_text())
    raw["phases"] = [p for p in raw["phases"] if p["name"] == "preflight"]
    raw["future_key"] = {"anything": [1, 2]}
    raw["phases"][0]["attempts"] = 2
    raw["resumed"] = [{"at": "2026-12-02T00:30:00+00:00", "by": "dana", "after": "it was interrupted",
                       "phases": ["preflight"], "kept": [], "runner_build": "x"}]
    run = run_folder(tmp_path / "outputs", raw)
    record = read_run_record(run)
    assert record.model_extra == {"future_key": {"anything": [1, 2]}}
    assert record.phases[0].model_extra == {"attempts": 2} and record.resumed[0].model_extra == {"runner_build": "x"}
    record.secret_found_in.append("logs/x.log")  # a default list changed in place is written too
    record.resumed.append(Resumption(at="2026-12-02T01:00:00+00:00", phases=["decision"]))
    write_run_record(run, record)
    again = json.loads((run / "run.json").read_text())
    assert again["future_key"] == {"anything": [1, 2]} and again["phases"][0]["attempts"] == 2
    assert again["resumed"][0]["runner_build"] == "x" and again["secret_found_in"] == ["logs/x.log"]
    assert again["resumed"][1] == {"at": "2026-12-02T01:00:00+00:00", "phases": ["decision"]}  # only what was set
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 0 and err == "", err
    assert out.startswith("NO-GO: ")  # the secret finding is a blocker
    results = json.loads((run / "results.json").read_text())
    assert results["resumed"][0]["runner_build"] == "x"  # results.json carries the entries as recorded
    assert "resumed at 2026-12-02T00:30:00+00:00 by dana after it was interrupted" in (run / "report.html").read_text()


def test_a_crashed_runs_partial_run_json_gives_a_crashed_report(tmp_path: Path, capsys: pytest.CaptureFixture):
    """What the runner leaves when it is killed mid-run: no finished_at, duration_s, interrupted,
    target_identity...; the phases pending or running. Missing keys are defaults, not errors."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    raw = json.loads(REAL.read_text())
    keep = ("env", "run_id", "params_file", "started_at", "gate", "phases", "heartbeat_at")
    partial = {k: raw[k] for k in keep} | {"runner_pid": dead.pid, "runner_host": socket.gethostname()}
    partial["phases"] = [{**p, "outcome": "ok"} if p["name"] == "preflight" else
                         {**p, "outcome": "running", "duration_s": 0.0} if p["name"] == "migrations" else
                         {**p, "outcome": "pending", "duration_s": 0.0} for p in raw["phases"]]
    run = run_folder(tmp_path / "outputs", partial)
    record = read_run_record(run)
    assert record.finished_at is None and record.duration_s is None and record.target is None
    assert record.interrupted is False and record.tool_versions == {} and record.resumed == []
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 0 and err == "", err
    assert out.startswith(f"CRASHED: the run crashed at about {raw['heartbeat_at']} (runner pid {dead.pid} on ")
    assert "phase(s) migrations did not finish; phase(s) webhooks, jobs" in out
    results = json.loads((run / "results.json").read_text())
    assert results["decision"] == "NO-GO" and results["crashed"]["did_not_finish"] == ["migrations"]
    assert results["duration_s"] is None and results["target"] is None and results["resumed"] == []
    phases = {p["name"]: p for p in results["phases"]}
    assert phases["preflight"]["outcome"] == "ok" and phases["migrations"]["outcome"] == "error"
    assert phases["decision"]["outcome"] == "not_run"
    assert "Crashed" in (run / "report.html").read_text()
    on_disk = json.loads((run / "run.json").read_text())
    assert set(on_disk) == set(partial)  # the report added no key to the crashed run's record


WRONG_SHAPES = [
    ({"phases": "preflight"}, "key phases: Input should be a valid list (found a string)"),
    ({"phases": [{"outcome": "ok"}]}, "key phases[0].name: Field required"),
    ({"phases": [{"name": "preflight", "duration_s": "long"}]}, "key phases[0].duration_s: Input should be a valid "
                                                                "number"),
    ({"resumed": {"at": "x"}}, "key resumed: Input should be a valid list (found an object)"),
    ({"gate": {"waivers": "all"}}, "key gate.waivers: Input should be a valid list (found a string)"),
    ({"runner_pid": [1]}, "key runner_pid: Input should be a valid integer (found a list)"),
]


@pytest.mark.parametrize(("change", "problem"), WRONG_SHAPES, ids=[p.split(":")[0] for _c, p in WRONG_SHAPES])
def test_a_run_json_of_the_wrong_shape_is_one_line_naming_the_file_and_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture, change: dict, problem: str):
    raw = json.loads(REAL.read_text())
    raw["phases"] = [p for p in raw["phases"] if p["name"] == "preflight"]
    run = run_folder(tmp_path / "outputs", raw | change)
    path = run / "run.json"
    with pytest.raises(UnreadableFile) as caught:
        read_run_record(run)
    assert caught.value.path == path
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 2 and out == ""
    line = err.strip()
    assert line.startswith(f"rehearse: {path}: unreadable: not a run record: {problem}") and "\n" not in line, line
    assert not (run / "report.html").exists()  # nothing was derived from it
    code, out, err = rehearse(capsys, "list", "sandbox", "--outputs", str(tmp_path / "outputs"))
    assert code == 0 and "(unreadable)" in out and "run.json: not a run record: key " in out, out + err


def test_verify_of_a_sealed_folder_whose_run_json_was_reshaped_names_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture):
    """As for a truncated run.json: a problem of the folder (exit 1), not a usage error."""
    raw = json.loads(REAL.read_text())
    raw["phases"] = [p for p in raw["phases"] if p["name"] == "preflight"]
    run = run_folder(tmp_path / "outputs", raw)
    code, out, err = rehearse(capsys, "report", str(run))
    assert code == 0, err
    assert collect(run).record.run_id == raw["run_id"]
    (run / "run.json").write_text(json.dumps(raw | {"phases": {"preflight": "ok"}}))
    code, out, err = rehearse(capsys, "verify", str(run), "--no-ledger")
    assert code == 1 and "run.json: sha256 differs from the manifest" in out and "Traceback" not in err, out + err


def test_an_empty_record_is_what_a_folder_without_run_json_reads_as(tmp_path: Path):
    record = read_run_record(tmp_path)
    assert record == RunRecord() and not record.recorded
    with pytest.raises(UnreadableFile, match="run.json: unreadable: No such file"):
        read_run_record(tmp_path, required=True)
    write_run_record(tmp_path, RunRecord(env="t", phases=[PhaseRecord(name="smoke", outcome="pending")]))
    assert json.loads((tmp_path / "run.json").read_text()) == {
        "env": "t", "phases": [{"name": "smoke", "outcome": "pending"}]}
    assert read_run_record(tmp_path).recorded
