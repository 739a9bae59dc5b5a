"""The public API for phase authors: everything a phase package imports from Rehearsal.

    from rehearsal_lib.api import Outcome, PhaseParams, PhaseRun, PhaseSpec, Restore, Strict

docs/adding-a-phase.md describes each name. A phase package's spec module imports only `PhaseSpec`
and its params (`PhaseParams`, `Strict`), so registering it never imports the runner; its checks
module imports `PhaseRun` and `Outcome`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehearsal_lib.params_base import PhaseParams, Severity, Strict
from rehearsal_lib.phases.spec import PhaseSpec

if TYPE_CHECKING:
    from rehearsal_lib.phase import Outcome, PhaseRun, RestoreHandle
    from rehearsal_lib.restores import Restore
    from rehearsal_lib.results import Check, Status

__all__ = ["Check", "Outcome", "PhaseParams", "PhaseRun", "PhaseSpec", "Restore", "RestoreHandle", "Severity",
           "Status", "Strict"]

_LAZY = {"Outcome": "rehearsal_lib.phase", "PhaseRun": "rehearsal_lib.phase", "RestoreHandle": "rehearsal_lib.phase",
         "Restore": "rehearsal_lib.restores", "Check": "rehearsal_lib.results", "Status": "rehearsal_lib.results"}


def __getattr__(name: str) -> Any:
    """The kernel-side names load on first use: a spec module importing this stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
