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
    PlantedDefect(
        id="slow_exam_paper",
        description="GET /v1/exams/{id}/paper answers 600 ms late (app-level, sandbox/exam_paper.py).",
        check_id="load.p95.exam_paper",
    ),
]
