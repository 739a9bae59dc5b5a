"""report.html's summary and summary.md: one view model (views.py), two templates, hostile text escaped in both."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.evidence import RunSummary, collect, write_summary_md
from rehearsal_lib.phases import registry
from rehearsal_lib.report import write_report
from rehearsal_lib.results import Check
from rehearsal_lib.runrecord import RunRecord, write_run_record

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "<script>alert(1)</script> a|b `tick` line one\nline two\x1b[2J\x07 & co"
SCRIPT = "<script>alert(1)</script>"
SCRIPT_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _check(cid: str, status: str, severity: str = "blocker", **kw) -> Check:
    return Check(id=cid, phase=cid.split(".")[0], title=f"title of {cid}", status=status, severity=severity, **kw)


def _run(tmp_path: Path) -> RunSummary:
    """A run folder of two phases: a failing blocker and a waived major check with hostile text in them."""
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    phases = {
        "preflight": [_check("preflight.ready", "pass"), _check("preflight.identity", "fail", observed=HOSTILE,
                                                                 expected="svc 1.0")],
        "integrity": [_check("integrity.orphans", "fail", "major", observed=f"2 rows {HOSTILE}"),
                      _check("integrity.index.idx", "warn", "minor", observed="slow")],
    }
    for name, checks in phases.items():
        number = {"preflight": "01", "integrity": "08"}[name]
        outputs = [new_output("display_data", data=c.bundle()) for c in checks]
        nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=outputs)]),
                       str(run / "notebooks" / f"{number}_{name}.ipynb"))
    write_run_record(run, RunRecord.model_validate({
                     "env": "t", "run_id": "r1", "environment_kind": "staging", "environment_description": HOSTILE,
                     "phases": [{"name": n, "outcome": "ok", "duration_s": 1.5} for n in phases],
                     "gate": {"waivers": [{"check": "integrity.orphans", "owner": "dana", "reason": f"ticket {HOSTILE}",
                                           "expires": "2099-01-01"}]}}))
    return collect(run)


def _summary_section(report: str) -> str:
    """The summary section of report.html (nbconvert writes its attributes in double quotes)."""
    report = report.replace('"', "'")
    start = report.index("<div class='rh-summary'>")
    return report[start:report.index("rh-phase-head", start)]


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells, split at the pipes no backslash escapes."""
    cells, cell, chars = [], "", iter(line.strip()[1:-1])
    for ch in chars:
        if ch == "\\":
            cell += ch + next(chars, "")
        elif ch == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    return [*cells, cell.strip()]


def _tables(md: str) -> dict[str, list[list[str]]]:
    """Each Markdown table under its `## heading`, as rows of cells (header row first)."""
    out: dict[str, list[list[str]]] = {}
    heading = ""
    for line in md.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and not line.startswith("|--"):
            out.setdefault(heading, []).append(_cells(line))
    return out


@pytest.fixture
def outputs(tmp_path: Path) -> tuple[RunSummary, str, str]:
    summary = _run(tmp_path)
    report = write_report(summary).read_text(encoding="utf-8")
    md = write_summary_md(summary).read_text(encoding="utf-8")
    return summary, report, md


def test_hostile_text_is_escaped_in_report_html_and_summary_md(outputs):
    """A check's observed text, a waiver's reason and the environment description, each carrying markup,
    pipes, backticks, a newline and control characters, reach both outputs escaped and whole."""
    summary, report, md = outputs
    assert summary.checks[1].waiver is None and summary.checks[2].waiver["reason"].startswith("ticket <script>")
    section = _summary_section(report)
    assert SCRIPT not in report and "\x1b" not in report and "\x07" not in report
    assert f"<td>Description</td><td>{SCRIPT_ESCAPED} a|b `tick` line one\nline two\\x1b[2J\\x07 &amp; co</td>" \
        in section
    assert section.count(SCRIPT_ESCAPED) >= 6  # description, 2 observed x (critical + all checks), waiver, decision
    assert f"ticket {SCRIPT_ESCAPED}" in section  # the waiver's reason

    assert SCRIPT not in md and "\x1b" not in md and "\x07" not in md
    # one line; | and ` escaped; printable's \x1b with its backslash escaped (GitHub shows \x1b)
    flat = f"{SCRIPT_ESCAPED} a\\|b \\`tick\\` line one line two\\\\x1b[2J\\\\x07 &amp; co"
    assert f"**Description:** {flat}  \n" in md
    tables = _tables(md)
    for heading, rows in tables.items():  # no text ends a cell early or a row: every row has the header's cells
        assert {len(r) for r in rows} == {len(rows[0])}, heading
    observed = {r[2]: r[5] for r in tables["All checks (4)"][1:]}
    assert observed["`preflight.identity`"] == flat
    assert observed["`integrity.orphans`"] == f"2 rows {flat}"
    [waiver] = tables["Waivers (1)"][1:]
    assert waiver == ["`integrity.orphans`", "dana", f"ticket {flat}", "2099-01-01", "fail shown as warn"]
    assert f"- preflight.identity: {flat}\n" in md  # the blocker line


