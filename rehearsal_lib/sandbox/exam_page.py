"""``GET /exam``: the candidate's exam page (static HTML, CSS and JS in ``sandbox/static/``).

The page starts a session through the API (``POST /v1/sessions``), saves the answer to question 1,
shows a countdown and resumes the session after a reload from ``localStorage``. Its API calls carry
no credentials of their own: the browser (or the proxy in front of it) adds them, as the ux phase's
journeys do with their principal's headers. In the ``faulty`` variant the page's script has two
planted defects (docs/sandbox.md): the spinner is never hidden after a successful save, and the
saved answer is kept in memory only, so a reload loses it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent / "static"
# the page's own policy (the hardening middleware only sets a header a response lacks): its script,
# style and API calls come from this origin only
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def exam_page_routes(variant: str) -> list[Route]:
    """The page's three routes; the script learns the variant from the line prepended to it."""
    files = {name: (STATIC / name).read_bytes() for name in ("exam.html", "exam.css", "exam.js")}
    script = f"const EXAM_VARIANT = {json.dumps(variant)};\n".encode() + files["exam.js"]

    def serve(body: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=media_type,
                            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

        return endpoint

    return [
        Route("/exam", serve(files["exam.html"], "text/html; charset=utf-8"), methods=["GET"]),
        Route("/exam/exam.css", serve(files["exam.css"], "text/css; charset=utf-8"), methods=["GET"]),
        Route("/exam/exam.js", serve(script, "text/javascript; charset=utf-8"), methods=["GET"]),
    ]
