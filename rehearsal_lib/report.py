"""Stitch the executed phase notebooks into one self-contained, offline `report.html`.

nbconvert has no merge, so the notebooks' cells are concatenated with nbformat (cell ids made
unique), plotly figures are turned into HTML with plotly.js inlined once in the page head, the
custom check mimetype is dropped (each check also carries its own HTML badge), and the page
opens with the run summary: header, decision, the seeds' "Test Results Overview", critical
issues and every check.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import nbformat

from rehearsal_lib.evidence import RunSummary, crash_line, resumed_lines
from rehearsal_lib.phases import BY_NAME, PHASES
from rehearsal_lib.results import (
    CHECK_MIME,
    FAILING,
    STATUS_STYLE,
    TARGET_TABLE_CLASS,
    WORST_FIRST,
    check_anchor,
    printable,
    read_notebook,
)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
TEMPLATES = Path(__file__).parent / "templates"
DECISION_COLORS = {"GO": "#1a7f37", "NO-GO": "#cf222e", "CONDITIONAL GO": "#9a6700"}
OUTCOME_LABEL = {"ok": None, "error": "ERROR", "interrupted": "INTERRUPTED", "not_run": "NOT RUN",
                 "refused": "REFUSED"}
OUTCOME_COLOR = {"error": "#8250df", "interrupted": "#bc4c00", "not_run": "#57606a", "refused": "#57606a"}
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
"""


def _breakable(check_id: str) -> str:
    """A check id that wraps only after its dots (never mid-word) in a narrow column."""
    return html.escape(check_id).replace(".", ".<wbr>")


def _id_link(check_id: str) -> str:
    return f"<a href='#{check_anchor(check_id)}'><code class='rh-id'>{_breakable(check_id)}</code></a>"


def _decision_items(summary: RunSummary, items: list[str]) -> str:
    """Blockers or conditions ("<check id>: <observed>") grouped by phase, each linked to its evidence."""
    titles = {c.id: c.title for c in summary.checks}
    groups: dict[str, list[str]] = {}
    for item in items:
        check_id, _, observed = item.partition(": ")
        if check_id not in titles:  # not a check's line (e.g. a runner message): keep it whole
            groups.setdefault("", []).append(html.escape(item))
            continue
        phase = check_id.split(".", 1)[0]
        link = (f"<a href='#{check_anchor(check_id)}' title='{html.escape(check_id)}'>"
                f"{html.escape(titles[check_id])}</a>")
        groups.setdefault(phase, []).append(f"{link}: {html.escape(observed)}")
    out = ["<ul class='rh-decision-items'>"]
    for phase, lines in groups.items():
        label = BY_NAME[phase].title if phase in BY_NAME else phase
        head = f"<b>{html.escape(label)}</b>: " if label else ""
        out.append(f"<li>{head}" + "; ".join(lines) + "</li>")
    return "".join(out) + "</ul>"


def _pill(status: str) -> str:
    fg, _, label = STATUS_STYLE.get(status, ("#57606a", "", status.upper()))
    return f"<span class='rh-pill' style='background:{fg}'>{label}</span>"


def _phase_status(summary: RunSummary, name: str, outcome: str) -> str:
    if OUTCOME_LABEL.get(outcome):
        return f"<span class='rh-pill' style='background:{OUTCOME_COLOR[outcome]}'>{OUTCOME_LABEL[outcome]}</span>"
    if name == "decision" and outcome == "ok":
        d = summary.decision.decision
        return f"<span class='rh-pill' style='background:{DECISION_COLORS[d]}'>{d}</span>"
    counts = summary.counts(name)
    for status in WORST_FIRST[:-1]:  # all but pass
        if counts.get(status):
            return _pill(status)
    return _pill("pass") if counts else "<span class='rh-muted'>no checks</span>"


