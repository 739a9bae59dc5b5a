"""Params of the security phase: its block under `phases.security` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from rehearsal_lib.params_base import (
    PhaseParams,
    Severity,
    Strict,
)


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


class SecurityParams(PhaseParams):
    enabled: bool = True
    tls: TlsCheck | None = None
    headers: HeadersCheck | None = None
    protected_endpoints: list[ProtectedEndpoint] = Field(default_factory=list)
    wrong_token: str = Field("rehearsal-wrong-token", description="The bad bearer token the auth checks send.")
    bad_inputs: list[BadInput] = Field(default_factory=list)
    database_ssl: bool = Field(False, description="The database must have ssl=on and encrypt this connection.")
    rls_tables: list[str] = Field(default_factory=list, description="Tables that must have row-level security on.")
