"""Params of the preflight phase: its block under `phases.preflight` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from rehearsal_lib.params_base import (
    JourneyStep,
    PhaseParams,
    Severity,
    Strict,
    ZeroRowCheck,
    as_field,
    check_as,
    check_regex,
)


class ExamModeCheck(Strict):
    endpoint: str = "/v1/exam-mode"
    field: str = "exam_mode"
    expected: bool = True
    auth: bool = Field(True, description="Send the principal's credentials; false: the flag is read anonymously.")
    principal: str | None = as_field()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VersionCheck(Strict):
    """Where the running version is read: a JSON path of the endpoint's answer, a response header, or a
    regex over its body (its first group, else the whole match). Replaces version_endpoint/expected_version."""

    endpoint: str = "/version"
    json_path: str | None = Field(None, description="e.g. $.build.version")
    header: str | None = Field(None, description="e.g. X-App-Version")
    regex: str | None = Field(None, description="Over the body text; its group 1 if any, else the whole match.")
    expect: str | None = Field(None, description="The version that must be running (else preflight.identity fails).")
    auth: bool = Field(False, description="Send the target's bearer token.")

    @model_validator(mode="after")
    def _one_source(self) -> VersionCheck:
        given = [k for k in ("json_path", "header", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of json_path, header or regex")
        if self.json_path is not None:
            from rehearsal_lib.probes.assertions import parse_path

            parse_path(self.json_path)
        if self.regex is not None:
            check_regex(self.regex)
        return self


class FreezeFlags(Strict):
    """Flags of a freeze read from one endpoint: JSON path -> the value it must have (each its own check)."""

    endpoint: str
    expect: dict[str, Any] = Field(min_length=1, description='e.g. {"$.maintenance_freeze": true}')
    auth: bool = Field(True, description="Send the principal's credentials; false: read anonymously.")
    principal: str | None = as_field()
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _as(self) -> FreezeFlags:
        check_as(self.auth, self.principal)
        return self

    @field_validator("expect")
    @classmethod
    def _paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        from rehearsal_lib.probes.assertions import parse_path

        for path in value:
            parse_path(path)
        slugs = [freeze_slug(p) for p in value]
        dupes = sorted({s for s in slugs if slugs.count(s) > 1})
        if dupes:
            raise ValueError(f"paths give the same check id preflight.freeze.{dupes[0]}")
        return value


def freeze_slug(path: str) -> str:
    """The check id part of a freeze flag's JSON path: $.flags.maintenance_freeze -> flags_maintenance_freeze."""
    return re.sub(r"[^a-z0-9]+", "_", path.lstrip("$").lower()).strip("_") or "root"


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
    version: VersionCheck | None = Field(
        None, description="Version by JSON path, header or regex; when set, version_endpoint is not used.")
    exam_mode: ExamModeCheck | None = None
    freeze: FreezeFlags | None = Field(None, description="Freeze flags: JSON path -> expected value.")
    latency: LatencyCheck = Field(default_factory=LatencyCheck)
    required_settings: list[str] = Field(default_factory=list, description="Environment variable names.")
    journey: list[JourneyStep] = Field(default_factory=list, description="Critical-path requests; they write.")
    freeze_quiet: list[ZeroRowCheck] = Field(
        default_factory=list, description="Queries that must return no rows while the freeze is on (running jobs...).")
