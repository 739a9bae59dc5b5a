"""The faults phase: not built yet (issue #13); in the catalogue so params files and docs can name it."""

from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="faults",
    title="Failure Injection",
    order=7,
    seed="Exam-Day Rehearsal · Phase 3: Failure Injection",
    destructive=True,
)
