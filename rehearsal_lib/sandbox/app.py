"""The sandbox exam API (Starlette), run as ``python -m rehearsal_lib.sandbox.app``.

Configuration: ``REHEARSAL_SANDBOX_DB_URL`` and ``REHEARSAL_SANDBOX_TOKEN`` (environment only: they are
secrets), ``REHEARSAL_SANDBOX_VARIANT`` / ``--variant``, ``REHEARSAL_SANDBOX_PORT`` / ``--port`` and
``--listen-fd`` (an already bound listening socket inherited from the parent). Binds 127.0.0.1 only.
``REHEARSAL_SANDBOX_APP_VERSION`` overrides the version (blue/green deploys). With ``--workers N`` a
supervisor forks N workers that accept on the inherited sockets and replaces any that dies
(``--worker-pid-file``: the pid of worker 0, rewritten when it is replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import hmac
import json
import logging
import mmap
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, Field, StrictBool, StrictInt, StrictStr, ValidationError
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rehearsal_lib.sandbox import hardening, retention
from rehearsal_lib.sandbox.exam_page import exam_page_routes
from rehearsal_lib.sandbox.exam_paper import exam_paper_endpoint
from rehearsal_lib.sandbox.jobs import job_routes
from rehearsal_lib.sandbox.manager import DEFAULT_TOKEN
from rehearsal_lib.sandbox.seed import SCORE_SQL
from rehearsal_lib.sandbox.webhooks import RATE_LIMIT_COUNT, RATE_LIMIT_WINDOW_S, RateLimiter, webhook_routes

SERVICE = "exam-api"
VERSION = os.environ.get("REHEARSAL_SANDBOX_APP_VERSION") or "1.4.2"
COMMIT = "5e1d2c9a4b7f"
ENVIRONMENT = "sandbox"
MAX_BODY = 64 * 1024
INT4_MAX = 2**31 - 1
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# the API rate limit (per bearer token, counted in Redis) on the exam endpoints; generous: a guard, never hit
# by a rehearsal's load. Redis unreachable: ``default`` lets requests through with a warning, ``faulty`` 503s.
API_RATE_LIMIT_PREFIXES = ("/v1/sessions", "/v1/exams")
API_RATE_LIMIT_COUNT, API_RATE_LIMIT_WINDOW_S = 5000, 10
FAULTY_COMMIT_DELAY_S = 0.1  # faulty: an answer is committed this long after its 201 (answer_acked_before_commit)
# the health toggle shared by the workers of one supervisor (an anonymous shared mapping made before fork)
_SHARED_TOGGLE: mmap.mmap | None = None
DRAIN_ON, DRAIN_OFF = signal.SIGUSR1, signal.SIGUSR2  # to the supervisor: front switched away from / back to it


_WORKER_PID_FILE: str | None = None  # set by the supervisor: the worker that answered the latest request


def note_serving_worker() -> None:
    """Keep the worker pid file naming the worker that answered the latest request (bytes 3-6 of the shared
    mapping: its pid; the file is rewritten only when another worker answers). A fault scenario that kills
    "the worker" then kills one that is serving the traffic: connections are kept alive, so one worker may
    serve all of it, and killing the idle one would exercise nothing."""
    if _SHARED_TOGGLE is None or _WORKER_PID_FILE is None or len(_SHARED_TOGGLE) < 7:
        return
    me = os.getpid()
    if int.from_bytes(_SHARED_TOGGLE[3:7], "little") == me:
        return
    _SHARED_TOGGLE[3:7] = me.to_bytes(4, "little")
    with contextlib.suppress(OSError):
        _write_pid_file(_WORKER_PID_FILE, me)


def draining() -> bool:
    """This colour no longer serves behind ``front`` (byte 2 of the shared mapping): every answer says
    ``Connection: close``, so a keep-alive client moves to the new colour after a complete answer instead
    of meeting a connection closed under its next request."""
    return _SHARED_TOGGLE is not None and len(_SHARED_TOGGLE) > 2 and bool(_SHARED_TOGGLE[2])

access_log = logging.getLogger("exam_api.access")
log = logging.getLogger("exam_api")
T = TypeVar("T", bound=BaseModel)


# ------------------------------------------------------------------------------------------ logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging() -> None:
    """Route all logging (uvicorn's too) as JSON lines to stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


# ------------------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "detail": detail, ...}``."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _error(exc.status, exc.code, exc.detail, headers=headers, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _db_error(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable", extra={"fields": {"error": type(exc).__name__}})
    return _error(503, "database_unavailable", "the database is not reachable")


# ------------------------------------------------------------------------------------------ bodies


def _clean_text(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("must be valid unicode") from err
    return v


Id = Annotated[StrictInt, Field(ge=1, le=INT4_MAX)]


class SessionCreate(BaseModel):
    candidate_id: Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_clean_text)]
    exam_id: Id


