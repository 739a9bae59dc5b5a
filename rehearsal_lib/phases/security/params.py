"""Params of the security phase: its block under `phases.security` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from rehearsal_lib.params_base import (
    JourneyStep,
    PhaseParams,
    Severity,
    Strict,
    as_field,
    check_as,
)

REFUSALS = {401, 403, 404}


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
    """An endpoint that refuses anonymous callers and a wrong credential (`security.auth.<name>`) and, with
    `refuse_as`, the principals not allowed to use it while its own principal is (`security.authz.<name>`)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {run_id} and the values saved by `setup`.")
    json_body: Any = Field(None, alias="json", description="Body sent with every request to the endpoint.")
    principal: str | None = as_field()
    refuse_status: list[int] = Field(default_factory=lambda: [401, 403])
    setup: list[JourneyStep] = Field(default_factory=list, description="Steps run first (each as its own `as`); "
                                                                        "their saved values fill the path.")
    refuse_as: list[str] = Field(default_factory=list, description="Principals that must be refused.")
    forbid_status: list[int] = Field(default_factory=lambda: [403, 404],
                                     description="What a refused principal must get (from 401, 403, 404).")
    allow_status: list[int] = Field(default_factory=lambda: [200],
                                    description="What the endpoint's own principal gets (the authz check's control).")
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("forbid_status")
    @classmethod
    def _refusals(cls, value: list[int]) -> list[int]:
        if not value or not set(value) <= REFUSALS:
            raise ValueError("a refusal is 401, 403 or 404 (a redirect, a 5xx or a 2xx refuses nothing)")
        return value

    @model_validator(mode="after")
    def _who(self) -> ProtectedEndpoint:
        if self.principal in self.refuse_as:
            raise ValueError(f"`as: {self.principal}` is the allowed principal; it cannot be in refuse_as too")
        if "anonymous" in self.refuse_as:
            raise ValueError("anonymous callers are always refused by security.auth.<name>; drop it from refuse_as")
        if self.refuse_as and self.principal == "anonymous":
            raise ValueError("refuse_as needs an allowed principal (`as:`), not anonymous")
        return self


class BadInput(Strict):
    """One hostile request: it must answer 4xx (never 5xx) and not echo its payload verbatim."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str
    json_body: Any = Field(None, alias="json", description="A JSON body (strings in it are the payloads).")
    body: str | None = Field(None, description="A raw body sent as-is (e.g. malformed JSON).")
    oversize_bytes: int | None = Field(None, gt=0, description="Send a JSON string body of this many bytes.")
    content_type: str = "application/json"
    auth: bool = Field(True, description="Send the principal's credentials (so the input, not auth, is tested).")
    principal: str | None = as_field()
    follow_redirects: bool | None = Field(None, description="Override target.follow_redirects for this probe.")
    expect_status: list[int] | None = Field(None, description="Accepted codes; default any 4xx.")
    severity: Severity = "major"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _as(self) -> BadInput:
        check_as(self.auth, self.principal)
        return self


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
Mode = Literal["positive", "negative"]
MODES: tuple[Mode, ...] = ("positive", "negative")


class FuzzParams(Strict):
    """Schema-driven hostile inputs: Schemathesis generates requests from the OpenAPI document
    (`security.fuzz.server_errors`, `security.fuzz.schema`, `security.fuzz.latency`)."""

    openapi: str = Field("/openapi.json", description="The OpenAPI document: a path on base_url, a URL or a file "
                                                      "(${VAR} ok); fetched with GET.")
    operations: list[str] = Field(default_factory=list, description="`METHOD /path` or `/path` (its safe methods) as "
                                                                    "the document names them; empty: every operation.")
    principal: str | None = as_field()
    auth: bool = Field(True, description="Send the principal's credentials (headers only).")
    max_examples: int = Field(25, ge=1, le=1000, description="Generated requests per operation, at most.")
    time_budget_s: float = Field(30, gt=0, le=3600, description="Stop generating after this many seconds.")
    max_response_ms: float = Field(2000, gt=0, description="An answer slower than this is a latency finding.")
    allow_writes: bool = Field(False, description="Also fuzz POST/PUT/PATCH/DELETE operations (the checks then "
                                                  "write: refused in production without --allow-destructive).")
    modes: list[Mode] = Field(default_factory=lambda: list(MODES),
                                                         min_length=1, description="Schemathesis generation modes.")
    severity: Severity = "major"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("operations")
    @classmethod
    def _operations(cls, value: list[str]) -> list[str]:
        for op in value:
            parts = op.split()
            if not (len(parts) == 1 and parts[0].startswith("/")) and not (
                    len(parts) == 2 and parts[0].isupper() and parts[1].startswith("/")):
                raise ValueError(f"operation {op!r}: write `GET /path` or `/path`")
        return value

    @model_validator(mode="after")
    def _as(self) -> FuzzParams:
        check_as(self.auth, self.principal)
        unsafe = [op for op in self.operations if len(op.split()) == 2 and op.split()[0] not in SAFE_METHODS]
        if unsafe and not self.allow_writes:
            raise ValueError(f"{', '.join(unsafe)}: only GET, HEAD and OPTIONS are fuzzed unless allow_writes is true")
        return self


class SecurityParams(PhaseParams):
    enabled: bool = True
    tls: TlsCheck | None = None
    headers: HeadersCheck | None = None
    protected_endpoints: list[ProtectedEndpoint] = Field(default_factory=list)
    wrong_token: str = Field("rehearsal-wrong-token", description="The wrong credential the auth checks send, in "
                                                                  "the scheme of the endpoint's principal.")
    bad_inputs: list[BadInput] = Field(default_factory=list)
    database_ssl: bool = Field(False, description="The database must have ssl=on and encrypt this connection.")
    rls_tables: list[str] = Field(default_factory=list, description="Tables that must have row-level security on.")
    fuzz: FuzzParams | None = Field(None, description="Schema-driven hostile inputs (Schemathesis; the `fuzz` extra).")
