"""`rehearse trend ENV`: one small offline HTML page of the key figures across an environment's runs.

Read with `history.load_runs` (pandas) from every run folder's results.json, oldest first:

- checks by status per run (stacked bars);
- p95 per load scenario: the `load.p95.<scenario>` checks' `p95_ms` metric;
- backup & recovery: RTO (`backup_recovery.restart.rto`, `rto_s`) and restore time
  (`backup_recovery.restore.restored`, `restore_s`);
- recovery times: every metric of any check whose name holds `recover` (`recovery_s`, `time_to_recover_ms`…),
  as fault-injection phases record them, one line per check and metric, in seconds.

A run whose results cannot be read is listed with the problem, never a crash. plotly.js is inlined once, as in
report.html: the page opens in any browser without a network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal_lib.config import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

RTO = ("backup_recovery.restart.rto", "rto_s")
RESTORE = ("backup_recovery.restore.restored", "restore_s")
P95 = re.compile(r"^load\.p95\.(?P<scenario>.+)$")
RECOVER = re.compile(r"recover", re.IGNORECASE)
STATUS_ORDER = ["pass", "warn", "fail", "error", "skip", "manual"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def metric_points(df: pd.DataFrame, pick: Callable[[str, str], str | None]) -> pd.DataFrame:
    """(run_id, series, value) for every numeric metric of every check where `pick(check_id, key)` names a
    series (None: not wanted). Values of keys ending in `_ms` are kept as they are; the caller labels units."""
    import pandas as pd

    rows = []
    for r in df[df.problem.isna()].itertuples(index=False):
        metrics = r.metrics if isinstance(r.metrics, dict) else {}
        for key, value in metrics.items():
            series = pick(str(r.check_id), str(key))
            number = _number(value)
            if series is not None and number is not None:
                rows.append({"run_id": r.run_id, "series": series, "value": number})
    return pd.DataFrame(rows, columns=["run_id", "series", "value"])


def _p95(check_id: str, key: str) -> str | None:
    m = P95.match(check_id)
    return m.group("scenario") if m and key == "p95_ms" else None


def _backup(check_id: str, key: str) -> str | None:
    if (check_id, key) == RTO:
        return "RTO: restart until ready"
    if (check_id, key) == RESTORE:
        return "restore into a scratch database"
    return None


def _recovery(check_id: str, key: str) -> str | None:
    if not RECOVER.search(key) or not (key.endswith("_s") or key.endswith("_ms")):
        return None
    return f"{check_id} · {key}"


def _recovery_points(df: pd.DataFrame) -> pd.DataFrame:
    """Recovery times in seconds (a `_ms` metric divided by 1000)."""
    points = metric_points(df, _recovery)
    if not points.empty:
        ms = points.series.str.endswith("_ms")
        points.loc[ms, "value"] = points.loc[ms, "value"] / 1000.0
    return points


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Checks per run (rows, oldest first) and status (columns, in STATUS_ORDER)."""
    good = df[df.problem.isna()]
    runs = list(dict.fromkeys(good.run_id))
    table = good.pivot_table(index="run_id", columns="status", values="check_id", aggfunc="count", fill_value=0)
    cols = [s for s in STATUS_ORDER if s in table.columns] + [s for s in table.columns if s not in STATUS_ORDER]
    return table.reindex(index=runs, columns=cols, fill_value=0)


