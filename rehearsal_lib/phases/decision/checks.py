"""Decision phase: the run so far, its gates, failures, attestations and the previous run."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from rehearsal_lib.evidence import RunSummary, collect
from rehearsal_lib.phase import Outcome, PhaseRun, display_bundle
from rehearsal_lib.phases.decision.params import DecisionParams
from rehearsal_lib.results import STATUS_STYLE, Check, UnreadableFile, read_json_file


def latest_run_dir(ctx: PhaseRun[DecisionParams]) -> Path | None:
    """The newest run folder of this environment (used when the notebook runs on its own)."""
    from rehearsal_lib.runner import outputs_root

    folder = outputs_root() / ctx.params.name
    runs = sorted(p for p in folder.glob("*") if (p / "notebooks").is_dir()) if folder.is_dir() else []
    return runs[-1] if runs else None


def run_so_far(ctx: PhaseRun[DecisionParams]) -> RunSummary | None:
    """Every other phase's results in this run folder, with the params' gate policy applied."""
    run_dir = Path(ctx.run_dir) if ctx.run_dir else latest_run_dir(ctx)
    if run_dir is None:
        display_bundle({"text/plain": "No run folder yet: run `rehearse run " + ctx.params.name + "` first.",
                  "text/html": "<p>No run folder yet: run <code>rehearse run " + html.escape(ctx.params.name)
                               + "</code> first.</p>"})
        return None
    return collect(run_dir, ctx.params.gate, exclude=("decision",))


def record_attestations(ctx: PhaseRun[DecisionParams]) -> list[Check]:
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
    from rehearsal_lib.gate import apply_policy
    from rehearsal_lib.people import decide_run, read_entries
    from rehearsal_lib.report import DECISION_COLORS

    gate = summary.record.gate_policy()
    d = decide_run(summary.checks + apply_policy(extra, gate), gate, summary.record, read_entries(summary.run_dir))
    items = "".join(f"<li><b>blocker</b> {html.escape(b)}</li>" for b in d.blockers)
    items += "".join(f"<li><b>condition</b> {html.escape(c)}</li>" for c in d.conditions)
    display_bundle({
        "text/html": f"<div style='background:{DECISION_COLORS[d.decision]};color:#fff;padding:12px 16px;"
                     f"border-radius:6px;font-family:system-ui,sans-serif'><div style='font-size:22px;"
                     f"font-weight:700'>Decision from the phases before this one: {html.escape(d.label)}</div>"
                     f"<ul>{items}</ul>"
                     "</div>",
        "text/plain": "\n".join([f"Decision from the phases before this one: {d.label}", *d.blockers,
                                 *d.conditions]),
    })


def show_hard_gates(summary: RunSummary) -> None:
    """The seeds' hard gates: each blocker check and whether it holds, the ones that do not first."""
    from rehearsal_lib.phases import BY_NAME
    from rehearsal_lib.results import check_anchor

    order = {"error": 0, "fail": 1, "skip": 2, "manual": 3, "warn": 4, "pass": 5}
    blockers = sorted((c for c in summary.checks if c.severity == "blocker"), key=lambda c: order.get(c.status, 9))
    holding = sum(c.status == "pass" for c in blockers)
    left = "style='text-align:left'"
    rows = "".join(
        f"<tr><td style='color:{STATUS_STYLE[c.status][0]};font-weight:600;text-align:left'>{c.status.upper()}</td>"
        f"<td {left}>{html.escape(BY_NAME[c.phase].title if c.phase in BY_NAME else c.phase)}</td>"
        f"<td {left}><a href='#{check_anchor(c.id)}'>{html.escape(c.title)}</a></td>"
        f"<td {left}><code>{html.escape(c.id)}</code></td></tr>"
        for c in blockers)
    head = f"<p>{holding} of {len(blockers)} hard gates hold.</p>"
    display_bundle({"text/html": f"{head}<table><tr><th {left}>Status</th><th {left}>Phase</th>"
                              f"<th {left}>Hard gate</th>"
                           f"<th {left}>Check</th></tr>{rows}</table>",
              "text/plain": f"{holding} of {len(blockers)} hard gates hold\n"
                            + "\n".join(f"{c.status:6} {c.id}" for c in blockers)})


def show_failures(summary: RunSummary) -> None:
    bad = [c for c in summary.checks if c.status in ("fail", "error", "warn")]
    if not bad:
        display_bundle({"text/plain": "No failed checks.", "text/html": "<p>No failed checks.</p>"})
        return
    for c in bad:  # badges only: these checks belong to their own phases, not to this notebook's record
        display_bundle({"text/html": c.bounded().badge_html(),
                  "text/plain": f"recorded by {c.phase}: {c.status} {c.id}: {c.observed}"})


