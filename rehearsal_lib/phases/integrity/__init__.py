"""The integrity phase: `params` is its block under `phases.integrity`, `checks` its check families."""

from rehearsal_lib.phases.integrity.params import IntegrityParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="integrity",
    title="Data Integrity",
    order=8,
    seed="Exam-Day Rehearsal · Phase 4: Data Integrity Verification",
    params=IntegrityParams,
    default_params=IntegrityParams,
    notebook="08_integrity.ipynb",
)
