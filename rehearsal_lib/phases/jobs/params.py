"""Params of the jobs phase: its block under `phases.jobs` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from rehearsal_lib.params_base import (
    MAX_SECONDS,
    Cleanup,
    PhaseParams,
    Strict,
    as_field,
)


class JobTrigger(Strict):
    """How to start a job: an HTTP request, or a command printing JSON with the job id."""

    method: Literal["POST", "PUT", "GET"] = "POST"
    path: str | None = Field("/v1/jobs", description="Trigger endpoint; the body is the check's `job`.")
    auth: bool = True
    principal: str | None = as_field()
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202])
    job_id_field: str = Field("id", description="Field of the JSON answer (or command output) with the job id.")
    command: list[str] | None = Field(None, description="argv instead of HTTP; '{job}' becomes the job as JSON.")
    command_timeout_s: float = Field(30, gt=0, le=MAX_SECONDS)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JobRun(Strict):
    job: dict[str, Any] = Field(description="Trigger body; placeholders {run_id}.")


class JobAttempts(JobRun):
    sql: str | None = Field(None, description="Returns one number, the attempts of :job_id; default: job_sql's.")
    expected: int = Field(1, ge=0)


class JobSchedule(JobRun):
    sql: str = Field(description="One row per scheduled item of :job_id; first column = its offset in seconds.")
    expected_offsets: list[float]
    unit: Literal["seconds", "minutes", "hours", "days"] = "days"
    tolerance: float = Field(0.01, ge=0, description="Allowed difference per offset, in `unit`.")


class JobConcurrency(JobRun):
    sql: str = Field(description="Returns one number: how many times the job of :dedupe_key / :job_ids ran.")
    expected: int = Field(1, ge=0)
    dedupe_key: str = Field("rehearsal-{run_id}", description="Value for {dedupe_key} in `job` and :dedupe_key.")
    triggers: int = Field(2, ge=2, le=10)


class JobStatus(JobRun):
    path: str = Field("/v1/jobs/{job_id}", description="Status endpoint of one job.")
    status_field: str = "status"
    required_fields: list[str] = Field(default_factory=lambda: ["status"])


class JobsParams(PhaseParams):
    enabled: bool = True
    trigger: JobTrigger = Field(default_factory=JobTrigger)
    job_sql: str = Field(description="The job row of :job_id with columns status, attempts, enqueued_at, "
                                     "picked_at, finished_at.")
    done_status: str = "done"
    failed_status: list[str] = Field(default_factory=lambda: ["failed", "dead"])
    timeout_s: float = Field(15, gt=0, le=600)
    poll_interval_s: float = Field(0.2, gt=0, le=10)
    run: JobRun | None = None
    attempts: JobAttempts | None = None
    schedule: JobSchedule | None = None
    concurrency: JobConcurrency | None = None
    status: JobStatus | None = None
    cleanup: Cleanup | None = Field(None, description="Removes this run's jobs, at the end of the phase.")
