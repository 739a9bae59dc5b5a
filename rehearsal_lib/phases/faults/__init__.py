"""The faults phase (issue #13): faults injected under steady traffic; `params` is its block under
`phases.faults`, `checks` its check families (on the shared harness, rehearsal_lib/disruption)."""

from rehearsal_lib.phases.faults.params import FaultsParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="faults",
    title="Failure Injection",
    order=7,
    seed="Exam-Day Rehearsal · Phase 3: Failure Injection",
    destructive=True,  # its traffic writes (answers) to the target
    disruptive=True,
    params=FaultsParams,
    default_params=lambda: FaultsParams(enabled=False),
    notebook="07_faults.ipynb",
)
