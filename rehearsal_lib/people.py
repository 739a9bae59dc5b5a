"""After the run: operators' attestations and sign-offs, recorded in the run folder and folded into the decision.

`attestations.jsonl` in the run folder is append-only and hash-chained (`seal.append_chained`): one entry per
answer, `kind` `attestation` (check, status pass|fail, by, at, note) or `signoff` (role, decision
approve|reject, by, at, note). The latest answer per check (per role) counts; every answer stays in the file.

- `apply_attestations`: a check the run recorded as `manual` takes its latest attestation's status;
- `decide_run`: the gate's decision over those checks, plus sign-off: a rejection is a blocker (NO-GO, with the
  role, who and why), the required roles (params `signoff.required_roles`, recorded in run.json at the start)
  not approved yet are `awaiting_signoff`, the checks still `manual` are `pending_attestations`.
  `evidence.collect` uses both, so the runner, `rehearse report`, `attest`, `signoff` and `status` agree;
- `attest` / `sign_off`: the one way to add an answer: refuse what the run does not know, then reopen the
  seal through the recorded reseal route (`seal.open_for_rebuild`, reason "attestation: CHECK by NAME"),
  append, rebuild results.json, junit.xml, summary.md and report.html, and seal again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal_lib.config import ConfigError, Gate
from rehearsal_lib.gate import NO_GO, Decision, decide
from rehearsal_lib.results import Check, Status

if TYPE_CHECKING:
    from rehearsal_lib.config import Params
    from rehearsal_lib.evidence import RunSummary
    from rehearsal_lib.runrecord import RunRecord

PEOPLE_LOG = "attestations.jsonl"
ATTESTED = ("pass", "fail")


def people_record(params: Params) -> dict[str, Any]:
    """What run.json keeps of the params for after the run: the required sign-off roles and the phase owners."""
    out: dict[str, Any] = {}
    if params.signoff is not None:
        out["signoff_roles"] = list(params.signoff.required_roles)
    owners = {}
    for name in params.enabled_phases():
        owner = getattr(getattr(params.phases, name, None), "owner", None)
        if owner:
            owners[name] = owner
    if owners:
        out["owners"] = owners
    return out


def read_entries(run_dir: Path) -> list[dict[str, Any]]:
    """The answers recorded in the run folder (`rehearse verify` checks the chain)."""
    from rehearsal_lib.seal import read_chain

    path = run_dir / PEOPLE_LOG
    return read_chain(path, PEOPLE_LOG)[0] if path.is_file() else []


def _latest(entries: Iterable[dict[str, Any]], kind: str, key: str) -> dict[str, dict[str, Any]]:
    return {str(e[key]): e for e in entries if e.get("kind") == kind and isinstance(e.get(key), str)}


def attested_text(entry: dict[str, Any]) -> str:
    note = entry.get("note") or ""
    return f"{entry.get('status')} by {entry.get('by')} at {entry.get('at')}" + (f": {note}" if note else "")


def apply_attestations(checks: list[Check], entries: list[dict[str, Any]]) -> list[Check]:
    """Each `manual` check with an attestation takes its latest answer (status, who, when, note)."""
    answers = _latest(entries, "attestation", "check")
    out = []
    for c in checks:
        a = answers.get(c.id)
        if a is not None and c.status == Status.MANUAL and a.get("status") in ATTESTED:
            c = Check.model_validate({**c.model_dump(), "status": a["status"], "observed": attested_text(a),
                                      "evidence": {"attested": {k: a.get(k) for k in ("by", "at", "note", "seq")},
                                                   "recorded_in": PEOPLE_LOG, "before": c.observed}})
        out.append(c)
    return out


@dataclass
class SignoffRow:
    """One required role and its latest answer (None: not signed yet)."""

    role: str
    entry: dict[str, Any] | None

    @property
    def state(self) -> str:
        if self.entry is None:
            return "awaiting"
        return "approved" if self.entry.get("decision") == "approve" else "rejected"


def signoff_rows(record: RunRecord, entries: list[dict[str, Any]]) -> list[SignoffRow]:
    answers = _latest(entries, "signoff", "role")
    return [SignoffRow(role, answers.get(role)) for role in record.signoff_roles]


def decide_run(checks: list[Check], gate: Gate, record: RunRecord, entries: list[dict[str, Any]]) -> Decision:
    """The run's decision: the gate over the checks (attestations applied), then sign-off."""
    d = decide(checks, gate)
    for row in signoff_rows(record, entries):
        if row.state == "rejected":
            e = row.entry or {}
            d.blockers.append(f"sign-off rejected: {row.role} by {e.get('by')} at {e.get('at')}: "
                              f"{e.get('note') or 'no reason given'}")
            d.decision = NO_GO
        elif row.state == "awaiting":
            d.awaiting_signoff.append(row.role)
    d.pending_attestations = [c.id for c in checks if c.status == Status.MANUAL]
    return d


