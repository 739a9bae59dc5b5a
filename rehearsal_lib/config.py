"""Load and validate `params/<env>.yaml`.

A params file describes one target environment. Secrets never appear in it: they are written as
`${VAR}` (or `${VAR:-default}`) references and resolved from the environment by the code that
needs them (inside the notebook kernel), never by papermill. Every mistake in a file is reported
as one `ConfigError` naming the file, the key and, where known, the line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rehearsal_lib import extras
from rehearsal_lib.phases import PHASES, notebook_for
from rehearsal_lib.results import printable

REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SANDBOX_PROVIDED_VARS = ("REHEARSAL_SANDBOX_URL", "REHEARSAL_SANDBOX_DB_URL", "REHEARSAL_SANDBOX_TOKEN",
                         "REHEARSAL_SANDBOX_WEBHOOK_SECRET",
                         "REHEARSAL_SANDBOX_HTTPS_URL", "REHEARSAL_SANDBOX_CA_FILE", "REHEARSAL_SANDBOX_APP_LOG",
                         "REHEARSAL_SANDBOX_ADMIN_DB_URL", "REHEARSAL_SANDBOX_PG_BIN", "REHEARSAL_SANDBOX_BACKUP_DIR",
                         "REHEARSAL_SANDBOX_MIGRATIONS_DIR", "REHEARSAL_SANDBOX_VARIANT")


class ConfigError(Exception):
    """A params file is missing or wrong; the message names the file, the key and the line.

    `also` holds further problems found in the same file, each already formatted the same way.
    """

    def __init__(self, path: Path | str, message: str, key: str | None = None, line: int | None = None,
                 also: list[str] | None = None):
        self.path, self.key, self.line, self.detail = str(path), key, line, message
        self.also = also or []
        super().__init__(_problem_line(self.path, line, key, message))


def _problem_line(path: str, line: int | None, key: str | None, message: str) -> str:
    """One problem as "file:line: key: message"; control characters shown escaped, a long key cut short."""
    where = path + (f":{line}" if line else "")
    if key and len(key) > MAX_KEY_SHOWN:
        key = key[: MAX_KEY_SHOWN - 1] + "…"
    return printable(f"{where}: {key + ': ' if key else ''}{message}")


MAX_KEY_SHOWN = 80
MAX_PARALLEL = 16
MAX_SECONDS = 86_400  # upper bound of every timeout: a day


def _takes_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
        return bool in args and args <= {bool, type(None)}
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_sloppy_values(cls, value: Any, info: ValidationInfo) -> Any:
        """Switches are true or false (never 'yes', 'no', 1 or 0); a required text is never empty."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if _takes_bool(field.annotation) and value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false (unquoted YAML booleans), not a string or number")
        if field.annotation is str and field.is_required() and isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


Severity = Literal["blocker", "major", "minor", "info"]


class Environment(Strict):
    kind: Literal["sandbox", "development", "staging", "production"] = "staging"
    description: str = ""


class Target(Strict):
    base_url: str = Field(description="Base URL of the service; may be a ${VAR} reference.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; a ${VAR} reference (it holds a password).")
    auth_token: str | None = Field(None, description="Bearer token for protected endpoints; a ${VAR} reference.")
    timeout_s: float = Field(5.0, gt=0, le=120)
    verify_tls: bool = True
    follow_redirects: bool = Field(False, description="Follow 3xx answers; off: a 3xx to a probe is an error naming "
                                                      "its Location.")

    @field_validator("database_url", "auth_token")
    @classmethod
    def _must_be_reference(cls, value: str | None) -> str | None:
        if value is not None and not REF_RE.search(value):
            raise ValueError("write secrets as a ${VAR} reference resolved from the environment, not inline")
        return value


class SandboxBlock(Strict):
    variant: Literal["default", "faulty"] = "default"
    release_pending: bool = Field(False, description="Start one release behind: the release's migrations (017-019) "
                                                     "are pending, for the migrations phase to apply.")


class Safety(Strict):
    allow_destructive: bool = Field(False, description="Destructive phases may run (never implied in production).")
    sql_statement_timeout_ms: int = Field(5000, ge=100, le=600_000)


class RunOptions(Strict):
    phase_timeout_s: int = Field(600, ge=1, le=MAX_SECONDS, description="Whole seconds.")
    cell_timeout_s: int = Field(300, ge=1, le=MAX_SECONDS, description="Whole seconds (nbclient reads 0 as none).")
    parallel: int = Field(1, ge=1, le=MAX_PARALLEL)


class ExamModeCheck(Strict):
    endpoint: str = "/v1/exam-mode"
    field: str = "exam_mode"
    expected: bool = True
    auth: bool = Field(True, description="Send the target's bearer token; false: the flag is read unauthenticated.")


