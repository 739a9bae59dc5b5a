"""The sandbox exam API (Starlette), run as ``python -m rehearsal_lib.sandbox.app``.

Configuration: ``REHEARSAL_SANDBOX_DB_URL`` and ``REHEARSAL_SANDBOX_TOKEN`` (environment only: they are
secrets), ``REHEARSAL_SANDBOX_VARIANT`` / ``--variant``, ``REHEARSAL_SANDBOX_PORT`` / ``--port`` and
``--listen-fd`` (an already bound listening socket inherited from the parent). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
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
VERSION = "1.4.2"
COMMIT = "5e1d2c9a4b7f"
ENVIRONMENT = "sandbox"
MAX_BODY = 64 * 1024
INT4_MAX = 2**31 - 1
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

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
        ProcessCollector(registry=self.registry)
        labels = ["method", "route", "status"]
        self.duration = Histogram(
            duration_name, "HTTP request duration in seconds.", labels, registry=self.registry
        )
        self.requests = Counter("http_requests_total", "HTTP requests handled.", labels, registry=self.registry)
        self.ready = Gauge("app_ready", "1 if the app can reach its database, else 0.", registry=self.registry)
        self.exam_mode = Gauge("app_exam_mode", "1 if exam mode (the exam freeze flag) is on.", registry=self.registry)


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
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
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


# ------------------------------------------------------------------------------------------ app


def create_app(db_url: str, token: str, variant: str = "default", pool_size: int = 4) -> Starlette:
    """Build the exam API against ``db_url``; the exam endpoints require ``Authorization: Bearer <token>``."""
    engine: Engine = create_engine(
        db_url,
        pool_size=pool_size,
        max_overflow=4,
        pool_timeout=5,
        pool_pre_ping=True,
        pool_recycle=300,
        connect_args={"connect_timeout": 3, "application_name": SERVICE},
    )
    metrics = Metrics(hardening.duration_metric_name(variant))
    health_toggle = hardening.HealthToggle(variant)
    hardening.apply_variant(variant)
    expected = token.encode()

    def require_token(request: Request) -> None:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        given = cred.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "missing or invalid bearer token")

    async def in_tx(fn: Callable[[Connection], Any]) -> Any:
        """Run ``fn(conn)`` in one transaction in the threadpool."""

        def call() -> Any:
            with engine.begin() as conn:
                return fn(conn)

        return await run_in_threadpool(call)

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

        return JSONResponse(await in_tx(upsert), status_code=201)

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


def main(argv: list[str] | None = None) -> int:
    """Serve the API on 127.0.0.1 until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m rehearsal_lib.sandbox.app", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default=os.environ.get("REHEARSAL_SANDBOX_VARIANT", "default"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REHEARSAL_SANDBOX_PORT", "8080")))
    p.add_argument("--listen-fd", type=int, default=None, help="inherited listening socket to serve on")
    p.add_argument("--tls-listen-fd", type=int, default=None,
                   help="inherited socket to serve HTTPS on (REHEARSAL_SANDBOX_TLS_CERT / _KEY)")
    args = p.parse_args(argv)
    db_url = os.environ.get("REHEARSAL_SANDBOX_DB_URL")
    if not db_url:
        print("REHEARSAL_SANDBOX_DB_URL is not set", file=sys.stderr)
        return 2
    token = os.environ.get("REHEARSAL_SANDBOX_TOKEN") or DEFAULT_TOKEN
    configure_logging()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