def reseal_html(summary: RunSummary) -> str:
    """The folder's reseal log (who, when, why, what had changed), or nothing if it was never rebuilt."""
    from rehearsal_lib.seal import reseal_history

    history = reseal_history(summary.run_dir)
    if not history:
        return ""
    esc = html.escape
    resealed = [e for e in history if e.get("kind") == "reseal"]
    if resealed:
        title = (f"Resealed {len(resealed)} time(s): files changed after this run was sealed, and someone "
                 "rebuilt and sealed it again")
    else:
        title = f"Rebuilt {len(history)} time(s) after sealing; the folder verified intact each time"
    out = [f"<div class='rh-reseal{'' if resealed else ' rh-rebuilt'}' id='reseal-log'><h2>{esc(title)}</h2>",
           "<table><tr><th>#</th><th>When (UTC)</th><th>Who</th><th>What</th><th>Why</th><th>Changed since the "
           "previous seal</th><th>Previous manifest</th></tr>"]
    for e in history:
        changed = e.get("changed") or []
        changed = changed if isinstance(changed, list) else [changed]
        shown = "<br>".join(esc(str(c)) for c in changed[:20]) + (f"<br>… and {len(changed) - 20} more"
                                                                   if len(changed) > 20 else "")
        what = "<b>RESEALED</b>" if e.get("kind") == "reseal" else "rebuilt"
        out.append(f"<tr><td>{esc(str(e.get('seq')))}</td><td class='rh-nowrap'>{esc(str(e.get('time')))}</td>"
                   f"<td>{esc(str(e.get('who')))}</td><td class='rh-nowrap'>{what}</td>"
                   f"<td>{esc(str(e.get('why')))}</td><td>{shown or 'nothing'}</td>"
                   f"<td><code>{esc(str(e.get('old_manifest') or '-'))}</code></td></tr>")
    out.append("</table><p class='rh-muted'>From <code>reseal.log</code> in this folder (append-only, hash-chained); "
               "<code>rehearse verify</code> checks it. Who is as declared by the person who rebuilt the folder "
               "($REHEARSAL_OPERATOR or user@host).</p></div>")
    return "".join(out)