class LatencyCheck(Strict):
    endpoints: list[str] = Field(default_factory=lambda: ["/health", "/v1/ready"])
    samples: int = Field(20, ge=1, le=1000)
    p95_ms: float = Field(500, gt=0)
    min_responses: int = Field(10, ge=1, description="Fewer answered requests (all endpoints): error, not judged.")


class RehearsalMarker(Strict):
    """Which rows of a zero-row result were created by rehearsal runs: `column` LIKE `pattern`."""

    column: str = Field(description="Column of the query's result holding an id the rehearsal sets.")
    pattern: str = Field("rehearsal-%", description="SQL LIKE pattern of the ids rehearsal runs create.")


class ZeroRowCheck(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    sql: str
    severity: Severity = "blocker"
    rehearsal_rows: RehearsalMarker | None = Field(
        None, description="Mark the rows rehearsal runs created (evidence only; the check still counts them).")


class CleanupCall(Strict):
    """An API request that removes what this run created; path and json may use {run_id}."""

    method: Literal["DELETE", "POST", "PUT", "PATCH"] = "DELETE"
    path: str
    json_body: Any = Field(None, alias="json")
    auth: bool = True
    expect_status: list[int] = Field(default_factory=lambda: [200, 202, 204])
    removed_field: str | None = Field(None, description="Top-level field of the JSON answer: how many were removed.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Cleanup(Strict):
    """Removes what this phase created, at the end of the phase: SQL through a write URL, or API calls.

    Every statement binds :run_id (the rehearsal run's id), so it can only remove this run's records."""

    database_url: str | None = Field(None, description="A write URL (${VAR}); never the read-only target URL.")
    sql: list[str] = Field(default_factory=list, description="Statements run in one transaction; bind :run_id.")
    api: list[CleanupCall] = Field(default_factory=list)
    severity: Severity = "minor"

    @model_validator(mode="after")
    def _scoped_to_the_run(self) -> Cleanup:
        if not self.sql and not self.api:
            raise ValueError("cleanup needs `sql` statements or `api` calls")
        if self.sql and not self.database_url:
            raise ValueError("cleanup.sql needs cleanup.database_url (a write URL)")
        if self.database_url and not REF_RE.search(self.database_url):
            raise ValueError("write cleanup.database_url as a ${VAR} reference, not inline")
        unscoped = [s.strip().splitlines()[0] for s in self.sql if ":run_id" not in s]
        if unscoped:
            raise ValueError(f"every cleanup statement must bind :run_id (this run's records only): {unscoped[0]}")
        return self


class JourneyStep(Strict):
    """One request of the critical-path journey; `save` keeps response fields for later steps."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {saved_name} and {run_id} placeholders.")
    json_body: Any = Field(None, alias="json")
    auth: bool = Field(True, description="Send the target's bearer token; false: the step runs unauthenticated.")
    follow_redirects: bool | None = Field(None, description="Override target.follow_redirects for this step.")
    expect_status: int | list[int] = 200
    save: dict[str, str] = Field(default_factory=dict, description="name -> top-level field of the JSON response")
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PreflightParams(Strict):
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


class CriticalTable(Strict):
    name: str
    min_rows: int = Field(0, ge=0)
    severity: Severity = "major"


class ExpectedIndex(Strict):
    name: str
    table: str
    severity: Severity = "major"


class IntegrityParams(Strict):
    enabled: bool = True
    zero_row_checks: list[ZeroRowCheck] = Field(default_factory=list)
    critical_tables: list[CriticalTable] = Field(default_factory=list)
    expected_indexes: list[ExpectedIndex] = Field(default_factory=list)
    evidence_rows: int = Field(10, ge=0, le=200)

    @model_validator(mode="after")
    def _unique_names(self) -> IntegrityParams:
        names = [c.name for c in self.zero_row_checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"zero_row_checks names must be unique; repeated: {', '.join(dupes)}")
        return self


class DecisionParams(Strict):
    enabled: bool = True


class SignatureScheme(Strict):
    """How a sender signs a webhook: HMAC-SHA256 of `signed_payload`, written into `header` as `format`."""

    header: str = Field("X-Signature", description="Header that carries the signature.")
    format: str = Field("{signature}", description="Header value; placeholders {signature}, {timestamp}, "
                        "e.g. 'sha256={signature}' or 't={timestamp},v1={signature}'.")
    signed_payload: str = Field("{body}", description="What is HMAC'd: '{body}' or e.g. '{timestamp}.{body}'.")
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = Field(None, description="Header carrying the unix timestamp, if it travels apart.")

    @property
    def signs_timestamp(self) -> bool:
        return "{timestamp}" in self.signed_payload


class WebhookReplay(Strict):
    window_s: int = Field(300, gt=0, description="The receiver's replay window.")
    stale_by_s: int = Field(60, ge=1, description="How far outside the window the probe's timestamp is.")


class WebhookIdempotency(Strict):
    sql: str = Field(description="Returns one number: how many times :delivery_id was processed.")
    expected: int = Field(1, ge=0)
    duplicate_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204, 409],
                                        description="Acceptable answers to the second send.")


class WebhookRateLimit(Strict):
    count: int = Field(description="Requests allowed per window.", gt=0)
    window_s: float = Field(description="The limiter's window.", gt=0)
    max_requests: int = Field(50, gt=1, le=1000, description="Hard bound on requests the probe sends (> count).")
    status: int = 429
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Extra headers giving the probe its own bucket (e.g. a source).")
    cooldown_s: float = Field(0, ge=0, le=120, description="Wait out the window: before the probe (when this "
                              "run's earlier deliveries are in it) and after the limit triggered.")

    @model_validator(mode="after")
    def _bound_above_count(self) -> WebhookRateLimit:
        if self.max_requests <= self.count:
            raise ValueError("max_requests must exceed count, or the limit can never trigger")
        return self


class WebhookStorage(Strict):
    plaintext_fields: dict[str, str] = Field(default_factory=dict, description="Payload field -> sentinel value "
                                             "sent by the probe ({run_id} placeholder); none may be stored.")
    sql: str = Field(description="Rows that store the sentinel; binds :delivery_id, :field, :value. Zero rows = pass.")


class WebhooksParams(Strict):
    enabled: bool = True
    endpoint: str = Field(description="Path (or URL) of the receiver.")
    secret: str = Field(description="Signing secret, a ${VAR} reference.")
    signature: SignatureScheme = Field(default_factory=SignatureScheme)
    headers: dict[str, str] = Field(default_factory=lambda: {"Content-Type": "application/json"})
    delivery_id_header: str | None = Field(None, description="Header carrying the delivery id (GitHub style).")
    payload: dict[str, Any] = Field(default_factory=lambda: {"id": "{delivery_id}", "type": "rehearsal.ping"},
                                    description="Delivery body; placeholders {delivery_id}, {run_id}.")
    accept_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    reject_status: list[int] = Field(default_factory=lambda: [400, 401, 403])
    replay: WebhookReplay | None = Field(default_factory=WebhookReplay)
    idempotency: WebhookIdempotency | None = None
    rate_limit: WebhookRateLimit | None = None
    storage: WebhookStorage | None = None
    cleanup: Cleanup | None = Field(None, description="Removes this run's deliveries, at the end of the phase.")

    @field_validator("secret")
    @classmethod
    def _secret_reference(cls, value: str) -> str:
        if not REF_RE.search(value):
            raise ValueError("write the signing secret as a ${VAR} reference, not inline")
        return value


class JobTrigger(Strict):
    """How to start a job: an HTTP request, or a command printing JSON with the job id."""

    method: Literal["POST", "PUT", "GET"] = "POST"
    path: str | None = Field("/v1/jobs", description="Trigger endpoint; the body is the check's `job`.")
    auth: bool = True
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202])
    job_id_field: str = Field("id", description="Field of the JSON answer (or command output) with the job id.")
    command: list[str] | None = Field(None, description="argv instead of HTTP; '{job}' becomes the job as JSON.")
    command_timeout_s: float = Field(30, gt=0, le=MAX_SECONDS)


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


class JobsParams(Strict):
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
class TlsCheck(Strict):
    """Certificate and protocol of an HTTPS endpoint."""

    url: str | None = Field(None, description="HTTPS URL to inspect (${VAR} ok); default: an https base_url.")
    ca_file: str | None = Field(None, description="PEM CA bundle to trust (${VAR} ok); default: system CAs.")
    min_days: int = Field(14, ge=0, description="Fewer days to expiry than this fails.")
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


class HeaderRule(Strict):
    name: str = Field(description="Response header name, e.g. Strict-Transport-Security.")
    pattern: str | None = Field(None, description="Regular expression the value must match (search).")
    https_only: bool = Field(False, description="Only required on HTTPS responses (HSTS).")
    severity: Severity = "major"


def _default_header_rules() -> list[HeaderRule]:
    return [HeaderRule(name="Strict-Transport-Security", pattern=r"max-age=\d+", https_only=True),
            HeaderRule(name="X-Content-Type-Options", pattern="(?i)^nosniff$"),
            HeaderRule(name="X-Frame-Options", pattern="(?i)^(deny|sameorigin)$"),
            HeaderRule(name="Content-Security-Policy")]


class HeadersCheck(Strict):
    path: str = Field("/health", description="Path requested on the HTTPS URL (tls.url) if set, else base_url.")
    rules: list[HeaderRule] = Field(default_factory=_default_header_rules)


class ProtectedEndpoint(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str
    json_body: Any = Field(None, alias="json", description="Body sent with the unauthenticated requests.")
    refuse_status: list[int] = Field(default_factory=lambda: [401, 403])
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BadInput(Strict):
    """One hostile request: it must answer 4xx (never 5xx) and not echo its payload verbatim."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str
    json_body: Any = Field(None, alias="json", description="A JSON body (strings in it are the payloads).")
    body: str | None = Field(None, description="A raw body sent as-is (e.g. malformed JSON).")
    oversize_bytes: int | None = Field(None, gt=0, description="Send a JSON string body of this many bytes.")
    content_type: str = "application/json"
    auth: bool = Field(True, description="Send the target's bearer token (so the input, not auth, is tested).")
    follow_redirects: bool | None = Field(None, description="Override target.follow_redirects for this probe.")
    expect_status: list[int] | None = Field(None, description="Accepted codes; default any 4xx.")
    severity: Severity = "major"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SecurityParams(Strict):
    enabled: bool = True
    tls: TlsCheck | None = None
    headers: HeadersCheck | None = None
    protected_endpoints: list[ProtectedEndpoint] = Field(default_factory=list)
    wrong_token: str = Field("rehearsal-wrong-token", description="The bad bearer token the auth checks send.")
    bad_inputs: list[BadInput] = Field(default_factory=list)
    database_ssl: bool = Field(False, description="The database must have ssl=on and encrypt this connection.")
    rls_tables: list[str] = Field(default_factory=list, description="Tables that must have row-level security on.")


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


class ObservabilityParams(Strict):
    enabled: bool = True
    metrics: MetricsCheck | None = None
    readiness: ReadinessToggle | None = None
    request_id: RequestIdCheck | None = None
    logs: LogSource | None = None
    slow_queries: SlowQueries | None = None


class LoadScenario(Strict):
    """One weighted kind of request of a load stage, with its own latency gates."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="Unique across stages; part of the check ids.")
    title: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {uuid}, {seq}, {worker}, {randint:A:B}, {run_id} and setup values.")
    json_body: Any = Field(None, alias="json", description="JSON body template (same placeholders).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers; values may be ${VAR}.")
    auth: bool = Field(True, description="Send the target's bearer token.")
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
    count: int = Field(20, ge=1, le=10_000)
    expect_status: int | list[int] = 201
    field: str = Field("id", description="Top-level field of the JSON response to keep.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LoadGenerator(Strict):
    """How the load is generated and when the generator's own figures make the run untrustworthy."""

    engine: Literal["native", "locust"] = Field("native", description="native: our engine; locust: drive Locust.")
    processes: int = Field(1, ge=1, le=64, description="native: processes (one event loop per core).")
    transport: Literal["auto", "httpcore", "aiohttp"] = Field(
        "auto", description="auto: httpx over aiohttp (httpx-aiohttp) when installed, else httpcore.")
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


class LoadParams(Strict):
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


# ---- database phases (issue #4): migrations, retention, backup_recovery, smoke --------------------


class ColumnSpec(Strict):
    name: str
    type: str | None = Field(None, description="Type as format_type() prints it, e.g. 'timestamp with time zone'.")


class IndexSpec(Strict):
    table: str
    name: str


class ForeignKeySpec(Strict):
    table: str
    columns: list[str]
    references: str = Field(description="The referred table.")


class CheckConstraintSpec(Strict):
    table: str
    name: str


class RlsSpec(Strict):
    table: str
    enabled: bool = True
    min_policies: int = Field(1, ge=0, description="At least this many policies on the table.")


class PostConditions(Strict):
    """What the schema must look like once every migration is applied."""

    tables: list[str] = Field(default_factory=list)
    columns: dict[str, list[ColumnSpec]] = Field(default_factory=dict, description="table -> columns (and types).")
    indexes: list[IndexSpec] = Field(default_factory=list)
    foreign_keys: list[ForeignKeySpec] = Field(default_factory=list)
    check_constraints: list[CheckConstraintSpec] = Field(default_factory=list)
    functions: list[str] = Field(default_factory=list, description="Function names (schema-qualified or public).")
    rls: list[RlsSpec] = Field(default_factory=list)


class SqlDirDriver(Strict):
    directory: str = Field(description="Folder of NNN_name.sql files; may use ${VAR}.")
    table: str = Field("schema_migrations", description="Tracking table; its `version` column lists applied files.")
    version_column: str = "version"
    down_directory: str | None = Field(None, description="Folder of NNN_name.sql down scripts (for the round trip).")


class AlembicDriver(Strict):
    config: str = Field(description="Path of alembic.ini; may use ${VAR}.")
    section: str = "alembic"


class CommandDriver(Strict):
    plan_command: str = Field(description="Prints the pending migrations, e.g. 'python manage.py migrate --plan'.")
    pending_regex: str = Field(r"\S", description="Lines of the plan's output that name one pending migration.")
    apply_command: str | None = None
    roundtrip_command: str | None = Field(None, description="Runs a down/up round trip on a scratch copy; exit 0 = ok.")
    timeout_s: float = Field(300, gt=0, le=MAX_SECONDS)


class MigrationsParams(Strict):
    enabled: bool = True
    driver: Literal["sql_dir", "alembic", "command"] = "sql_dir"
    sql_dir: SqlDirDriver | None = None
    alembic: AlembicDriver | None = None
    command: CommandDriver | None = None
    expected_pending: list[str] = Field(
        default_factory=list, description="Migrations this release is expected to bring; any other pending one fails.")
    apply: bool = Field(True, description="Apply pending migrations (a write; refused in production without the flag).")
    apply_database_url: str | None = Field(None, description="${VAR} URL with DDL rights for apply and the round trip.")
    roundtrip: bool = Field(True, description="Down/up round trip on a scratch database where the tool supports it.")
    postconditions: PostConditions = Field(default_factory=PostConditions)

    @model_validator(mode="after")
    def _driver_block(self) -> MigrationsParams:
        if self.enabled and getattr(self, self.driver) is None:
            raise ValueError(f"driver '{self.driver}' needs its block `{self.driver}:`")
        return self


class RetentionWindow(Strict):
    table: str
    column: str = Field(description="The timestamp column the window applies to.")
    days: float = Field(gt=0)
    severity: Severity = "major"


class PurgeDryRun(Strict):
    sql: str | None = Field(None, description="Read-only query returning (table, would_delete) rows.")
    command: str | None = Field(None, description="Or a command printing JSON {table: would_delete}.")
    timeout_s: float = Field(120, gt=0, le=MAX_SECONDS)


class PiiColumn(Strict):
    table: str
    column: str
    severity: Severity = "major"


class PiiScan(Strict):
    columns: list[PiiColumn] = Field(default_factory=list)
    sample_rows: int = Field(2000, ge=1, le=1_000_000, description="At most this many rows per column.")
    patterns: dict[str, str] = Field(
        default_factory=lambda: {
            "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            "phone": r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}",
            "card": r"\b(?:\d[ -]?){12,18}\d\b",
        }, description="name -> regex; 'card' matches are kept only when they pass the Luhn check.")


class DataExport(Strict):
    request: JourneyStep = Field(description="The request that asks for an export (it writes).")
    datasets_field: str = Field("datasets", description="Field of the response holding the datasets.")
    expected_datasets: list[str] = Field(default_factory=list)
    checksum_field: str | None = Field("checksum", description="Field the service states its SHA-256 in, if any.")


class RetentionParams(Strict):
    enabled: bool = True
    windows: list[RetentionWindow] = Field(default_factory=list)
    purge_dry_run: PurgeDryRun | None = None
    pii_scan: PiiScan = Field(default_factory=PiiScan)
    export: DataExport | None = None
    evidence_rows: int = Field(5, ge=0, le=100)


class BackupSource(Strict):
    path: str | None = Field(None, description="A backup file or a folder of them (newest by mtime); may use ${VAR}.")
    pattern: str = Field("*", description="Glob of backup files inside `path` when it is a folder.")
    command: str | None = Field(None, description="Or a command printing the newest backup's path on its last line.")
    max_age_hours: float = Field(24, gt=0, description="The RPO objective: the newest backup may be this old.")
    min_size_bytes: int = Field(1, ge=0)


class RestoreTable(Strict):
    name: str
    as_of_column: str | None = Field(None, description="Compare with the source's rows older than the backup.")


class RestoreCheck(Strict):
    scratch_database_url: str = Field(description="${VAR} URL of a role that may CREATE/DROP DATABASE.")
    pg_bin_dir: str | None = Field(None, description="Folder of pg_restore/psql (default: PATH); may use ${VAR}.")
    tables: list[RestoreTable] = Field(default_factory=list)
    tolerance_pct: float = Field(0, ge=0, le=100, description="Allowed shortfall of restored rows, in percent.")
    timeout_s: float = Field(600, gt=0, le=MAX_SECONDS)


class OpsCommand(Strict):
    command: str = Field(description="Shell-free command line; {python} is this Python.")
    timeout_s: float = Field(120, gt=0, le=MAX_SECONDS,
                             description="Time for the command and then health and ready to answer.")


class RestartDrill(OpsCommand):
    rto_max_s: float = Field(30, gt=0, le=MAX_SECONDS,
                             description="The RTO objective: seconds until health and ready answer.")
    count_tables: list[str] = Field(default_factory=list, description="Row counts before and after must agree.")
    service_checks: list[JourneyStep] = Field(default_factory=list, description="Run again after the restart.")


class BackupRecoveryParams(Strict):
    enabled: bool = True
    health_endpoint: str = "/health"
    ready_endpoint: str | None = "/v1/ready"
    backup: BackupSource | None = None
    restore: RestoreCheck | None = None
    rollback: OpsCommand | None = None
    restart: RestartDrill | None = None


class SmokeParams(Strict):
    enabled: bool = True
    command: str | None = Field(None, description="The team's smoke command ({python} {junit} {package}).")
    junit_path: str = Field("{junit}", description="Where the command writes its JUnit XML: {junit}, or a path "
                                                    "relative to the run folder's smoke/ (never outside it).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment; values may be ${VAR}.")
    min_tests: int = Field(1, ge=0)
    timeout_s: float = Field(300, gt=0, le=MAX_SECONDS)

    @field_validator("junit_path")
    @classmethod
    def _inside_run_folder(cls, value: str) -> str:
        """The tool deletes a stale file there before the command runs: it must stay inside the run folder."""
        if value != "{junit}" and not junit_path_is_safe(value):
            raise ValueError("must be {junit} or a relative path inside the run folder's smoke/ folder "
                             "(no absolute path, no '..', no placeholder)")
        return value


def junit_path_is_safe(value: str) -> bool:
    """A relative path with no '..', no '~' and no placeholder (so it cannot leave the folder it is joined to)."""
    from pathlib import PurePosixPath, PureWindowsPath

    if not value or "{" in value or "}" in value or value.startswith("~") or "\\" in value:
        return False
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    return not (posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts)


class Phases(Strict):
    preflight: PreflightParams = Field(default_factory=PreflightParams)
    integrity: IntegrityParams = Field(default_factory=IntegrityParams)
    webhooks: WebhooksParams | None = None
    jobs: JobsParams | None = None
    security: SecurityParams = Field(default_factory=lambda: SecurityParams(enabled=False))
    observability: ObservabilityParams = Field(default_factory=lambda: ObservabilityParams(enabled=False))
    load: LoadParams = Field(default_factory=lambda: LoadParams(enabled=False))
    migrations: MigrationsParams = Field(default_factory=lambda: MigrationsParams(enabled=False))
    retention: RetentionParams = Field(default_factory=lambda: RetentionParams(enabled=False))
    backup_recovery: BackupRecoveryParams = Field(default_factory=lambda: BackupRecoveryParams(enabled=False))
    smoke: SmokeParams = Field(default_factory=lambda: SmokeParams(enabled=False))
    decision: DecisionParams = Field(default_factory=DecisionParams)


class Waiver(Strict):
    check: str
    owner: str
    reason: str
    expires: dt.date


class Attestation(Strict):
    check: str = Field(pattern=r"^[a-z0-9_.]+$")
    title: str
    by: str | None = None
    at: dt.datetime | None = None
    status: Literal["pass", "fail", "manual"] = "manual"
    note: str = ""
    severity: Severity = "major"


class Risk(Strict):
    """A known risk for the risk register (seed: Observed Weak Points)."""

    risk: str
    impact: Literal["high", "medium", "low"] = "medium"
    likelihood: Literal["high", "medium", "low"] = "medium"
    mitigation: str = ""
    owner: str = ""


class Gate(Strict):
    waivers: list[Waiver] = Field(default_factory=list)
    severity_overrides: dict[str, Severity] = Field(default_factory=dict)
    warn_is_condition: bool = Field(False, description="A `warn` result makes the run CONDITIONAL GO.")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Params(Strict):
    name: str = Field(description="A slug: it names the folder outputs/<name>/ the runs go to.")
    environment: Environment = Field(default_factory=Environment)
    target: Target
    sandbox: SandboxBlock | None = None
    safety: Safety = Field(default_factory=Safety)
    run: RunOptions = Field(default_factory=RunOptions)
    phases: Phases = Field(default_factory=Phases)
    gate: Gate = Field(default_factory=Gate)
    attestations: list[Attestation] = Field(default_factory=list)
    risks: list[Risk] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not NAME_RE.match(value) or ".." in value:
            raise ValueError("must be a slug of at most 64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit and without '..' (it names the folder outputs/<name>/)")
        return value

    @property
    def is_production(self) -> bool:
        return self.environment.kind == "production"

    def enabled_phases(self) -> list[str]:
        """Enabled phases in run order (decision last)."""
        out = []
        for phase in PHASES:
            block = getattr(self.phases, phase.name, None)
            if block is not None and block.enabled:
                out.append(phase.name)
        return out

    def references(self) -> list[tuple[str, str, bool]]:
        """Every `${VAR}` reference in the file as (variable, key that uses it, has a default)."""
        return [(m.group(1), key, m.group(2) is not None)
                for key, value in string_values(self.model_dump(mode="json")) for m in REF_RE.finditer(value)]


def string_values(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a params document with its dotted key (`phases.smoke.env.TOKEN`, `journey[0].path`)."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from string_values(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from string_values(v, f"{key}[{i}]")


def project_root(start: Path | None = None) -> Path:
    """The project folder: `$REHEARSAL_PROJECT_DIR`, else the nearest parent holding `params/`."""
    if os.environ.get("REHEARSAL_PROJECT_DIR"):
        return Path(os.environ["REHEARSAL_PROJECT_DIR"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params").is_dir() and (candidate / "notebooks").is_dir():
            return candidate
    return Path(__file__).resolve().parent.parent


def params_path(env: str, root: Path | None = None) -> Path:
    """`ENV` names `params/ENV.yaml`; a value ending in .yaml/.yml is a path."""
    if env.endswith((".yaml", ".yml")) or os.sep in env:
        return Path(env).resolve()
    return (root or project_root()) / "params" / f"{env}.yaml"


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map key paths (tuples of str/int) to 1-based line numbers."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            lines.update(_line_index(value_node, sub))
            lines[sub] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*path, i)))
    return lines


def _known_keys() -> set[str]:
    """Every key name the params models accept (for did-you-mean hints)."""
    names: set[str] = set()
    pending: list[type[BaseModel]] = [Params]
    while pending:
        model = pending.pop()
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in pending:
                        pending.append(inner)
    return names


def _explain(err: dict, loc: tuple) -> str:
    """A pydantic error in an operator's words, with a hint where one helps."""
    import difflib

    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] != "extra_forbidden":
        return err["msg"]
    key = str(loc[-1])
    if len(loc) == 2 and loc[0] == "phases" and key in {p.name for p in PHASES}:
        built = ", ".join(p.name for p in PHASES if notebook_for(p.name) is not None)
        return f"phase '{key}' has no notebook yet (phases available now: {built})"
    close = difflib.get_close_matches(key, sorted(_known_keys()), n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else " (check its spelling and indentation)"
    return "unknown key" + hint


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


Origin = dict[tuple, tuple[Path, int]]


MAX_PARAMS_BYTES = 1_000_000
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # nodes after alias expansion: a real params file has a few hundred
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting depth and alias expansion are limited while the
    document is composed (before anything is built), and duplicate keys are collected."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth, self.nodes = 0, 0
        self.sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self.duplicates: list[tuple[str, int, int]] = []  # (key, line, line of the first one)

    def _grow(self, count: int, mark: yaml.Mark) -> None:
        self.nodes += count
        if self.nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand to more than {MAX_YAML_NODES:,} nodes (an alias bomb?)", mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self.sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", mark)
            self._grow(self.sizes[id(node)], mark)
            return node
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self.nodes
        self._grow(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.sizes[id(node)] = self.nodes - before
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in first:
                self.duplicates.append((key_node.value, line, first[key]))
            else:
                first[key] = line
        return node


# Booleans as YAML 1.2 has them: only true/false. PyYAML (YAML 1.1) also reads yes/no/on/off as booleans,
# so `allow_destructive: yes` or `enabled: off` would pass a strict boolean unseen; here they stay text
# and the params model refuses them by name.
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))

