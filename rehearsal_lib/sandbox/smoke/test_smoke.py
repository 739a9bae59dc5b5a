"""The sandbox team's smoke suite: a few requests against the running exam API.

Run by the smoke phase (``phases.smoke.command``) with ``SMOKE_BASE_URL`` and ``SMOKE_TOKEN`` set.
"""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

BASE = os.environ.get("SMOKE_BASE_URL", "")
TOKEN = os.environ.get("SMOKE_TOKEN", "")


@pytest.fixture(scope="module")
def client():
    if not BASE:
        pytest.fail("SMOKE_BASE_URL is not set")
    with httpx.Client(base_url=BASE, timeout=5, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_ready(client):
    r = client.get("/v1/ready")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_version_names_the_service(client):
    assert client.get("/v1/version").json()["service"] == "exam-api"


def test_protected_endpoint_needs_the_token(client):
    assert httpx.post(f"{BASE}/v1/sessions", json={"candidate_id": "x", "exam_id": 1}, timeout=5).status_code == 401


def test_session_answer_submit(client):
    r = client.post("/v1/sessions", json={"candidate_id": f"smoke-{uuid.uuid4().hex[:8]}", "exam_id": 2})
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.post(f"/v1/sessions/{sid}/answers", json={"question_id": 11, "answer": "Paris"}).status_code == 201
    done = client.post(f"/v1/sessions/{sid}/submit").json()
    assert done["status"] == "submitted" and done["score"] == 1
