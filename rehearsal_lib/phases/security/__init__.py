"""The security phase: `params` is its block under `phases.security`, `checks` its check families."""

from rehearsal_lib.phases.security.params import SecurityParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="security",
    title="Security Validation",
    order=9,
    seed="Staging Rehearsal Report · 7. Security Validation",
    params=SecurityParams,
    default_params=lambda: SecurityParams(enabled=False),
    notebook="09_security.ipynb",
)