def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a UTF-8 BOM is allowed) without control characters; nothing of the file is echoed."""
    message = "not UTF-8 text: a params file is YAML saved as UTF-8 (is this a binary, Latin-1 or UTF-16 file?)"
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, message, line=raw[: exc.start].count(b"\n") + 1) from None
    bad = NOT_TEXT.search(text)
    if bad:
        raise ConfigError(path, message, line=text[: bad.start()].count("\n") + 1)
    return text


TOP_LEVEL_HINT = "a params file is a mapping with name:, target:, phases: ..."


def _looks_like_params(path: Path, data: Any) -> dict:
    """Refuse, without echoing any of its content, a file that is clearly not a params file.

    The rule: the top level must be a mapping, and at most half of its keys may be ones a params
    file does not have (a misspelling close to a real key counts as a params key)."""
    import difflib

    if not isinstance(data, dict):
        kind = {"str": "plain text", "list": "a list", "int": "a number", "float": "a number", "bool": "a boolean"}
        what = "empty" if data is None else f"{kind.get(type(data).__name__, 'a single value')}, not a mapping"
        raise ConfigError(path, f"does not look like a Rehearsal params file: its top level is {what} "
                                f"({TOP_LEVEL_HINT})")
    known = sorted({*Params.model_fields, "extends"})
    odd = [k for k in data if not isinstance(k, str)
           or (k not in known and not difflib.get_close_matches(k, known, n=1, cutoff=0.75))]
    if not data or len(odd) * 2 > len(data):
        raise ConfigError(path, f"does not look like a Rehearsal params file: {len(odd)} of its {len(data)} "
                                f"top-level keys are not params keys ({TOP_LEVEL_HINT})")
    return data


def _read_yaml(path: Path) -> tuple[dict, Origin]:
    """Parse one params file; return its mapping and where each key path stands (file, line)."""
    try:
        size = path.stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise ConfigError(path, f"{size:,} bytes is too large for a params file (at most {MAX_PARAMS_BYTES:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    loader = _ParamsLoader(_decode(path, raw))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, f"invalid YAML: {problem[:200]}", line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError(path, f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
    data = _looks_like_params(path, data)
    if loader.duplicates:
        key, line, first = loader.duplicates[0]
        also = [_problem_line(str(path), ln, k, f"duplicate key (first at line {f})")
                for k, ln, f in loader.duplicates[1:]]
        raise ConfigError(path, f"duplicate key (first at line {first}); a key may appear once in a mapping",
                          key=key, line=line, also=also)
    lines = _line_index(node) if node is not None else {}
    return data, {k: (path, v) for k, v in lines.items()}


def _merge(base: Any, override: Any) -> Any:
    """Deep-merge mappings (override wins); lists and scalars are replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