class AnswerCreate(BaseModel):
    question_id: Id
    answer: Annotated[StrictStr, Field(max_length=10_000), AfterValidator(_clean_text)]


class ExportCreate(BaseModel):
    candidate_id: Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_clean_text)]


class ExamModeUpdate(BaseModel):
    exam_mode: StrictBool


async def _parse(request: Request, model: type[T]) -> T:
    """Parse the JSON body into ``model``: 400 if it is not JSON, 413 if too big, 422 if invalid."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"request body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from err
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False, include_context=False, include_input=False)
        raise ApiError(422, "validation_error", "request body is invalid", errors=errors) from err


def _session_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["session_id"])
    except ValueError as err:
        raise ApiError(404, "not_found", "session not found") from err


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


# ------------------------------------------------------------------------------------------ metrics


class Metrics:
    """The app's Prometheus metrics, in a registry of its own."""

    def __init__(self, duration_name: str = "http_request_duration_seconds") -> None:
        self.registry = CollectorRegistry()
        # several workers: prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the launcher)
        # sums their counters and histograms, and the gauges show the value set last by any worker
        multi = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg: CollectorRegistry | None = None if multi else self.registry
        if multi:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        else:
            ProcessCollector(registry=self.registry)
        labels = ["method", "route", "status"]
        self.duration = Histogram(duration_name, "HTTP request duration in seconds.", labels, registry=reg)
        self.requests = Counter("http_requests_total", "HTTP requests handled.", labels, registry=reg)
        gauge_kw: dict[str, Any] = {"registry": reg, "multiprocess_mode": "mostrecent"}
        self.ready = Gauge("app_ready", "1 if the app can reach its database, else 0.", **gauge_kw)
        self.exam_mode = Gauge("app_exam_mode", "1 if exam mode (the exam freeze flag) is on.", **gauge_kw)


