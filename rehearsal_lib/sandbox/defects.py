"""The defects planted into the ``faulty`` sandbox variant (see docs/sandbox.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlantedDefect:
    """One deliberate defect of the ``faulty`` variant and the check that must catch it."""

    id: str
    description: str
    check_id: str
    # other checks the same defect fails as a consequence (e.g. no warning is logged by a service that
    # answers 503 instead of bypassing Redis); the e2e test expects exactly check_id + also to fail
    also: tuple[str, ...] = ()

    @property
    def check_ids(self) -> tuple[str, ...]:
        return (self.check_id, *self.also)


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
    # webhooks (app-level in sandbox/webhooks.py, except the dropped unique index in plant_defects.sql)
    PlantedDefect(
        id="unsigned_webhook_accepted",
        description="A webhook delivery without a signature header is processed (a bad signature is still rejected).",
        check_id="webhooks.signature.missing",
    ),
    PlantedDefect(
        id="stale_webhook_accepted",
        description="The replay window is not enforced: a correctly signed delivery from 6 minutes ago is accepted.",
        check_id="webhooks.replay.stale_timestamp",
    ),
    PlantedDefect(
        id="webhook_processed_twice",
        description="The unique index on webhook_deliveries(delivery_id) is missing: a redelivery is stored again.",
        check_id="webhooks.idempotency.duplicate",
    ),
    PlantedDefect(
        id="webhook_rate_limit_off",
        description="The Redis rate limiter counts deliveries but never answers 429.",
        check_id="webhooks.rate_limit.enforced",
    ),
    PlantedDefect(
        id="webhook_plaintext_stored",
        description="The whole webhook payload is stored, candidate e-mail and name in plaintext included.",
        check_id="webhooks.storage.no_plaintext",
    ),
    # jobs (worker-level in sandbox/worker.py and sandbox/jobs.py, except the dropped index in plant_defects.sql)
    PlantedDefect(
        id="export_digest_never_picked",
        description="The worker never claims jobs of type export_digest: they stay queued.",
        check_id="jobs.run.completes",
    ),
    PlantedDefect(
        id="job_attempts_not_tracked",
        description="The worker does not count attempts: a job that failed once and then succeeded shows 0.",
        check_id="jobs.attempts.tracked",
    ),
    PlantedDefect(
        id="wrong_reminder_offsets",
        description="Reminders are scheduled at 0/1/4 days instead of 0/2/4.",
        check_id="jobs.schedule.offsets",
    ),
    PlantedDefect(
        id="job_dedupe_missing",
        description="The unique index on jobs(dedupe_key) is missing: two concurrent triggers run the job twice.",
        check_id="jobs.concurrency.once",
    ),
    PlantedDefect(
        id="job_status_incomplete",
        description="The job status endpoint omits finished_at.",
        check_id="jobs.status.reports",
    ),
    # security (phase 9)
    PlantedDefect(
        id="tls_cert_expiring",
        description="The HTTPS port's certificate expires in 3 days.",
        check_id="security.tls.expiry",
    ),
    PlantedDefect(
        id="missing_nosniff",
        description="Responses lack the X-Content-Type-Options header.",
        check_id="security.headers.x_content_type_options",
    ),
    PlantedDefect(
        id="admin_toggle_any_token",
        description="PUT /admin/health accepts any bearer token.",
        check_id="security.auth.admin_health",
    ),
    PlantedDefect(
        id="malformed_json_500",
        description="Malformed JSON sent to /v1/sessions... answers 500 instead of 400 (valid JSON is unaffected).",
        check_id="security.inputs.malformed_json",
    ),
    PlantedDefect(
        id="rls_off_answers",
        description="Row-level security is disabled on answers.",
        check_id="security.rls.answers",
    ),
    # observability (phase 10)
    PlantedDefect(
        id="duration_histogram_renamed",
        description="The request-duration histogram is exported as http_server_latency_seconds.",
        check_id="observability.series.http_request_duration_seconds",
    ),
    PlantedDefect(
        id="readiness_ignores_toggle",
        description="/v1/ready and app_ready stay healthy when the health toggle says unhealthy.",
        check_id="observability.readiness.toggle",
    ),
    PlantedDefect(
        id="request_id_not_logged",
        description="Access-log lines omit the request id (the response still echoes it).",
        check_id="observability.request_id.logged",
    ),
    PlantedDefect(
        id="plain_text_log_line",
        description="Each /metrics scrape prints a plain-text (non-JSON) log line.",
        check_id="observability.logs.json",
    ),
    PlantedDefect(
        id="slow_query",
        description="The app runs a 1 s statement at startup (pg_stat_statements records it).",
        check_id="observability.slow_queries",
    ),
    # load (phase 6)
    PlantedDefect(
        id="slow_exam_paper",
        description="GET /v1/exams/{id}/paper answers 600 ms late (app-level, sandbox/exam_paper.py).",
        check_id="load.p95.exam_paper",
    ),
    # database phases (issue #4): migrations, retention, backup & recovery
    PlantedDefect(
        id="release_already_applied",
        description="The release's migrations 017-019 were applied before the rehearsal (the faulty sandbox starts "
                    "fully migrated): nothing of the release is rehearsed.",
        check_id="migrations.apply",
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
    # ux (phase 12.5): the exam page's script (sandbox/static/exam.js, served at GET /exam)
    PlantedDefect(
        id="spinner_never_ends",
        description="After a successful save the exam page never hides its spinner.",
        check_id="ux.exam_flow.spinner",
    ),
    PlantedDefect(
        id="resume_loses_answer",
        description="The exam page keeps the saved answer in memory only: a reload resumes the session without it.",
        check_id="ux.resume_after_reload.completes",
    ),
]

# Disruption (issue #13): planted in the faulty variant (app-level in sandbox/app.py, deploy-level in
# sandbox/bluegreen.py) and proven by tests/test_sandbox_disruption.py. Their checks belong to the faults and
# deploy phases, which builtin_params/sandbox.yaml enables: the list is part of PLANTED_DEFECTS (below), so the
# e2e test asserts them too.
DISRUPTION_DEFECTS: list[PlantedDefect] = [
    PlantedDefect(
        id="redis_down_5xx",
        description="While Redis is unreachable the API rate limiter answers 503 instead of letting requests through.",
        check_id="faults.redis_down.during",
        also=("faults.redis_down.logged", "faults.redis_down.recovery"),
    ),
    PlantedDefect(
        id="answer_acked_before_commit",
        description="An answer is acknowledged (201) 0.1 s before its commit: it is lost when its worker is killed.",
        check_id="faults.worker_killed.nothing_lost",
        # the connection held until the late commit may be cut by the kill (a 5xx), and terminated backends
        # lose the commits pending then too
        also=("faults.worker_killed.during", "faults.db_backends_terminated.nothing_lost"),
    ),
    PlantedDefect(
        id="no_db_reconnect",
        description="No pool pre-ping, and the first lost database connection latches: after its backends are "
                    "terminated the app answers 503 until restarted.",
        check_id="faults.db_backends_terminated.recovery",
        also=("faults.db_backends_terminated.during", "faults.db_backends_terminated.nothing_lost"),
    ),
    PlantedDefect(
        id="cutover_drops_requests",
        description="The deploy stops the old colour before the new one serves: requests fail during the gap.",
        check_id="deploy.cutover.gap",
        also=("deploy.cutover.errors",),
    ),
    PlantedDefect(
        id="abort_leaves_new_version",
        description="An aborted deploy's automatic rollback leaves the new version serving.",
        check_id="deploy.abort_drill.rollback",
    ),
]

PLANTED_DEFECTS += DISRUPTION_DEFECTS
