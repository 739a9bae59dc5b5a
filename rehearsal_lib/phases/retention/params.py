"""Params of the retention phase: its block under `phases.retention` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import Field

from rehearsal_lib.params_base import (
    MAX_SECONDS,
    JourneyStep,
    PhaseParams,
    Severity,
    Strict,
)


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


class RetentionParams(PhaseParams):
    enabled: bool = True
    windows: list[RetentionWindow] = Field(default_factory=list)
    purge_dry_run: PurgeDryRun | None = None
    pii_scan: PiiScan = Field(default_factory=PiiScan)
    export: DataExport | None = None
    evidence_rows: int = Field(5, ge=0, le=100)
