"""The ux phase: browser journeys from params in headless Chromium (Playwright driving the system's
browser); `params` is its block under `phases.ux`, `checks` its check families."""

from rehearsal_lib.phases.spec import PhaseSpec
from rehearsal_lib.phases.ux.params import UxParams

SPEC = PhaseSpec(
    name="ux",
    title="User Experience",
    order=12.5,
    seed="Exam-Day Rehearsal · Phase 5: User Experience Validation",
    params=UxParams,
    default_params=lambda: UxParams(enabled=False),
    notebook="12_ux.ipynb",
)
