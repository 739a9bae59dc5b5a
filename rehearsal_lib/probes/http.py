"""HTTP probe: one request whose every failure mode (refused, timeout, TLS, garbage) is data.

Also the shared rules that decide whether a response is evidence at all: `reached_handler` (a probe
answered 401/403 or 3xx never exercised the handler), `too_few_responses` (a percentile needs
enough answered requests) and `reflection` (an echoed payload is a finding only where a browser
would render it as markup).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
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
    redirects: list[str] | None = None  # "307 -> /items/" for each redirect followed on the way
    retried: str | None = None  # the first attempt's failure when it was sent again on a new connection

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ("" when the response names none)."""
        for k, v in (self.headers or {}).items():
            if k.lower() == "content-type":
                return v.split(";", 1)[0].strip().lower()
        return ""

    @property
    def location(self) -> str | None:
        return next((v for k, v in (self.headers or {}).items() if k.lower() == "location"), None)

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
                              if k.lower() in {"content-type", "x-request-id", "server", "content-length", "location"}}
        if self.redirects:
            out["redirects followed"] = self.redirects
        if self.retried:
            out["retried"] = f"sent again on a new connection after: {self.retried}"
        out["body"] = self.body if self.body is not None else self.text[:BODY_EXCERPT]
        return out

    def describe(self) -> str:
        if self.error:
            return f"no response from {self.method} {self.url}: {self.error}"
        return f"{self.method} {self.url} -> HTTP {self.status} in {self.elapsed_ms:.0f} ms"


# A pooled keep-alive connection the server closed (e.g. after it crashed on the previous request) fails
# the next request before any answer: it is sent once more, on a new connection, and the evidence says so.
# A second failure is the server's behaviour and is reported as it is.
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


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
            json_body: Any = None, content: bytes | None = None,
            follow_redirects: bool | None = None, auth: httpx.Auth | None = None) -> HttpResult:
    """Send one request; never raises for network or protocol failures.

    A request that fails before any answer on what may be a stale keep-alive connection (the server closed
    it, e.g. after crashing on the previous request) is sent once more on a new connection; `retried` and
    the evidence say so, and a second failure is reported as the server's. `follow_redirects`: None keeps
    the client's setting (`target.follow_redirects`). `auth`: a principal's credentials
    (`PhaseRun.auth_for`); the URL shown in the result never carries a query-parameter key."""
    url = str(client.base_url.join(path)) if not path.startswith(("http://", "https://")) else path
    extra: dict[str, Any] = {} if follow_redirects is None else {"follow_redirects": follow_redirects}
    if auth is not None:
        extra["auth"] = auth
    retried: str | None = None
    t0 = time.perf_counter()
    while True:
        try:
            resp = client.request(method, path, headers=headers, json=json_body, content=content, **extra)
            body_bytes = resp.content
            break
        except STALE_CONNECTION as exc:
            if retried is not None:  # twice in a row: not a stale keep-alive connection, the server's answer
                return HttpResult(method, url, elapsed_ms=(time.perf_counter() - t0) * 1000, error=_reason(exc),
                                  retried=retried)
            retried = _reason(exc)
            t0 = time.perf_counter()
        except (httpx.HTTPError, OSError) as exc:
            return HttpResult(method, url, elapsed_ms=(time.perf_counter() - t0) * 1000, error=_reason(exc),
                              retried=retried)
    elapsed = (time.perf_counter() - t0) * 1000
    text = body_bytes[:BODY_EXCERPT * 4].decode("utf-8", errors="replace")
    body: Any = None
    if "json" in resp.headers.get("content-type", ""):
        try:
            body = json.loads(body_bytes)
        except ValueError:
            body = None
    redirects = [f"{r.status_code} -> {r.headers.get('location', '?')}" for r in resp.history] or None
    return HttpResult(method, url, resp.status_code, elapsed, body, text, dict(resp.headers), redirects=redirects,
                      retried=retried)


NOT_AUTHENTICATED = "not authenticated, the behaviour under test was not exercised"


def reached_handler(res: HttpResult, authenticated: bool = True, expected: Iterable[int] = (),
                    principal: str | None = None) -> str | None:
    """Why a probe meant to exercise a handler did not reach it; None when it did.

    No response; a 3xx (its Location named: e.g. a missing trailing slash; `follow_redirects`
    follows it); a 401/403 to a probe that runs authenticated (its credentials were not accepted,
    so the input was never parsed). A status the probe explicitly expects is always an answer.
    """
    if res.error:
        return res.describe()
    status = res.status or 0
    if status in set(expected):
        return None
    if 300 <= status < 400:
        return (f"redirected: HTTP {status} to {res.location or '(no Location header)'} instead of an answer from "
                f"{res.method} {res.url}; the handler was not reached (set follow_redirects to follow it)")
    if authenticated and status in (401, 403):
        return (f"{NOT_AUTHENTICATED}: HTTP {status} to {res.method} {res.url}, a probe that runs authenticated; "
                + (f"the service did not accept the credentials of principal '{principal}'"
                   if principal and principal != "anonymous" else
                   "the service did not accept the bearer token of target.auth_token (or none is set)"))
    return None


def too_few_responses(answered: int, sent: int, min_responses: int, answered_as: str = "answered") -> str | None:
    """The `error` reason when too few requests got an HTTP response to judge a percentile, else None.

    Percentiles are computed over answered requests only: a connection error or timeout has no
    response time (it is counted and gated as an error instead)."""
    if answered >= min_responses:
        return None
    return (f"not enough responses: {answered} of {sent} requests {answered_as}, at least {min_responses} needed "
            "to judge a percentile")


MARKUP_TYPES = {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}


def reflection(res: HttpResult, payloads: list[str]) -> tuple[list[str], str | None]:
    """(payloads reflected as markup, note): a hostile string echoed verbatim is a finding only where a
    browser renders the body as markup (HTML/XML/SVG, or no content type: the browser sniffs it).

    Inside any other type (JSON such as FastAPI's 422 error body, plain text) it is not; the note
    says why, for the evidence."""
    echoed = [p for p in payloads if p in res.text]
    if not echoed:
        return [], None
    ctype = res.content_type
    if not ctype or ctype in MARKUP_TYPES:
        return echoed, None
    return [], (f"payload echoed inside a {ctype} body, not reflected as markup: a browser does not render "
                f"{ctype} as HTML" + (" (there the payload is a quoted JSON string value)" if "json" in ctype else ""))

