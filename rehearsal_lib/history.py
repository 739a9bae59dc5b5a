"""Past runs of an environment as one pandas DataFrame, for a notebook: how each check fared over time.

    from rehearsal_lib.history import load_runs
    df = load_runs("staging")
    df[df.status != "pass"].groupby("check_id").size()          # the checks that fail most often
    df.pivot_table(index="check_id", columns="run_id", values="status", aggfunc="first")

A run folder whose ``results.json`` cannot be read (truncated, edited, not yet written by a run that is
still going or crashed) gives one row naming the problem in ``problem``, and a logged warning; the other
runs are still read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal_lib.results import UnreadableFile, read_json_file

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ["run_id", "started_at", "decision", "phase", "check_id", "title", "status", "severity", "duration_s",
           "observed", "metrics", "run_dir", "problem"]


def _run_rows(run: Path) -> list[dict[str, Any]]:
    """One row per check of a run folder; UnreadableFile when its results cannot be read."""
    path = run / "results.json"
    if not path.is_file():
        raise UnreadableFile(path, "missing: the run is still going, crashed or was never reported "
                                   f"(`rehearse report {run}`)")
    data = read_json_file(path)
    checks = data.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise UnreadableFile(path, "'checks' is not a list of objects")
    head = {"run_id": data.get("run_id") or run.name, "started_at": data.get("started_at"),
            "decision": data.get("decision"), "run_dir": str(run), "problem": None}
    if not checks:
        return [{**head, "problem": "no checks recorded"}]
    return [{**head, "phase": c.get("phase"), "check_id": c.get("id"), "title": c.get("title"),
             "status": c.get("status"), "severity": c.get("severity"), "duration_s": c.get("duration_s"),
             "observed": c.get("observed"), "metrics": c.get("metrics") or {}} for c in checks]


def load_runs(env: str, outputs: Path | str | None = None) -> pd.DataFrame:
    """Every check of every past run of ``env`` (folders under ``outputs/<env>/``, default the project's
    outputs folder or ``$REHEARSAL_OUTPUTS``), one row each, oldest run first; columns in ``COLUMNS``.

    ``started_at`` is a UTC timestamp; ``problem`` is empty for a readable run and names the file and
    what is wrong with it otherwise (that run's check columns are then empty). Never raises for a
    broken folder; an environment with no runs gives an empty frame with the same columns."""
    import pandas as pd

    if outputs is None:
        from rehearsal_lib.runner import outputs_root

        outputs = outputs_root()
    folder = Path(outputs) / env
    runs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    rows: list[dict[str, Any]] = []
    for run in runs:
        try:
            rows.extend(_run_rows(run))
        except UnreadableFile as exc:
            log.warning("load_runs: skipping %s", exc)
            rows.append({"run_id": run.name, "run_dir": str(run), "problem": str(exc)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["started_at"] = pd.to_datetime(df["started_at"], utc=True, errors="coerce")
    df["duration_s"] = pd.to_numeric(df["duration_s"], errors="coerce")
    return df