def compare_with_previous(ctx: PhaseRun[DecisionParams], summary: RunSummary) -> None:
    """Checks whose status changed since the previous run of this environment."""
    folder = summary.run_dir.parent
    earlier = sorted(p for p in folder.glob("*") if (p / "results.json").is_file() and p.name < summary.run_dir.name)
    if not earlier:
        note = "No previous run to compare with."
        display_bundle({"text/plain": note, "text/html": f"<p>{note}</p>"})
        return
    skipped = []
    while True:  # the newest earlier run whose results.json can be read; a corrupt one is named, not fatal
        try:
            prev = read_json_file(earlier[-1] / "results.json")
            break
        except UnreadableFile as exc:
            skipped.append(f"{earlier.pop().name} ({exc.problem})")
            if not earlier:
                note = "No previous run to compare with: unreadable results.json in " + "; ".join(skipped)
                display_bundle({"text/plain": note, "text/html": f"<p>{html.escape(note)}</p>"})
                return
    if skipped:
        note = "Skipped earlier run(s) whose results.json cannot be read: " + "; ".join(skipped)
        display_bundle({"text/plain": note, "text/html": f"<p>{html.escape(note)}</p>"})
    before = {c["id"]: c["status"] for c in prev.get("checks", [])}
    now = {c.id: c.status for c in summary.checks}
    changed = [(i, before[i], now[i]) for i in sorted(set(before) & set(now)) if before[i] != now[i]]
    new = sorted(set(now) - set(before))
    gone = sorted(set(before) - set(now))
    head = f"Previous run {earlier[-1].name}: decision {prev.get('decision')}. "
    parts = [f"{len(changed)} check(s) changed status" if changed else "no check changed status"]
    if new:
        parts.append(f"{len(new)} new check(s) (not in the previous run)")
    if gone:
        parts.append(f"{len(gone)} check(s) of the previous run not run now")
    note = head + "; ".join(parts) + "."
    left = "style='text-align:left'"
    rows = "".join(f"<tr><td {left}><code>{html.escape(i)}</code></td><td {left}>{b}</td><td {left}>{a}</td></tr>"
                   for i, b, a in changed)
    table = (f"<table><tr><th {left}>check</th><th {left}>before</th><th {left}>now</th></tr>{rows}</table>"
             if changed else "")
    lists = "".join(f"<details><summary>{html.escape(label)} ({len(ids)})</summary><p>"
                    + ", ".join(f"<code>{html.escape(i)}</code>" for i in ids) + "</p></details>"
                    for label, ids in (("New checks", new), ("Not run now", gone)) if ids)
    display_bundle({"text/html": f"<p>{html.escape(note)}</p>{table}{lists}",
              "text/plain": note + "".join(f"\n{i}: {b} -> {a}" for i, b, a in changed)})


