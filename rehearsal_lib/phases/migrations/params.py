"""Params of the migrations phase: its block under `phases.migrations` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rehearsal_lib.params_base import (
    MAX_SECONDS,
    PhaseParams,
    Strict,
)


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


class KeySpec(Strict):
    """A unique constraint or primary key, matched by its columns (whatever its name)."""

    table: str
    columns: list[str] = Field(min_length=1)


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
    unique: list[KeySpec] = Field(default_factory=list, description=(
        "Unique constraints (or unique indexes) by table and columns, in any order; the name is not compared."))
    primary_keys: list[KeySpec] = Field(default_factory=list, description="Primary keys by table and columns.")
    functions: list[str] = Field(default_factory=list, description="Function names (schema-qualified or public).")
    rls: list[RlsSpec] = Field(default_factory=list)


class SqlDirDriver(Strict):
    directory: str = Field(description="Folder of NNN_name.sql files; may use ${VAR}.")
    table: str = Field("schema_migrations", description="Tracking table; its `version` column lists applied files.")
    version_column: str = "version"
    down_directory: str | None = Field(None, description="Folder of NNN_name.sql down scripts (for the round trip).")


class AlembicDriver(Strict):
    config: str = Field(description="Path of alembic.ini; may use ${VAR}. Alembic runs from its folder.")
    section: str = "alembic"
    python: str | None = Field(
        None, description="The app's interpreter (e.g. /srv/app/.venv/bin/python; may use ${VAR}): alembic runs "
                          "there, so Rehearsal's environment needs none of the app's packages.")
    url_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable the app's env.py reads its database URL from; set to the URL of each "
                    "step (apply_database_url, the scratch database). Needs `python`.")
    timeout_s: float = Field(600, gt=0, le=MAX_SECONDS, description="Bound of each alembic step run with `python`.")

    @model_validator(mode="after")
    def _url_env_needs_python(self) -> AlembicDriver:
        if self.url_env and not self.python:
            raise ValueError("url_env needs `python`: only a fresh interpreter reads the variable anew at each step")
        return self


class CommandDriver(Strict):
    plan_command: str = Field(description="Prints the pending migrations, e.g. 'python manage.py migrate --plan'.")
    pending_regex: str = Field(r"\S", description="Lines of the plan's output that name one pending migration.")
    apply_command: str | None = None
    roundtrip_command: str | None = Field(None, description="Runs a down/up round trip on a scratch copy; exit 0 = ok.")
    timeout_s: float = Field(300, gt=0, le=MAX_SECONDS)


class MigrationsParams(PhaseParams):
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
