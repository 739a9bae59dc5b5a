"""Principals (`target.auth`) and authorisation checks against a small real HTTP server that misbehaves.

The server on 127.0.0.1 has an OAuth2 password login (`POST /token`), an API-key admin endpoint that only
checks the key is *present* (the planted flaw a Bearer-only probe cannot see), a query-parameter API key,
HTTP basic, notes owned by alice that bob can read (a planted BOLA), and a switch that makes the first
token a login hands out invalid (to prove the refresh on a 401).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rehearsal_lib.config import ConfigError, load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.preflight import checks as preflight
from rehearsal_lib.phases.security import checks as security

pytestmark = pytest.mark.integration  # a real HTTP server

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
ADMIN_KEY = "admin-key-0123456789"


class Service(BaseHTTPRequestHandler):
    tokens: dict[str, str] = {}  # token -> user
    logins: list[str] = []
    first_token_invalid = False
    bola = True
    ttl = 3600

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _user(self) -> str | None:
        if self.headers.get("X-Session"):
            return self.tokens.get(self.headers["X-Session"])
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.tokens.get(auth[7:])
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            return user if PASSWORDS.get(user) == pw else None
        return None

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if self.path == "/login":  # a JSON login whose answer carries a session token
            body = json.loads(raw)
            if PASSWORDS.get(body.get("user")) != body.get("password"):
                return self._send(401, {})
            Service.logins.append(body["user"])
            Service.tokens[token := f"sess-{uuid.uuid4().hex}"] = body["user"]
            return self._send(200, {"session_token": token})
        if self.path == "/upload":  # a form or multipart upload, only for a logged-in user
            user = self._user()
            if user is None:
                return self._send(401, {"detail": "not authenticated"})
            multipart = self.headers.get("Content-Type", "").startswith("multipart/form-data")
            return self._send(201, {"owner": user, "multipart": multipart,
                                    "file": 'filename="report.csv"' in raw and "a,b" in raw,
                                    "note": "rehearsal note" in raw or "rehearsal+note" in raw})
        form = urllib.parse.parse_qs(raw)
        if self.path == "/oauth/token":  # client credentials
            if form.get("grant_type") != ["client_credentials"] or form.get("client_secret") != [ADMIN_KEY]:
                return self._send(401, {})
            Service.logins.append(form["client_id"][0])
            Service.tokens[token := f"cc-{uuid.uuid4().hex}"] = form["client_id"][0]
            return self._send(200, {"data": {"token": token}, "expires_in": Service.ttl})
        if self.path != "/token":
            return self._send(404, {})
        user, pw = form.get("username", [""])[0], form.get("password", [""])[0]
        if form.get("grant_type") != ["password"] or PASSWORDS.get(user) != pw:
            return self._send(401, {"detail": "wrong username or password"})
        Service.logins.append(user)
        token = f"tok-{user}-{uuid.uuid4().hex}"
        if not (Service.first_token_invalid and len(Service.logins) == 1):
            Service.tokens[token] = user
        self._send(200, {"access_token": token, "token_type": "bearer", "expires_in": Service.ttl})

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/admin/stats":  # the flaw: any key is accepted, the Authorization header is ignored
            return self._send(200, {"users": 2}) if self.headers.get("X-API-Key") else self._send(403, {})
        if url.path == "/admin/q":
            key = urllib.parse.parse_qs(url.query).get("api_key", [""])[0]
            return self._send(200, {"ok": 1}) if key == ADMIN_KEY else self._send(403, {})
        user = self._user()
        if user is None:
            return self._send(401, {"detail": "not authenticated"})
        if url.path == "/me":
            return self._send(200, {"username": user})
        if url.path == "/flags":  # the freeze, readable by a logged-in user only
            return self._send(200, {"frozen": True, "read_by": user})
        if url.path == "/notes/1":  # alice's note
            if user == "alice" or Service.bola:
                return self._send(200, {"id": 1, "owner": "alice"})
            return self._send(404, {"detail": "no such note"})
        self._send(404, {})


@pytest.fixture
def server():
    Service.tokens, Service.logins, Service.first_token_invalid, Service.bola, Service.ttl = {}, [], False, True, 3600
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


PRINCIPALS = {
    "alice": {"scheme": "oauth2_password", "token_url": "/token", "username": "alice", "password": "${T_ALICE_PW}"},
    "bob": {"scheme": "oauth2_password", "token_url": "/token", "username": "bob", "password": "${T_BOB_PW}"},
    "ops": {"scheme": "api_key", "header": "X-API-Key", "key": "${T_ADMIN_KEY}"},
    "opsq": {"scheme": "api_key", "query": "api_key", "key": "${T_ADMIN_KEY}"},
    "auditor": {"scheme": "basic", "username": "alice", "password": "${T_ALICE_PW}"},
    "stale": {"scheme": "bearer", "token": "${T_STALE_TOKEN}"},
    "svc": {"scheme": "oauth2_client_credentials", "token_url": "/oauth/token", "client_id": "svc",
            "client_secret": "${T_ADMIN_KEY}", "token_path": "data.token"},
    "session": {"scheme": "journey", "token": "sess", "header": "X-Session", "prefix": "",
                "steps": [{"name": "login", "method": "POST", "path": "/login",
                           "json": {"user": "bob", "password": "${T_BOB_PW}"}, "save": {"sess": "session_token"}}]},
}


def phase(tmp_path: Path, monkeypatch, name: str, base_url: str, phases: dict, principals: dict | None = None,
          default: str = "alice") -> PhaseRun:
    monkeypatch.setenv("T_ALICE_PW", PASSWORDS["alice"])
    monkeypatch.setenv("T_BOB_PW", PASSWORDS["bob"])
    monkeypatch.setenv("T_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("T_STALE_TOKEN", "stale-token-not-known-here")
    doc = {"name": "probe", "environment": {"kind": "staging"},
           "target": {"base_url": base_url, "timeout_s": 2,
                      "auth": {"default": default, "principals": principals or PRINCIPALS}},
           "phases": phases}
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


def security_checks(tmp_path, monkeypatch, server, endpoints: list[dict], **kw) -> dict:
    ctx = phase(tmp_path, monkeypatch, "security", server, {"security": {"protected_endpoints": endpoints}}, **kw)
    return {c.id: c for c in security.check_auth(ctx)}


def test_wrong_api_key_is_tested_as_an_api_key(tmp_path, monkeypatch, server):
    """An API-key endpoint that accepts any key: a wrong Bearer token (today's probe) is refused there, which
    proves nothing; a wrong key in X-API-Key is served, and the check fails saying so."""
    checks = security_checks(tmp_path, monkeypatch, server, [{"name": "stats", "path": "/admin/stats", "as": "ops"}])
    check = checks["security.auth.stats"]
    assert check.status == "fail", check.observed
    assert check.observed == ("not refused with wrong API key in X-API-Key (no credentials → HTTP 403, "
                              "wrong API key in X-API-Key → HTTP 200)")


def test_wrong_api_key_in_a_query_parameter_and_basic_password(tmp_path, monkeypatch, server):
    checks = security_checks(tmp_path, monkeypatch, server, [
        {"name": "q", "path": "/admin/q", "as": "opsq", "refuse_as": ["alice"], "forbid_status": [403]},
        {"name": "basic", "path": "/me", "as": "auditor"}])
    assert checks["security.auth.q"].status == "pass", checks["security.auth.q"].observed
    assert "wrong API key in query parameter api_key → HTTP 403" in checks["security.auth.q"].observed
    assert checks["security.authz.q"].status == "pass", checks["security.authz.q"].observed
    assert checks["security.authz.q"].observed == "opsq → HTTP 200; alice → HTTP 403"
    basic = checks["security.auth.basic"]
    assert basic.status == "pass" and "wrong password for alice (basic) → HTTP 401" in basic.observed, basic.observed
    assert ADMIN_KEY not in json.dumps([c.model_dump(mode="json") for c in checks.values()])


def test_bola_leak_fails_authz(tmp_path, monkeypatch, server):
    """bob reads alice's note: security.authz fails naming bob; refused (404), it passes."""
    spec = {"name": "note", "path": "/notes/1", "as": "alice", "refuse_as": ["bob"]}
    check = security_checks(tmp_path, monkeypatch, server, [spec])["security.authz.note"]
    assert check.status == "fail"
    assert check.observed == "not refused: bob got HTTP 200 (alice → HTTP 200; bob → HTTP 200)"
    Service.bola = False
    check = security_checks(tmp_path, monkeypatch, server, [spec])["security.authz.note"]
    assert (check.status, check.observed) == ("pass", "alice → HTTP 200; bob → HTTP 404")


def test_allowed_principal_answered_401_is_error(tmp_path, monkeypatch, server):
    """The control: the principal that should be served gets 401, so bob's 404 proves nothing."""
    Service.bola = False
    spec = {"name": "note", "path": "/notes/1", "as": "stale", "refuse_as": ["bob"]}
    check = security_checks(tmp_path, monkeypatch, server, [spec])["security.authz.note"]
    assert check.status == "error"
    assert check.observed.startswith("the allowed principal stale was not served, so no refusal proves anything: "
                                     "not authenticated, the behaviour under test was not exercised: HTTP 401")
    assert "credentials of principal 'stale'" in check.observed


def test_failed_login_is_error_naming_the_principal(tmp_path, monkeypatch, server):
    principals = {**PRINCIPALS, "bob": {**PRINCIPALS["bob"], "password": "${T_WRONG_PW}"}}
    monkeypatch.setenv("T_WRONG_PW", "not-bobs-password")
    spec = {"name": "note", "path": "/notes/1", "as": "alice", "refuse_as": ["bob"]}
    check = security_checks(tmp_path, monkeypatch, server, [spec], principals=principals)["security.authz.note"]
    assert check.status == "error"
    assert check.observed.startswith("AuthError: principal 'bob': login POST /token answered HTTP 401, not 200")
    assert "not-bobs-password" not in check.model_dump_json()


def test_refused_principal_answered_401_is_error_not_pass(tmp_path, monkeypatch, server):
    """A refused principal whose credentials are not accepted (401) proves nothing about authorisation."""
    Service.bola = False
    spec = {"name": "note", "path": "/notes/1", "as": "alice", "refuse_as": ["stale"]}
    check = security_checks(tmp_path, monkeypatch, server, [spec])["security.authz.note"]
    assert check.status == "error" and check.observed.startswith("stale: HTTP 401, its credentials were not accepted")


def test_oauth_token_is_refreshed_once_on_a_401_and_masked(tmp_path, monkeypatch, server):
    """The first token the login hands out is refused: the journey step logs in again once and passes;
    both tokens are secrets of the run."""
    Service.first_token_invalid = True
    ctx = phase(tmp_path, monkeypatch, "preflight", server,
                {"preflight": {"journey": [{"name": "me", "path": "/me"},
                                           {"name": "me_bob", "as": "bob", "path": "/me"}]}})
    checks = {c.id: c for c in preflight.check_journey(ctx)}
    assert checks["preflight.journey.me"].status == "pass", checks["preflight.journey.me"].observed
    assert checks["preflight.journey.me"].evidence["body"] == {"username": "alice"}
    assert checks["preflight.journey.me_bob"].evidence["body"] == {"username": "bob"}
    assert Service.logins == ["alice", "alice", "bob"]  # one refresh, once
    issued = [t for t in Service.tokens] + [t for t in ctx.secrets._values if t.startswith("tok-")]
    assert issued and all(ctx.secrets.scrub(f"x {t} y") == "x *** y" for t in issued)


def test_auth_false_beside_as_and_unknown_principal_are_config_errors(tmp_path, monkeypatch, server):
    with pytest.raises(ConfigError, match="no principal 'carol'"):
        phase(tmp_path, monkeypatch, "security", server,
              {"security": {"protected_endpoints": [{"name": "x", "path": "/x", "refuse_as": ["carol"]}]}})
    with pytest.raises(ConfigError, match="contradicts `as: bob`"):
        phase(tmp_path, monkeypatch, "preflight", server,
              {"preflight": {"journey": [{"name": "x", "path": "/x", "auth": False, "as": "bob"}]}})
    with pytest.raises(ConfigError, match=r"\$\{VAR\} reference"):
        phase(tmp_path, monkeypatch, "security", server, {},
              principals={"ops": {"scheme": "api_key", "key": "inline-key"}}, default="ops")


def test_client_credentials_journey_login_and_expiry(tmp_path, monkeypatch, server):
    """Client credentials (token at a dotted path), a login journey whose saved value is sent in X-Session,
    and a token whose `expires_in` is shorter than the margin: obtained again for the next request."""
    Service.ttl = 1
    ctx = phase(tmp_path, monkeypatch, "preflight", server,
                {"preflight": {"journey": [{"name": "svc", "as": "svc", "path": "/me"},
                                           {"name": "svc_again", "as": "svc", "path": "/me"},
                                           {"name": "session", "as": "session", "path": "/me"}]}})
    checks = {c.id: c for c in preflight.check_journey(ctx)}
    assert {c.status for c in checks.values()} == {"pass"}, {k: c.observed for k, c in checks.items()}
    assert checks["preflight.journey.svc"].evidence["body"] == {"username": "svc"}
    assert checks["preflight.journey.session"].evidence["body"] == {"username": "bob"}
    assert Service.logins == ["svc", "svc", "bob"]  # expired after each use: logged in again
    assert all(ctx.secrets.scrub(t) == "***" for t in Service.tokens)


def test_load_scenario_principal_is_resolved_once_before_the_load(tmp_path, monkeypatch, server):
    """A load scenario runs as its principal with the token obtained up front (one login for all requests)."""
    from rehearsal_lib.phases.load import checks as load

    stage = {"name": "s", "duration_s": 1, "scenarios": [{"name": "me", "path": "/me", "as": "bob"},
                                                         {"name": "anon", "path": "/me", "as": "anonymous"}]}
    ctx = phase(tmp_path, monkeypatch, "load", server, {"load": {"stages": [stage]}})
    me, anon = (load._scenario(ctx, sc, "run") for sc in ctx.settings.stages[0].scenarios)
    token = me.headers["Authorization"].removeprefix("Bearer ")
    assert Service.tokens[token] == "bob" and Service.logins == ["bob"]
    assert "Authorization" not in anon.headers


def test_journey_step_as_a_principal_with_a_multipart_body_and_assertions(tmp_path, monkeypatch, server):
    """A step with `as:`, a form/multipart body and `expect` runs as that principal (the upload endpoint needs a
    logged-in user and says who it was), the body and the assertions as declared; an assertion on the owner
    fails when the step runs as someone else. The freeze mapping reads its flags as its `as:` principal."""
    upload = {"method": "POST", "path": "/upload", "expect_status": 201,
              "form": {"note": "rehearsal note"},
              "files": {"doc": {"content": "a,b\n1,2\n", "filename": "report.csv", "content_type": "text/csv"}}}
    steps = [
        {**upload, "name": "upload_bob", "as": "bob",
         "expect": {"$.owner": {"equals": "bob"}, "$.multipart": {"equals": True}, "$.file": {"equals": True},
                    "$.note": {"equals": True}}, "save": {"owner": "$.owner"}},
        {"name": "form_alice", "as": "alice", "method": "POST", "path": "/upload", "expect_status": 201,
         "form": {"note": "rehearsal note"},
         "expect": {"$.owner": {"equals": "alice"}, "$.multipart": {"equals": False}, "$.note": {"equals": True}}},
        {**upload, "name": "upload_wrong_owner", "as": "alice", "expect": {"$.owner": {"equals": "bob"}}},
    ]
    freeze_cfg = {"endpoint": "/flags", "as": "bob", "expect": {"$.frozen": True, "$.read_by": "bob"}}
    ctx = phase(tmp_path, monkeypatch, "preflight", server, {"preflight": {"journey": steps, "freeze": freeze_cfg}})
    checks = {c.id: c for c in preflight.check_journey(ctx)}
    assert checks["preflight.journey.upload_bob"].status == "pass", checks["preflight.journey.upload_bob"].observed
    assert checks["preflight.journey.upload_bob"].evidence["as"] == "bob"
    assert checks["preflight.journey.form_alice"].status == "pass", checks["preflight.journey.form_alice"].observed
    wrong = checks["preflight.journey.upload_wrong_owner"]
    assert wrong.status == "fail" and "$.owner" in wrong.observed and "alice" in wrong.observed, wrong.observed
    assert sorted(Service.logins) == ["alice", "bob"]  # one login each, through target.auth
    freeze = {c.id: c for c in preflight.check_freeze(ctx)}
    assert {c.status for c in freeze.values()} == {"pass"}, {k: c.observed for k, c in freeze.items()}
    assert set(freeze) == {"preflight.freeze.frozen", "preflight.freeze.read_by"}


def test_login_journey_takes_a_form_body_and_saves_from_a_json_path(tmp_path, monkeypatch, server):
    """A `journey` principal whose login step posts a form (the OAuth2 token endpoint) and saves the token from
    a JSON path: the same step runner as the preflight journey, so the body is sent and the token is used."""
    principals = {"formlogin": {"scheme": "journey", "token": "tok", "steps": [
        {"name": "login", "method": "POST", "path": "/token",
         "form": {"grant_type": "password", "username": "bob", "password": "${T_BOB_PW}"},
         "expect": {"$.token_type": {"equals": "bearer"}}, "save": {"tok": "$.access_token"}}]}}
    ctx = phase(tmp_path, monkeypatch, "preflight", server,
                {"preflight": {"journey": [{"name": "me", "path": "/me"}]}}, principals=principals,
                default="formlogin")
    checks = {c.id: c for c in preflight.check_journey(ctx)}
    assert checks["preflight.journey.me"].status == "pass", checks["preflight.journey.me"].observed
    assert checks["preflight.journey.me"].evidence["body"] == {"username": "bob"}
    assert Service.logins == ["bob"]
    assert all(ctx.secrets.scrub(t) == "***" for t in Service.tokens)
