"""The run summary as one view model, rendered twice: report.html's summary section and summary.md.

`summary_view(RunSummary)` computes everything both outputs show (header, decision and its reasons,
reseal log, phase overview, critical issues, sign-off, every check) once, as plain dataclasses holding
plain text. Two templates under `templates/summary/` render it: `summary.html.j2` with jinja2's
autoescaping (no hand escaping anywhere) and `summary.md.j2`, where every value goes through the one
`md` filter (a value that does not is refused at render time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from rehearsal_lib.attachments import attachment_rows
from rehearsal_lib.evidence import crash_line, resumed_lines
from rehearsal_lib.phases import BY_NAME, PHASES
from rehearsal_lib.results import FAILING, STATUS_STYLE, WORST_FIRST, Check, check_anchor, printable

if TYPE_CHECKING:
    import jinja2

    from rehearsal_lib.evidence import RunSummary

TEMPLATES = Path(__file__).parent / "templates"
DECISION_COLORS = {"GO": "#1a7f37", "NO-GO": "#cf222e", "CONDITIONAL GO": "#9a6700"}
DECISION_ICONS = {"GO": "✅", "NO-GO": "❌", "CONDITIONAL GO": "⚠️"}
OUTCOME_LABEL = {"ok": None, "error": "ERROR", "interrupted": "INTERRUPTED", "not_run": "NOT RUN",
                 "refused": "REFUSED"}
OUTCOME_COLOR = {"error": "#8250df", "interrupted": "#bc4c00", "not_run": "#57606a", "refused": "#57606a"}
MAX_CHANGED_SHOWN = 20  # files listed per reseal entry


@dataclass(frozen=True)
class Pill:
    """A coloured status label (PASS, FAIL, NOT RUN, GO...)."""

    label: str
    color: str

    @classmethod
    def of_status(cls, status: str) -> Pill:
        fg, _, label = STATUS_STYLE.get(status, ("#57606a", "", status.upper()))
        return cls(label, fg)


@dataclass(frozen=True)
class MetaRow:
    label: str
    value: str

    def __post_init__(self) -> None:  # run.json's text (a description, a runner error) is shown as printable
        object.__setattr__(self, "value", printable(self.value))


@dataclass(frozen=True)
class Notice:
    """A line about how the run went: `<lead>: <text>` (interrupted, crashed, resumed, resealed...)."""

    lead: str
    text: str
    see_reseal_log: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", printable(self.text))


@dataclass(frozen=True)
class DecisionItem:
    """One line of the gate (blocker or condition), as the gate wrote it and split by the check it names."""

    text: str  # the gate's line as is: "<check id>: <observed>" or a runner message
    check_id: str | None = None  # None when the line names no check of this run
    anchor: str = ""
    title: str = ""
    observed: str = ""


@dataclass(frozen=True)
class DecisionGroup:
    label: str  # the phase title; "" for lines that name no check
    items: list[DecisionItem]


@dataclass(frozen=True)
class DecisionList:
    title: str
    items: list[DecisionItem]
    groups: list[DecisionGroup]


@dataclass(frozen=True)
class PhaseRow:
    """A row of the "Test Results Overview": one phase of the run, or a catalogue phase not covered."""

    name: str
    title: str
    number: str | None  # PhaseSpec.number: 4, or 8.5 for a phase a package slots in
    covered: bool
    pill: Pill | None  # None: the phase recorded no check
    passed: bool  # ran to the end with no failing check
    is_decision: bool  # the decision phase: its status is the decision
    duration: str
    tally: str
    note: str
    notebook: str
    outcome_label: str | None  # ERROR, INTERRUPTED... when the notebook did not run to the end
    reason: str
    owner: str = ""  # params phases.<phase>.owner (run.json `owners`)
    start: str = ""  # UTC, from the executed notebook (papermill start_time / end_time)
    end: str = ""


@dataclass(frozen=True)
class CheckRow:
    id: str
    anchor: str
    phase: str
    status: str
    pill: Pill
    severity: str
    title: str
    expected: str
    observed: str
    duration: str
    waived: bool  # a waiver applies (an expired one does not)
    blocks: bool  # a blocker: it blocks GO when failing
    effect: str  # for critical issues: "blocks GO" or "condition for GO"


@dataclass(frozen=True)
class WaiverRow:
    """A waiver of the gate that names a failing check of this run (applied, or expired and not applied)."""

    check_id: str
    anchor: str
    owner: str
    reason: str
    expires: str
    applies: bool
    original_status: str  # the check's status before the waiver made it warn ("" when expired)


@dataclass(frozen=True)
class SignoffRow:
    """A line of the sign-off table: an attestation (a check a person answers) or a required role."""

    item: str
    anchor: str  # the check's badge; "" for a role
    pill: Pill
    by: str
    when: str
    note: str


SIGNOFF_PILLS = {"approved": Pill("APPROVED", "#1a7f37"), "rejected": Pill("REJECTED", "#cf222e"),
                 "awaiting": Pill("AWAITING", "#0969da")}


@dataclass(frozen=True)
class ResealRow:
    seq: str
    time: str
    who: str
    resealed: bool  # files had changed (a reseal); False: rebuilt, the folder verified intact
    why: str
    changed: list[str]
    more: int  # changed files not listed
    old_manifest: str


@dataclass
class SummaryView:
    """Everything report.html's summary section and summary.md show, computed once from a RunSummary."""

    env: str
    run_id: str
    decision: str
    decision_color: str
    decision_icon: str
    meta: list[MetaRow]
    tool_versions_short: str
    tool_versions_full: str
    notices: list[Notice]
    decision_lists: list[DecisionList]
    covered: int
    catalogue: int
    not_covered: str  # "Title (reason), ..." or ""
    notes: list[str]
    phases: list[PhaseRow]
    critical: list[CheckRow]
    signoffs: list[SignoffRow]
    waivers: list[WaiverRow]
    checks: list[CheckRow]
    reseal_title: str = ""
    resealed: bool = False
    reseals: list[ResealRow] = field(default_factory=list)
    decision_label: str = ""  # the decision as people read it: "GO — awaiting sign-off: ..."
    attachments: list[dict[str, Any]] = field(default_factory=list)  # attachments.attachment_rows()

    @property
    def all_gates_pass(self) -> bool:
        return not any(lst.items for lst in self.decision_lists)


