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
    """The block of one phase under `phases:`; every phase can be switched off and can name its owner."""

    enabled: bool = True
    owner: str | None = Field(None, description="Who owns this phase of the rehearsal (the timeline's owner).")


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


JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]
SAVE_RE = re.compile(r"^(\$.*|header:.+|[A-Za-z0-9_\-]+)$")


class OrderedBy(Strict):
    """A list sorted by a key of its items (or by the items themselves when `by` is not set)."""

    by: str | None = Field(None, description="Key of each item (a top-level field), e.g. created_at.")
    order: Literal["asc", "desc"] = "asc"



def check_regex(pattern: str) -> None:
    """A params regex must compile: ValueError naming why (pydantic reports it at its key)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex does not compile: {exc}") from None

class JsonExpect(Strict):
    """What the value(s) at one JSON path must be; every key set is checked (probes/assertions.py)."""

    equals: Any = Field(None, description="Equal to this value (compared as JSON: 1 == 1.0, not '1').")
    exists: bool | None = Field(None, description="true: the path matches something; false: it matches nothing.")
    type: JsonType | None = None
    regex: str | None = Field(None, description="The value as text matches (re.search).")
    length: int | None = Field(None, ge=0, description="Items of a list/object, characters of a string.")
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    ordered: Literal["asc", "desc"] | OrderedBy | None = Field(
        None, description="The list is sorted: asc/desc, or {by: key, order: asc|desc}.")

    @model_validator(mode="after")
    def _something(self) -> JsonExpect:
        if not self.model_fields_set:
            raise ValueError("an expectation needs at least one of equals, exists, type, regex, length, "
                             "min_length, max_length, ordered")
        if self.regex is not None:
            check_regex(self.regex)
        return self


class HeaderExpect(Strict):
    """What one response header must be (names are case-insensitive)."""

    equals: str | None = None
    regex: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> HeaderExpect:
        if self.equals is None and self.regex is None and self.exists is None:
            raise ValueError("a header expectation needs equals, regex or exists")
        if self.regex is not None:
            check_regex(self.regex)
        return self


class FilePart(Strict):
    """One file of a multipart body: text `content`, or the bytes of the file at `path`."""

    content: str | None = Field(None, description="The file's text (placeholders filled).")
    path: str | None = Field(None, description="An absolute path (may use ${VAR}) whose bytes are sent.")
    filename: str | None = Field(None, description="Default: the basename of path, else the field name.")
    content_type: str = "application/octet-stream"

    @model_validator(mode="after")
    def _one_source(self) -> FilePart:
        if (self.content is None) == (self.path is None):
            raise ValueError("a file part needs exactly one of content or path")
        return self


class RequestBody(Strict):
    """The body of a request: exactly one of `json`, `form` (with `files`: multipart), `files`, or `body`
    with its `content_type`. Strings may hold {placeholders} and ${VAR} references."""

    json_body: Any = Field(None, alias="json", description="A JSON body.")
    form: dict[str, Any] | None = Field(None, description="Form fields: urlencoded, or multipart with `files`.")
    files: dict[str, FilePart] | None = Field(None, description="Multipart file parts by field name.")
    body: str | None = Field(None, description="A raw body sent as is; needs content_type.")
    content_type: str | None = Field(None, description="Content type of the raw `body`.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_body(self) -> RequestBody:
        kinds = [k for k, v in (("json", self.json_body), ("form/files", self.form or self.files),
                                ("body", self.body)) if v is not None]
        if len(kinds) > 1:
            raise ValueError(f"a request has one body: {' and '.join(kinds)} given (form + files is one multipart)")
        if self.body is not None and not self.content_type:
            raise ValueError("a raw `body` needs its `content_type`")
        if self.content_type and self.body is None:
            raise ValueError("content_type goes with a raw `body` (json, form and files set their own)")
        return self


class ResponseExpect(Strict):
    """Assertions on a response beyond its status: JSON paths, headers, a latency bound."""

    expect: dict[str, JsonExpect] = Field(
        default_factory=dict, description="JSON path ($.a.b[0].c, $.items[*].id) -> what it must be.")
    expect_headers: dict[str, HeaderExpect] = Field(default_factory=dict, description="Response header -> rule.")
    max_ms: float | None = Field(None, gt=0, description="The response arrives within this many milliseconds.")

    @field_validator("expect")
    @classmethod
    def _paths_parse(cls, value: dict[str, JsonExpect]) -> dict[str, JsonExpect]:
        from rehearsal_lib.probes.assertions import parse_path

        for path in value:
            parse_path(path)
        return value


class JourneyStep(RequestBody, ResponseExpect):
    """One request of the critical-path journey; `save` keeps response values for later steps."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(description="May use {saved_name} and {run_id} placeholders.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers; {placeholders}, ${VAR}.")
    auth: bool = Field(True, description="Send the principal's credentials; false: the step runs anonymously.")
    principal: str | None = as_field()
    follow_redirects: bool | None = Field(None, description="Override target.follow_redirects for this step.")
    expect_status: int | list[int] = 200
    save: dict[str, str] = Field(default_factory=dict, description=(
        "name -> where in the response: a top-level field, a JSON path ($.a.b), or header:Name"))
    severity: Severity = "blocker"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("save")
    @classmethod
    def _save_sources(cls, value: dict[str, str]) -> dict[str, str]:
        from rehearsal_lib.probes.assertions import parse_path

        for name, source in value.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"saved name {name!r}: lowercase letters, digits and _ (it is a {{placeholder}})")
            if source.startswith("$"):
                parse_path(source)
            elif not SAVE_RE.match(source):
                raise ValueError(f"save {name}: {source!r} is not a field name, a JSON path ($...) or header:Name")
        return value

    @model_validator(mode="after")
    def _as(self) -> JourneyStep:
        check_as(self.auth, self.principal)
        return self
