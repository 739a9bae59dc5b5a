"""The jobs phase: `params` is its block under `phases.jobs`, `checks` its check families."""

from rehearsal_lib.phases.jobs.params import JobsParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="jobs",
    title="Job Queue & Scheduler",
    order=4,
    seed="Staging Rehearsal Report · 3. Job Queue and Scheduler Testing",
    params=JobsParams,
    default_params=None,
    notebook="04_jobs.ipynb",
)