def release_text(release: dict[str, Any] | None) -> str:
    """The release under test in one line: declared name, version, commit, change link, and the version the
    target ran at the start (params `release:` and the identity read by the runner)."""
    release = release or {}
    declared = " ".join(str(release[k]) for k in ("name", "version") if release.get(k))
    parts = [declared or "not declared (params release:)"]
    if release.get("commit"):
        parts.append(f"commit {release['commit']}")
    if release.get("change_url"):
        parts.append(f"change {release['change_url']}")
    observed = release.get("observed_version")
    if observed is not None:
        differs = release.get("version") and str(release["version"]) != str(observed)
        parts.append(f"target ran {observed} at the start" + (" (NOT the declared version)" if differs else ""))
    elif release.get("version"):
        parts.append("running version not read")
    return "; ".join(parts)


def _meta_rows(summary: RunSummary) -> list[MetaRow]:
    run = summary.record
    duration = run.duration_s
    rows = [
        MetaRow("Release under test", release_text(run.release)),
        MetaRow("Environment", f"{summary.env} ({run.environment_kind or '?'})"),
        *([MetaRow("Description", run.environment_description)] if run.environment_description else []),
        MetaRow("Run id", summary.run_id),
        MetaRow("Started / finished (UTC)", f"{run.started_at or '?'} / {run.finished_at or '?'}"),
        MetaRow("Duration", f"{duration:.1f} s" if duration is not None else "?"),
        MetaRow("Target", str((run.target.base_url if run.target else None) or "?")),
        MetaRow("Executed by", run.executed_by or "?"),
        MetaRow("Rehearsal tool commit", run.project_commit or "unknown"),
        MetaRow("Params file", Path(run.params_file or "?").name),
    ]
    if run.sandbox is not None:
        rows.append(MetaRow("Sandbox", f"variant {run.sandbox.variant}"))
    return rows


def _decision_list(summary: RunSummary, title: str, lines: list[str]) -> DecisionList:
    """Blockers or conditions, each split into the check it names; grouped by phase for the report."""
    titles = {c.id: c.title for c in summary.checks}
    items: list[DecisionItem] = []
    groups: dict[str, list[DecisionItem]] = {}
    for line in lines:
        check_id, _, observed = line.partition(": ")
        if check_id not in titles:  # not a check's line (e.g. a runner message): kept whole
            item = DecisionItem(line)
            groups.setdefault("", []).append(item)
        else:
            item = DecisionItem(line, check_id, check_anchor(check_id), titles[check_id], observed)
            groups.setdefault(check_id.split(".", 1)[0], []).append(item)
        items.append(item)
    return DecisionList(title, items, [DecisionGroup(BY_NAME[p].title if p in BY_NAME else p, group)
                                       for p, group in groups.items()])


def _phase_pill(summary: RunSummary, name: str, outcome: str) -> Pill | None:
    label = OUTCOME_LABEL.get(outcome)
    if label:
        return Pill(label, OUTCOME_COLOR[outcome])
    if name == "decision" and outcome == "ok":
        d = summary.decision.decision
        return Pill(d, DECISION_COLORS[d])
    counts = summary.counts(name)
    worst = next((s for s in WORST_FIRST if counts.get(s)), None)
    return Pill.of_status(worst) if worst else None


