"""Evidence as pandas DataFrames for an operator in a notebook: past runs, SQL rows, load samples."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.evidence import collect, write_results_json
from rehearsal_lib.history import COLUMNS, load_runs
from rehearsal_lib.load.engine import LoadSpec, Scenario, run_load
from rehearsal_lib.load.reference_server import free_port, reference_server
from rehearsal_lib.phases.load.checks import LoadRun, StageRun
from rehearsal_lib.phases.load.params import LoadStage
from rehearsal_lib.probes.sql import MARKER, query_frame, read_only_engine
from rehearsal_lib.results import Check
from rehearsal_lib.runrecord import RunRecord, write_run_record

pytestmark = pytest.mark.integration  # reference servers; nothing here is judged on time


def _check(cid: str, status: str, severity: str = "blocker") -> Check:
    return Check(id=cid, phase=cid.split(".")[0], title=f"title of {cid}", status=status, severity=severity,
                 observed=f"observed {status}", duration_s=0.25)


def _run(outputs: Path, run_id: str, started: str, checks: list[Check]) -> Path:
    """A reported run folder, written by the same code a real run uses (notebook -> collect -> results.json)."""
    run = outputs / "staging" / run_id
    (run / "notebooks").mkdir(parents=True)
    outs = [new_output("display_data", data=c.bundle()) for c in checks]
    nb = new_notebook(cells=[new_code_cell("x", outputs=outs)])
    nbformat.write(nb, str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({
        "env": "staging", "run_id": run_id, "started_at": started, "finished_at": started,
        "phases": [{"name": "integrity", "outcome": "ok"}]}))
    write_results_json(collect(run))
    return run


def test_load_runs_gives_every_check_of_every_run_and_names_an_unreadable_one(tmp_path, caplog):
    outputs = tmp_path / "outputs"
    _run(outputs, "20261201T100000Z-aaaaaa", "2026-12-01T10:00:00Z",
         [_check("integrity.orphans", "fail"), _check("integrity.tables", "pass", "major")])
    truncated = outputs / "staging" / "20261201T110000Z-bbbbbb"
    truncated.mkdir(parents=True)
    (truncated / "results.json").write_text('{"run_id": "20261201T110000Z-bbbbbb", "checks": [{"id": ')
    unreported = outputs / "staging" / "20261201T115000Z-dddddd"
    unreported.mkdir(parents=True)
    _run(outputs, "20261201T120000Z-cccccc", "2026-12-01T12:00:00Z",
         [_check("integrity.orphans", "pass"), _check("integrity.tables", "pass", "major")])
    (outputs / "other").mkdir()  # another environment's folder is not read

    with caplog.at_level(logging.WARNING, logger="rehearsal_lib.history"):
        df = load_runs("staging", outputs=outputs)

    assert list(df.columns) == COLUMNS
    assert len(df) == 6  # 2 + 1 (truncated) + 1 (unreported) + 2
    good = df[df.problem.isna()]
    assert list(good.run_id) == ["20261201T100000Z-aaaaaa"] * 2 + ["20261201T120000Z-cccccc"] * 2
    assert list(good.check_id) == ["integrity.orphans", "integrity.tables"] * 2
    assert list(good.status) == ["fail", "pass", "pass", "pass"]
    assert set(good.decision) == {"NO-GO", "GO"} and list(good.decision)[:2] == ["NO-GO", "NO-GO"]
    assert list(good.severity) == ["blocker", "major"] * 2 and set(good.phase) == {"integrity"}
    assert list(good.observed)[0] == "observed fail" and good.duration_s.tolist() == [0.25] * 4
    assert good.started_at.iloc[0] == pd.Timestamp("2026-12-01T10:00:00Z")
    assert good.run_dir.iloc[0] == str(outputs / "staging" / "20261201T100000Z-aaaaaa")
    bad = df[df.problem.notna()].set_index("run_id")
    assert "not valid JSON" in bad.loc["20261201T110000Z-bbbbbb", "problem"]
    assert "results.json" in bad.loc["20261201T115000Z-dddddd", "problem"]
    assert pd.isna(bad.loc["20261201T110000Z-bbbbbb", "check_id"])
    assert sum("skipping" in r.message for r in caplog.records) == 2
    # what an operator asks: which checks failed across runs
    assert df[df.status == "fail"].check_id.tolist() == ["integrity.orphans"]


def test_load_runs_of_an_environment_without_runs_is_empty_with_the_columns(tmp_path):
    df = load_runs("nothing", outputs=tmp_path)
    assert df.empty and list(df.columns) == COLUMNS


@pytest.mark.integration  # the sandbox's PostgreSQL
def test_query_frame_gives_rows_as_a_dataframe_on_the_read_only_engine(sandbox):
    engine = read_only_engine(sandbox.db_url, statement_timeout_ms=5000)
    try:
        df = query_frame(engine, "SELECT id, title FROM exams ORDER BY id")
        assert list(df.columns) == ["id", "title"] and len(df) >= 1 and df.id.is_monotonic_increasing
        typed = query_frame(engine, "SELECT now() AS at, 1.5::numeric AS n, :x AS x, "
                                    "current_setting('transaction_read_only') AS ro, "
                                    "(SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS q",
                            {"x": "param"})
        assert isinstance(typed.at[0, "at"], dt.datetime | pd.Timestamp)
        assert typed.at[0, "n"] == decimal.Decimal("1.5") and typed.at[0, "x"] == "param"
        assert typed.at[0, "ro"] == "on" and MARKER in typed.at[0, "q"]  # the read-only, marked engine
        assert len(query_frame(engine, "SELECT generate_series(1, 50) AS i", limit=7)) == 7
        empty = query_frame(engine, "SELECT id FROM exams WHERE false")
        assert empty.empty and list(empty.columns) == ["id"]
    finally:
        engine.dispose()


@pytest.mark.integration  # a reference server subprocess
def test_load_samples_as_a_dataframe_per_request_and_per_stage():
    with reference_server() as url:
        spec = LoadSpec(url, [Scenario("ok", "/"), Scenario("bad", "/status/500", expect_status=[200])],
                        model="open", rate=100, duration_s=1.0)
        first, second = run_load(spec), run_load(spec)
    refused = run_load(LoadSpec(f"http://127.0.0.1:{free_port()}", [Scenario("s", "/")], model="closed", users=1,
                                duration_s=0.3))
    df = first.samples_frame()
    assert len(df) == first.sent and {"scenario", "offset_s", "latency_ms", "status", "outcome", "answered",
                                      "lag_ms"} <= set(df.columns)
    stats = {s.name: s for s in first.scenario_stats()}
    assert (df.scenario == "ok").sum() == stats["ok"].count and (df.scenario == "bad").sum() == stats["bad"].count
    assert set(df[df.scenario == "bad"].outcome) == {"500"} and df.answered.all()
    assert df[df.scenario == "ok"].latency_ms.quantile(0.5) == pytest.approx(stats["ok"].p50_ms, rel=0.25, abs=1)
    failed = refused.samples_frame()
    assert len(failed) >= 1 and set(failed.outcome) == {"error"} and not failed.answered.any()
    assert "lag_ms" not in failed.columns  # the closed model has no intended send times

    stage = LoadStage.model_construct(name="steady")  # only its name is read here
    run = LoadRun(stages=[StageRun(stage, 0.0, first), StageRun(stage.model_copy(update={"name": "spike"}), 5.0,
                                                                  second), StageRun(stage, 9.0, None, "refused")])
    frames = run.samples_frame()
    assert len(frames) == first.sent + second.sent and frames.columns[0] == "stage"
    assert frames[frames.stage == "spike"].offset_s.min() >= 5.0 > frames[frames.stage == "steady"].offset_s.max()
    assert list(run.connections_frame().columns) == ["t_s", "total", "app", "active"]
