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
]
