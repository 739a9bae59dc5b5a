"""The backup_recovery phase: `params` is its block under `phases.backup_recovery`, `checks` its check families."""

from rehearsal_lib.phases.backup_recovery.params import BackupRecoveryParams
from rehearsal_lib.phases.spec import PhaseSpec

SPEC = PhaseSpec(
    name="backup_recovery",
    title="Backup & Recovery",
    order=11,
    destructive=True,
    seed="Exam-Day Rehearsal · Phase 7: Recovery Drill; Staging Rehearsal Report · 5. Rollback Procedures",
    params=BackupRecoveryParams,
    default_params=lambda: BackupRecoveryParams(enabled=False),
    notebook="11_backup_recovery.ipynb",
)
