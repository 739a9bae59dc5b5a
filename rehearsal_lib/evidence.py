"""The run folder's derived artefacts: results.json, junit.xml, manifest.json.

Everything here is computed from the executed notebooks plus `run.json` (what the runner saw:
timings and phases that crashed, were interrupted or never ran), so `rehearse report RUN_DIR`
can rebuild it all at any time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rehearsal_lib.config import Gate
from rehearsal_lib.gate import Decision, PhaseOutcome, apply_policy, outcome_checks
from rehearsal_lib.people import apply_attestations, decide_run, read_entries
from rehearsal_lib.phases import BY_NAME, PHASES
from rehearsal_lib.processes import pid_alive
from rehearsal_lib.results import (
    FAILING,
    Check,
    Status,
    UnreadableFile,
    checks_from_notebook,
    format_counts,
    notebook_error,
    printable,
    read_notebook_json,
    tally,
)
from rehearsal_lib.runrecord import PhaseRecord, RunRecord, read_run_record, record_json

HEARTBEAT_S = 5.0  # the runner rewrites run.json's heartbeat_at this often
STALE_AFTER_S = 120.0  # a heartbeat older than this (with no finished_at) means the runner is gone


@dataclass
class RunSummary:
    run_dir: Path
    record: RunRecord  # run.json
    phases: list[PhaseOutcome]
    checks: list[Check]
    decision: Decision
    phase_checks: dict[str, list[Check]] = field(default_factory=dict)
    sealed: Any = None  # the seal.SealRecord once finalize() has sealed the folder
    crashed: dict[str, Any] | None = None  # crash_info(): the runner died before it finished this run

    @property
    def env(self) -> str:
        return self.record.env or "?"

    @property
    def run_id(self) -> str:
        return self.record.run_id or self.run_dir.name

    def counts(self, phase: str | None = None) -> dict[Status, int]:
        return tally(c for c in self.checks if phase is None or c.phase == phase)

    def tally(self, phase: str | None = None) -> str:
        return format_counts(self.counts(phase))

    def critical(self) -> list[Check]:
        """Blocker and major checks that failed or errored: what must be resolved."""
        return [c for c in self.checks if c.status in FAILING and c.severity in ("blocker", "major")]

    def nothing_checked(self) -> list[str]:
        """Phases that ran to the end and checked nothing: every check they recorded is the target identity
        guard (`<phase>.target.identity`), because nothing of theirs is configured. Not coverage."""
        return [p.name for p in self.phases if p.outcome == "ok" and p.name not in ("decision", "run")
                and all(c.id.endswith(".target.identity") for c in self.phase_checks.get(p.name, []))]

    def not_covered(self) -> list[str]:
        """Catalogue phases this run did not include (disabled, or not built yet), and those that ran and
        checked nothing."""
        ran = {p.name for p in self.phases}
        empty = set(self.nothing_checked())
        return [p.name for p in PHASES if p.name not in ran or p.name in empty]

    def not_covered_reason(self, name: str) -> str:
        """Why a catalogue phase is not covered by this run, in words for the report."""
        from rehearsal_lib.phases import notebook_for

        if name in self.nothing_checked():
            return (f"ran, but checked nothing: no check of phases.{name} is configured (its notebook's notes say "
                    "what to set)")
        return "not built yet: no notebook" if notebook_for(name) is None else "not enabled for this environment"


def _age_s(stamp: object, now: dt.datetime) -> float | None:
    try:
        return (now - dt.datetime.fromisoformat(str(stamp))).total_seconds()
    except (TypeError, ValueError):
        return None


def crash_info(record: RunRecord, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """How a run whose runner died ended, or None when it finished or its runner is still alive.

    A run folder without `finished_at` is crashed when its runner pid is gone (same host) or its
    heartbeat is older than STALE_AFTER_S. `at` is the last heartbeat (the runner was alive then);
    `never_ran` are the phases still pending, `did_not_finish` those running when it died. A run.json
    without `runner_pid` (written by hand, or by a rehearse older than the heartbeat) is not judged."""
    if record.finished_at or record.runner_pid is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    last = record.heartbeat_at or record.started_at
    age = _age_s(last, now)
    same_host = record.runner_host == socket.gethostname()
    if same_host and pid_alive(record.runner_pid) and (age is None or age <= STALE_AFTER_S):
        return None
    if not same_host and age is not None and age <= STALE_AFTER_S:
        return None
    how = (f"runner pid {record.runner_pid} on {record.runner_host} is gone" if same_host
           else f"no heartbeat for {age:.0f} s" if age is not None else "no heartbeat recorded")
    return {"at": last, "how": how,
            "never_ran": [p.name for p in record.phases if p.outcome == "pending"],
            "did_not_finish": [p.name for p in record.phases if p.outcome == "running"]}


def crash_line(crashed: dict[str, Any]) -> str:
    """'the run crashed at about T (how); phases X, Y never ran; Z did not finish'."""
    line = f"the run crashed at about {crashed.get('at')} ({crashed.get('how')})"
    if crashed.get("did_not_finish"):
        line += f"; phase(s) {', '.join(crashed['did_not_finish'])} did not finish"
    if crashed.get("never_ran"):
        line += f"; phase(s) {', '.join(crashed['never_ran'])} never ran"
    return line


def resumed_lines(record: RunRecord) -> list[str]:
    """One line per resumption recorded in run.json (`resumed`)."""
    return [f"resumed at {r.at} by {r.by or '?'} after {r.after or '?'}: ran {', '.join(r.phases) or 'no phase'}"
            + (f"; kept {', '.join(r.kept)}" if r.kept else "") + (f"; {r.note}" if r.note else "")
            for r in record.resumed]


def collect(run_dir: Path, gate: Gate | None = None, exclude: tuple[str, ...] = ()) -> RunSummary:
    """Read the executed notebooks (and run.json) of a run folder and decide; `exclude` skips phases."""
    record = read_run_record(run_dir)
    crashed = crash_info(record)
    gate = gate or record.gate_policy()
    recorded = {p.name: p for p in record.phases}
    people = read_entries(run_dir)  # attestations and sign-offs given after the run
    names = list(recorded) or [p.stem.split("_", 1)[1] for p in sorted((run_dir / "notebooks").glob("*.ipynb"))]
    phases: list[PhaseOutcome] = []
    checks: list[Check] = []
    per_phase: dict[str, list[Check]] = {}
    for name in names:
        if name in exclude:
            continue
        info = recorded.get(name) or PhaseRecord(name=name)
        title = BY_NAME[name].title if name in BY_NAME else name
        state, reason = info.outcome, info.reason
        if crashed and state == "pending":
            state, reason = "not_run", f"never ran: the runner died at about {crashed['at']}"
        elif crashed and state == "running":
            state, reason = "error", f"did not finish: the runner died at about {crashed['at']} while it ran"
        elif state in ("pending", "running"):  # a live run (the decision phase reads its own run's folder)
            state = "ok"
        outcome = PhaseOutcome(name, title, state, reason, info.duration_s, info.notebook)
        nb_path = run_dir / "notebooks" / (outcome.notebook or BY_NAME[name].notebook_name)
        found: list[Check] = []
        if nb_path.is_file():
            outcome.notebook = nb_path.name
            try:
                nb = read_notebook_json(nb_path)
                found = checks_from_notebook(nb)
            except ValueError as exc:  # UnreadableFile, or a check record that is not a check
                nb, found = {}, []
                problem = exc.problem if isinstance(exc, UnreadableFile) else "a check record in it is malformed"
                outcome.outcome = "error"
                outcome.reason = f"notebook unreadable: notebooks/{nb_path.name}: {problem}"[:300]
            err = notebook_error(nb)
            if err and outcome.outcome == "ok":
                outcome.outcome, outcome.reason = "error", err
            papermill = nb.get("metadata", {}).get("papermill", {}) if isinstance(nb.get("metadata"), dict) else {}
            papermill = papermill if isinstance(papermill, dict) else {}
            if not outcome.duration_s:
                outcome.duration_s = float(papermill.get("duration") or 0.0)
            outcome.started_at = str(papermill.get("start_time") or "")
            outcome.ended_at = str(papermill.get("end_time") or "")
        elif outcome.outcome == "ok":
            outcome.outcome, outcome.reason = "not_run", "no executed notebook in the run folder"
        found = apply_policy(apply_attestations(found, people) + outcome_checks([outcome]), gate)
        per_phase[name] = found
        checks.extend(found)
        phases.append(outcome)
    from rehearsal_lib.attachments import attachment_checks

    leaks = (secret_checks(record) + restore_checks(record)
             + apply_policy(attachment_checks(record.attachments), gate))  # waivers, severity_overrides apply
    if leaks:
        phases.append(PhaseOutcome("run", "Run folder", "ok"))
        per_phase["run"] = leaks
        checks.extend(leaks)
    decision = decide_run(checks, gate, record, people)
    if record.interrupted:
        decision.notes.insert(0, "the run was interrupted before it finished")
    if crashed:
        decision.blockers.insert(0, crash_line(crashed))
        decision.decision = "NO-GO"
    return RunSummary(run_dir, record, phases, checks, decision, per_phase, crashed=crashed)


def _reseals(run_dir: Path) -> list[dict[str, Any]]:
    """The folder's reseal log (rebuilds after sealing: who, when, why, what had changed)."""
    from rehearsal_lib.seal import reseal_history

    keep = ("seq", "time", "who", "kind", "why", "old_manifest")
    out = []
    for e in reseal_history(run_dir):
        changed = e.get("changed") or []
        out.append({**{k: e.get(k) for k in keep},
                    "changed": [str(c) for c in changed] if isinstance(changed, list) else [str(changed)]})
    return out


