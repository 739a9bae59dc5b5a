"""Params of the decision phase: its block under `phases.decision` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from rehearsal_lib.params_base import (
    PhaseParams,
)


class DecisionParams(PhaseParams):
    enabled: bool = True
