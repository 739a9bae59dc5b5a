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


class ReadinessGauge(Strict):
    """Readiness from a metrics gauge alone, for a target without a health toggle: the gauge exists on
    metrics.url and agrees with the readiness endpoint (1 while it answers ready). No writes, not disruptive."""

    endpoint: str = "/v1/ready"
    ready_status: int = 200
    gauge: str = Field(description="Gauge family name on metrics.url, e.g. app_ready.")
    labels: dict[str, str] = Field(default_factory=dict, description="Only the sample with these label values.")
    severity: Severity = "major"


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
    readiness_gauge: ReadinessGauge | None = Field(None, description="Readiness gauge read without a toggle.")
    request_id: RequestIdCheck | None = None
    logs: LogSource | None = None
    slow_queries: SlowQueries | None = None

    @model_validator(mode="after")
    def _gauge_needs_metrics(self) -> ObservabilityParams:
        if self.readiness_gauge is not None and self.metrics is None:
            raise ValueError("readiness_gauge is read from metrics.url: set `metrics:` too")
        return self
