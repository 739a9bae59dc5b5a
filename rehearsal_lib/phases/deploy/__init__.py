"""The deploy phase (issue #13): a blue/green cutover and an abort drill under steady traffic, and an optional
plan with no drift; `params` is its block under `phases.deploy`, `checks` its check families."""

from rehearsal_lib.phases.deploy.params import DeployParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="deploy",
    title="Deployment Rehearsal",
    order=2.5,  # after migrations: the new schema is in place, then the new version goes live
    seed="Go-Live Playbook · Deployment rehearsal (blue/green cutover, abort simulation, rollback)",
    disruptive=True,
    params=DeployParams,
    default_params=lambda: DeployParams(enabled=False),
    notebook="02b_deploy.ipynb",
)
