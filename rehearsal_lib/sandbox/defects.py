"""The defects planted into the ``faulty`` sandbox variant (see docs/sandbox.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlantedDefect:
    """One deliberate defect of the ``faulty`` variant and the check that must catch it."""

    id: str
    description: str
    check_id: str


PLANTED_DEFECTS: list[PlantedDefect] = [
    PlantedDefect(
        id="orphaned_answer",
        description="One answer whose session_id references no session (loaded with triggers off).",
        check_id="integrity.zero_rows.orphaned_answers",
    ),
    PlantedDefect(
        id="duplicate_submit",
        description="A second 'submitted' event for one submitted session.",
        check_id="integrity.zero_rows.duplicate_submits",
    ),
    PlantedDefect(
        id="missing_index",
        description="Index idx_answers_session_id on answers(session_id) is missing.",
        check_id="integrity.index.idx_answers_session_id",
    ),
    PlantedDefect(
        id="exam_mode_off",
        description="settings.exam_mode is 'false': the exam freeze flag was not set.",
        check_id="preflight.exam_mode",
    ),
    # database phases (issue #4): migrations, retention, backup & recovery
    PlantedDefect(
        id="pending_migration",
        description="Migration 019_retention_purge ran but is not recorded in schema_migrations: it is pending.",
        check_id="migrations.plan.pending",
    ),
    PlantedDefect(
        id="rls_disabled",
        description="Row-level security is disabled on data_exports.",
        check_id="migrations.post.rls",
    ),
    PlantedDefect(
        id="row_past_retention",
        description="An access_log row 45 days old, past its 30-day retention window.",
        check_id="retention.window.access_log",
    ),
    PlantedDefect(
        id="plaintext_pii",
        description="An access_log payload holds a plaintext e-mail address and phone number.",
        check_id="retention.pii.access_log.payload",
    ),
    PlantedDefect(
        id="stale_backup",
        description="The newest backup is three days old (allowed: 24 hours).",
        check_id="backup_recovery.backup.age",
    ),
    PlantedDefect(
        id="restore_missing_rows",
        description="The backup was dumped without the rows of events: the restored copy misses them.",
        check_id="backup_recovery.restore.row_counts",
    ),
]