def restore_checks(record: RunRecord) -> list[Check]:
    """One blocker per restore the runner had to run for a phase killed mid-disruption (`restores` in run.json):
    `pass` when the target was restored, `fail` when it may still be degraded."""
    return [Check(id=f"run.restore.{i}", phase="run", title=f"Restore after {r.phase}: {r.description}",
                  status=Status.PASS if r.ok else Status.FAIL, severity="blocker",
                  observed=f"run by the runner after {r.phase} ended without it ({r.check}): {r.observed}",
                  expected="a disruption a phase started is undone, even when the phase is killed")
            for i, r in enumerate(record.restores, 1)]


def secret_checks(record: RunRecord) -> list[Check]:
    """One blocker per file the final sweep found still holding a secret (`secret_found_in` in run.json)."""
    return [Check(id=f"run.secret_sweep.{i}", phase="run", title="No secret left in the run folder",
                  status=Status.FAIL, severity="blocker", observed=f"secret found in {name}",
                  expected="every secret of the params file scrubbed from every file before sealing; "
                           "the file was redacted")
            for i, name in enumerate(record.secret_found_in, 1)]


def write_results_json(summary: RunSummary) -> Path:
    run = summary.record
    raw = record_json(run)  # as in run.json, unknown keys of an entry included
    data = {
        "env": summary.env,
        "run_id": summary.run_id,
        "decision": summary.decision.decision,
        "exit_code": summary.decision.exit_code,
        "reasons": summary.decision.to_json(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_s": run.duration_s,
        "interrupted": run.interrupted,
        "crashed": summary.crashed,
        "resumed": raw.get("resumed", []),
        "target": raw.get("target"),
        "release": run.release,
        "tool_versions": raw.get("tool_versions"),
        "project_commit": run.project_commit,
        "phases": [{**asdict(p), "counts": summary.counts(p.name)} for p in summary.phases],
        "checks": [c.model_dump(mode="json") for c in summary.checks],
        "reseals": _reseals(summary.run_dir),
        "status_code": summary.decision.status_code,
        "people": read_entries(summary.run_dir),  # attestations and sign-offs after the run (attestations.jsonl)
        "attachments": raw.get("attachments", []),
    }
    path = summary.run_dir / "results.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def write_junit(summary: RunSummary) -> Path:
    """One testsuite per phase, one testcase per check; failures carry expected/observed."""
    import socket

    root = ET.Element("testsuites", name=f"rehearsal {summary.env} {summary.run_id}")
    stamp = (summary.record.started_at or "")[:19]
    props = ET.SubElement(root, "properties")
    for name, value in (("decision", summary.decision.decision), ("env", summary.env), ("run_id", summary.run_id)):
        ET.SubElement(props, "property", name=name, value=value)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for phase in summary.phases:
        checks = summary.phase_checks.get(phase.name, [])
        suite = ET.SubElement(root, "testsuite", name=phase.name, time=f"{phase.duration_s:.3f}", timestamp=stamp,
                              hostname=socket.gethostname())
        counts = {"tests": len(checks), "failures": 0, "errors": 0, "skipped": 0}
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=f"rehearsal.{c.phase}", name=c.id,
                                 time=f"{c.duration_s:.3f}")
            detail = f"expected: {c.expected}\nobserved: {c.observed}\nseverity: {c.severity}"
            if c.evidence not in (None, "", [], {}):
                detail += "\nevidence: " + json.dumps(c.evidence, default=str)[:4000]
            if c.status == "fail":
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=f"{c.title}: {c.observed}", type=c.severity).text = detail
            elif c.status == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f"{c.title}: {c.observed}", type=c.severity).text = detail
            elif c.status in ("skip", "manual"):
                counts["skipped"] += 1
                msg = "awaiting attestation" if c.status == "manual" else (c.observed or "skipped")
                ET.SubElement(case, "skipped", message=msg)
            elif c.status == "warn":
                ET.SubElement(case, "system-out").text = "WARN\n" + detail
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    for el in root.iter():  # XML 1.0 has no way to carry NUL, ESC...: CI would drop the whole file
        el.text = printable(el.text) if el.text else el.text
        for k, value in el.attrib.items():
            el.set(k, printable(value))
    ET.indent(root)
    path = summary.run_dir / "junit.xml"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_summary_md(summary: RunSummary) -> Path:
    """summary.md, the seed template filled in: the view model of views.py (the same one report.html's
    summary shows) through templates/summary/summary.md.j2."""
    from rehearsal_lib.views import render_summary_md, summary_view

    path = summary.run_dir / "summary.md"
    path.write_text(render_summary_md(summary_view(summary)), encoding="utf-8")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