def summary_html(summary: RunSummary) -> str:
    esc = html.escape
    meta, d = summary.meta, summary.decision
    color = DECISION_COLORS[d.decision]
    started, finished = meta.get("started_at", "?"), meta.get("finished_at", "?")
    duration = meta.get("duration_s")
    target = (meta.get("target") or {}).get("base_url", "?")
    versions = meta.get("tool_versions") or {}
    rows = [
        ("Environment", f"{summary.env} ({meta.get('environment_kind', '?')})"),
        *([("Description", meta["environment_description"])] if meta.get("environment_description") else []),
        ("Run id", summary.run_id),
        ("Started / finished (UTC)", f"{started} / {finished}"),
        ("Duration", f"{duration:.1f} s" if isinstance(duration, int | float) else "?"),
        ("Target", target),
        ("Executed by", meta.get("executed_by", "?")),
        ("Project commit", meta.get("project_commit", "unknown")),
        ("Params file", Path(meta.get("params_file", "?")).name),
    ]
    if meta.get("sandbox"):
        rows.append(("Sandbox", f"variant {meta['sandbox'].get('variant')}"))
    out = ["<div class='rh-summary'>", f"<h1>Rehearsal report — {esc(summary.env)}</h1>"]
    out.append("<table class='rh-meta'>" + "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in rows))
    out.append("<tr><td>Tool versions</td><td><details class='rh-versions'><summary>"
               + esc(", ".join(f"{k} {v}" for k, v in list(versions.items())[:3])) + " …</summary>"
               + esc(", ".join(f"{k} {v}" for k, v in versions.items())) + "</details></td></tr></table>")
    reasons = ""
    if meta.get("interrupted"):
        reasons += "<p><b>The run was interrupted</b>; the phases that finished are reported below.</p>"
    if meta.get("runner_error"):
        reasons += f"<p><b>The run could not go on</b>: {esc(meta['runner_error'])}</p>"
    if summary.crashed:
        reasons += f"<p><b>Crashed</b>: {esc(crash_line(summary.crashed))}.</p>"
    for line in resumed_lines(meta):
        reasons += f"<p><b>Resumed</b>: {esc(line)}.</p>"
    seal_history = reseal_html(summary)
    if seal_history.startswith("<div class='rh-reseal'"):
        reasons += ("<p><b>Resealed</b>: files of this run changed after it was sealed and it was sealed again; "
                    "<a href='#reseal-log'>who, when and why</a>.</p>")
    also = "Also failing (each a condition for GO)" if d.blockers else "Conditions"
    for title, items in (("Blockers", d.blockers), (also, d.conditions)):
        if items:
            reasons += f"<b>{title} ({len(items)})</b>" + _decision_items(summary, items)
    if not d.blockers and not d.conditions:
        reasons += "<p>Every gate passed.</p>"
    missing = summary.not_covered()
    covered = len(PHASES) - len(missing)
    reasons += (f"<p>Coverage: {covered} of {len(PHASES)} phases"
                + ("; not covered: " + esc(", ".join(f"{BY_NAME[n].title} ({summary.not_covered_reason(n)})"
                                                      for n in missing)) if missing else "") + ".</p>")
    out.append(f"<div class='rh-banner' id='decision' style='background:{color}'>"
               f"<div class='rh-decision'>Decision: {esc(d.decision)}</div>{reasons}</div>")
    out.append(seal_history)
    if d.notes:
        out.append("<p class='rh-muted'>Notes: " + esc("; ".join(d.notes)) + "</p>")

    out.append("<h2>Test Results Overview</h2><table><tr><th>Test Phase</th><th>Status</th><th>Duration</th>"
               "<th>Checks</th><th>Notes</th></tr>")
    for p in summary.phases:
        tally = summary.tally(p.name)
        bad = [c for c in summary.phase_checks.get(p.name, []) if c.status in FAILING]
        note = p.reason or "; ".join(f"{c.id}: {c.observed}" for c in bad[:3]) + (" …" if len(bad) > 3 else "")
        link = f"<a href='#phase-{p.name}'>{esc(p.title)}</a>"
        out.append(f"<tr><td>{link}</td><td>{_phase_status(summary, p.name, p.outcome)}</td>"
                   f"<td class='rh-nowrap'>{p.duration_s:.1f} s</td><td>{esc(tally)}</td><td>{esc(note)}</td></tr>")
    for name in missing:
        out.append(f"<tr class='rh-muted'><td>{esc(BY_NAME[name].title)}</td><td>not covered</td><td></td><td></td>"
                   f"<td>{esc(summary.not_covered_reason(name))}</td></tr>")
    out.append("</table>")

    critical = summary.critical()
    out.append("<h2>Critical Issues Requiring Resolution</h2>")
    if critical:
        out.append("<table><tr><th>Check</th><th>Severity</th><th>Status</th><th>Description</th><th>Expected</th>"
                   "<th>Observed</th><th>Gate effect</th></tr>")
        for c in critical:
            effect = "blocks GO" if c.severity == "blocker" else "condition for GO"
            out.append(f"<tr><td>{_id_link(c.id)}</td><td>{c.severity}</td>"
                       f"<td>{_pill(c.status)}</td><td>{esc(c.title)}</td><td>{esc(c.expected)}</td>"
                       f"<td>{esc(c.observed)}</td><td>{effect}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>None.</p>")

    out.append(f"<h2>All checks ({len(summary.checks)})</h2><table><tr><th>Status</th><th>Severity</th>"
               "<th>Check</th><th>Title</th><th>Expected</th><th>Observed</th><th>Time</th></tr>")
    for c in summary.checks:
        waived = " (waived)" if c.waiver and not c.waiver.get("expired") else ""
        out.append(f"<tr><td class='rh-nowrap'>{_pill(c.status)}{waived}</td><td class='rh-nowrap'>{c.severity}</td>"
                   f"<td>{_id_link(c.id)}</td><td>{esc(c.title)}</td>"
                   f"<td>{esc(c.expected)}</td><td>{esc(c.observed)}</td>"
                   f"<td class='rh-nowrap'>{c.duration_s:.2f} s</td></tr>")
    out.append("</table><p class='rh-muted'>Each phase's executed notebook follows; a check's id links to its "
               "badge with the evidence. The same data is in results.json and junit.xml beside this file.</p></div>")
    return "\n".join(out)


def _prepare_outputs(cell: nbformat.NotebookNode) -> bool:
    """Make a cell's outputs exportable offline; return True if it holds a plotly figure."""
    import plotly.io as pio

    has_fig = False
    for output in cell.get("outputs", []):
        data = output.get("data")
        if not data:
            continue
        data.pop(CHECK_MIME, None)
        if PLOTLY_MIME in data:
            fig = data.pop(PLOTLY_MIME)
            if isinstance(fig, str):
                fig = json.loads(fig)
            data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False,
                                            config={"displaylogo": False, "responsive": True})
            data.pop("text/plain", None)
            has_fig = True
    return has_fig


