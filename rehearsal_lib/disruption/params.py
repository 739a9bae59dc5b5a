"""Params blocks shared by the disruptive phases (faults, deploy): background traffic, expectations during a
disruption, recovery, the nothing-lost lookup and the injectors (docs/params.md)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from rehearsal_lib.params_base import REF_RE, Strict, as_field, check_as, check_regex

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class TrafficScenario(Strict):
    """One kind of background request; a write names the field of its answer that holds the stored id."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Method = "GET"
    path: str = Field(description="May use {uuid}, {seq}, {randint:A:B}, {run_id} and setup values.")
    json_body: Any = Field(None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers; values may be ${VAR}.")
    auth: bool = True
    principal: str | None = as_field()
    weight: float = Field(1.0, gt=0)
    expect_status: int | list[int] = 200
    ack_field: str | None = Field(None, description="A write: top-level field of its 2xx JSON answer holding the "
                                                    "id of what was stored (checked by nothing_lost).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _as(self) -> TrafficScenario:
        check_as(self.auth, self.principal)
        return self

    def codes(self) -> list[int]:
        return self.expect_status if isinstance(self.expect_status, list) else [self.expect_status]


class TrafficSetup(Strict):
    """A request sent `count` times before the traffic; the `field` of each answer fills {name}."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Method = "POST"
    path: str
    json_body: Any = Field(None, alias="json")
    auth: bool = True
    count: int = Field(10, ge=1, le=1000)
    expect_status: int | list[int] = 201
    field: str = "id"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Traffic(Strict):
    """Steady background traffic (the load engine's open model) before, during and after a disruption."""

    rate: float = Field(10, gt=0, le=500, description="Requests per second (modest: it observes, it does not load).")
    timeout_s: float = Field(2, gt=0, le=60, description="Per request; a timeout counts as an error.")
    setup: list[TrafficSetup] = Field(default_factory=list)
    scenarios: list[TrafficScenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Traffic:
        names = [s.name for s in self.scenarios]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"traffic scenario names must be unique; repeated: {', '.join(dupes)}")
        return self


class During(Strict):
    """What must hold while the disruption lasts (requests sent between inject and restore)."""

    max_error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests not answered as expected.")
    no_5xx: bool = Field(True, description="No answer with a 5xx status.")
    must_succeed: list[str] = Field(default_factory=list, description="Traffic scenarios every request of which "
                                                                     "must be answered as expected (e.g. auth).")
    min_requests: int = Field(3, ge=1, description="Fewer requests in the window: the check is error (not exercised).")


class Probe(Strict):
    """A request repeated until N consecutive answers are green (expected status); errors are never green."""

    method: Method = "GET"
    path: str = "/health"
    auth: bool = False
    expect_status: list[int] = Field(default_factory=lambda: [200])
    consecutive: int = Field(3, ge=1, le=100)
    interval_s: float = Field(0.2, gt=0, le=10)
    within_s: float = Field(10, gt=0, le=3600, description="The bound, from the restore (or cutover end).")


class LogExpect(Strict):
    """A log line matching `pattern` appears within `within_s` of the injection (read from that offset)."""

    file: str = Field(description="Path of the service's log file (may be ${VAR}).")
    pattern: str = Field(description="Python regex searched in each new line.")
    within_s: float = Field(5, gt=0, le=600)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        check_regex(value)
        return value


class NothingLost(Strict):
    """Every write acknowledged 2xx during the window exists afterwards exactly once, looked up by id through
    the read-only engine: `SELECT <id_column> FROM <table> WHERE <id_column> IN (:ids...)`."""

    scenario: str = Field(description="The traffic scenario whose acknowledged ids are looked up (has ack_field).")
    table: str = Field(description="Table (or schema.table) holding the records.")
    id_column: str = "id"
    settle_s: float = Field(0.5, ge=0, le=60, description="Wait before the lookup (in-flight commits).")

    @field_validator("table", "id_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENT_RE.match(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _; schema.table allowed)")
        return value


# -- injectors -----------------------------------------------------------------------------------------------


class CommandInjector(Strict):
    """Inject and restore by the team's own commands (no shell for inject; {python} is this interpreter)."""

    type: Literal["command"]
    inject: str
    restore: str
    timeout_s: float = Field(30, gt=0, le=3600)


class ProcessInjector(Strict):
    """Signal the process a pid file names: SIGSTOP (restore: SIGCONT) or SIGKILL (restore: optional start
    command, then wait until the pid file names a live process again)."""

    type: Literal["process"]
    pid_file: str = Field(description="Path of the pid file (may be ${VAR}).")
    signal: Literal["SIGSTOP", "SIGKILL", "SIGTERM"] = "SIGSTOP"
    start_command: str | None = Field(None, description="SIGKILL/SIGTERM: what starts it again (none: a supervisor "
                                                        "does).")
    back_within_s: float = Field(30, gt=0, le=600, description="SIGKILL/SIGTERM: how long the restore waits for a "
                                                               "live process in the pid file.")

    @model_validator(mode="after")
    def _start_only_after_kill(self) -> ProcessInjector:
        if self.signal == "SIGSTOP" and self.start_command:
            raise ValueError("start_command goes with SIGKILL or SIGTERM (SIGSTOP is undone by SIGCONT)")
        return self


class PgTerminateInjector(Strict):
    """pg_terminate_backend of the service's backends (by application_name), through an admin URL."""

    type: Literal["pg_terminate"]
    database_url: str = Field(description="An admin/writable URL as a ${VAR} reference (never the read-only one).")
    application_name: str

    @field_validator("database_url")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not REF_RE.search(value):
            raise ValueError("write database_url as a ${VAR} reference, not inline")
        return value


class Toxic(Strict):
    type: Literal["latency", "bandwidth", "timeout", "reset_peer", "slow_close", "limit_data", "slicer"]
    attributes: dict[str, float | int] = Field(default_factory=dict,
                                               description="e.g. {latency: 200, jitter: 20} (ms), {rate: 64} (KB/s).")
    stream: Literal["downstream", "upstream"] = "downstream"
    toxicity: float = Field(1.0, ge=0, le=1)


class ProxyInjector(Strict):
    """A Toxiproxy-API fault proxy (ours or the team's Toxiproxy): disable a proxy, or add a toxic."""

    type: Literal["proxy"]
    api_url: str = Field(description="The control API, e.g. http://127.0.0.1:8474 or ${TOXIPROXY_URL}.")
    proxy: str
    action: Literal["disable", "toxic"] = "disable"
    toxic: Toxic | None = None

    @model_validator(mode="after")
    def _toxic(self) -> ProxyInjector:
        if (self.action == "toxic") != (self.toxic is not None):
            raise ValueError("action: toxic needs a `toxic:` block (and only it takes one)")
        if not self.api_url.startswith(("http://", "https://", "${")):
            raise ValueError("api_url must be an http(s) URL or a ${VAR} reference")
        return self


def _type_of(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


Injector = Annotated[Annotated[CommandInjector, Tag("command")] | Annotated[ProcessInjector, Tag("process")]
                     | Annotated[PgTerminateInjector, Tag("pg_terminate")] | Annotated[ProxyInjector, Tag("proxy")],
                     Discriminator(_type_of, custom_error_type="injector",
                                   custom_error_message="`type` must be one of command, process, pg_terminate, proxy")]


def check_scenarios(traffic: Traffic, names: list[str], where: str) -> None:
    """Names that must be traffic scenarios: ValueError naming the unknown ones."""
    known = {s.name for s in traffic.scenarios}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{where}: {', '.join(unknown)} not among the traffic scenarios ({', '.join(sorted(known))})")