def _check_row(c: Check) -> CheckRow:
    return CheckRow(
        id=c.id, anchor=check_anchor(c.id), phase=c.phase, status=str(c.status), pill=Pill.of_status(c.status),
        severity=c.severity, title=c.title, expected=c.expected, observed=c.observed,
        duration=f"{c.duration_s:.2f} s", waived=bool(c.waiver and not c.waiver.get("expired")),
        blocks=c.severity == "blocker", effect="blocks GO" if c.severity == "blocker" else "condition for GO")


def _waiver_row(c: Check) -> WaiverRow:
    w = c.waiver or {}
    return WaiverRow(check_id=c.id, anchor=check_anchor(c.id), owner=printable(w.get("owner", "?")),
                     reason=printable(w.get("reason", "")), expires=printable(w.get("expires", "?")),
                     applies=not w.get("expired"), original_status=w.get("original_status", ""))


def _reseal_rows(summary: RunSummary) -> list[ResealRow]:
    from rehearsal_lib.seal import reseal_history

    rows = []
    for e in reseal_history(summary.run_dir):
        changed = e.get("changed") or []
        changed = [str(c) for c in changed] if isinstance(changed, list) else [str(changed)]
        rows.append(ResealRow(seq=str(e.get("seq")), time=str(e.get("time")), who=printable(str(e.get("who"))),
                              resealed=e.get("kind") == "reseal", why=printable(str(e.get("why"))),
                              changed=[printable(c) for c in changed[:MAX_CHANGED_SHOWN]],
                              more=max(0, len(changed) - MAX_CHANGED_SHOWN),
                              old_manifest=str(e.get("old_manifest") or "-")))
    return rows


def _short_time(stamp: str) -> str:
    """'2026-12-02T02:03:51.99+00:00' -> '2026-12-02 02:03:51' (UTC)."""
    return stamp[:19].replace("T", " ") if stamp else ""


def _signoff_rows(summary: RunSummary) -> list[SignoffRow]:
    """Attestations (who, when, status, note: from the params file or `rehearse attest`), then required roles."""
    from rehearsal_lib.people import PEOPLE_LOG, read_entries, signoff_rows

    rows = []
    for c in summary.checks:
        evidence = c.evidence if isinstance(c.evidence, dict) else {}
        attested = evidence.get("recorded_in") == PEOPLE_LOG
        if not (c.id.startswith("attestation.") or c.status == "manual" or attested):
            continue
        who = evidence.get("attested") if attested else evidence if c.id.startswith("attestation.") else {}
        who = who if isinstance(who, dict) else {}
        rows.append(SignoffRow(item=c.title, anchor=check_anchor(c.id), pill=Pill.of_status(c.status),
                               by=printable(str(who.get("by") or "—")), when=printable(str(who.get("at") or "—")),
                               note=printable(str(who.get("note") or ""))))
    for r in signoff_rows(summary.record, read_entries(summary.run_dir)):
        e = r.entry or {}
        rows.append(SignoffRow(item=f"Sign-off: {printable(r.role)}", anchor="", pill=SIGNOFF_PILLS[r.state],
                               by=printable(str(e.get("by") or "—")), when=printable(str(e.get("at") or "—")),
                               note=printable(str(e.get("note") or ""))))
    return rows


