"""Decision phase: the run so far, its gates, failures, attestations and the previous run."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rehearsal_lib.evidence import RunSummary, collect
from rehearsal_lib.phase import Outcome, PhaseRun, _display
from rehearsal_lib.results import STATUS_STYLE, Check


def latest_run_dir(ctx: PhaseRun) -> Path | None:
    """The newest run folder of this environment (used when the notebook runs on its own)."""
    from rehearsal_lib.runner import outputs_root

    folder = outputs_root() / ctx.params.name
    runs = sorted(p for p in folder.glob("*") if (p / "notebooks").is_dir()) if folder.is_dir() else []
    return runs[-1] if runs else None


def run_so_far(ctx: PhaseRun) -> RunSummary | None:
    """Every other phase's results in this run folder, with the params' gate policy applied."""
    run_dir = Path(ctx.run_dir) if ctx.run_dir else latest_run_dir(ctx)
    if run_dir is None:
        _display({"text/plain": "No run folder yet: run `rehearse run " + ctx.params.name + "` first.",
                  "text/html": "<p>No run folder yet: run <code>rehearse run " + html.escape(ctx.params.name)
                               + "</code> first.</p>"})
        return None
    return collect(run_dir, ctx.params.gate, exclude=("decision",))


def record_attestations(ctx: PhaseRun) -> list[Check]:
    """Operator attestations and sign-offs from params; not given yet means `manual`."""
    if not ctx.params.attestations:
        ctx.note("No attestations configured (attestations: in the params file).")
    out = []
    for a in ctx.params.attestations:
        def probe(a=a) -> Outcome:
            if a.status == "manual" or not a.by:
                return Outcome("manual", "awaiting attestation", "attested by a named person")
            when = a.at.isoformat() if a.at else "time not given"
            return Outcome(a.status, f"{a.status} by {a.by} at {when}" + (f": {a.note}" if a.note else ""),
                           "attested by a named person", {"by": a.by, "at": when, "note": a.note})

        out.append(ctx.run(f"attestation.{a.check}", a.title, probe, severity=a.severity))
    return out


def show_decision(summary: RunSummary, extra: list[Check]) -> None:
    """Decision banner with blockers and conditions, computed as the runner will."""
    from rehearsal_lib.config import Gate
    from rehearsal_lib.gate import apply_policy, decide
    from rehearsal_lib.report import DECISION_COLORS

    gate = Gate.model_validate(summary.meta.get("gate", {}))
    d = decide(summary.checks + apply_policy(extra, gate), gate)
    items = "".join(f"<li><b>blocker</b> {html.escape(b)}</li>" for b in d.blockers)
    items += "".join(f"<li><b>condition</b> {html.escape(c)}</li>" for c in d.conditions)
    _display({
        "text/html": f"<div style='background:{DECISION_COLORS[d.decision]};color:#fff;padding:12px 16px;"
                     f"border-radius:6px;font-family:system-ui,sans-serif'><div style='font-size:22px;"
                     f"font-weight:700'>Decision from the phases before this one: {d.decision}</div><ul>{items}</ul>"
                     "</div>",
        "text/plain": "\n".join([f"Decision from the phases before this one: {d.decision}", *d.blockers,
                                 *d.conditions]),
    })


def show_hard_gates(summary: RunSummary) -> None:
    """The seeds' hard gates: each blocker check and whether it holds."""
    blockers = [c for c in summary.checks if c.severity == "blocker"]
    left = "style='text-align:left'"
    rows = "".join(
        f"<tr><td style='color:{STATUS_STYLE[c.status][0]};font-weight:600;text-align:left'>{c.status.upper()}</td>"
        f"<td {left}>{html.escape(c.title)}</td><td {left}><code>{html.escape(c.id)}</code></td></tr>"
        for c in blockers)
    _display({"text/html": f"<table><tr><th {left}>Status</th><th {left}>Hard gate</th><th {left}>Check</th></tr>"
                           f"{rows}</table>",
              "text/plain": "\n".join(f"{c.status:6} {c.id}" for c in blockers)})


def show_failures(summary: RunSummary) -> None:
    bad = [c for c in summary.checks if c.status in ("fail", "error", "warn")]
    if not bad:
        _display({"text/plain": "No failed checks.", "text/html": "<p>No failed checks.</p>"})
        return
    for c in bad:  # badges only: these checks belong to their own phases, not to this notebook's record
        _display({"text/html": c.bounded().badge_html(),
                  "text/plain": f"recorded by {c.phase}: {c.status} {c.id}: {c.observed}"})


