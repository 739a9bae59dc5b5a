"""Params of the backup_recovery phase: its block under `phases.backup_recovery` (docs/params.md)."""

from __future__ import annotations

from pydantic import Field

from rehearsal_lib.params_base import (
    MAX_SECONDS,
    JourneyStep,
    PhaseParams,
    Strict,
)


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


class BackupRecoveryParams(PhaseParams):
    enabled: bool = True
    health_endpoint: str = "/health"
    ready_endpoint: str | None = "/v1/ready"
    backup: BackupSource | None = None
    restore: RestoreCheck | None = None
    rollback: OpsCommand | None = None
    restart: RestartDrill | None = None
