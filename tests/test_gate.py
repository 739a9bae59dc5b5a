"""Gate policy: blockers, conditions, waivers and their expiry, phase outcomes."""

from __future__ import annotations

import datetime as dt

from rehearsal_lib.config import Gate, Waiver
from rehearsal_lib.gate import CONDITIONAL, GO, NO_GO, PhaseOutcome, apply_policy, decide, outcome_checks
from rehearsal_lib.results import Check


def chk(cid: str, status: str, severity: str = "blocker") -> Check:
    return Check(id=cid, phase=cid.split(".")[0], title=cid, status=status, severity=severity)


def test_all_pass_is_go():
    d = decide([chk("a.x", "pass"), chk("a.y", "pass", "major")], Gate())
    assert d.decision == GO and d.exit_code == 0


def test_blocker_fail_or_error_is_no_go():
    for status in ("fail", "error"):
        d = decide([chk("a.x", "pass"), chk("a.y", status)], Gate())
        assert d.decision == NO_GO and d.exit_code == 1 and "a.y" in d.blockers[0]


def test_major_fail_is_conditional():
    d = decide([chk("a.x", "fail", "major")], Gate())
    assert d.decision == CONDITIONAL and d.exit_code == 3 and "a.x" in d.conditions[0]


def test_blocker_skipped_or_manual_is_conditional():
    assert decide([chk("a.x", "manual")], Gate()).decision == CONDITIONAL
    assert decide([chk("a.x", "skip")], Gate()).decision == CONDITIONAL
    assert decide([chk("a.x", "skip", "major")], Gate()).decision == GO


def test_minor_fail_is_a_note_only():
    d = decide([chk("a.x", "fail", "minor")], Gate())
    assert d.decision == GO and d.notes


def test_waiver_downgrades_until_expiry():
    gate = Gate(waivers=[Waiver(check="a.x", owner="ops", reason="known", expires=dt.date(2030, 1, 1))])
    checks = apply_policy([chk("a.x", "fail")], gate, today=dt.date(2029, 12, 31))
    assert checks[0].status == "warn" and checks[0].waiver["original_status"] == "fail"
    assert decide(checks, gate).decision == CONDITIONAL
    expired = apply_policy([chk("a.x", "fail")], gate, today=dt.date(2030, 1, 2))
    assert expired[0].status == "fail"
    d = decide(expired, gate)
    assert d.decision == NO_GO and any("expired" in n for n in d.notes)


def test_severity_override():
    gate = Gate(severity_overrides={"a.x": "minor"})
    assert decide(apply_policy([chk("a.x", "fail")], gate), gate).decision == GO


def test_crashed_phase_is_no_go_and_refused_is_conditional():
    crashed = outcome_checks([PhaseOutcome("integrity", "Data Integrity", "error", "cell 3 raised ValueError")])
    assert crashed[0].id == "integrity.notebook.completed" and crashed[0].status == "error"
    assert decide(crashed, Gate()).decision == NO_GO
    refused = outcome_checks([PhaseOutcome("faults", "Failure Injection", "refused", "production")])
    assert decide(refused, Gate()).decision == CONDITIONAL
    assert outcome_checks([PhaseOutcome("preflight", "Preflight")]) == []


def test_risk_register_does_not_call_an_expired_waiver_a_mitigation(tmp_path, capsys):
    import yaml

    from rehearsal_lib.evidence import RunSummary
    from rehearsal_lib.gate import Decision
    from rehearsal_lib.phase import PhaseRun
    from rehearsal_lib.phases.decision.checks import show_risk_register

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "target": {"base_url": "http://127.0.0.1:9"},
                                    "risks": [{"risk": "traffic spike", "impact": "high"}]}))
    ctx = PhaseRun("decision", str(path), needs_target=False)
    gate = Gate(waivers=[Waiver(check="a.old", owner="ops", reason="r", expires=dt.date(2020, 1, 1)),
                         Waiver(check="a.new", owner="dba", reason="r", expires=dt.date(2999, 1, 1))])
    checks = apply_policy([chk("a.old", "fail"), chk("a.new", "fail"), chk("a.ok", "pass")], gate)
    show_risk_register(ctx, RunSummary(tmp_path, {}, [], checks, Decision(NO_GO)))
    out = capsys.readouterr().out
    assert "traffic spike | high" in out
    assert "waiver expired: a.old (ops, 2020-01-01)" in out and "waived: a.new by dba until 2999-01-01" in out
    assert "2 check(s)" in out  # one row for the phase's weak points, not one per check
    assert "a.ok" not in out
