"""The sandbox's job worker, run as ``python -m rehearsal_lib.sandbox.worker`` by the sandbox manager.

``THREADS`` threads each claim the oldest due ``queued`` job with ``FOR UPDATE SKIP LOCKED`` (so no
job is claimed twice), count the attempt, run it and mark it ``done`` (or re-queue it with a short
backoff when it fails). Each processing writes one ``job_effects`` row. Job types: ``noop``,
``export_digest``, ``flaky`` (fails its first ``payload.fail_times`` attempts) and
``schedule_reminders`` (plans reminders at ``REMINDER_OFFSETS_DAYS`` after ``payload.base_at``).
Logs JSON lines to stdout (the manager sends them to ``worker.log``). The ``faulty`` variant plants
one defect per jobs check family (see docs/sandbox.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

THREADS = 2
POLL_S = 0.1
RETRY_BACKOFF_S = 0.2
REMINDER_OFFSETS_DAYS = (0, 2, 4)
FAULTY_REMINDER_OFFSETS_DAYS = (0, 1, 4)

log = logging.getLogger("exam_worker")


class JobFailed(Exception):
    """A job's attempt failed; it is retried."""


def _claim_sql(variant: str) -> str:
    skip = " AND type <> 'export_digest'" if variant == "faulty" else ""  # faulty: never picks these up
    count = "attempts" if variant == "faulty" else "attempts + 1"  # faulty: attempts not tracked
    return (
        f"UPDATE jobs SET status = 'running', picked_at = now(), attempts = {count} WHERE id = ("
        f" SELECT id FROM jobs WHERE status = 'queued' AND run_after <= now(){skip}"
        " ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT 1)"
        " RETURNING id, type, payload, dedupe_key, failures"
    )


def run_job(conn: psycopg.Connection, variant: str, job_id: int, job_type: str, payload: dict[str, Any],
            failures: int) -> None:
    """Do a job's work inside the caller's transaction; raise JobFailed for a failing attempt."""
    if job_type == "flaky" and failures < int(payload.get("fail_times", 1)):
        raise JobFailed(f"planned failure {failures + 1}")
    if job_type == "schedule_reminders":
        base = datetime.fromisoformat(payload["base_at"]) if payload.get("base_at") else datetime.now(UTC)
        offsets = FAULTY_REMINDER_OFFSETS_DAYS if variant == "faulty" else REMINDER_OFFSETS_DAYS
        for days in offsets:
            conn.execute("INSERT INTO reminders (job_id, target, base_at, send_at) VALUES (%s, %s, %s, %s)",
                         (job_id, str(payload.get("target", "")), base, base + timedelta(days=days)))


def work_once(conn: psycopg.Connection, variant: str) -> bool:
    """Claim and process one job; False when the queue had nothing due."""
    with conn.transaction():
        row = conn.execute(_claim_sql(variant)).fetchone()
    if row is None:
        return False
    job_id, job_type, payload, dedupe_key, failures = row
    t0 = time.perf_counter()
    try:
        with conn.transaction():
            run_job(conn, variant, job_id, job_type, payload or {}, failures)
            conn.execute("INSERT INTO job_effects (job_id, type, dedupe_key) VALUES (%s, %s, %s)",
                         (job_id, job_type, dedupe_key))
            conn.execute("UPDATE jobs SET status = 'done', finished_at = now(), last_error = NULL WHERE id = %s",
                         (job_id,))
        log.info("job done", extra={"fields": {"job_id": job_id, "type": job_type,
                                               "ms": round((time.perf_counter() - t0) * 1000, 1)}})
    except Exception as exc:  # noqa: BLE001 - a failing job is re-queued, the worker goes on
        with conn.transaction():
            conn.execute(
                "UPDATE jobs SET status = 'queued', failures = failures + 1, last_error = %s,"
                " run_after = now() + make_interval(secs => %s) WHERE id = %s",
                (f"{type(exc).__name__}: {exc}"[:500], RETRY_BACKOFF_S, job_id))
        log.warning("job attempt failed", extra={"fields": {"job_id": job_id, "type": job_type, "error": str(exc)}})
    return True


def _loop(db_url: str, variant: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with psycopg.connect(db_url, autocommit=True, connect_timeout=5, application_name="exam-worker") as conn:
                while not stop.is_set():
                    if not work_once(conn, variant):
                        stop.wait(POLL_S)
        except psycopg.Error as exc:
            log.warning("worker lost the database", extra={"fields": {"error": type(exc).__name__}})
            stop.wait(1.0)


def main(argv: list[str] | None = None) -> int:
    """Process jobs until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m rehearsal_lib.sandbox.worker", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default=os.environ.get("REHEARSAL_SANDBOX_VARIANT", "default"))
    args = p.parse_args(argv)
    db_url = os.environ.get("REHEARSAL_SANDBOX_DB_URL", "").replace("postgresql+psycopg://", "postgresql://", 1)
    if not db_url:
        print("REHEARSAL_SANDBOX_DB_URL is not set", file=sys.stderr)
        return 2
    from rehearsal_lib.sandbox.app import configure_logging

    configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=_loop, args=(db_url, args.variant, stop), name=f"worker-{i}")
               for i in range(THREADS)]
    for t in threads:
        t.start()
    log.info("worker started", extra={"fields": {"variant": args.variant, "threads": THREADS,
                                                 "started": datetime.now(UTC).isoformat()}})
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(timeout=5)
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
