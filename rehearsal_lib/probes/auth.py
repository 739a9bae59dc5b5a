"""The one place that builds a request's credentials: a principal of `target.auth` as an `httpx.Auth`.

`Principals` (one per phase run, `PhaseRun.auth_for`) resolves each principal once: secrets through the
phase's `resolve` (so they are masked), obtained tokens added to the run's secrets the moment they
arrive. A token from a grant (OAuth2 password, client credentials) is obtained again when it expires
(`expires_in`) or, once per request, when the service answers 401. `wrong_auth` is the same scheme with a
wrong value: a wrong API key in the same header or query parameter, a wrong password for basic, a wrong
bearer token otherwise.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from rehearsal_lib.auth_params import (
    ANONYMOUS,
    ApiKeyScheme,
    BasicScheme,
    BearerScheme,
    JourneyScheme,
    OAuth2ClientCredentialsScheme,
    OAuth2PasswordScheme,
    Principal,
)

EXPIRY_MARGIN_S = 5.0


class AuthError(Exception):
    """A principal's credential could not be obtained (a login that failed): the check is `error`."""


@dataclass
class Credential:
    """What a request sends for a principal: headers and query parameters."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def json_path(body: Any, path: str) -> Any:
    """`a.b.0.c` in a parsed JSON answer; None when absent."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


class PrincipalAuth(httpx.Auth):
    """One principal's credential on every request; an obtained token is refreshed on expiry or once on a 401."""

    def __init__(self, name: str, scheme: str, obtain: Callable[[], tuple[Credential, float | None]],
                 refreshable: bool):
        self.name, self.scheme, self._obtain, self.refreshable = name, scheme, obtain, refreshable
        self._credential: Credential | None = None
        self._expires_at: float | None = None
        self._lock = threading.RLock()  # threads sharing a principal (concurrent job triggers) log in once
        self.obtained = 0  # how many times the credential was obtained (a login counts once)

    def credential(self, renew: bool = False) -> Credential:
        """The current credential, obtained now if none yet, if it expired or when `renew`."""
        with self._lock:
            expired = self._expires_at is not None and time.monotonic() >= self._expires_at - EXPIRY_MARGIN_S
            if self._credential is None or renew or (expired and self.refreshable):
                self._credential, lifetime = self._obtain()
                self._expires_at = time.monotonic() + lifetime if lifetime else None
                self.obtained += 1
            return self._credential

    @staticmethod
    def _apply(request: httpx.Request, cred: Credential) -> None:
        request.headers.update(cred.headers)
        if cred.params:
            request.url = request.url.copy_merge_params(cred.params)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._apply(request, self.credential())
        response = yield request
        if response.status_code == 401 and self.refreshable:
            self._apply(request, self.credential(renew=True))
            yield request


class StaticAuth(httpx.Auth):
    """A fixed credential (the wrong one the refusal checks send)."""

    def __init__(self, cred: Credential):
        self.cred = cred

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        PrincipalAuth._apply(request, self.cred)
        yield request


def wrong_auth(spec: Principal | None, wrong: str) -> StaticAuth:
    """The principal's own scheme with a wrong value (never a Bearer token to an API-key service)."""
    if isinstance(spec, ApiKeyScheme):
        return StaticAuth(Credential(params={spec.query: wrong}) if spec.query
                          else Credential(headers={spec.header or "X-API-Key": wrong}))
    if isinstance(spec, BasicScheme):
        return StaticAuth(Credential(headers={"Authorization": _basic(spec.username, wrong)}))
    if isinstance(spec, JourneyScheme):
        return StaticAuth(Credential(headers={spec.header: spec.prefix + wrong}))
    return StaticAuth(Credential(headers={"Authorization": f"Bearer {wrong}"}))


def describe_wrong(spec: Principal | None) -> str:
    """How the wrong credential is sent, in words."""
    if isinstance(spec, ApiKeyScheme):
        return f"wrong API key in query parameter {spec.query}" if spec.query else f"wrong API key in {spec.header}"
    if isinstance(spec, BasicScheme):
        return f"wrong password for {spec.username} (basic)"
    if isinstance(spec, JourneyScheme) and spec.header.lower() != "authorization":
        return f"wrong token in {spec.header}"
    return "wrong bearer token"


