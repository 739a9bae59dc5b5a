"""Params of the deploy phase: its block under `phases.deploy` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from rehearsal_lib.disruption.params import Probe, Traffic
from rehearsal_lib.params_base import PhaseParams, Strict


class VersionProbe(Strict):
    """Where the served version is read: GET `path`, top-level JSON `field`."""

    path: str = "/v1/version"
    field: str = "version"
    interval_s: float = Field(0.25, gt=0, le=10, description="How often it is sampled while the traffic runs.")


class Cutover(Strict):
    """The team's deploy/switch command, run while the traffic runs."""

    command: str = Field(description="e.g. ./deploy.sh 1.5.0 or {python} -m mytool deploy; {python} is this "
                                     "interpreter; run without a shell.")
    timeout_s: float = Field(120, gt=0, le=3600)
    before_s: float = Field(1, ge=0.2, le=600, description="Traffic before the command starts.")
    after_s: float = Field(1, ge=0, le=600, description="Traffic after the probes (the cutover's tail).")
    max_gap_s: float = Field(1.0, gt=0, description="Longest stretch without a successful answer, cutover start to "
                                                    "end + after_s.")
    max_errors: int = Field(0, ge=0, description="Requests not answered as expected in that window.")
    max_5xx: int = Field(0, ge=0)
    expected_version: str | None = Field(None, description="The version served afterwards (default: release.version).")
    version_within_s: float = Field(10, gt=0, le=600, description="How long after the command the version may take.")
    readiness: Probe = Field(default_factory=lambda: Probe(path="/v1/ready"),
                             description="Readiness settles: N consecutive ready answers within s of the end.")


class AbortDrill(Strict):
    """Start a deploy, abort it at a configured point: the old version must be back within the bound."""

    command: str = Field(description="Starts the deploy (e.g. ... deploy --version 1.6.0).")
    abort_after_s: float = Field(1.0, ge=0, le=600, description="When the abort happens, from the command's start.")
    abort_command: str | None = Field(None, description="Run at abort_after_s; none: the command aborts itself then "
                                                        "(e.g. --abort-after-s).")
    timeout_s: float = Field(120, gt=0, le=3600)
    before_s: float = Field(1, ge=0.2, le=600)
    after_s: float = Field(1, ge=0, le=600)
    rollback_within_s: float = Field(10, gt=0, le=600, description="Old version served again, from the abort.")
    consecutive: int = Field(3, ge=1, le=100, description="Consecutive answers with the old version that count.")
    max_errors: int = Field(0, ge=0, description="Requests not answered as expected during the drill.")
    max_5xx: int = Field(0, ge=0)


class Plan(Strict):
    """A plan command (e.g. terraform plan -detailed-exitcode); its output is kept as evidence."""

    command: str
    timeout_s: float = Field(300, gt=0, le=3600)
    drift_exit_codes: list[int] = Field(default_factory=lambda: [2], description="Exit codes meaning drift "
                                                                                 "(terraform: 2).")
    require_no_drift: bool = Field(True, description="Drift fails the check (false: reported as info).")


class DeployParams(PhaseParams):
    enabled: bool = True
    traffic: Traffic | None = Field(None, description="Background traffic during the cutover and the drill.")
    version: VersionProbe = Field(default_factory=VersionProbe)
    plan: Plan | None = None
    cutover: Cutover | None = None
    abort_drill: AbortDrill | None = None

    @model_validator(mode="after")
    def _traffic(self) -> DeployParams:
        if (self.cutover or self.abort_drill) and self.traffic is None:
            raise ValueError("cutover and abort_drill run under traffic: set phases.deploy.traffic")
        return self
