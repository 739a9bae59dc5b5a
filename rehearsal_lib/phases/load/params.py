"""Params of the load phase: its block under `phases.load` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from rehearsal_lib.params_base import (
    PhaseParams,
    RequestBody,
    Severity,
    Strict,
    as_field,
)


class LoadScenario(RequestBody):
    """One weighted kind of request of a load stage, with its own latency gates; its body is `json`, `form`
    (multipart with `files`) or a raw `body` with `content_type`."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Unique across stages; part of the check ids.")
    title: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {uuid}, {seq}, {worker}, {randint:A:B}, {run_id} and setup values.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers; values may be ${VAR}.")
    auth: bool = Field(True, description="Send the principal's credentials (obtained once, before the load).")
    principal: str | None = as_field()
    weight: float = Field(1.0, gt=0)
    expect_status: int | list[int] = 200
    p95_ms: float | None = Field(500, gt=0, description="p95 gate (blocker by default); null: not gated.")
    p99_ms: float | None = Field(None, gt=0, description="p99 gate; null: reported, not gated.")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Share of requests with an unexpected outcome.")
    p95_severity: Severity = "blocker"
    severity: Severity = Field("major", description="Severity of the p99 and error-rate checks.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LoadStage(Strict):
    """A stretch of load: one model, one rate (or number of users), its scenarios."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str | None = None
    model: Literal["open", "closed"] = Field("open", description="open: arrival rate; closed: virtual users.")
    rate: float = Field(20, gt=0, description="open: requests per second (all processes together).")
    ramp_s: float = Field(0, ge=0, description="open: linear ramp from 0 to `rate` over this many seconds.")
    users: int = Field(10, ge=1, description="closed: virtual users.")
    duration_s: float = Field(5, gt=0, le=3600)
    min_throughput_rps: float | None = Field(None, ge=0, description="Gate on completed expected responses/s.")
    scenarios: list[LoadScenario] = Field(min_length=1)


class LoadSetup(Strict):
    """Requests sent before the load to make values the scenarios need (e.g. existing sessions)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="The placeholder the saved values fill, e.g. session_id.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str
    json_body: Any = Field(None, alias="json")
    auth: bool = True
    principal: str | None = as_field()
    count: int = Field(20, ge=1, le=10_000)
    expect_status: int | list[int] = 201
    field: str = Field("id", description="Top-level field of the JSON response to keep.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LoadGenerator(Strict):
    """How the load is generated and when the generator's own figures make the run untrustworthy."""

    engine: Literal["native", "locust"] = Field("native", description="native: our engine; locust: drive Locust.")
    processes: int = Field(1, ge=1, le=64, description="native: processes (one event loop per core).")
    transport: Literal["auto", "httpcore", "aiohttp"] = Field(
        "auto", description="auto: aiohttp (called directly) when installed, else httpx over httpcore.")
    timeout_s: float = Field(5, gt=0, le=120, description="Per request; a timeout counts as an error.")
    max_in_flight: int = Field(256, ge=1)
    min_rate_ratio: float = Field(0.95, gt=0, le=1, description="Saturated when achieved < ratio x target rate.")
    max_scheduler_lag_ms: float = Field(10, gt=0, description="Saturated when scheduler lag p99 exceeds this.")
    max_client_cpu: float = Field(0.9, gt=0, le=1, description="Saturated when a generator process uses more CPU.")
    locust_command: list[str] | None = Field(None, description="locust: the command (default: python -m locust).")
    locust_workers: int = Field(0, ge=0, description="locust: local worker processes (0: one process).")
    locust_user_class: Literal["FastHttpUser", "HttpUser"] = "FastHttpUser"


class DbConnections(Strict):
    """pg_stat_activity sampled during the load."""

    sample_interval_s: float = Field(0.5, gt=0)
    max_usage_ratio: float = Field(0.8, gt=0, le=1, description="Peak connections / max_connections limit.")
    application_name: str | None = Field(None, description="The app's connections (pool) by application_name.")
    pool_size: int | None = Field(None, ge=1, description="The app's pool limit; reaching it is a warning.")


class LoadParams(PhaseParams):
    enabled: bool = True
    generator: LoadGenerator = Field(default_factory=LoadGenerator)
    setup: list[LoadSetup] = Field(default_factory=list)
    stages: list[LoadStage] = Field(default_factory=list)
    db_connections: DbConnections | None = Field(default_factory=DbConnections)
    min_responses: int = Field(10, ge=1, description="Fewer answered requests in a scenario: its latency checks are "
                                                     "errors, not judged.")

    @model_validator(mode="after")
    def _unique_names(self) -> LoadParams:
        for what, names in (("stages", [s.name for s in self.stages]),
                            ("scenarios", [c.name for s in self.stages for c in s.scenarios])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        return self
