"""The sandbox's inbound webhook endpoint: HMAC-SHA256 signature with a replay window, idempotent
processing by delivery id, a Redis-backed fixed-window rate limit per source, minimal storage.

Scheme (Stripe-like): header ``X-Exam-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``;
the delivery id is the body's ``id``; the rate-limit bucket is the ``X-Exam-Source`` header (default
``default``). Only the fields in ``STORED_FIELDS`` are stored, plus the SHA-256 of the whole body.
The ``faulty`` variant plants one defect per check family (see docs/sandbox.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

WEBHOOK_PATH = "/v1/webhooks/exam-provider"
SIGNATURE_HEADER = "x-exam-signature"
SOURCE_HEADER = "x-exam-source"
REPLAY_WINDOW_S = 300
RATE_LIMIT_COUNT = 20
RATE_LIMIT_WINDOW_S = 10
STORED_FIELDS = ("id", "type", "session_id", "exam_id")
MAX_BODY = 64 * 1024

log = logging.getLogger("exam_api.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value a sender puts on ``body`` at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _parse_signature(value: str) -> tuple[int, list[str]] | None:
    parts: dict[str, list[str]] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(val)
    try:
        return int(parts["t"][0]), parts.get("v1", [])
    except (KeyError, ValueError, IndexError):
        return None


def _reject(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class RateLimiter:
    """Fixed-window counter in Redis: ``INCR`` + ``EXPIRE`` on ``ratelimit:webhooks:<source>:<window>``."""

    def __init__(self, redis_url: str | None, count: int, window_s: int, prefix: str = "webhooks",
                 timeout_s: float = 2) -> None:
        self.count, self.window_s, self.prefix = count, window_s, prefix
        self.client: Any = None
        if redis_url:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # no retries: Redis unreachable is an answer now (the callers decide what it means)
            self.client = aioredis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))

    async def hit(self, source: str) -> tuple[bool, int]:
        """Count one request of ``source``; (allowed, seconds until the window resets)."""
        if self.client is None:
            raise RuntimeError("no Redis configured for the rate limiter")
        window = int(time.time()) // self.window_s
        key = f"ratelimit:{self.prefix}:{source}:{window}"
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, self.window_s + 1)
        n, _ = await pipe.execute()
        reset = self.window_s - int(time.time()) % self.window_s
        return int(n) <= self.count, reset

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def webhook_routes(engine: Engine, variant: str, secret: str | None, limiter: RateLimiter) -> list[Route]:
    """The webhook route, bound to the app's engine, the signing secret and the rate limiter."""
    faulty = variant == "faulty"

    def store(delivery_id: str, source: str, event: dict[str, Any], raw: bytes) -> bool:
        kept = event if faulty else {k: event[k] for k in STORED_FIELDS if k in event}  # faulty: stores PII
        with engine.begin() as conn:
            row = conn.execute(
                text("INSERT INTO webhook_deliveries (delivery_id, source, event_type, payload, payload_sha256)"
                     " VALUES (:d, :s, :t, CAST(:p AS jsonb), :h) ON CONFLICT DO NOTHING RETURNING id"),
                {"d": delivery_id, "s": source, "t": str(event.get("type", "")), "p": json.dumps(kept),
                 "h": hashlib.sha256(raw).hexdigest()},
            ).first()
        return row is not None

    async def receive(request: Request) -> Response:
        source = request.headers.get(SOURCE_HEADER, "default")[:64]
        try:
            allowed, reset = await limiter.hit(source)
        except Exception as exc:  # noqa: BLE001 - a dead limiter is a 503, not a crash
            log.warning("rate limiter unavailable", extra={"fields": {"error": type(exc).__name__}})
            return _reject(503, "rate_limiter_unavailable", "the rate limiter is not reachable")
        if not allowed and not faulty:  # faulty: the limit is counted but never enforced
            return _reject(429, "rate_limited", f"more than {limiter.count} deliveries in {limiter.window_s}s",
                           headers={"Retry-After": str(reset)})
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _reject(413, "too_large", "body too large")
        if not secret:
            return _reject(503, "not_configured", "no webhook secret configured")
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            if not faulty:  # faulty: an unsigned delivery is processed
                return _reject(401, "missing_signature", f"{SIGNATURE_HEADER} header is required")
        else:
            parsed = _parse_signature(header)
            if parsed is None:
                return _reject(401, "bad_signature", "malformed signature header")
            ts, given = parsed
            expected = sign(secret, ts, raw).rsplit("v1=", 1)[1]
            if not any(hmac.compare_digest(expected, g) for g in given):
                return _reject(401, "bad_signature", "signature does not match")
            if abs(time.time() - ts) > REPLAY_WINDOW_S and not faulty:  # faulty: stale deliveries accepted
                return _reject(401, "stale_timestamp", f"timestamp outside the {REPLAY_WINDOW_S}s replay window")
        try:
            event = json.loads(raw)
            delivery_id = str(event["id"])
        except (ValueError, KeyError, TypeError):
            return _reject(400, "bad_payload", "body must be a JSON object with an 'id'")
        if not isinstance(event, dict):
            return _reject(400, "bad_payload", "body must be a JSON object")
        fresh = await run_in_threadpool(store, delivery_id, source, event, raw)
        log.info("webhook received", extra={"fields": {"delivery_id": delivery_id, "duplicate": not fresh}})
        return JSONResponse({"status": "processed" if fresh else "duplicate", "delivery_id": delivery_id})

    return [Route(WEBHOOK_PATH, receive, methods=["POST"])]
