"""The data-subject export endpoint of the sandbox (migrations 017-019).

``access_log`` (kept 30 days) and ``data_exports`` (kept 60 days) get their rows from the release's own
migrations (017 and 018 backfill them relative to the time they run, every row inside its window).
``POST /v1/data-exports`` builds a candidate's export (sessions, answers, events) in one transaction,
stores it with its SHA-256 and answers with it; ``GET /v1/data-exports/{id}`` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text


def _rows(conn: Connection, sql: str, cid: str) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v)
             for k, v in row._mapping.items()} for row in conn.execute(text(sql), {"c": cid})]


def build_export(conn: Connection, candidate_id: str) -> dict[str, Any] | None:
    """Create and store a candidate's export; None if the candidate has no data."""
    sessions = _rows(conn, "SELECT id, exam_id, status, started_at, submitted_at, score FROM sessions "
                           "WHERE candidate_id = :c ORDER BY started_at, id", candidate_id)
    if not sessions:
        return None
    answers = _rows(conn, "SELECT a.id, a.session_id, a.question_id, a.answer, a.answered_at FROM answers a "
                          "JOIN sessions s ON s.id = a.session_id WHERE s.candidate_id = :c ORDER BY a.id",
                    candidate_id)
    events = _rows(conn, "SELECT e.id, e.session_id, e.type, e.occurred_at FROM events e "
                         "JOIN sessions s ON s.id = e.session_id WHERE s.candidate_id = :c ORDER BY e.id",
                   candidate_id)
    datasets = {"sessions": sessions, "answers": answers, "events": events}
    checksum = hashlib.sha256(json.dumps(datasets, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    row = conn.execute(
        text("INSERT INTO data_exports (candidate_id, datasets, checksum) VALUES (:c, CAST(:d AS jsonb), :h) "
             "RETURNING id, requested_at"),
        {"c": candidate_id, "d": json.dumps(datasets), "h": checksum},
    ).one()
    return {"id": str(row.id), "candidate_id": candidate_id, "status": "ready",
            "requested_at": row.requested_at.isoformat(), "checksum": checksum, "datasets": datasets}


def read_export(conn: Connection, export_id: uuid.UUID) -> dict[str, Any] | None:
    row = conn.execute(text("SELECT id, candidate_id, status, requested_at, datasets, checksum FROM data_exports "
                            "WHERE id = :i"), {"i": export_id}).first()
    if row is None:
        return None
    return {"id": str(row.id), "candidate_id": row.candidate_id, "status": row.status,
            "requested_at": row.requested_at.isoformat(), "checksum": row.checksum, "datasets": row.datasets}
