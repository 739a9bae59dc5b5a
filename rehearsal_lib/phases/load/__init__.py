"""The load phase: `params` is its block under `phases.load`, `checks` its check families."""

from rehearsal_lib.phases.load.params import LoadParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="load",
    title="Performance & Load",
    order=6,
    destructive=True,
    seed="Staging Rehearsal Report · 6. Performance and Load Testing; Exam-Day Rehearsal · Phase 2: Load Generation",
    params=LoadParams,
    default_params=lambda: LoadParams(enabled=False),
    notebook="06_load.ipynb",
)