def test_report_and_summary_md_show_the_same_run(outputs):
    """Both outputs come from one view model: the same decision, phases, checks, statuses and critical issues."""
    summary, report, md = outputs
    section = _summary_section(report)
    assert summary.decision.decision == "NO-GO"
    assert "<div class='rh-decision'>Decision: NO-GO</div>" in section and "## Decision: ❌ NO-GO\n" in md

    def html_table(heading: str) -> list[list[str]]:
        body = section.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)[1:]
        return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
                for r in rows]

    tables = _tables(md)
    html_checks = [(r[0], r[2]) for r in html_table("All checks (4)")]
    md_checks = [(r[0], r[2].strip("`")) for r in tables["All checks (4)"][1:]]
    assert html_checks == md_checks == [("PASS", "preflight.ready"), ("FAIL", "preflight.identity"),
                                        ("WARN (waived)", "integrity.orphans"), ("WARN", "integrity.index.idx")]
    html_phases = [(r[0], r[2], r[3]) for r in html_table("Test Results Overview")]
    md_phases = [(r[0], r[2], r[3]) for r in tables["Test Results Overview"][1:]]
    assert html_phases == md_phases
    assert html_phases[:2] == [("Preflight", "1.5 s", "1 fail, 1 pass"), ("Data Integrity", "1.5 s", "2 warn")]
    # every registered phase has a row; those the run did not cover are empty
    assert len(html_phases) == len(registry()) and all(r[1:] == ("", "") for r in html_phases[2:])
    assert [r[1] for r in tables["Test Results Overview"][1:3]] == ["❌", "✅"]  # Markdown: passed or not
    assert [r[1] for r in html_table("Test Results Overview")[:2]] == ["FAIL", "WARN"]  # HTML: the worst status
    assert [r[0] for r in html_table("Critical Issues Requiring Resolution")] == ["preflight.identity"]
    assert [r[0].strip("`") for r in tables["Critical Issues Requiring Resolution"][1:]] == ["preflight.identity"]


def test_summary_rendering_has_no_hand_escaping_and_md_text_must_be_filtered():
    """A complement to the tests above: the report's summary is left to jinja2's autoescaping, and the
    Markdown template cannot print a value that skipped the `md` filter."""
    from rehearsal_lib import views

    for module in (ROOT / "rehearsal_lib" / "report.py", ROOT / "rehearsal_lib" / "views.py"):
        source = module.read_text()
        assert not re.search(r"\besc\(|html\.escape\(|^import html$", source, re.M), module
    for template in (ROOT / "rehearsal_lib" / "templates" / "summary").glob("*.html.j2"):
        assert not re.search(r"\|\s*(e|escape|safe)\b", template.read_text()), template
    heading = views.render_phase_heading(_row("<b>x</b>"), problem="<i>unreadable</i>")
    assert "&lt;b&gt;x&lt;/b&gt;" in heading and "&lt;i&gt;unreadable&lt;/i&gt;" in heading and "<b>x" not in heading
    markdown = views._environment(True)
    assert markdown.from_string("{{ x | md }}").render(x="<b>|") == "&lt;b&gt;\\|"
    with pytest.raises(TypeError, match="without the md filter"):
        markdown.from_string("{{ x }}").render(x="<b>")


def _row(title: str):
    from rehearsal_lib.views import PhaseRow

    return PhaseRow(name="x", title=title, number=None, covered=True, pill=None, passed=True, is_decision=False,
                    duration="1.0 s", tally="", note="", notebook="-", outcome_label=None, reason="")
