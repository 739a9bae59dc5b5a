"""Security headers, the admin health toggle and the ``faulty`` variant's security/observability defects.

``default``: every response carries X-Content-Type-Options, X-Frame-Options and a
Content-Security-Policy, plus HSTS when served over HTTPS; ``PUT /admin/health`` (bearer token)
toggles readiness (``/v1/ready`` and the ``app_ready`` gauge follow it).

``faulty`` (each defect is caught by one check, see defects.py): no X-Content-Type-Options; the
toggle accepts any bearer token; readiness ignores the toggle; invalid JSON sent to
``/v1/sessions...`` answers 500; the access log drops the request id; a plain-text line is printed
on each ``/metrics`` scrape; the request-duration histogram has another name; one slow query
runs at startup.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
from typing import Any

import uvicorn
from sqlalchemy import Engine, text
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
HSTS = "max-age=31536000; includeSubDomains"


def duration_metric_name(variant: str) -> str:
    """Name of the request-duration histogram (``faulty``: renamed, so dashboards and alerts miss it)."""
    return "http_server_latency_seconds" if variant == "faulty" else "http_request_duration_seconds"


class HealthToggle:
    """The app's health state as set by ``PUT /admin/health``; ``faulty`` readiness ignores it."""

    def __init__(self, variant: str, shared: Any = None) -> None:
        self.variant = variant
        # one byte, shared by the workers of one app when ``shared`` is a shared mapping (app.supervise)
        self._state = shared if shared is not None else bytearray(b"\x01")

    @property
    def toggled_healthy(self) -> bool:
        return bool(self._state[0])

    @toggled_healthy.setter
    def toggled_healthy(self, value: bool) -> None:
        self._state[0] = 1 if value else 0

    @property
    def healthy(self) -> bool:
        return True if self.variant == "faulty" else self.toggled_healthy


def toggle_endpoint(toggle: HealthToggle, token: str) -> Any:
    """``PUT /admin/health`` with ``{"healthy": bool}``; bearer token required (``faulty``: any token)."""
    expected = token.encode()

    async def endpoint(request: Request) -> Response:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        given = cred.strip().encode("utf-8", "surrogateescape")
        ok = scheme.lower() == "bearer" and (bool(given) if toggle.variant == "faulty"
                                             else hmac.compare_digest(given, expected))
        if not ok:
            return JSONResponse({"error": "unauthorized", "detail": "missing or invalid bearer token"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(await request.body())
            value = body["healthy"]
            if not isinstance(value, bool):
                raise TypeError("healthy must be a boolean")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "validation_error", "detail": 'expected {"healthy": true|false}'},
                                status_code=422)
        toggle.toggled_healthy = value
        logging.getLogger("exam_api").info("health toggled", extra={"fields": {"healthy": value}})
        return JSONResponse({"healthy": value})

    return endpoint


class HardeningMiddleware:
    """Adds the security headers (HSTS on HTTPS only); carries the ``faulty`` response-level defects."""

    def __init__(self, app: ASGIApp, variant: str = "default") -> None:
        self.app, self.faulty = app, variant == "faulty"
        self.headers = dict(BASE_HEADERS)
        if self.faulty:
            del self.headers["X-Content-Type-Options"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        path = scope.get("path", "")
        broken_json = self.faulty and scope["method"] in ("POST", "PUT") and path.startswith("/v1/sessions")
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                if broken_json and message["status"] == 400:  # only invalid JSON answers 400 there
                    replaced = True
                    body = b'{"error": "internal_error", "detail": "internal server error"}'
                    message = {"type": "http.response.start", "status": 500,
                               "headers": [(b"content-type", b"application/json"),
                                           (b"content-length", str(len(body)).encode())]}
                    await send(self._with_headers(message, https))
                    await send({"type": "http.response.body", "body": body})
                    return
                message = self._with_headers(message, https)
            elif replaced:
                return
            await send(message)

        if self.faulty and path == "/metrics":
            print(f"scrape {path} served", flush=True)  # not JSON: breaks structured logging
        await self.app(scope, receive, send_wrapper)

    def _with_headers(self, message: Message, https: bool) -> Message:
        headers = MutableHeaders(scope=message)
        for name, value in self.headers.items():
            headers.setdefault(name, value)
        if https:
            headers.setdefault("Strict-Transport-Security", HSTS)
        return message


class _DropRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "request_id" in fields:
            record.fields = {k: v for k, v in fields.items() if k != "request_id"}
        return True


def apply_variant(variant: str) -> None:
    """Logging defects of ``faulty``: access-log lines without the request id."""
    if variant == "faulty":
        logging.getLogger("exam_api.access").addFilter(_DropRequestId())


def startup(engine: Engine, variant: str) -> None:
    """``faulty``: one slow statement as the app role (pg_stat_statements records it)."""
    if variant != "faulty":
        return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(1.0) AS slow_report"))
    except Exception as exc:  # noqa: BLE001 - a defect that cannot be planted must not stop the app
        logging.getLogger("exam_api").warning("slow query not planted", extra={"fields": {"error": str(exc)}})


def serve_http_and_https(server: uvicorn.Server, http_fd: int | None, https_fd: int) -> None:
    """Serve the same app on the HTTP socket and, with the sandbox's generated leaf, on the HTTPS one.

    The HTTPS server skips the lifespan (the HTTP one runs it). On SIGTERM the HTTPS server (which
    captured the signals last) stops, then re-raises the signal to the HTTP server.
    """
    c = server.config
    tls_config = uvicorn.Config(c.app, host=c.host, port=c.port, log_config=None, access_log=False,
                                timeout_graceful_shutdown=c.timeout_graceful_shutdown, server_header=False,
                                lifespan="off", ssl_certfile=os.environ["REHEARSAL_SANDBOX_TLS_CERT"],
                                ssl_keyfile=os.environ["REHEARSAL_SANDBOX_TLS_KEY"])
    tls_server = uvicorn.Server(tls_config)

    async def both() -> None:
        plain = asyncio.create_task(server.serve(sockets=[socket.socket(fileno=http_fd)] if http_fd else None))
        while not server.started and not plain.done():
            await asyncio.sleep(0.02)
        if plain.done():
            await plain
            return
        await tls_server.serve(sockets=[socket.socket(fileno=https_fd)])
        server.should_exit = True
        await plain

    asyncio.run(both())
