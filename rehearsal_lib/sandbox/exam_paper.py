"""``GET /v1/exams/{exam_id}/paper``: the question paper a candidate loads when the exam starts.

Used by the load phase (every candidate fetches it at once). In the ``faulty`` variant it answers
``EXAM_PAPER_DELAY_S`` late (an unindexed, uncached render, say): the planted defect that the load
phase's p95 gate must catch. The delay is an ``asyncio.sleep`` outside any database transaction, so
it neither holds a pool connection nor slows any other endpoint (preflight and the other phases
never call this one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

EXAM_PAPER_DELAY_S = 0.6


def exam_paper_endpoint(variant: str, require_token: Callable[[Request], None],
                        not_found: Callable[[], Exception]) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for ``create_app``; ``not_found()`` returns the app's 404 error."""

    async def exam_paper(request: Request) -> Response:
        require_token(request)
        try:
            exam_id = int(request.path_params["exam_id"])
        except ValueError:
            raise not_found() from None
        engine = request.app.state.engine

        def read() -> dict | None:
            with engine.begin() as conn:
                exam = conn.execute(text("SELECT id, title FROM exams WHERE id = :e"), {"e": exam_id}).first()
                if exam is None:
                    return None
                rows = conn.execute(text("SELECT id, position, prompt FROM questions WHERE exam_id = :e "
                                         "ORDER BY position"), {"e": exam_id}).all()
            return {"exam_id": exam.id, "title": exam.title,
                    "questions": [{"id": r.id, "position": r.position, "prompt": r.prompt} for r in rows]}

        paper = await run_in_threadpool(read)
        if paper is None:
            raise not_found()
        if variant == "faulty":
            await asyncio.sleep(EXAM_PAPER_DELAY_S)
        return JSONResponse(paper)

    return exam_paper