def summary_view(summary: RunSummary, extra_notices: tuple[Notice, ...] = ()) -> SummaryView:
    """The view model of a run's summary (see the module docstring); `extra_notices` lead the banner
    (e.g. a report built from interactively executed notebooks, not from a run)."""
    run, d = summary.record, summary.decision
    versions = run.tool_versions
    reseals = _reseal_rows(summary)
    resealed = sum(r.resealed for r in reseals)
    if resealed:
        reseal_title = (f"Resealed {resealed} time(s): files changed after this run was sealed, and someone "
                        "rebuilt and sealed it again")
    elif reseals:
        reseal_title = f"Rebuilt {len(reseals)} time(s) after sealing; the folder verified intact each time"
    else:
        reseal_title = ""

    notices: list[Notice] = list(extra_notices)
    if run.interrupted:
        notices.append(Notice("The run was interrupted", "the phases that finished are reported below"))
    if run.runner_error:
        notices.append(Notice("The run could not go on", run.runner_error))
    if summary.crashed:
        notices.append(Notice("Crashed", crash_line(summary.crashed)))
    notices += [Notice("Resumed", line) for line in resumed_lines(run)]
    if resealed:
        notices.append(Notice("Resealed", "files of this run changed after it was sealed and it was sealed again",
                              see_reseal_log=True))

    also = "Also failing (each a condition for GO)" if d.blockers else "Conditions"
    missing = summary.not_covered()
    phases = []
    for p in summary.phases:
        if p.name in missing:  # ran and checked nothing: listed with the phases not covered, below
            continue
        bad = [c for c in summary.phase_checks.get(p.name, []) if c.status in FAILING]
        note = p.reason or "; ".join(f"{c.id}: {c.observed}" for c in bad[:3]) + (" …" if len(bad) > 3 else "")
        spec = BY_NAME.get(p.name)
        phases.append(PhaseRow(
            name=p.name, title=p.title, number=spec.number if spec else None, covered=True,
            pill=_phase_pill(summary, p.name, p.outcome), passed=p.outcome == "ok" and not bad,
            is_decision=p.name == "decision" and p.outcome == "ok", duration=f"{p.duration_s:.1f} s",
            tally=summary.tally(p.name), note=note, notebook=p.notebook or "-",
            outcome_label=OUTCOME_LABEL.get(p.outcome), reason=p.reason,
            owner=printable(run.owners.get(p.name, "")), start=_short_time(p.started_at), end=_short_time(p.ended_at)))
    for name in missing:
        phases.append(PhaseRow(
            name=name, title=BY_NAME[name].title, number=BY_NAME[name].number, covered=False, pill=None,
            passed=False, is_decision=False, duration="", tally="", note=summary.not_covered_reason(name),
            notebook="", outcome_label=None, reason=summary.not_covered_reason(name)))

    return SummaryView(
        env=summary.env, run_id=summary.run_id, decision=d.decision, decision_color=DECISION_COLORS[d.decision],
        decision_icon=DECISION_ICONS[d.decision], meta=_meta_rows(summary),
        tool_versions_short=", ".join(f"{k} {v}" for k, v in list(versions.items())[:3]),
        tool_versions_full=", ".join(f"{k} {v}" for k, v in versions.items()),
        notices=notices,
        decision_lists=[_decision_list(summary, "Blockers", d.blockers), _decision_list(summary, also, d.conditions)],
        covered=len(PHASES) - len(missing), catalogue=len(PHASES),
        not_covered=", ".join(f"{BY_NAME[n].title} ({summary.not_covered_reason(n)})" for n in missing),
        notes=list(d.notes), phases=phases, critical=[_check_row(c) for c in summary.critical()],
        signoffs=_signoff_rows(summary),
        waivers=[_waiver_row(c) for c in summary.checks if c.waiver],
        checks=[_check_row(c) for c in summary.checks],
        reseal_title=reseal_title, resealed=bool(resealed), reseals=reseals, decision_label=d.label,
        attachments=attachment_rows(summary.run_dir, run.attachments))


# -- rendering ---------------------------------------------------------------------------------------------

class MdText(str):
    """Text the `md` filter made safe for Markdown; the only kind of value summary.md's template prints."""


def md(value: Any, code: bool = False) -> MdText:
    """A value as inline Markdown text, safe in a table cell: one line (newlines and runs of whitespace
    become one space), control characters as visible escapes, and `\\`, `|`, a backtick, `<`, `>` and `&`
    escaped so nothing in it can end a cell, open code, or become HTML. `code=True`: a code span (a
    value holding a backtick is shown as escaped text instead)."""
    text = printable(" ".join(str(value).split()))
    if code and "`" not in text:
        return MdText("`" + text.replace("|", "\\|") + "`")
    for ch in "\\`|":
        text = text.replace(ch, "\\" + ch)
    return MdText(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _md_only(value: Any) -> Any:
    """summary.md's finalize: numbers print as they are, text only once the `md` filter has escaped it."""
    if isinstance(value, MdText | int | float) or value is None:
        return "" if value is None else value
    raise TypeError(f"summary.md.j2 prints {value!r} without the md filter")


@cache
def _environment(markdown: bool) -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES / "summary"), undefined=jinja2.StrictUndefined,
        autoescape=False if markdown else jinja2.select_autoescape(("html.j2",), default=True),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=_md_only if markdown else None)
    env.filters["md"] = md
    return env


def render_summary_html(view: SummaryView) -> Markup:
    """report.html's summary section (autoescaped)."""
    return Markup(_environment(False).get_template("summary.html.j2").render(v=view))


def render_phase_heading(row: PhaseRow, problem: str = "") -> Markup:
    """The heading cell before a phase's notebook in report.html (autoescaped); `problem`: why no notebook follows."""
    return Markup(_environment(False).get_template("phase_heading.html.j2").render(p=row, problem=problem))


def render_summary_md(view: SummaryView) -> str:
    """summary.md: the seed template filled in (every value through the `md` filter)."""
    return _environment(True).get_template("summary.md.j2").render(v=view)