def _load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, Origin]:
    """A file and, through `extends: other.yaml` (relative to it), the files it builds on."""
    data, origin = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, origin
    line = origin.get(("extends",), (path, None))[1]
    if not isinstance(parent, str) or not parent.endswith((".yaml", ".yml")):
        raise ConfigError(path, "must be the path of another params file (.yaml or .yml)", key="extends", line=line)
    base_path = (path.parent / parent).resolve()
    if base_path in seen or base_path == path:
        raise ConfigError(path, f"extends itself through {parent}", key="extends", line=line)
    if not base_path.is_file():
        raise ConfigError(path, f"no such params file {base_path}", key="extends", line=line)
    base, base_origin = _load_with_extends(base_path, (*seen, path))
    merged = _merge(base, data)
    return merged, {**base_origin, **{k: v for k, v in origin.items() if k != ("extends",)}}


def load_params(env: str, root: Path | None = None, check_env_vars: bool = True) -> Params:
    """Read, parse and validate a params file; raise ConfigError with file, key and line."""
    path = params_path(env, root)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        hint = f" (available: {', '.join(available)})" if available else ""
        raise ConfigError(path, f"no such params file{hint}")
    data, origin = _load_with_extends(path)

    def where(loc: tuple) -> tuple[Path, int | None]:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in origin:
                return origin[loc[:cut]]
        return path, None

    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        # a misspelt key also makes the real one "missing": report the unknown key, the cause, first
        errors = sorted(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", where(tuple(e["loc"]))[1] or 0))
        problems = []
        for err in errors:
            loc = tuple(err["loc"])
            file, line = where(loc)
            problems.append((file, line, _dotted(loc), _explain(err, loc)))
        file, line, key, message = problems[0]
        also = [_problem_line(str(f), ln, k, m) for f, ln, k, m in problems[1:]]
        raise ConfigError(file, message, key=key, line=line, also=also) from None
    if params.sandbox is not None and extras.missing("sandbox"):
        file, line = where(("sandbox",))
        raise ConfigError(file, extras.message("sandbox", "the sandbox"), key="sandbox", line=line)
    for phase in params.enabled_phases():
        if notebook_for(phase, root) is None:
            file, line = where(("phases", phase))
            raise ConfigError(file, f"phase '{phase}' is enabled but has no notebook in notebooks/",
                              key=f"phases.{phase}.enabled", line=line)
    if check_env_vars:
        provided = set(SANDBOX_PROVIDED_VARS) if params.sandbox else set()
        unset = []
        for var, key, has_default in params.references():
            if var not in os.environ and var not in provided and not has_default:
                file, line = where(tuple(_split_key(key)))
                unset.append((file, line, key, f"references ${{{var}}}, which is not set in the environment"))
        if unset:
            file, line, key, message = unset[0]
            raise ConfigError(file, message, key=key, line=line,
                              also=[_problem_line(str(f), ln, k, m) for f, ln, k, m in unset[1:]])
        empty = [(*where(tuple(_split_key(key))), key, message) for key, message in _empty_required(params, provided)]
        if empty:
            file, line, key, message = empty[0]
            raise ConfigError(file, message, key=key, line=line,
                              also=[_problem_line(str(f), ln, k, m) for f, ln, k, m in empty[1:]])
    return params


def _field_at(parts: list[str | int]) -> Any:
    """The model field a key path of the params file names (None inside dicts or for unknown keys)."""
    model: Any = Params
    field = None
    for part in parts:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = next((t for arg in (field.annotation, *typing.get_args(field.annotation))
                      for t in (arg, *typing.get_args(arg)) if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return field


def _empty_required(params: Params, provided: set[str]) -> list[tuple[str, str]]:
    """(key, message) for each required value that is nothing but references resolving to an empty string."""
    values = {key: value for key, value in string_values(params.model_dump(mode="json", by_alias=True))
              if REF_RE.search(value)}
    out = []
    for key, value in values.items():
        if any(m.group(1) in provided and m.group(1) not in os.environ for m in REF_RE.finditer(value)):
            continue  # the sandbox fills it in when it starts
        field = _field_at(_split_key(key))
        try:
            resolved = resolve_reference(value)
        except KeyError:
            continue
        if field is not None and field.is_required() and not resolved.strip():
            out.append((key, f"resolves to an empty value ({value}); this key is required"))
    return out


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def resolve_reference(value: str, environ: dict[str, str] | None = None) -> str:
    """Expand `${VAR}` / `${VAR:-default}` from the environment; a missing variable raises KeyError."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise KeyError(var)

    return REF_RE.sub(sub, value)
