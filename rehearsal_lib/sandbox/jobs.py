"""The sandbox's job endpoints: ``POST /v1/jobs`` enqueues (idempotent per ``dedupe_key``),
``GET /v1/jobs/{id}`` reports a job's run. The worker (``sandbox/worker.py``) processes the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JOB_TYPES = ("noop", "export_digest", "flaky", "schedule_reminders")
STATUS_FIELDS = ("id", "type", "status", "attempts", "enqueued_at", "picked_at", "finished_at", "last_error")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _error(status: int, code: str, detail: str) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def job_routes(engine: Engine, variant: str, authorized: Callable[[Request], bool]) -> list[Route]:
    """Trigger and status routes; ``authorized(request)`` checks the bearer token."""

    def enqueue(job_type: str, payload: dict[str, Any], dedupe_key: str | None) -> tuple[int, bool]:
        with engine.begin() as conn:
            new = conn.execute(
                text("INSERT INTO jobs (type, payload, dedupe_key) VALUES (:t, CAST(:p AS jsonb), :k)"
                     " ON CONFLICT DO NOTHING RETURNING id"),
                {"t": job_type, "p": json.dumps(payload), "k": dedupe_key},
            ).scalar()
            if new is not None:
                return int(new), True
            existing = conn.execute(text("SELECT id FROM jobs WHERE dedupe_key = :k ORDER BY id LIMIT 1"),
                                    {"k": dedupe_key}).scalar_one()
            return int(existing), False

    async def trigger(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "missing or invalid bearer token")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "bad_request", "body must be JSON")
        if not isinstance(body, dict) or body.get("type") not in JOB_TYPES:
            return _error(422, "validation_error", f"type must be one of {', '.join(JOB_TYPES)}")
        payload, key = body.get("payload") or {}, body.get("dedupe_key")
        if not isinstance(payload, dict) or (key is not None and not isinstance(key, str)):
            return _error(422, "validation_error", "payload must be an object and dedupe_key a string")
        job_id, created = await run_in_threadpool(enqueue, body["type"], payload, key)
        return JSONResponse({"id": job_id, "status": "queued", "created": created}, status_code=201 if created else 200)

    def read(job_id: int) -> dict[str, Any] | None:
        with engine.connect() as conn:
            row = conn.execute(text(f"SELECT {', '.join(STATUS_FIELDS)} FROM jobs WHERE id = :i"),
                               {"i": job_id}).first()
        if row is None:
            return None
        out = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in row._mapping.items()}
        if variant == "faulty":
            out.pop("finished_at")  # faulty: the status endpoint does not say when the run finished
        return out

    async def status(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "missing or invalid bearer token")
        try:
            job_id = int(request.path_params["job_id"])
        except ValueError:
            return _error(404, "not_found", "job not found")
        found = await run_in_threadpool(read, job_id) if 0 < job_id < 2**63 else None
        return JSONResponse(found) if found is not None else _error(404, "not_found", "job not found")

    return [Route("/v1/jobs", trigger, methods=["POST"]), Route("/v1/jobs/{job_id}", status, methods=["GET"])]
