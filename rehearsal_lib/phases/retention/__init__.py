"""The retention phase: `params` is its block under `phases.retention`, `checks` its check families."""

from rehearsal_lib.phases.retention.params import RetentionParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="retention",
    title="Data Retention & Privacy",
    order=5,
    seed="Staging Rehearsal Report · 4. Data Retention and Privacy",
    params=RetentionParams,
    default_params=lambda: RetentionParams(enabled=False),
    notebook="05_retention.ipynb",
)
