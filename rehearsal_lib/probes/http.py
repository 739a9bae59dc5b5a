"""HTTP probe: one request whose every failure mode (refused, timeout, TLS, garbage) is data."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

REDACTED_HEADERS = {"authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization"}
BODY_EXCERPT = 500


@dataclass
class HttpResult:
    """What one request saw. `error` is set when no HTTP response arrived."""

    method: str
    url: str
    status: int | None = None
    elapsed_ms: float = 0.0
    body: Any = None
    text: str = ""
    headers: dict[str, str] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def evidence(self) -> dict[str, Any]:
        """A bounded, secret-free excerpt for a check's evidence."""
        out: dict[str, Any] = {"request": f"{self.method} {self.url}", "elapsed_ms": round(self.elapsed_ms, 2)}
        if self.error:
            out["error"] = self.error
            return out
        out["status"] = self.status
        if self.headers:
            out["headers"] = {k: ("***" if k.lower() in REDACTED_HEADERS else v) for k, v in self.headers.items()
                              if k.lower() in {"content-type", "x-request-id", "server", "content-length"}}
        out["body"] = self.body if self.body is not None else self.text[:BODY_EXCERPT]
        return out

    def describe(self) -> str:
        if self.error:
            return f"no response from {self.method} {self.url}: {self.error}"
        return f"{self.method} {self.url} -> HTTP {self.status} in {self.elapsed_ms:.0f} ms"


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc) or "connection failed"
        return f"connection failed: {text}"
    return f"{type(exc).__name__}: {exc}"


def request(client: httpx.Client, method: str, path: str, *, headers: dict[str, str] | None = None,
            json_body: Any = None, content: bytes | None = None) -> HttpResult:
    """Send one request; never raises for network or protocol failures."""
    url = str(client.base_url.join(path)) if not path.startswith(("http://", "https://")) else path
    t0 = time.perf_counter()
    try:
        resp = client.request(method, path, headers=headers, json=json_body, content=content)
        body_bytes = resp.content
    except (httpx.HTTPError, OSError) as exc:
        return HttpResult(method, url, elapsed_ms=(time.perf_counter() - t0) * 1000, error=_reason(exc))
    elapsed = (time.perf_counter() - t0) * 1000
    text = body_bytes[:BODY_EXCERPT * 4].decode("utf-8", errors="replace")
    body: Any = None
    if "json" in resp.headers.get("content-type", ""):
        try:
            body = json.loads(body_bytes)
        except ValueError:
            body = None
    return HttpResult(method, url, resp.status_code, elapsed, body, text, dict(resp.headers))


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100) of the values, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]
