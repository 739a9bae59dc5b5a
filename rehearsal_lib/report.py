"""Stitch the executed phase notebooks into one self-contained, offline `report.html`.

The notebooks are read as plain JSON and their cells written one after another (cell ids made unique)
by `report_html`, in the markup and styles of nbconvert's lab template but without nbconvert (a fraction of
the time: see benchmarks/bench_report.py); plotly figures are turned into HTML with plotly.js inlined
once in the page head, the custom check mimetype is dropped (each check also carries its own HTML
badge), and the page opens with the run summary: header, decision, the seeds' "Test Results Overview",
critical issues and every check."""

from __future__ import annotations

import json
from pathlib import Path

from rehearsal_lib.evidence import RunSummary
from rehearsal_lib.report_html import page, render_cell, text_of
from rehearsal_lib.results import (
    CHECK_MIME,
    TARGET_TABLE_CLASS,
    printable,
    read_notebook,
    read_notebook_json,
)
from rehearsal_lib.views import (  # noqa: F401 - DECISION_COLORS: re-exported for checks/decision.py
    DECISION_COLORS,
    Notice,
    SummaryView,
    render_phase_heading,
    render_summary_html,
    summary_view,
)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
REPORT_SKIP_TAG = "report-skip"  # notebook cells that only repeat what the report's summary shows

CSS = """
.rh-summary{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;
  margin:0 0 24px 0;padding:16px 24px 0 24px;color:#1f2328}
.jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{text-align:left}
.rh-nowrap{white-space:nowrap}
.rh-summary td code.rh-id{overflow-wrap:normal;word-break:normal}
.rh-summary h1{font-size:24px;margin:4px 0 12px}
.rh-summary h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.rh-summary table{border-collapse:collapse;width:100%;margin:6px 0}
.rh-summary th,.rh-summary td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;
  overflow-wrap:anywhere}
.rh-summary th{background:#f6f8fa;white-space:nowrap;overflow-wrap:normal}
.rh-meta td:first-child{width:180px;font-weight:600;background:#f6f8fa}
.rh-banner{color:#fff;padding:14px 18px;border-radius:6px;margin:12px 0}
.rh-banner .rh-decision{font-size:28px;font-weight:700;letter-spacing:.5px}
.rh-banner ul{margin:6px 0 0 18px;padding:0}
.rh-banner a{color:#fff;text-decoration:underline}
.rh-decision-items li{margin:2px 0}
.rh-pill{color:#fff;border-radius:3px;padding:1px 6px;font-weight:600;font-size:12px;white-space:nowrap}
.rh-phase-head{font-family:system-ui,sans-serif;font-size:15px;border-top:3px solid #1f2328;margin-top:32px;
  padding-top:8px}
.rh-muted{color:#57606a}
details.rh-versions summary{cursor:pointer}
.rh-reseal{border:3px solid #cf222e;border-radius:6px;padding:4px 14px 10px;margin:12px 0;background:#fff8f8}
.rh-reseal.rh-rebuilt{border-color:#9a6700;background:#fffbf0}
.rh-thumb{max-width:240px;max-height:160px;min-width:48px;border:1px solid #d0d7de;margin-top:4px}
.rh-sha{word-break:break-all;font-size:11px}
"""


def summary_html(summary: RunSummary) -> str:
    """The report's summary section (header, decision, reseal log, overview, critical issues, sign-off,
    every check): the view model of views.py through its autoescaped template."""
    return render_summary_html(summary_view(summary))


def _prepare_outputs(cell: dict) -> bool:
    """Make a cell's outputs exportable offline; return True if it holds a plotly figure."""
    has_fig = False
    for output in cell.get("outputs", []):
        data = output.get("data")
        if not data:
            continue
        data.pop(CHECK_MIME, None)
        if PLOTLY_MIME in data:
            import plotly.io as pio

            fig = data.pop(PLOTLY_MIME)
            if isinstance(fig, str):
                fig = json.loads(fig)
            # the figure was validated when the phase drew it: its JSON goes to the page as is
            data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False, validate=False,
                                            config={"displaylogo": False, "responsive": True})
            data.pop("text/plain", None)
            has_fig = True
    return has_fig


def _drop_repeated_target(cell: dict, seen_target: list[bool]) -> bool:
    """Remove the "which target" table (PhaseRun.describe_target) from every phase but the first.

    Returns True when nothing is left of the cell."""
    outputs = cell.get("outputs", [])
    kept = []
    for output in outputs:
        if TARGET_TABLE_CLASS in text_of((output.get("data") or {}).get("text/html", "")):
            if seen_target:
                continue
            seen_target.append(True)
        kept.append(output)
    if len(kept) == len(outputs):
        return False
    cell["outputs"] = kept
    return not kept and cell.get("cell_type") == "code"


def _read_cells(nb_path: Path) -> list[dict]:
    """An executed notebook's cells as plain JSON (nbformat only upgrades a pre-v4 notebook)."""
    nb = read_notebook_json(nb_path)
    if int(nb.get("nbformat") or 4) < 4:
        nb = read_notebook(nb_path)
    return list(nb.get("cells", []))


