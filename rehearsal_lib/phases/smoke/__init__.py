"""The smoke phase: `params` is its block under `phases.smoke`, `checks` its check families."""

from rehearsal_lib.phases.smoke.params import SmokeParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="smoke",
    title="Smoke Tests",
    order=12,
    seed="Staging Checklist · 3. Smoke Tests (via pytest markers)",
    params=SmokeParams,
    default_params=lambda: SmokeParams(enabled=False),
    notebook="12_smoke.ipynb",
)
