"""`rehearse trend ENV`: the offline page of key figures across real (small) run folders, each reported by the code a
run uses (executed notebook -> collect -> results.json); an unreadable run is listed, never a crash."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output
from plotly.offline import get_plotlyjs

from rehearsal_lib.cli import main
from rehearsal_lib.evidence import collect, write_results_json
from rehearsal_lib.results import Check
from rehearsal_lib.runrecord import RunRecord, write_run_record

NOTEBOOKS = {"load": "06_load.ipynb", "backup_recovery": "11_backup_recovery.ipynb", "faults": "07_faults.ipynb"}


def _check(cid: str, status: str = "pass", **metrics: float) -> Check:
    return Check(id=cid, phase=cid.split(".")[0], title=cid, status=status, severity="blocker", observed=status,
                 metrics=metrics)


def _run(outputs: Path, run_id: str, checks: list[Check]) -> Path:
    run = outputs / "staging" / run_id
    (run / "notebooks").mkdir(parents=True)
    phases = []
    for phase, name in NOTEBOOKS.items():
        mine = [c for c in checks if c.phase == phase]
        if mine:
            outs = [new_output("display_data", data=c.bundle()) for c in mine]
            nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=outs)]), str(run / "notebooks" / name))
            phases.append({"name": phase, "outcome": "ok", "notebook": name})
    stamp = f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:00:00+00:00"
    write_run_record(run, RunRecord.model_validate({"env": "staging", "run_id": run_id, "started_at": stamp,
                                                    "finished_at": stamp, "phases": phases}))
    write_results_json(collect(run))
    return run


def _figures(page: str) -> dict[str, dict]:
    """Each plotly figure of the page by its title: {trace name: y values}."""
    out = {}
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*(\{.*?\})\s*,\s*\{", page, re.S):
        traces, layout = json.loads(m.group(1)), json.loads(m.group(2))
        out[layout["title"]["text"]] = {t["name"]: t["y"] for t in traces}
    return out


def test_trend_page_shows_status_p95_rto_restore_and_recovery_across_runs_and_lists_an_unreadable_one(tmp_path,
                                                                                                      capsys):
    outputs = tmp_path / "outputs"
    _run(outputs, "20261201T100000Z-aaaaaa", [
        _check("load.p95.sessions", p95_ms=120.0, p99_ms=200.0), _check("load.p95.answers", "fail", p95_ms=900.0),
        _check("backup_recovery.restart.rto", rto_s=1.5, rto_max_s=30),
        _check("backup_recovery.restore.restored", restore_s=0.3)])
    broken = outputs / "staging" / "20261201T110000Z-bbbbbb"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text('{"run_id": "20261201T110000Z-bbbbbb", "checks": [')
    _run(outputs, "20261201T120000Z-cccccc", [
        _check("load.p95.sessions", p95_ms=80.0), _check("load.p95.answers", p95_ms=150.0),
        _check("backup_recovery.restart.rto", "fail", rto_s=45.0, rto_max_s=30),
        _check("backup_recovery.restore.restored", restore_s=0.4),
        _check("faults.db_down.recovered", time_to_recover_ms=2500.0, requests=40),
        _check("faults.api_kill.recovery", "error", recovery_s=4.0)])
    out = tmp_path / "trend.html"

    assert main(["trend", "staging", "--outputs", str(outputs), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "trend of staging: 2 run(s)" in said and "unreadable: 20261201T110000Z-bbbbbb" in said
    page = out.read_text()
    assert page.count(get_plotlyjs()[:200]) == 1  # plotly.js inlined once: the page works offline
    assert "<script src=" not in page and "<script type=\"text/javascript\" src=" not in page
    figs = _figures(page)
    assert figs["Checks by status per run"] == {"pass": [3, 4], "fail": [1, 1], "error": [0, 1]}
    assert figs["p95 per load scenario"] == {"answers": [900.0, 150.0], "sessions": [120.0, 80.0]}
    assert figs["Backup & recovery: RTO and restore time"] == {"RTO: restart until ready": [1.5, 45.0],
                                                               "restore into a scratch database": [0.3, 0.4]}
    assert figs["Recovery times"] == {"faults.api_kill.recovery · recovery_s": [None, 4.0],
                                      "faults.db_down.recovered · time_to_recover_ms": [None, 2.5]}
    assert "Unreadable runs (1)" in page and "20261201T110000Z-bbbbbb" in page and "not valid JSON" in page


def test_trend_of_an_environment_without_runs_says_so(tmp_path, capsys):
    out = tmp_path / "empty.html"
    assert main(["trend", "nothing", "--outputs", str(tmp_path), "--out", str(out)]) == 0
    page = out.read_text()
    assert "0 run(s)" in page and "Nothing to show: no load.p95" in page
    assert main(["trend", "../etc", "--outputs", str(tmp_path)]) == 2