def _line_figure(points: pd.DataFrame, runs: list[str], title: str, unit: str) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for series, part in points.groupby("series", sort=True):
        by_run = dict(zip(part.run_id, part.value, strict=False))
        fig.add_trace(go.Scatter(x=runs, y=[by_run.get(r) for r in runs], mode="lines+markers", name=str(series),
                                 connectgaps=False))
    fig.update_layout(title=title, yaxis_title=unit, xaxis_title="run", height=360, margin={"t": 50, "b": 40},
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": runs},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def _status_figure(counts: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    from rehearsal_lib.results import STATUS_STYLE

    fig = go.Figure()
    runs = list(counts.index)
    for status in counts.columns:
        color = STATUS_STYLE.get(status, ("#57606a", "", ""))[0]
        fig.add_trace(go.Bar(x=runs, y=list(counts[status]), name=str(status), marker_color=color))
    fig.update_layout(barmode="stack", title="Checks by status per run", yaxis_title="checks", height=360,
                      margin={"t": 50, "b": 40}, xaxis={"type": "category"}, legend={"orientation": "h", "y": -0.3})
    return fig


def trend_html(env: str, df: pd.DataFrame, source: Path) -> tuple[str, dict[str, Any]]:
    """The page and what it shows ({runs, unreadable, sections: {title: number of series}})."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    good = df[df.problem.isna()]
    runs = list(dict.fromkeys(good.run_id))
    bad = df[df.problem.notna()].drop_duplicates("run_id")
    sections: list[tuple[str, Any, str]] = []  # (title, figure or None, note when there is none)
    info: dict[str, Any] = {"runs": len(runs), "unreadable": list(bad.run_id), "sections": {}}
    if runs:
        sections.append(("Checks by status", _status_figure(status_counts(df)), ""))
    for title, points, unit, what in (
            ("p95 per load scenario", metric_points(df, _p95), "ms", "no load.p95.<scenario> check with p95_ms"),
            ("Backup & recovery: RTO and restore time", metric_points(df, _backup), "s",
             "no backup_recovery.restart.rto (rto_s) or backup_recovery.restore.restored (restore_s) recorded"),
            ("Recovery times", _recovery_points(df), "s",
             "no check recorded a recovery time (a metric named *recover*_s or *recover*_ms)")):
        info["sections"][title] = int(points.series.nunique()) if not points.empty else 0
        sections.append((title, _line_figure(points, runs, title, unit) if not points.empty else None,
                         f"Nothing to show: {what} in these runs."))
    figs = []
    for title, fig, note in sections:
        body = (pio.to_html(fig, include_plotlyjs=False, full_html=False, config={"displaylogo": False,
                                                                                   "responsive": True})
                if fig is not None else f"<p class='muted'>{html.escape(note)}</p>")
        figs.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    rows = []
    for run_id in runs:
        part = good[good.run_id == run_id]
        started = part.started_at.iloc[0]
        counts = part.status.value_counts()
        rows.append("<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(str(run_id)), html.escape("" if started is None or str(started) == "NaT" else str(started)),
            html.escape(str(part.decision.iloc[0])),
            html.escape(", ".join(f"{int(counts[s])} {s}" for s in counts.index))))
    unreadable = "".join(f"<li><code>{html.escape(str(r.run_id))}</code>: {html.escape(str(r.problem))}</li>"
                         for r in bad.itertuples(index=False))
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Trend — {html.escape(env)}</title>
<style>body{{font-family:system-ui,sans-serif;font-size:14px;margin:16px 24px;color:#1f2328}}
table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:left}}
.muted{{color:#57606a}}h2{{border-bottom:1px solid #d0d7de}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>Trend of {html.escape(env)}: {len(runs)} run(s)</h1>
<p class="muted">From the results.json of each run folder in {html.escape(str(source))}, oldest first; written
{stamp}. Each run's report.html has the evidence behind a figure.</p>
{"".join(figs)}
<h2>Runs</h2>
<table><tr><th>Run</th><th>Started (UTC)</th><th>Decision</th><th>Checks</th></tr>{"".join(rows)}</table>
{f"<h2>Unreadable runs ({len(bad)})</h2><ul>{unreadable}</ul>" if unreadable else ""}
</body></html>
"""
    return page, info


def write_trend(env: str, outputs: Path, out: Path) -> dict[str, Any]:
    """Read the runs of `env` under `outputs`, write the page to `out`; what it shows (see trend_html)."""
    from rehearsal_lib.history import load_runs

    df = load_runs(env, outputs=outputs)
    page, info = trend_html(env, df, outputs / env)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return info


def cmd_trend(args: argparse.Namespace) -> int:
    """`rehearse trend ENV [--out FILE]`: exit 0 when the page is written (also with unreadable runs listed)."""
    from rehearsal_lib.config import NAME_RE
    from rehearsal_lib.runner import outputs_root

    if not NAME_RE.match(args.env) or ".." in args.env:
        raise ConfigError(args.env, "not an environment name (the folder under outputs/)")
    outputs = Path(args.outputs).resolve() if args.outputs else outputs_root()
    out = Path(args.out).resolve() if args.out else outputs / f"{args.env}.trend.html"
    info = write_trend(args.env, outputs, out)
    shown = ", ".join(f"{title}: {n} series" for title, n in info["sections"].items())
    print(f"trend of {args.env}: {info['runs']} run(s) ({shown}): {out}")
    for run_id in info["unreadable"]:
        print(f"  unreadable: {run_id} (listed on the page with the problem)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `trend` subcommand's arguments."""
    p.add_argument("env", help="environment name (the folder under outputs/)")
    p.add_argument("--out", metavar="FILE", help="where to write the page (default: outputs/ENV.trend.html)")
    p.add_argument("--outputs", metavar="DIR", help="folder holding run folders (default: outputs/)")
    p.set_defaults(func=cmd_trend)