class Principals:
    """The principals of one phase run, each resolved (and logged in) once, on first use."""

    def __init__(self, specs: dict[str, Principal], default: str, client: httpx.Client,
                 resolve: Callable[[str], str | None], add_secret: Callable[[str], Any]):
        self.specs, self.default, self.client = specs, default, client
        self._resolve, self._add_secret = resolve, add_secret
        self._cache: dict[str, PrincipalAuth] = {}
        self._obtaining: list[str] = []

    def name_of(self, name: str | None, enabled: bool = True) -> str:
        """The principal a request runs as: `anonymous` when auth is off, the default when it names none."""
        if not enabled:
            return ANONYMOUS
        return name or self.default

    def spec(self, name: str | None) -> Principal | None:
        return self.specs.get(self.name_of(name))

    def get(self, name: str | None, enabled: bool = True) -> PrincipalAuth | None:
        """The principal's auth (None: anonymous)."""
        name = self.name_of(name, enabled)
        if name == ANONYMOUS:
            return None
        if name not in self.specs:
            raise AuthError(f"no principal {name!r} in target.auth (known: {sorted(self.specs)})")
        if name not in self._cache:
            self._cache[name] = self._build(name, self.specs[name])
        return self._cache[name]

    def wrong(self, name: str | None, wrong: str) -> StaticAuth | None:
        spec = self.spec(name)
        return wrong_auth(spec, wrong) if spec is not None else None

    def _secret(self, name: str, what: str, ref: str | None) -> str:
        value = self._resolve(ref) if ref else None
        if not value:
            raise AuthError(f"principal '{name}': {what} is empty")
        return value

    def _build(self, name: str, spec: Principal) -> PrincipalAuth:
        if isinstance(spec, BearerScheme):
            token = self._secret(name, "token", spec.token)
            return PrincipalAuth(name, spec.scheme, lambda: (Credential({"Authorization": f"Bearer {token}"}), None),
                                 refreshable=False)
        if isinstance(spec, ApiKeyScheme):
            key = self._secret(name, "key", spec.key)
            cred = Credential(params={spec.query: key}) if spec.query else Credential({spec.header or "X-API-Key": key})
            return PrincipalAuth(name, spec.scheme, lambda: (cred, None), refreshable=False)
        if isinstance(spec, BasicScheme):
            header = _basic(spec.username, self._secret(name, "password", spec.password))
            self._add_secret(header.split(" ", 1)[1])
            return PrincipalAuth(name, spec.scheme, lambda: (Credential({"Authorization": header}), None),
                                 refreshable=False)
        if isinstance(spec, (OAuth2PasswordScheme, OAuth2ClientCredentialsScheme)):
            return PrincipalAuth(name, spec.scheme, lambda: self._grant(name, spec), refreshable=True)
        return PrincipalAuth(name, spec.scheme, lambda: self._journey(name, spec), refreshable=False)

    def _grant(self, name: str, spec: OAuth2PasswordScheme | OAuth2ClientCredentialsScheme) -> tuple[Credential,
                                                                                                       float | None]:
        """POST the form-encoded grant to the token URL; the token at `token_path` (and its lifetime)."""
        form: dict[str, str] = {}
        headers: dict[str, str] = {}
        if isinstance(spec, OAuth2PasswordScheme):
            form = {"grant_type": "password", "username": spec.username,
                    "password": self._secret(name, "password", spec.password)}
            if spec.client_id:
                form["client_id"] = spec.client_id
            if spec.client_secret:
                form["client_secret"] = self._secret(name, "client_secret", spec.client_secret)
        else:
            secret = self._secret(name, "client_secret", spec.client_secret)
            form = {"grant_type": "client_credentials"}
            if spec.client_auth == "basic":
                headers["Authorization"] = _basic(spec.client_id, secret)
                self._add_secret(headers["Authorization"].split(" ", 1)[1])
            else:
                form |= {"client_id": spec.client_id, "client_secret": secret}
        if spec.scope:
            form["scope"] = spec.scope
        form |= spec.extra
        where = f"principal '{name}': login POST {spec.token_url}"
        try:
            resp = self.client.post(spec.token_url, data=form, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            raise AuthError(f"{where} got no answer: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise AuthError(f"{where} answered HTTP {resp.status_code}, not 200: {resp.text[:200]}")
        try:
            body = resp.json()
        except ValueError:
            raise AuthError(f"{where} answered HTTP 200 without JSON") from None
        token = json_path(body, spec.token_path)
        if not isinstance(token, str) or not token:
            raise AuthError(f"{where} answered HTTP 200 without a token at '{spec.token_path}'")
        self._add_secret(token)
        lifetime = json_path(body, spec.expires_path) if spec.expires_path else None
        try:
            seconds: float | None = float(lifetime) if lifetime is not None else None  # "3600" too
        except (TypeError, ValueError):
            seconds = None
        if seconds is not None and seconds <= 0:
            seconds = None
        return Credential({"Authorization": f"Bearer {token}"}), seconds

    def _journey(self, name: str, spec: JourneyScheme) -> tuple[Credential, float | None]:
        """Run the login steps (anonymous unless a step says `as`) through the journey's step runner (any
        body, assertions, `save`); the saved `token` is the credential. `${VAR}` in a body is a secret."""
        from rehearsal_lib.probes import steps as steps_probe
        from rehearsal_lib.probes.placeholders import PlaceholderError

        if name in self._obtaining:
            raise AuthError(f"principal '{name}': its login steps need the principal itself")
        self._obtaining.append(name)
        try:
            saved: dict[str, Any] = {}
            for step in spec.steps:
                try:
                    out, _ = steps_probe.run_step(self.client, step, saved, principals=self,
                                                  resolve=lambda text: self._resolve(text) or "",
                                                  secret=self._add_secret, default_as=ANONYMOUS)
                except PlaceholderError as exc:
                    raise AuthError(f"principal '{name}': login step {step.name}: {exc}") from None
                if out.status != "pass":
                    raise AuthError(f"principal '{name}': login step {step.name}: {out.observed}")
        finally:
            self._obtaining.remove(name)
        if spec.token not in saved:
            raise AuthError(f"principal '{name}': the login steps saved no '{spec.token}'")
        token = str(saved[spec.token])
        self._add_secret(token)
        return Credential({spec.header: spec.prefix + token}), None
