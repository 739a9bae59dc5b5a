"""Params of the observability phase: its block under `phases.observability` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rehearsal_lib.params_base import (
    PhaseParams,
    Severity,
    Strict,
)


class MetricSeries(Strict):
    name: str = Field(description="Metric family name as parsed (histograms/counters without _bucket/_total).")
    type: Literal["counter", "gauge", "histogram", "summary", "info", "stateset", "gaugehistogram",
                  "unknown"] | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="Only samples with these label values.")
    min: float | None = Field(None, description="Every value (gauge/counter value, histogram _count) >= min.")
    max: float | None = None
    severity: Severity = "major"


class MetricsCheck(Strict):
    url: str = Field("/metrics", description="Path on base_url or a full URL (a separate metrics port).")
    auth: bool = False
    series: list[MetricSeries] = Field(default_factory=list)


class ReadinessToggle(Strict):
    """Flip the target's health state and watch readiness follow it (disrupts the target)."""

    endpoint: str = "/v1/ready"
    ready_status: int = 200
    unready_status: int = 503
    gauge: str | None = Field(None, description="A readiness gauge on metrics.url that must follow too (1/0).")
    toggle_method: Literal["POST", "PUT", "PATCH"] = "PUT"
    toggle_path: str
    unhealthy_json: Any = Field(default_factory=lambda: {"healthy": False})
    healthy_json: Any = Field(default_factory=lambda: {"healthy": True})
    within_s: float = Field(5.0, gt=0, le=120)
    poll_interval_s: float = Field(0.2, gt=0, le=10)


class RequestIdCheck(Strict):
    header: str = "X-Request-ID"
    path: str = "/health"


class LogSource(Strict):
    """Where the target's log lines can be read: a file, or a command printing them."""

    file: str | None = Field(None, description="Path of the log file (may be ${VAR}).")
    command: list[str] | None = Field(None, description="argv printing recent lines, e.g. kubectl logs ...")
    tail_lines: int = Field(2000, ge=10, le=100_000)
    wait_s: float = Field(3.0, ge=0, le=60, description="How long a request id may take to reach the log.")
    min_json_ratio: float = Field(1.0, ge=0, le=1, description="Share of non-empty lines that must be JSON objects.")

    @model_validator(mode="after")
    def _one_source(self) -> LogSource:
        if (self.file is None) == (self.command is None):
            raise ValueError("set exactly one of file or command")
        return self


class SlowQueries(Strict):
    threshold_ms: float = Field(500, gt=0, description="A statement whose mean time exceeds this fails.")
    min_calls: int = Field(1, ge=1)
    roles: list[str] = Field(default_factory=list, description="Only statements of these roles (empty: all).")
    top: int = Field(5, ge=1, le=50)


class ObservabilityParams(PhaseParams):
    enabled: bool = True
    metrics: MetricsCheck | None = None
    readiness: ReadinessToggle | None = None
    request_id: RequestIdCheck | None = None
    logs: LogSource | None = None
    slow_queries: SlowQueries | None = None
