"""The building blocks of every params model: `Strict` (no unknown keys, no sloppy booleans), `PhaseParams`
(the base of each phase's block under `phases:`), shared limits and the small models several phases use."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_PARALLEL = 16
MAX_SECONDS = 86_400  # upper bound of every timeout: a day
Severity = Literal["blocker", "major", "minor", "info"]


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


class PhaseParams(Strict):
    """The block of one phase under `phases:`; every phase can be switched off."""

    enabled: bool = True


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


def as_field() -> Any:
    """The `as:` key: the principal (target.auth) a request runs as; unset: the target's default principal."""
    return Field(None, alias="as", description="Principal of target.auth this request runs as (anonymous: none); "
                                               "default: the target's default principal.")


def check_as(auth: bool, principal: str | None) -> None:
    """`auth: false` means anonymous; naming a principal beside it is a contradiction."""
    if not auth and principal not in (None, "anonymous"):
        raise ValueError(f"`auth: false` (anonymous) contradicts `as: {principal}`; keep one of them")


class JourneyStep(Strict):
    """One request of the critical-path journey; `save` keeps response fields for later steps."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {saved_name} and {run_id} placeholders.")
    json_body: Any = Field(None, alias="json")
    auth: bool = Field(True, description="Send the principal's credentials; false: the step runs anonymously.")
    principal: str | None = as_field()
    follow_redirects: bool | None = Field(None, description="Override target.follow_redirects for this step.")
    expect_status: int | list[int] = 200
    save: dict[str, str] = Field(default_factory=dict, description="name -> top-level field of the JSON response")
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _as(self) -> JourneyStep:
        check_as(self.auth, self.principal)
        return self
