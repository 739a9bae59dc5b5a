"""Params of the faults phase: its block under `phases.faults` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from rehearsal_lib.disruption.params import During, Injector, LogExpect, NothingLost, Probe, Traffic, check_scenarios
from rehearsal_lib.params_base import PhaseParams, Strict


class FaultScenario(Strict):
    """One fault under steady traffic: inject, hold `during_s`, restore, then recovery and nothing lost."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Part of the check ids: faults.<name>.during ...")
    title: str | None = None
    inject: Injector = Field(description="How: type command | process | pg_terminate | proxy.")
    before_s: float = Field(1, ge=0.2, le=600, description="Traffic before the injection (the baseline).")
    during_s: float = Field(3, gt=0, le=3600, description="How long the fault lasts before the restore.")
    after_s: float = Field(2, ge=0, le=600, description="Traffic after the restore.")
    during: During = Field(default_factory=During)
    recovery: Probe = Field(default_factory=Probe, description="Probe after the restore: N consecutive green within s.")
    logged: LogExpect | None = Field(None, description="A log line the fault must produce (e.g. a warning).")
    nothing_lost: NothingLost | None = Field(None, description="Acknowledged writes looked up by id afterwards.")
    traffic: Traffic | None = Field(None, description="This scenario's own traffic (default: the phase's).")
    reset: str | None = Field(None, description="A command run after the scenario is judged, whatever its outcome, "
                                                "to leave the target as later phases expect (e.g. restart a service "
                                                "that did not recover); its result is shown, never judged.")
    reset_timeout_s: float = Field(60, gt=0, le=3600)


class FaultsParams(PhaseParams):
    enabled: bool = True
    traffic: Traffic | None = Field(None, description="Background traffic every scenario runs under (unless its own).")
    scenarios: list[FaultScenario] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> FaultsParams:
        names = [s.name for s in self.scenarios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scenario names must be unique; repeated: {', '.join(dupes)}")
        for sc in self.scenarios:
            traffic = sc.traffic or self.traffic
            if traffic is None:
                raise ValueError(f"scenario {sc.name}: no traffic (set phases.faults.traffic or the scenario's own)")
            check_scenarios(traffic, sc.during.must_succeed, f"scenario {sc.name}: during.must_succeed")
            if sc.nothing_lost is not None:
                check_scenarios(traffic, [sc.nothing_lost.scenario], f"scenario {sc.name}: nothing_lost.scenario")
                writer = next(t for t in traffic.scenarios if t.name == sc.nothing_lost.scenario)
                if not writer.ack_field:
                    raise ValueError(f"scenario {sc.name}: nothing_lost.scenario {writer.name} has no ack_field "
                                     "(the field of its answer holding the stored id)")
        return self

    def traffic_of(self, sc: FaultScenario) -> Traffic:
        traffic = sc.traffic or self.traffic
        assert traffic is not None  # the validator makes sure
        return traffic
