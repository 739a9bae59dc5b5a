"""Params of the integrity phase: its block under `phases.integrity` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from rehearsal_lib.params_base import (
    PhaseParams,
    Severity,
    Strict,
    ZeroRowCheck,
)


class CriticalTable(Strict):
    name: str
    min_rows: int = Field(0, ge=0)
    severity: Severity = "major"


class ExpectedIndex(Strict):
    name: str
    table: str
    severity: Severity = "major"


class IntegrityParams(PhaseParams):
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
