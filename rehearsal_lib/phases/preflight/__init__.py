"""The preflight phase: `params` is its block under `phases.preflight`, `checks` its check families."""

from rehearsal_lib.phases.preflight.params import PreflightParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="preflight",
    title="Preflight",
    order=1,
    seed="Exam-Day Rehearsal · Phase 1: Pre-Exam Freeze; Staging Checklist · 1. Environment & Data Snapshot",
    params=PreflightParams,
    default_params=PreflightParams,
    notebook="01_preflight.ipynb",
)