def _drop_repeated_target(cell: nbformat.NotebookNode, seen_target: list[bool]) -> bool:
    """Remove the "which target" table (PhaseRun.describe_target) from every phase but the first.

    Returns True when nothing is left of the cell."""
    outputs = cell.get("outputs", [])
    kept = []
    for output in outputs:
        if TARGET_TABLE_CLASS in str((output.get("data") or {}).get("text/html", "")):
            if seen_target:
                continue
            seen_target.append(True)
        kept.append(output)
    if len(kept) == len(outputs):
        return False
    cell["outputs"] = kept
    return not kept and cell.cell_type == "code"


def combined_notebook(summary: RunSummary, show_code: bool = False) -> tuple[nbformat.NotebookNode, bool]:
    """All executed phase notebooks as one notebook, each behind a heading cell."""
    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = f"{summary.decision.decision} — rehearsal {summary.env} {summary.run_id}"
    merged.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    has_fig = False
    seen: set[str] = set()
    seen_target: list[bool] = []
    for p in summary.phases:
        head = BY_NAME[p.name] if p.name in BY_NAME else None
        label = OUTCOME_LABEL.get(p.outcome)
        status = f" — {label}: {html.escape(p.reason)}" if label else ""
        number = f"Phase {head.number} · " if head else ""
        heading = nbformat.v4.new_markdown_cell(
            f"<div class='rh-phase-head' id='phase-{p.name}'>{_phase_status(summary, p.name, p.outcome)} "
            f"<b>{number}{html.escape(p.title)}</b> <span class='rh-muted'>· notebook "
            f"<code>notebooks/{html.escape(p.notebook or '-')}</code> · {p.duration_s:.1f} s{status} · "
            f"<a href='#decision'>back to the decision</a></span></div>")
        merged.cells.append(heading)
        nb_path = summary.run_dir / "notebooks" / (p.notebook or "")
        if not p.notebook or not nb_path.is_file():
            merged.cells.append(nbformat.v4.new_markdown_cell("_No executed notebook for this phase._"))
            continue
        try:
            nb = read_notebook(nb_path)
        except Exception as exc:  # noqa: BLE001 - a truncated notebook is reported, the others still are
            merged.cells.append(nbformat.v4.new_markdown_cell(
                f"_The executed notebook could not be read: {html.escape(str(exc))[:300]}_"))
            continue
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if REPORT_SKIP_TAG in tags:
                continue
            if "injected-parameters" in tags or "parameters" in tags:
                if not show_code:
                    continue
            if cell.cell_type == "code" and not show_code and not cell.get("outputs"):
                continue
            if _drop_repeated_target(cell, seen_target) and not show_code:
                continue
            has_fig |= _prepare_outputs(cell)
            cid = cell.get("id") or "cell"
            while cid in seen:
                cid = f"{cid}-{len(seen)}"
            seen.add(cid)
            cell["id"] = cid
            merged.cells.append(cell)
    return merged, has_fig


def render_report(summary: RunSummary, show_code: bool = False) -> str:
    from nbconvert import HTMLExporter

    merged, has_fig = combined_notebook(summary, show_code)
    exporter = HTMLExporter(template_name="rehearsal", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=not show_code, exclude_input_prompt=True, exclude_output_prompt=True,
                            embed_images=True)
    plotlyjs = ""
    if has_fig:
        from plotly.offline import get_plotlyjs

        plotlyjs = get_plotlyjs()
    marker = "/*rehearsal-plotlyjs*/" if plotlyjs else ""
    resources = {"rehearsal": {"summary_html": summary_html(summary), "plotlyjs": marker, "css": CSS},
                 "metadata": {"name": merged.metadata["title"]}}
    body, _ = exporter.from_notebook_node(merged, resources=resources)
    # no control character from any output reaches the page raw (plotly.js, inserted after, is ours)
    body = printable(body.replace("\r", ""))
    return body.replace(marker, plotlyjs, 1) if marker else body


def write_report(summary: RunSummary, show_code: bool = False) -> Path:
    path = summary.run_dir / "report.html"
    path.write_text(render_report(summary, show_code), encoding="utf-8")
    return path

