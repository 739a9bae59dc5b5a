"""The migrations phase: `params` is its block under `phases.migrations`, `checks` its check families."""

from rehearsal_lib.phases.migrations.params import MigrationsParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="migrations",
    title="Database Migrations",
    order=2,
    destructive=True,
    seed="Staging Rehearsal Report · 1. Database Migration Testing; Staging Checklist · 2. Migration Dry Run",
    params=MigrationsParams,
    default_params=lambda: MigrationsParams(enabled=False),
    notebook="02_migrations.ipynb",
)
