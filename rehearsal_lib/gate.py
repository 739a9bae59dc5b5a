"""Gate policy: from checks and phase outcomes to GO / NO-GO / CONDITIONAL GO.

- any blocker `fail`/`error`, or a phase notebook that crashed or did not finish (a synthetic
  blocker `error` check `<phase>.notebook.completed`) -> NO-GO;
- otherwise any major `fail`/`error`, or a blocker that is `skip`/`manual` (e.g. a destructive
  phase refused in production) -> CONDITIONAL GO with the conditions listed;
- otherwise GO.
A waiver (owner, reason, expiry) downgrades a named failing check to `warn`; an expired waiver
does not apply and says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from rehearsal_lib.config import Gate
from rehearsal_lib.results import FAILING, Check, Status

GO, NO_GO, CONDITIONAL = "GO", "NO-GO", "CONDITIONAL GO"
EXIT_CODES = {GO: 0, NO_GO: 1, CONDITIONAL: 3}
EXIT_AWAITING = 4  # `rehearse status`: not NO-GO, but a sign-off or an attestation is still awaited


@dataclass
class PhaseOutcome:
    """How a phase notebook ran: `ok`, `error` (raised or timed out), `interrupted`, `not_run`, `refused`."""

    name: str
    title: str
    outcome: str = "ok"
    reason: str = ""
    duration_s: float = 0.0
    notebook: str | None = None
    started_at: str = ""  # the executed notebook's papermill start_time / end_time (UTC), when recorded
    ended_at: str = ""


@dataclass
class Decision:
    decision: str
    blockers: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    awaiting_signoff: list[str] = field(default_factory=list)  # required roles that have not approved yet
    pending_attestations: list[str] = field(default_factory=list)  # checks still `manual`

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    @property
    def label(self) -> str:
        """The decision as people read it: "GO — awaiting sign-off: DevOps Lead, Executive Sponsor"."""
        if self.decision == NO_GO or not self.awaiting_signoff:
            return self.decision
        return f"{self.decision} — awaiting sign-off: {', '.join(self.awaiting_signoff)}"

    @property
    def status_code(self) -> int:
        """`rehearse status`: 1 NO-GO; else 4 while a sign-off or an attestation is awaited; else exit_code."""
        if self.decision != NO_GO and (self.awaiting_signoff or self.pending_attestations):
            return EXIT_AWAITING
        return self.exit_code

    def to_json(self) -> dict:
        return {"decision": self.decision, "label": self.label, "blockers": self.blockers,
                "conditions": self.conditions, "notes": self.notes, "awaiting_signoff": self.awaiting_signoff,
                "pending_attestations": self.pending_attestations}


def apply_policy(checks: list[Check], gate: Gate, today: dt.date | None = None) -> list[Check]:
    """Apply severity overrides and waivers; return new Check objects (inputs are not changed)."""
    today = today or dt.datetime.now(dt.UTC).date()
    waivers = {w.check: w for w in gate.waivers}
    out = []
    for check in checks:
        update: dict = {}
        if check.id in gate.severity_overrides:
            update["severity"] = gate.severity_overrides[check.id]
        waiver = waivers.get(check.id)
        if waiver and check.status in FAILING:
            info = {"owner": waiver.owner, "reason": waiver.reason, "expires": waiver.expires.isoformat()}
            if waiver.expires >= today:
                update["waiver"] = {**info, "original_status": check.status}
                update["status"] = "warn"
            else:
                update["waiver"] = {**info, "expired": "true"}
        out.append(check.model_copy(update=update) if update else check)
    return out


def outcome_checks(phases: list[PhaseOutcome]) -> list[Check]:
    """One synthetic check per phase that did not complete, so gates, JUnit and report agree."""
    out = []
    for p in phases:
        if p.outcome == "ok":
            continue
        status = Status.SKIP if p.outcome == "refused" else Status.ERROR  # refused: a run folder from before #11
        what = {"error": "the notebook stopped with an error", "interrupted": "the run was interrupted",
                "not_run": "the phase never started", "refused": "the phase was refused"}[p.outcome]
        out.append(Check(id=f"{p.name}.notebook.completed", phase=p.name, title=f"{p.title} notebook ran to the end",
                         status=status, severity="blocker", expected="the notebook runs top to bottom",
                         observed=p.reason or what, duration_s=p.duration_s))
    return out


def decide(checks: list[Check], gate: Gate) -> Decision:
    """The decision for a set of checks (policy already applied, phase outcomes included)."""
    blockers: list[str] = []
    conditions: list[str] = []
    notes: list[str] = []
    for c in checks:
        what = c.observed or c.title
        label = f"{c.id}: {what}" if c.status in FAILING else f"{c.id} ({c.status}): {what}"
        if c.status in FAILING:
            if c.severity == "blocker":
                blockers.append(label)
            elif c.severity == "major":
                conditions.append(label)
            else:
                notes.append(label)
        elif c.status in ("skip", "manual") and c.severity == "blocker":
            conditions.append(label)
        elif c.status == "warn":
            (conditions if gate.warn_is_condition or c.waiver else notes).append(label)
        if c.waiver and c.waiver.get("expired"):
            notes.append(f"waiver for {c.id} expired on {c.waiver['expires']} and no longer applies")
    if blockers:
        decision = NO_GO
    elif conditions:
        decision = CONDITIONAL
    else:
        decision = GO
    return Decision(decision, blockers, conditions, notes)