# -- recording an answer -------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def open_run(run_dir: Path) -> RunSummary:
    """The run as it stands (a finished or crashed run; never one whose runner is still going)."""
    from rehearsal_lib.evidence import collect, crash_info
    from rehearsal_lib.runrecord import read_run_record

    if not (run_dir / "notebooks").is_dir():
        raise ConfigError(run_dir, "not a run folder (no notebooks/ inside)")
    record = read_run_record(run_dir, required=True)
    if not record.finished_at and crash_info(record) is None:
        raise ConfigError(run_dir, f"this run is still going (runner pid {record.runner_pid} on "
                                   f"{record.runner_host}); attest and sign off once it has ended")
    return collect(run_dir)


def attestable(summary: RunSummary) -> dict[str, Check]:
    """The run's checks an operator may attest: those it recorded as `manual` (awaiting a person)."""
    entries = read_entries(summary.run_dir)
    answered = {cid for cid in _latest(entries, "attestation", "check")}
    return {c.id: c for c in summary.checks if c.status == Status.MANUAL or
            (c.id in answered and isinstance(c.evidence, dict) and c.evidence.get("recorded_in") == PEOPLE_LOG)}


def _text(value: str, what: str, run_dir: Path) -> str:
    value = " ".join((value or "").split())
    if not value:
        raise ConfigError(run_dir, f"{what} must not be empty")
    return value


def _record(run_dir: Path, entry: dict[str, Any], purpose: str, reseal_reason: str | None) -> RunSummary:
    from rehearsal_lib.runner import finalize
    from rehearsal_lib.seal import append_chained

    return finalize(run_dir, reseal_reason=reseal_reason, purpose=purpose,
                    before_derive=lambda: append_chained(run_dir / PEOPLE_LOG, entry))


def attest(run_dir: Path, check: str, by: str, status: str, note: str = "",
           reseal_reason: str | None = None) -> RunSummary:
    """Record an operator's answer for a `manual` check, derive the decision again and reseal the folder.

    ConfigError (exit 2) for an unknown check (naming the attestable ones) or a check a program decided;
    seal.SealRefused when the folder no longer matches its seal and no `reseal_reason` says why."""
    run_dir = run_dir.resolve()
    by = _text(by, "--by (who attests)", run_dir)
    if status not in ATTESTED:
        raise ConfigError(run_dir, f"--status must be pass or fail, not {status!r}")
    summary = open_run(run_dir)
    known = attestable(summary)
    if check not in known:
        ids = {c.id: c for c in summary.checks}
        names = ", ".join(sorted(known)) or "none (this run recorded no manual check)"
        if check in ids:
            raise ConfigError(run_dir, f"{check} is not awaiting attestation: the run recorded it as "
                                       f"{ids[check].status} (only manual checks are attested; attestable: {names})")
        raise ConfigError(run_dir, f"no check {check!r} in this run; attestable checks: {names}")
    entry = {"kind": "attestation", "check": check, "status": status, "by": by, "at": _now(),
             "note": " ".join(note.split())}
    return _record(run_dir, entry, f"attestation: {check} by {by}", reseal_reason)


def sign_off(run_dir: Path, role: str, by: str, approve: bool, note: str = "",
             reseal_reason: str | None = None) -> RunSummary:
    """Record a required role's approval or rejection, derive the decision again and reseal the folder."""
    run_dir = run_dir.resolve()
    by = _text(by, "--by (who signs)", run_dir)
    summary = open_run(run_dir)
    roles = summary.record.signoff_roles
    match = next((r for r in roles if r.casefold() == " ".join(role.split()).casefold()), None)
    if match is None:
        names = ", ".join(roles) or "none (params signoff.required_roles was not set when this run started)"
        raise ConfigError(run_dir, f"{role!r} is not a sign-off role of this run; required roles: {names}")
    if not approve and not note.strip():
        raise ConfigError(run_dir, "a rejection needs --note TEXT: the reason")
    entry = {"kind": "signoff", "role": match, "decision": "approve" if approve else "reject", "by": by,
             "at": _now(), "note": " ".join(note.split())}
    return _record(run_dir, entry, f"sign-off: {match} {'approved' if approve else 'rejected'} by {by}",
                   reseal_reason)


def status_lines(summary: RunSummary) -> list[str]:
    """`rehearse status`: the decision, the checks awaiting attestation, the sign-offs (given and awaited)."""
    d = summary.decision
    lines = [f"DECISION: {d.label}"]
    lines += [f"  blocker: {b}" for b in d.blockers]
    lines += [f"  condition: {c}" for c in d.conditions]
    titles = {c.id: c.title for c in summary.checks}
    lines.append(f"pending attestations ({len(d.pending_attestations)})" + (":" if d.pending_attestations else ""))
    lines += [f"  {cid}: {titles.get(cid, '')}" for cid in d.pending_attestations]
    rows = signoff_rows(summary.record, read_entries(summary.run_dir))
    lines.append(f"pending sign-offs ({len(d.awaiting_signoff)})" + (f": {', '.join(d.awaiting_signoff)}"
                                                                    if d.awaiting_signoff else ""))
    for row in rows:
        if row.entry is not None:
            e = row.entry
            lines.append(f"  {row.role}: {row.state} by {e.get('by')} at {e.get('at')}"
                         + (f": {e.get('note')}" if e.get("note") else ""))
    return lines