def report_cells(summary: RunSummary, show_code: bool = False,
                 view: SummaryView | None = None) -> tuple[list[str], bool]:
    """All executed phase notebooks' cells as HTML, each notebook behind a heading (from the view model);
    and whether a plotly figure is among them."""
    parts: list[str] = []
    has_fig = False
    seen: set[str] = set()
    seen_target: list[bool] = []
    view = view or summary_view(summary)
    for p, row in zip(summary.phases, view.phases, strict=False):  # the run's phases come first, in order
        nb_path = summary.run_dir / "notebooks" / (p.notebook or "")
        problem, cells = "", None
        if not p.notebook or not nb_path.is_file():
            problem = "No executed notebook for this phase."
        else:
            try:
                cells = _read_cells(nb_path)
            except Exception as exc:  # noqa: BLE001 - a truncated notebook is reported, the others still are
                problem = f"The executed notebook could not be read: {str(exc)[:300]}"
        heading = {"cell_type": "markdown", "id": "", "metadata": {},
                   "source": str(render_phase_heading(row, problem))}
        parts.append(render_cell(heading, show_code))
        for cell in cells or []:
            if not isinstance(cell, dict):
                continue
            tags = (cell.get("metadata") or {}).get("tags") or []
            if REPORT_SKIP_TAG in tags:
                continue
            if "injected-parameters" in tags or "parameters" in tags:
                if not show_code:
                    continue
            if cell.get("cell_type") == "code" and not show_code and not cell.get("outputs"):
                continue
            if _drop_repeated_target(cell, seen_target) and not show_code:
                continue
            has_fig |= _prepare_outputs(cell)
            cid = cell.get("id") or "cell"
            while cid in seen:
                cid = f"{cid}-{len(seen)}"
            seen.add(cid)
            cell["id"] = cid
            parts.append(render_cell(cell, show_code))
    return parts, has_fig


def render_report(summary: RunSummary, show_code: bool = False, notices: tuple[Notice, ...] = ()) -> str:
    """The report page: nbconvert's lab page layout and styles, the summary, then every phase's cells
    (rendered by report_html, not nbconvert: see there), plotly.js inlined once in the head."""
    view = summary_view(summary, notices)
    cells, has_fig = report_cells(summary, show_code, view)
    marker = "/*rehearsal-plotlyjs*/" if has_fig else ""
    title = f"{summary.decision.label} — rehearsal {summary.env} {summary.run_id}"
    body = page(title, marker, CSS, [render_summary_html(view), "\n", *cells])
    # no control character from any output reaches the page raw (plotly.js, inserted after, is ours)
    body = printable(body.replace("\r", ""))
    if not marker:
        return body
    from plotly.offline import get_plotlyjs

    return body.replace(marker, get_plotlyjs(), 1)


def write_report(summary: RunSummary, show_code: bool = False) -> Path:
    path = summary.run_dir / "report.html"
    path.write_text(render_report(summary, show_code), encoding="utf-8")
    return path



NOT_A_RUN = ("Not a rehearsal run", "built by `rehearse report` from notebooks executed on their own (in JupyterLab "
             "or by papermill), not by `rehearse run`: there is no run folder, no run.json, no seal and no ledger "
             "entry, so `rehearse verify` cannot vouch for it; the decision is over these notebooks' checks only")


def _phase_of(path: Path, nb: dict) -> str:
    """The phase a notebook belongs to: its checks say it; else its file name (`NN_<phase>.ipynb`)."""
    from rehearsal_lib.results import checks_from_notebook

    checks = checks_from_notebook(nb)
    if checks:
        return checks[0].phase
    stem = path.stem.split(".", 1)[0]
    return stem.split("_", 1)[1] if "_" in stem and stem.split("_", 1)[0].isdigit() else stem


def notebook_report(paths: list[Path], out: Path, show_code: bool = False) -> tuple[Path, RunSummary]:
    """The offline report (plotly inlined) of executed phase notebooks that are not a run folder's:
    the notebooks are read from a scratch folder laid out like a run's and the page says it is not a run
    (no seal, no ledger). Writes `out`; nothing is written beside the notebooks but `out`."""
    import shutil
    import tempfile

    from rehearsal_lib.evidence import collect
    from rehearsal_lib.phases import BY_NAME
    from rehearsal_lib.results import read_notebook_json

    with tempfile.TemporaryDirectory(prefix="rehearsal-nbreport-") as tmp:
        run_dir = Path(tmp) / "interactive"
        (run_dir / "notebooks").mkdir(parents=True)
        for path in paths:
            phase = _phase_of(path, read_notebook_json(path))
            spec = BY_NAME.get(phase)
            if spec is None:
                raise ValueError(f"{path}: not a phase notebook (no check records, and its name names no phase)")
            name = spec.notebook_name
            shutil.copyfile(path, run_dir / "notebooks" / name)
        summary = collect(run_dir)
        out.write_text(render_report(summary, show_code, (Notice(*NOT_A_RUN),)), encoding="utf-8")
    return out, summary
