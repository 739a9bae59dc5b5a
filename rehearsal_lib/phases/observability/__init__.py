"""The observability phase: `params` is its block under `phases.observability`, `checks` its check families."""

from rehearsal_lib.phases.observability.params import ObservabilityParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="observability",
    title="Observability",
    order=10,
    disruptive=True,
    seed="Staging Rehearsal Report · 8. Monitoring and Alerting; Exam-Day Rehearsal · Phase 6: Observability Review",
    params=ObservabilityParams,
    default_params=lambda: ObservabilityParams(enabled=False),
    notebook="10_observability.ipynb",
)