SUMS = "SHA256SUMS"
SIGNATURE = "manifest.sig"
UNSEALED = ("manifest.json", SUMS, SIGNATURE)  # the files the manifest cannot cover (they seal it)


def write_manifest(run_dir: Path, header: dict[str, Any] | None = None) -> Path:
    """manifest.json: `header` fields plus sha256 and size of every other file; then SHA256SUMS (for
    `sha256sum -c`) over all of them and the manifest itself."""
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(run_dir).as_posix()
        if rel in UNSEALED:
            continue
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    out = run_dir / "manifest.json"
    out.write_text(json.dumps({"algorithm": "sha256", **(header or {}), "files": files}, indent=2))
    sums = {**{rel: info["sha256"] for rel, info in files.items()}, "manifest.json": sha256_file(out)}
    (run_dir / SUMS).write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items())))
    return out


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """manifest.json as a dict with a `files` mapping, or None when it is missing or not a manifest."""
    try:
        data = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify_manifest(run_dir: Path) -> list[str]:
    """Problems found when checking a run folder against its manifest (empty list: intact)."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return ["manifest.json is missing"]
    manifest = read_manifest(run_dir)
    if manifest is None:
        return ["manifest.json: not a manifest (unreadable JSON or no files list)"]
    listed = manifest["files"]
    problems = []
    for rel, info in listed.items():
        f = run_dir / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif not isinstance(info, dict) or sha256_file(f) != info.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest")
    for f in sorted(run_dir.rglob("*")):
        rel = f.relative_to(run_dir).as_posix()
        if f.is_file() and rel not in UNSEALED and rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return problems