def compare_with_previous(ctx: PhaseRun, summary: RunSummary) -> None:
    """Checks whose status changed since the previous run of this environment."""
    folder = summary.run_dir.parent
    earlier = sorted(p for p in folder.glob("*") if (p / "results.json").is_file() and p.name < summary.run_dir.name)
    if not earlier:
        note = "No previous run to compare with."
        _display({"text/plain": note, "text/html": f"<p>{note}</p>"})
        return
    prev = json.loads((earlier[-1] / "results.json").read_text())
    before = {c["id"]: c["status"] for c in prev.get("checks", [])}
    now = {c.id: c.status for c in summary.checks}
    changed = [(i, before.get(i, "—"), now.get(i, "—")) for i in sorted(set(before) | set(now))
               if before.get(i) != now.get(i)]
    head = f"Previous run {earlier[-1].name}: decision {prev.get('decision')}. "
    if not changed:
        note = head + "No check changed status."
        _display({"text/plain": note, "text/html": f"<p>{html.escape(note)}</p>"})
        return
    rows = "".join(f"<tr><td><code>{html.escape(i)}</code></td><td>{b}</td><td>{a}</td></tr>" for i, b, a in changed)
    _display({"text/html": f"<p>{html.escape(head)}{len(changed)} check(s) changed:</p><table><tr><th>check</th>"
                           f"<th>before</th><th>now</th></tr>{rows}</table>",
              "text/plain": head + "\n".join(f"{i}: {b} -> {a}" for i, b, a in changed)})


def _table(headers: list[str], rows: list[list[str]]) -> str:
    left = "style='text-align:left;vertical-align:top'"
    head = "".join(f"<th {left}>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td {left}>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


IMPACT = {"blocker": "high", "major": "medium", "minor": "low", "info": "low"}


def show_risk_register(ctx: PhaseRun, summary: RunSummary | None) -> None:
    """Declared risks from params, then the weak points this run observed (failed or warned checks)."""
    rows = [[r.risk, r.impact, r.likelihood, r.mitigation, r.owner or "—", "declared"] for r in ctx.params.risks]
    for c in (summary.checks if summary else []):
        if c.status in ("fail", "error", "warn"):
            if c.waiver and not c.waiver.get("expired"):
                mitigation = f"waived by {c.waiver['owner']} until {c.waiver['expires']}: {c.waiver['reason']}"
            elif c.waiver:
                mitigation = f"fix before GO (the waiver by {c.waiver['owner']} expired on {c.waiver['expires']})"
            else:
                mitigation = "fix before GO"
            rows.append([f"{c.title}: {c.observed}", IMPACT[c.severity], "observed", mitigation, "—", c.id])
    if not rows:
        ctx.note("No declared risks (risks: in the params file) and no weak point observed in this run.")
        return
    _display({"text/html": _table(["Risk", "Impact", "Likelihood", "Mitigation", "Owner", "Source"], rows),
              "text/plain": "\n".join(" | ".join(map(str, r)) for r in rows)})


def show_waivers(ctx: PhaseRun) -> None:
    """Waivers in the params file and whether each is still in force."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    rows = [[w.check, w.owner, w.reason, w.expires.isoformat(), "in force" if w.expires >= today else "EXPIRED"]
            for w in ctx.params.gate.waivers]
    if not rows:
        ctx.note("No waivers.")
        return
    _display({"text/html": _table(["Check", "Owner", "Reason", "Expires", "State"], rows),
              "text/plain": "\n".join(" | ".join(r) for r in rows)})


def show_sign_off(ctx: PhaseRun) -> None:
    """The sign-off block: each attestation with who, when and what they said."""
    rows = [[a.title, a.by or "—", a.at.isoformat() if a.at else "—",
             a.status if a.by and a.status != "manual" else "awaiting", a.note] for a in ctx.params.attestations]
    if not rows:
        ctx.note("No sign-offs configured (attestations: in the params file).")
        return
    _display({"text/html": _table(["Sign-off", "By", "When", "Status", "Note"], rows),
              "text/plain": "\n".join(" | ".join(r) for r in rows)})
