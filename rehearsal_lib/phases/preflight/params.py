"""Params of the preflight phase: its block under `phases.preflight` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from rehearsal_lib.params_base import (
    JourneyStep,
    PhaseParams,
    Strict,
    ZeroRowCheck,
    as_field,
)


class ExamModeCheck(Strict):
    endpoint: str = "/v1/exam-mode"
    field: str = "exam_mode"
    expected: bool = True
    auth: bool = Field(True, description="Send the principal's credentials; false: the flag is read anonymously.")
    principal: str | None = as_field()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LatencyCheck(Strict):
    endpoints: list[str] = Field(default_factory=lambda: ["/health", "/v1/ready"])
    samples: int = Field(20, ge=1, le=1000)
    p95_ms: float = Field(500, gt=0)
    min_responses: int = Field(10, ge=1, description="Fewer answered requests (all endpoints): error, not judged.")


class PreflightParams(PhaseParams):
    enabled: bool = True
    version_endpoint: str | None = "/v1/version"
    expected_version: str | None = None
    health_endpoint: str = "/health"
    ready_endpoint: str | None = "/v1/ready"
    exam_mode: ExamModeCheck | None = None
    latency: LatencyCheck = Field(default_factory=LatencyCheck)
    required_settings: list[str] = Field(default_factory=list, description="Environment variable names.")
    journey: list[JourneyStep] = Field(default_factory=list, description="Critical-path requests; they write.")
    freeze_quiet: list[ZeroRowCheck] = Field(
        default_factory=list, description="Queries that must return no rows while the freeze is on (running jobs...).")
