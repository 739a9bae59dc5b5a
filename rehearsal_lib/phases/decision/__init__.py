"""The decision phase: `params` is its block under `phases.decision`, `checks` its check families."""

from rehearsal_lib.phases.decision.params import DecisionParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="decision",
    title="Go / No-Go Decision",
    order=13,
    seed="Go/No-Go Decision, Risk Register and Sign-Off of every template",
    params=DecisionParams,
    default_params=DecisionParams,
    notebook="13_decision.ipynb",
)