def _table(headers: list[str], rows: list[list[str]]) -> str:
    left = "style='text-align:left;vertical-align:top'"
    head = "".join(f"<th {left}>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td {left}>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


IMPACT = {"blocker": "high", "major": "medium", "minor": "low", "info": "low"}


def show_risk_register(ctx: PhaseRun[DecisionParams], summary: RunSummary | None) -> None:
    """Declared risks from params, then the weak points this run observed, one row per phase."""
    from rehearsal_lib.phases import BY_NAME

    rows = [[r.risk, r.impact, r.likelihood, r.mitigation, r.owner or "—", "declared"] for r in ctx.params.risks]
    rank = {"blocker": 0, "major": 1, "minor": 2, "info": 3}
    by_phase: dict[str, list[Check]] = {}
    for c in (summary.checks if summary else []):
        if c.status in ("fail", "error", "warn"):
            by_phase.setdefault(c.phase, []).append(c)
    for phase, checks in by_phase.items():
        worst = min(checks, key=lambda c: rank.get(c.severity, 9)).severity
        waived = [(c.id, c.waiver) for c in checks if c.waiver and not c.waiver.get("expired")]
        expired = [(c.id, c.waiver) for c in checks if c.waiver and c.waiver.get("expired")]
        mitigation = "fix before GO"
        if waived:
            mitigation += "; waived: " + ", ".join(
                f"{cid} by {w['owner']} until {w['expires']}" for cid, w in waived)
        if expired:
            mitigation += "; waiver expired: " + ", ".join(
                f"{cid} ({w['owner']}, {w['expires']})" for cid, w in expired)
        title = BY_NAME[phase].title if phase in BY_NAME else phase
        risk = f"{title}: " + "; ".join(c.title for c in checks)
        rows.append([risk, IMPACT[worst], "observed in this run", mitigation, "—", f"{len(checks)} check(s)"])
    if not rows:
        ctx.note("No declared risks (risks: in the params file) and no weak point observed in this run.")
        return
    display_bundle({"text/html": _table(["Risk", "Impact", "Likelihood", "Mitigation", "Owner", "Source"], rows),
              "text/plain": "\n".join(" | ".join(map(str, r)) for r in rows)})


def show_waivers(ctx: PhaseRun[DecisionParams]) -> None:
    """Waivers in the params file and whether each is still in force."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    rows = [[w.check, w.owner, w.reason, w.expires.isoformat(), "in force" if w.expires >= today else "EXPIRED"]
            for w in ctx.params.gate.waivers]
    if not rows:
        ctx.note("No waivers.")
        return
    display_bundle({"text/html": _table(["Check", "Owner", "Reason", "Expires", "State"], rows),
              "text/plain": "\n".join(" | ".join(r) for r in rows)})


def attestation_desk(ctx: PhaseRun[DecisionParams], answer: dict[str, Any] | None = None) -> None:
    """The checks awaiting attestation and the sign-offs awaited; with `answer`, record it first.

    Under `rehearse run` it lists what the run leaves to people. After the run (JupyterLab, `run_dir` set to the
    finished run folder) an `answer` — {"check", "by", "status": "pass"|"fail", "note"} or {"role", "by",
    "approve": true|false, "note"} — is recorded through `people.attest` / `people.sign_off`, exactly as
    `rehearse attest` / `rehearse signoff` do (appended, decided again, resealed with the reason)."""
    from rehearsal_lib import people

    run_dir = Path(ctx.run_dir) if ctx.run_dir else latest_run_dir(ctx)
    sealed = run_dir is not None and not ctx.under_run and (run_dir / "manifest.json").is_file()
    if answer:
        if not sealed or run_dir is None:
            raise ValueError("an answer is recorded in a finished run folder: set run_dir to it (outputs/<env>/"
                             "<run-id>) and run this notebook after the run, not under `rehearse run`")
        note, reason = str(answer.get("note") or ""), answer.get("reseal_reason")
        if "role" in answer:
            approve = answer.get("approve")
            if not isinstance(approve, bool):
                raise ValueError('a sign-off answer needs "approve": true or false')
            done = people.sign_off(run_dir, str(answer["role"]), str(answer.get("by") or ""), approve, note, reason)
        else:
            done = people.attest(run_dir, str(answer.get("check") or ""), str(answer.get("by") or ""),
                                 str(answer.get("status") or ""), note, reason)
        ctx.note(f"Recorded in {run_dir.name}/{people.PEOPLE_LOG} and resealed: {done.sealed.line()}")
    if sealed and run_dir is not None:
        summary = collect(run_dir)
        pending = [c for c in summary.checks if c.id in summary.decision.pending_attestations]
        rows = people.signoff_rows(summary.record, people.read_entries(run_dir))
        label = summary.decision.label
    else:  # under the run: the other phases so far, and this notebook's own attestations
        so_far = collect(run_dir, ctx.params.gate, exclude=("decision",)) if run_dir is not None else None
        pending = [c for c in [*(so_far.checks if so_far else []), *ctx.checks] if c.status == "manual"]
        roles = ctx.params.signoff.required_roles if ctx.params.signoff else []
        rows = [people.SignoffRow(role, None) for role in roles]
        label = ""
    where = str(run_dir) if run_dir is not None else "RUN_DIR"
    table = _table(["Awaiting attestation", "Title", "Severity", "Recorded"],
                   [[c.id, c.title, c.severity, c.observed] for c in pending]) if pending else \
        "<p>No check awaits attestation.</p>"
    signed = _table(["Sign-off role", "State", "By", "When", "Note"],
                    [[r.role, r.state, (r.entry or {}).get("by", "—"), (r.entry or {}).get("at", "—"),
                      (r.entry or {}).get("note", "")] for r in rows]) if rows else ""
    how = (f"Record an answer: rehearse attest {where} CHECK --by NAME --status pass|fail --note TEXT; "
           f"rehearse signoff {where} --role ROLE --by NAME --approve|--reject --note TEXT; or set `answer` in "
           "the parameters cell and run this notebook with run_dir set to the finished run folder.")
    head = f"<p><b>Decision now: {html.escape(label)}</b></p>" if label else ""
    display_bundle({"text/html": head + table + signed + f"<p>{html.escape(how)}</p>",
                    "text/plain": "\n".join(([f"Decision now: {label}"] if label else [])
                                            + [f"awaiting attestation: {c.id} ({c.severity}): {c.title}"
                                               for c in pending]
                                            + [f"sign-off {r.role}: {r.state}" for r in rows] + [how])})


def show_sign_off(ctx: PhaseRun[DecisionParams]) -> None:
    """The sign-off block: each attestation with who, when and what they said, then the required roles (signed
    after the run with `rehearse signoff`; the report's summary shows who signed)."""
    rows = [[a.title, a.by or "—", a.at.isoformat() if a.at else "—",
             a.status if a.by and a.status != "manual" else "awaiting", a.note] for a in ctx.params.attestations]
    rows += [[f"Sign-off: {role}", "—", "—", "awaiting (rehearse signoff)", ""]
             for role in (ctx.params.signoff.required_roles if ctx.params.signoff else [])]
    if not rows:
        ctx.note("No sign-offs configured (attestations: and signoff: in the params file).")
        return
    display_bundle({"text/html": _table(["Sign-off", "By", "When", "Status", "Note"], rows),
              "text/plain": "\n".join(" | ".join(r) for r in rows)})