class RequestContextMiddleware:
    """X-Request-ID, one JSON access-log line and metrics per request; unhandled errors become JSON 500s."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if draining():  # switched away from: each client leaves after this answer, in-band
                    headers["Connection"] = "close"
                note_serving_worker()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if not started:
                await _error(500, "internal_error", "internal server error")(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = (scope["method"], route, str(status))
            self.metrics.duration.labels(*labels).observe(duration)
            self.metrics.requests.labels(*labels).inc()
            level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
            access_log.log(
                level,
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                    }
                },
            )


class ApiRateLimitMiddleware:
    """Per-token fixed-window rate limit on the exam endpoints, counted in Redis.

    Redis unreachable: ``default`` lets the request through and logs a WARNING (``rate limiter
    bypassed``, at most once a second per worker); ``faulty`` (redis_down_5xx) answers 503."""

    def __init__(self, app: ASGIApp, variant: str, token: str) -> None:
        self.app, self.faulty = app, variant == "faulty"
        self.limiter = RateLimiter(os.environ.get("REHEARSAL_SANDBOX_REDIS_URL"), API_RATE_LIMIT_COUNT,
                                   API_RATE_LIMIT_WINDOW_S, prefix="api", timeout_s=0.5)
        self._warned_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limiter.client is None or not scope["path"].startswith(
                API_RATE_LIMIT_PREFIXES):
            await self.app(scope, receive, send)
            return
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        key = hashlib.sha256(auth).hexdigest()[:16]
        try:
            allowed, reset = await self.limiter.hit(key)
        except Exception as exc:  # noqa: BLE001 - Redis unreachable, in whatever way
            if self.faulty:
                log.error("rate limiter unavailable", extra={"fields": {"error": type(exc).__name__}})
                await _error(503, "rate_limiter_unavailable", "the rate limiter is not reachable")(scope, receive, send)
                return
            now = time.monotonic()
            if now - self._warned_at >= 1.0:
                self._warned_at = now
                log.warning("rate limiter bypassed: Redis unreachable",
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:200]}})
            await self.app(scope, receive, send)
            return
        if not allowed:
            await _error(429, "rate_limited", f"more than {API_RATE_LIMIT_COUNT} requests in "
                         f"{API_RATE_LIMIT_WINDOW_S}s", headers={"Retry-After": str(reset)})(scope, receive, send)
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ app


def create_app(db_url: str, token: str, variant: str = "default", pool_size: int = 4,
               max_overflow: int = 4) -> Starlette:
    """Build the exam API against ``db_url``; the exam endpoints require ``Authorization: Bearer <token>``.

    The pool is per worker process (two workers: 2 x (4 + 4) = 16 connections at most, the sandbox
    params' ``db_connections.pool_size``)."""
    faulty = variant == "faulty"
    engine: Engine = create_engine(
        db_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=5,
        pool_pre_ping=not faulty,  # faulty (no_db_reconnect): no pre-ping, and the first disconnect latches
        pool_recycle=300,
        connect_args={"connect_timeout": 3, "application_name": SERVICE},
    )
    metrics = Metrics(hardening.duration_metric_name(variant))
    health_toggle = hardening.HealthToggle(variant, _SHARED_TOGGLE)
    hardening.apply_variant(variant)
    expected = token.encode()
    db_latched: list[str] = []  # faulty: the first lost connection "breaks" the database for good

    def latched() -> str | None:
        """faulty: this worker's latch, or the other worker's (byte 1 of the shared mapping): one lost
        connection in either breaks both, as one app with one broken pool would be."""
        if db_latched:
            return db_latched[0]
        if _SHARED_TOGGLE is not None and len(_SHARED_TOGGLE) > 1 and _SHARED_TOGGLE[1]:
            return "database connection lost earlier (in another worker); not retried"
        return None

    def require_token(request: Request) -> None:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        given = cred.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "missing or invalid bearer token")

    async def in_tx(fn: Callable[[Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one transaction in the threadpool.

        ``default`` reconnects after its backends were terminated (the pool pre-pings). ``faulty``
        (no_db_reconnect) latches the first lost connection: every later call answers 503, forever."""
        if (why := latched()) is not None:
            raise OperationalError("in_tx", None, Exception(why))

        def call() -> Any:
            with engine.begin() as conn:
                return fn(conn)

        try:
            return await run_in_threadpool(call)
        except DBAPIError as err:
            latch_if_lost(err)
            raise

    def latch_if_lost(err: DBAPIError) -> None:
        """faulty: a lost connection latches, whichever path met it first (SQLAlchemy invalidates the
        whole pool on a disconnect, so a path that did not latch would let the next call reconnect)."""
        if faulty and err.connection_invalidated and not db_latched:
            db_latched.append(f"database connection lost earlier ({type(err.orig).__name__}); not retried")
            if _SHARED_TOGGLE is not None and len(_SHARED_TOGGLE) > 1:
                _SHARED_TOGGLE[1] = 1
            log.error("database connection lost; not reconnecting", extra={"fields": {"error": str(err.orig)}})

    def read_exam_mode(conn: Connection) -> bool:
        value = conn.execute(text("SELECT value FROM settings WHERE key = 'exam_mode'")).scalar()
        return value == "true"

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if not health_toggle.healthy:
            metrics.ready.set(0)
            return JSONResponse({"ready": False, "checks": {"health": "toggled unhealthy"}}, status_code=503)
        try:
            await in_tx(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
        except (DBAPIError, PoolTimeoutError) as err:
            metrics.ready.set(0)
            cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
            if isinstance(err, DBAPIError) and err.orig is None:
                cause = err
            first_line = (str(cause).strip().splitlines() or [""])[0][:200]
            reason = f"{type(cause).__name__}: {first_line}"
            return JSONResponse({"ready": False, "checks": {"database": reason}}, status_code=503)
        metrics.ready.set(1)
        return JSONResponse({"ready": True, "checks": {"database": "ok"}})

    async def version(request: Request) -> Response:
        return JSONResponse(
            {"service": SERVICE, "version": VERSION, "commit": COMMIT, "environment": ENVIRONMENT, "variant": variant}
        )

    async def get_exam_mode(request: Request) -> Response:
        on = await in_tx(read_exam_mode)
        metrics.exam_mode.set(int(on))
        return JSONResponse({"exam_mode": on})

    async def put_exam_mode(request: Request) -> Response:
        require_token(request)
        body = await _parse(request, ExamModeUpdate)

        def write(conn: Connection) -> bool:
            conn.execute(
                text(
                    "INSERT INTO settings (key, value) VALUES ('exam_mode', :v)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                {"v": "true" if body.exam_mode else "false"},
            )
            return read_exam_mode(conn)

        on = await in_tx(write)
        metrics.exam_mode.set(int(on))
        log.info("exam mode changed", extra={"fields": {"exam_mode": on, "request_id": request.state.request_id}})
        return JSONResponse({"exam_mode": on})

    async def metrics_endpoint(request: Request) -> Response:
        try:
            on = await in_tx(read_exam_mode)
            metrics.ready.set(int(health_toggle.healthy))
            metrics.exam_mode.set(int(on))
        except (DBAPIError, PoolTimeoutError):
            metrics.ready.set(0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def create_session(request: Request) -> Response:
        require_token(request)
        body = await _parse(request, SessionCreate)

        def create(conn: Connection) -> uuid.UUID:
            if conn.execute(text("SELECT 1 FROM exams WHERE id = :e"), {"e": body.exam_id}).first() is None:
                raise ApiError(404, "not_found", "exam not found")
            sid = conn.execute(
                text("INSERT INTO sessions (candidate_id, exam_id) VALUES (:c, :e) RETURNING id"),
                {"c": body.candidate_id, "e": body.exam_id},
            ).scalar_one()
            conn.execute(
                text("INSERT INTO events (session_id, type, payload) VALUES (:s, 'started', CAST(:p AS jsonb))"),
                {"s": sid, "p": json.dumps({"candidate_id": body.candidate_id})},
            )
            return sid

        sid = await in_tx(create)
        return JSONResponse({"id": str(sid), "status": "in_progress"}, status_code=201)

    async def post_answer(request: Request) -> Response:
        require_token(request)
        sid = _session_id(request)
        body = await _parse(request, AnswerCreate)

        def upsert(conn: Connection) -> dict[str, Any]:
            row = conn.execute(
                text("SELECT status, exam_id FROM sessions WHERE id = :s FOR UPDATE"), {"s": sid}
            ).first()
            if row is None:
                raise ApiError(404, "not_found", "session not found")
            if row.status == "submitted":
                raise ApiError(409, "already_submitted", "session is already submitted")
            q_exam = conn.execute(text("SELECT exam_id FROM questions WHERE id = :q"), {"q": body.question_id}).scalar()
            if q_exam != row.exam_id:
                raise ApiError(422, "validation_error", "question does not belong to the session's exam")
            ans = conn.execute(
                text(
                    "INSERT INTO answers (session_id, question_id, answer) VALUES (:s, :q, :a)"
                    " ON CONFLICT (session_id, question_id)"
                    " DO UPDATE SET answer = EXCLUDED.answer, answered_at = now()"
                    " RETURNING id, answered_at"
                ),
                {"s": sid, "q": body.question_id, "a": body.answer},
            ).one()
            conn.execute(
                text("INSERT INTO events (session_id, type, payload) VALUES (:s, 'answered', CAST(:p AS jsonb))"),
                {"s": sid, "p": json.dumps({"question_id": body.question_id})},
            )
            return {
                "id": ans.id,
                "session_id": str(sid),
                "question_id": body.question_id,
                "answer": body.answer,
                "answered_at": _iso(ans.answered_at),
            }

        if not faulty:
            return JSONResponse(await in_tx(upsert), status_code=201)  # acknowledged after the commit
        # faulty (answer_acked_before_commit): the 201 goes out first, the commit follows a moment later,
        # so an answer acknowledged just before its worker dies is lost
        if (why := latched()) is not None:
            raise OperationalError("in_tx", None, Exception(why))
        try:
            conn = await run_in_threadpool(engine.connect)
        except DBAPIError as err:
            latch_if_lost(err)
            raise
        try:
            await run_in_threadpool(conn.begin)
            result = await run_in_threadpool(upsert, conn)
        except BaseException as err:
            if isinstance(err, DBAPIError):
                latch_if_lost(err)
            await run_in_threadpool(conn.close)
            raise

        async def commit_later() -> None:
            await asyncio.sleep(FAULTY_COMMIT_DELAY_S)

            def commit() -> None:
                try:
                    conn.commit()
                except DBAPIError as err:
                    latch_if_lost(err)
                    raise
                finally:
                    conn.close()

            await run_in_threadpool(commit)

        return JSONResponse(result, status_code=201, background=BackgroundTask(commit_later))

    async def submit(request: Request) -> Response:
        require_token(request)
        sid = _session_id(request)

        def do_submit(conn: Connection) -> dict[str, Any]:
            row = conn.execute(
                text("SELECT status, score, submitted_at FROM sessions WHERE id = :s FOR UPDATE"), {"s": sid}
            ).first()
            if row is None:
                raise ApiError(404, "not_found", "session not found")
            if row.status == "submitted":  # idempotent: same answer, no second event
                return {
                    "id": str(sid),
                    "status": "submitted",
                    "score": row.score,
                    "submitted_at": _iso(row.submitted_at),
                }
            score = conn.exec_driver_sql(SCORE_SQL, {"sid": sid}).scalar_one()
            submitted_at = conn.execute(
                text(
                    "UPDATE sessions SET status = 'submitted', submitted_at = now(), score = :sc"
                    " WHERE id = :s RETURNING submitted_at"
                ),
                {"sc": score, "s": sid},
            ).scalar_one()
            conn.execute(
                text("INSERT INTO events (session_id, type, payload) VALUES (:s, 'submitted', CAST(:p AS jsonb))"),
                {"s": sid, "p": json.dumps({"score": score})},
            )
            return {"id": str(sid), "status": "submitted", "score": score, "submitted_at": _iso(submitted_at)}

        return JSONResponse(await in_tx(do_submit))

    async def get_session(request: Request) -> Response:
        require_token(request)
        sid = _session_id(request)

        def read(conn: Connection) -> dict[str, Any]:
            row = conn.execute(
                text(
                    "SELECT s.candidate_id, s.exam_id, s.status, s.started_at, s.submitted_at, s.score,"
                    " (SELECT count(*) FROM answers a WHERE a.session_id = s.id) AS answer_count"
                    " FROM sessions s WHERE s.id = :s"
                ),
                {"s": sid},
            ).first()
            if row is None:
                raise ApiError(404, "not_found", "session not found")
            return {
                "id": str(sid),
                "candidate_id": row.candidate_id,
                "exam_id": row.exam_id,
                "status": row.status,
                "started_at": _iso(row.started_at),
                "submitted_at": _iso(row.submitted_at),
                "score": row.score,
                "answer_count": row.answer_count,
            }

        return JSONResponse(await in_tx(read))

    async def create_export(request: Request) -> Response:  # data-subject export: sandbox/retention.py
        require_token(request)
        body = await _parse(request, ExportCreate)
        doc = await in_tx(lambda conn: retention.build_export(conn, body.candidate_id))
        if doc is None:
            raise ApiError(404, "not_found", "no data for this candidate")
        return JSONResponse(doc, status_code=201)

    async def get_export(request: Request) -> Response:
        require_token(request)
        try:
            eid = uuid.UUID(request.path_params["export_id"])
        except ValueError as err:
            raise ApiError(404, "not_found", "export not found") from err
        doc = await in_tx(lambda conn: retention.read_export(conn, eid))
        if doc is None:
            raise ApiError(404, "not_found", "export not found")
        return JSONResponse(doc)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("exam-api starting", extra={"fields": {"variant": variant, "version": VERSION}})
        await run_in_threadpool(hardening.startup, engine, variant)
        yield
        engine.dispose()
        log.info("exam-api stopped")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/ready", ready, methods=["GET"]),
        Route("/v1/version", version, methods=["GET"]),
        Route("/v1/exam-mode", get_exam_mode, methods=["GET"]),
        Route("/v1/exam-mode", put_exam_mode, methods=["PUT"]),
        Route("/v1/sessions", create_session, methods=["POST"]),
        Route("/v1/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}/answers", post_answer, methods=["POST"]),
        Route("/v1/sessions/{session_id}/submit", submit, methods=["POST"]),
        Route("/admin/health", hardening.toggle_endpoint(health_toggle, token), methods=["PUT"]),
        Route("/v1/exams/{exam_id}/paper", methods=["GET"], endpoint=exam_paper_endpoint(
            variant, require_token, lambda: ApiError(404, "not_found", "exam not found"))),
        Route("/v1/data-exports", create_export, methods=["POST"]),
        Route("/v1/data-exports/{export_id}", get_export, methods=["GET"]),
    ]
    # signed webhooks (Redis rate limit) and the job queue's trigger/status endpoints
    limiter = RateLimiter(os.environ.get("REHEARSAL_SANDBOX_REDIS_URL"), RATE_LIMIT_COUNT, RATE_LIMIT_WINDOW_S)
    routes += webhook_routes(engine, variant, os.environ.get("REHEARSAL_SANDBOX_WEBHOOK_SECRET"), limiter)
    routes += job_routes(engine, variant, lambda request: _allowed(require_token, request))
    routes += exam_page_routes(variant)  # GET /exam: the candidate's page (the ux phase's journeys)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            OperationalError: _db_error,
            PoolTimeoutError: _db_error,
        },
    )
    app.add_middleware(ApiRateLimitMiddleware, variant=variant, token=token)
    app.add_middleware(hardening.HardeningMiddleware, variant=variant)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.state.engine = engine
    app.state.metrics = metrics
    return app


def _allowed(require_token: Callable[[Request], None], request: Request) -> bool:
    try:
        require_token(request)
    except ApiError:
        return False
    return True


def _serve_worker(args: argparse.Namespace, db_url: str, token: str) -> None:
    """One worker: the app under uvicorn on the inherited socket(s) (or its own port without one)."""
    app = create_app(db_url, token, args.variant)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    if args.tls_listen_fd is not None:
        hardening.serve_http_and_https(server, args.listen_fd, args.tls_listen_fd)
    elif args.listen_fd is not None:
        server.run(sockets=[socket.socket(fileno=args.listen_fd)])
    else:
        server.run()


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"  # the supervisor and either worker may write it
    with open(tmp, "w") as fh:
        fh.write(f"{pid}\n")
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its supervisor dies (no orphan workers)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise(args: argparse.Namespace, db_url: str, token: str) -> int:
    """Fork ``args.workers`` workers (after the imports: a fork starts in milliseconds), replace any that
    exits, stop them all on SIGTERM/SIGINT. ``args.worker_pid_file`` names worker 0 until a worker answers a
    request, then the worker that answered the latest one (`note_serving_worker`)."""
    global _SHARED_TOGGLE, _WORKER_PID_FILE
    _WORKER_PID_FILE = args.worker_pid_file
    import redis.asyncio  # noqa: F401 - loaded once here, before the forks, not in every worker

    create_engine(db_url).dispose()  # loads the dialect and the driver; no connection is made
    # [0]: healthy (the health toggle), [1]: faulty's database latch, [2]: draining (see `draining`),
    # [3:7]: the pid of the worker that answered the latest request (see `note_serving_worker`)
    _SHARED_TOGGLE = mmap.mmap(-1, 7)
    _SHARED_TOGGLE[0] = 1
    toggle = _SHARED_TOGGLE

    def set_draining(signum: int, frame: Any) -> None:  # inherited by the workers: either may receive it
        toggle[2] = 1 if signum == DRAIN_ON else 0

    signal.signal(DRAIN_ON, set_draining)
    signal.signal(DRAIN_OFF, set_draining)
    me = os.getpid()
    slots: dict[int, int] = {}  # pid -> slot
    stopping: list[int] = []

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()
                if os.getppid() != me:
                    os._exit(0)
                _serve_worker(args, db_url, token)
            except BaseException:  # noqa: BLE001 - a worker reports and exits; the supervisor replaces it
                log.exception("worker crashed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        slots[pid] = slot
        if slot == 0 and args.worker_pid_file and not int.from_bytes(toggle[3:7], "little"):
            _write_pid_file(args.worker_pid_file, pid)  # until a worker has answered a request
        log.info("worker started", extra={"fields": {"worker_pid": pid, "slot": slot}})

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(args.workers):
        spawn(slot)
    last_spawn: dict[int, float] = {}
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, status = 0, 0
        if pid and pid in slots:
            slot = slots.pop(pid)
            log.warning("worker exited; replacing it", extra={"fields": {
                "worker_pid": pid, "slot": slot, "status": os.waitstatus_to_exitcode(status)}})
            if time.monotonic() - last_spawn.get(slot, 0.0) < 1.0:
                time.sleep(0.5)  # a worker that dies at once: do not spin
            last_spawn[slot] = time.monotonic()
            if not stopping:
                spawn(slot)
            continue
        time.sleep(0.02)
    for pid in slots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 6
    while slots and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            slots.pop(pid, None)
        else:
            time.sleep(0.02)
    for pid in slots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log.info("exam-api supervisor stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve the API on 127.0.0.1 until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m rehearsal_lib.sandbox.app", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default=os.environ.get("REHEARSAL_SANDBOX_VARIANT", "default"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REHEARSAL_SANDBOX_PORT", "8080")))
    p.add_argument("--listen-fd", type=int, default=None, help="inherited listening socket to serve on")
    p.add_argument("--tls-listen-fd", type=int, default=None,
                   help="inherited socket to serve HTTPS on (REHEARSAL_SANDBOX_TLS_CERT / _KEY)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (>1: a supervisor forks them)")
    p.add_argument("--worker-pid-file", default=None, help="with --workers: worker 0's pid, kept current")
    args = p.parse_args(argv)
    db_url = os.environ.get("REHEARSAL_SANDBOX_DB_URL")
    if not db_url:
        print("REHEARSAL_SANDBOX_DB_URL is not set", file=sys.stderr)
        return 2
    token = os.environ.get("REHEARSAL_SANDBOX_TOKEN") or DEFAULT_TOKEN
    configure_logging()
    for sig in (DRAIN_ON, DRAIN_OFF):  # never fatal (a lone process has no shared mapping to drain by)
        signal.signal(sig, signal.SIG_IGN)
    if args.workers > 1 or args.worker_pid_file:
        return supervise(args, db_url, token)
    _serve_worker(args, db_url, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
