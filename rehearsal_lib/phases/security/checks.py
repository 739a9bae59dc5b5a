"""Security: TLS, security headers, authentication, hostile inputs, database SSL and row-level security."""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

import httpx

from rehearsal_lib.checks.wording import not_configured, pattern_text, plural, without_none, yes_no
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.security.params import BadInput, HeaderRule, ProtectedEndpoint, SecurityParams
from rehearsal_lib.probes import http, tls
from rehearsal_lib.probes import steps as steps_probe
from rehearsal_lib.probes.auth import AuthError, describe_wrong, wrong_auth
from rehearsal_lib.probes.placeholders import PlaceholderError, expand_text
from rehearsal_lib.probes.sql import query
from rehearsal_lib.results import Check, StatusName

MARKER_CHARS = set("<>'\";")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def tls_target(ctx: PhaseRun[SecurityParams]) -> tuple[str | None, str | None]:
    """(HTTPS URL, CA file): `tls.url` / `tls.ca_file`, else target.base_url when it is https."""
    cfg = ctx.settings.tls
    url = ctx.resolve(cfg.url, secret=False) if cfg and cfg.url else None
    if not url and ctx.base_url.startswith("https://"):
        url = ctx.base_url
    ca = ctx.resolve(cfg.ca_file, secret=False) if cfg and cfg.ca_file else None
    return (url or None), (ca or None)


def check_tls(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """Certificate chain + hostname, days to expiry, negotiated protocol (and no downgrade below it)."""
    cfg = ctx.settings.tls
    url, ca = tls_target(ctx)
    if cfg is None or not url:
        ctx.note("No HTTPS target: set phases.security.tls (url, ca_file) or an https target.base_url.")
        return []
    timeout = ctx.params.target.timeout_s
    res = tls.inspect(url, ca, timeout)
    ev = {**res.evidence(), "ca_file": ca or "(system CAs)"}

    def certificate() -> Outcome:
        expected = f"certificate of {url} chains to a trusted CA and matches the host name"
        if res.error:
            return Outcome("error", f"no TLS handshake with {url}: {res.error}", expected, ev)
        if not res.verified:
            return Outcome("fail", f"rejected by a verifying client: {res.verify_error}", expected, ev)
        return Outcome("pass", f"valid for {res.host}, issued by {res.issuer}", expected, ev)

    def expiry() -> Outcome:
        expected = f"at least {cfg.min_days} days to expiry"
        if res.error or res.days_left is None:
            return Outcome("error", f"no certificate read from {url}: {res.error}", expected, ev)
        days = res.days_left
        status: StatusName = "pass" if days >= cfg.min_days else "fail"
        what = "expired" if days < 0 else f"expires in {days:.1f} days"
        return Outcome(status, f"{what} ({res.not_after:%Y-%m-%d %H:%M} UTC)", expected, ev, {"days_left": days})

    def protocol() -> Outcome:
        minimum = tls.label(cfg.min_version)
        expected = f"negotiates {minimum} or newer; refuses older"
        if res.error or not res.protocol:
            return Outcome("error", f"no TLS handshake with {url}: {res.error}", expected, ev)
        if tls.ORDER.index(res.protocol) < tls.ORDER.index(cfg.min_version):
            return Outcome("fail", f"negotiated {tls.label(res.protocol)}", expected, ev)
        accepted, how, detail = tls.accepts_below(url, cfg.min_version, timeout)
        dev = {**ev, "older protocol": how, "handshake detail": detail}
        if accepted:
            return Outcome("fail", f"negotiated {tls.label(res.protocol)}, but {how}", expected, dev)
        return Outcome("pass", f"negotiated {tls.label(res.protocol)}; {how}", expected, dev)

    return [ctx.run("security.tls.certificate", "TLS certificate valid (chain and host name)", certificate,
                    severity="blocker"),
            ctx.run("security.tls.expiry", f"TLS certificate valid for at least {cfg.min_days} days", expiry),
            ctx.run("security.tls.protocol", f"TLS protocol at least {tls.label(cfg.min_version)}", protocol)]


def _client_for(ctx: PhaseRun[SecurityParams], url: str, ca: str | None) -> httpx.Client:
    verify: Any = ctx.params.target.verify_tls
    if url.startswith("https://") and ca:
        verify = tls.verifying_context(ca)
    return httpx.Client(timeout=ctx.params.target.timeout_s, verify=verify, follow_redirects=False)


def check_headers(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """Each configured security header is present (and matches its pattern) on one response."""
    cfg = ctx.settings.headers
    if cfg is None:
        ctx.note(not_configured("phases.security.headers", "that each configured security header is present (and "
                                                           "matches its pattern)"))
        return []
    https_url, ca = tls_target(ctx)
    base = https_url or ctx.base_url
    url = base.rstrip("/") + cfg.path
    with _client_for(ctx, url, ca) as client:
        res = http.request(client, "GET", url)
    is_https = url.startswith("https://")
    headers = {k.lower(): v for k, v in (res.headers or {}).items()}
    out = []
    for rule in cfg.rules:
        if rule.https_only and not is_https:
            ctx.note(f"{rule.name} is only required over HTTPS; {url} is plain HTTP.")
            continue
        out.append(ctx.run(f"security.headers.{slug(rule.name)}", f"Security header {rule.name}",
                           partial(_header_outcome, res, headers, rule, url), severity=rule.severity))
    return out


def _header_outcome(res: http.HttpResult, headers: dict[str, str], rule: HeaderRule, url: str) -> Outcome:
    expected = f"{rule.name}: {pattern_text(rule.pattern)}" if rule.pattern else f"{rule.name} present"
    ev = {"request": f"GET {url}", "status": res.status, "value": headers.get(rule.name.lower(), "not sent")}
    if rule.pattern:
        ev["pattern"] = rule.pattern  # the precise rule, for whoever audits it
    if res.error:
        return Outcome("error", res.describe(), expected, {**ev, "error": res.error})
    value = headers.get(rule.name.lower())
    if value is None:
        return Outcome("fail", f"{rule.name} missing on GET {url}", expected, ev)
    if rule.pattern and not re.search(rule.pattern, value):
        return Outcome("fail", f"{rule.name}: {value!r} is not {pattern_text(rule.pattern)}", expected, ev)
    return Outcome("pass", f"{rule.name}: {value}", expected, ev)


def check_auth(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """Each protected endpoint refuses anonymous callers and a wrong credential in its principal's scheme
    (`security.auth.<name>`); with `refuse_as`, it refuses those principals while its own principal is
    served (`security.authz.<name>`: roles, and one user's object requested as another, BOLA)."""
    specs = ctx.settings.protected_endpoints
    if not specs:
        ctx.note(not_configured("phases.security.protected_endpoints", "that each protected endpoint refuses a "
                                                                       "request without credentials and one with a "
                                                                       "wrong credential in its principal's scheme"))
    out = []
    for s in specs:
        setup = partial(_setup_values, ctx, s, {})
        out.append(ctx.run(f"security.auth.{s.name}", f"{s.method} {s.path} refuses missing and wrong credentials",
                           partial(_auth_outcome, ctx, s, setup), severity=s.severity, writes=bool(s.setup)))
        if s.refuse_as:
            who = ", ".join(s.refuse_as)
            out.append(ctx.run(f"security.authz.{s.name}", f"{s.method} {s.path} refuses {who}",
                               partial(_authz_outcome, ctx, s, setup), severity=s.severity, writes=bool(s.setup)))
    return out


class SetupFailed(Exception):
    """A protected endpoint's setup step did not answer as expected: its checks are `error`."""


def _setup_values(ctx: PhaseRun[SecurityParams], spec: ProtectedEndpoint, memo: dict[str, Any]) -> dict[str, Any]:
    """Run the endpoint's setup steps once (each as its own principal); the values they save."""
    if "values" in memo:
        return dict(memo["values"])
    if "error" in memo:
        raise SetupFailed(memo["error"])
    saved: dict[str, Any] = {"run_id": ctx.run_id}
    for step in spec.setup:
        try:
            out, _ = steps_probe.run_step(ctx.http, step, saved, principals=ctx.principals,
                                          resolve=lambda text: ctx.resolve(text) or "", secret=ctx.secrets.add)
        except (AuthError, PlaceholderError) as exc:
            out = Outcome("error", str(exc))
        if out.status != "pass":
            memo["error"] = f"setup step {step.name} (as {ctx.principal_name(step.principal, step.auth)}): " \
                            f"{out.observed}"
            raise SetupFailed(memo["error"])
    memo["values"] = saved
    return dict(saved)


def _auth_outcome(ctx: PhaseRun[SecurityParams], spec: ProtectedEndpoint, setup: Any) -> Outcome:
    principal = ctx.principals.spec(spec.principal)
    wrong_label = "wrong token" if principal is None or principal.scheme not in ("api_key", "basic") \
        else describe_wrong(principal)
    expected = f"HTTP {'/'.join(map(str, spec.refuse_status))} without credentials and with a {wrong_label}"
    try:
        path = expand_text(spec.path, setup(), "path")
    except SetupFailed as exc:
        return Outcome("error", str(exc), expected)
    wrong = ctx.principals.wrong(spec.principal, ctx.settings.wrong_token) or wrong_auth(None, ctx.settings.wrong_token)
    tries: dict[str, httpx.Auth | None] = {"no credentials": None, wrong_label: wrong}
    seen, ev, errors = {}, {}, []
    for label, auth in tries.items():
        res = http.request(ctx.http, spec.method, path, auth=auth, json_body=spec.json_body)
        ev[label] = res.evidence()
        if res.error:
            errors.append(f"{label}: {res.describe()}")
        seen[label] = res.status
    observed = ", ".join(f"{k} → {f'HTTP {v}' if v is not None else 'no response'}" for k, v in seen.items())
    if errors:
        return Outcome("error", "; ".join(errors), expected, ev)
    accepted = [k for k, v in seen.items() if v not in spec.refuse_status]
    if accepted:
        return Outcome("fail", f"not refused with {' and '.join(accepted)} ({observed})", expected, ev)
    return Outcome("pass", observed, expected, ev)


def _authz_outcome(ctx: PhaseRun[SecurityParams], spec: ProtectedEndpoint, setup: Any) -> Outcome:
    """The endpoint's own principal is served (the control), each of `refuse_as` refused by the handler."""
    allowed = ctx.principal_name(spec.principal)
    forbid = "/".join(map(str, spec.forbid_status))
    expected = (f"HTTP {'/'.join(map(str, spec.allow_status))} as {allowed}; HTTP {forbid} as "
                f"{', '.join(spec.refuse_as)}")
    try:
        path = expand_text(spec.path, setup(), "path")
    except SetupFailed as exc:
        return Outcome("error", str(exc), expected)
    ev: dict[str, Any] = {}
    control = http.request(ctx.http, spec.method, path, auth=ctx.auth_for(spec.principal), json_body=spec.json_body)
    ev[f"as {allowed} (allowed)"] = control.evidence()
    unreached = http.reached_handler(control, authenticated=allowed != "anonymous", expected=spec.allow_status,
                                     principal=allowed)
    if unreached or control.status not in spec.allow_status:
        return Outcome("error", f"the allowed principal {allowed} was not served, so no refusal proves anything: "
                                f"{unreached or control.describe()}", expected, ev)
    seen: dict[str, int | None] = {}
    leaks, broken = [], []
    for who in spec.refuse_as:
        res = http.request(ctx.http, spec.method, path, auth=ctx.auth_for(who), json_body=spec.json_body)
        ev[f"as {who} (refused)"] = res.evidence()
        seen[who] = res.status
        if res.status in spec.forbid_status:
            continue
        if res.error or (res.status is not None and 300 <= res.status < 400):
            broken.append(f"{who}: {http.reached_handler(res)}")
        elif res.status == 401:
            broken.append(f"{who}: HTTP 401, its credentials were not accepted (authentication, not authorisation; "
                          f"add 401 to forbid_status if the service refuses this way)")
        else:
            leaks.append(f"{who} got HTTP {res.status}")
    observed = f"{allowed} → HTTP {control.status}; " + ", ".join(
        f"{k} → {f'HTTP {v}' if v is not None else 'no response'}" for k, v in seen.items())
    if leaks:
        return Outcome("fail", f"not refused: {'; '.join(leaks)} ({observed})", expected, ev)
    if broken:
        return Outcome("error", "; ".join(broken), expected, ev)
    return Outcome("pass", observed, expected, ev)


def _payload_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value) >= 4 and MARKER_CHARS & set(value) else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _payload_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _payload_strings(v)]
    return []


def check_bad_inputs(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """Hostile inputs get a 4xx (never a 5xx) and are not echoed back verbatim; chart of the codes."""
    specs = ctx.settings.bad_inputs
    if not specs:
        ctx.note(not_configured("phases.security.bad_inputs", "that hostile inputs get a 4xx (never a 5xx) and are "
                                                              "not echoed back verbatim"))
        return []
    codes: dict[str, str] = {}
    out = [ctx.run(f"security.inputs.{s.name}", f"Hostile input '{s.name}' is refused cleanly",
                   partial(_bad_input_outcome, ctx, s, codes), severity=s.severity) for s in specs]
    if codes:
        import plotly.graph_objects as go

        names = list(codes)
        colour = {"2": "#d29922", "4": "#2da44e", "5": "#cf222e"}
        fig = go.Figure(go.Bar(x=names, y=[1] * len(names), text=[codes[n] for n in names], textposition="inside",
                               marker_color=[colour.get(codes[n][:1], "#57606a") for n in names]))
        fig.update_layout(title="Response codes of the hostile-input probes (green 4xx, red 5xx)",
                          yaxis={"visible": False}, height=300, margin={"t": 50, "b": 40})
        ctx.figure(fig)
    return out


def _bad_input_outcome(ctx: PhaseRun[SecurityParams], spec: BadInput, codes: dict[str, str]) -> Outcome:
    allowed = spec.expect_status
    expected = (f"HTTP {'/'.join(map(str, allowed))}" if allowed
                else "HTTP 4xx (never 5xx), payload not reflected as markup")
    headers = {"Content-Type": spec.content_type}
    who = ctx.principal_name(spec.principal, spec.auth)
    content: bytes | None = None
    if spec.oversize_bytes:
        content = json.dumps({"payload": "A" * spec.oversize_bytes}).encode()
    elif spec.body is not None:
        content = spec.body.encode()
    elif spec.json_body is not None:
        content = json.dumps(spec.json_body).encode()
    res = http.request(ctx.http, spec.method, spec.path, headers=headers, content=content,
                       follow_redirects=spec.follow_redirects, auth=ctx.auth_for(spec.principal, spec.auth))
    ev = {**res.evidence(), "sent_bytes": len(content or b"")}
    codes[spec.name] = str(res.status) if res.status else "none"
    unreached = http.reached_handler(res, authenticated=ctx.wants_auth(spec.principal, spec.auth),
                                     expected=allowed or (), principal=who)
    if unreached:
        return Outcome("error", unreached, expected, ev)
    assert res.status is not None
    ok = res.status in allowed if allowed else 400 <= res.status < 500
    if not ok:
        kind = "server error" if res.status >= 500 else "unexpected status"
        return Outcome("fail", f"{kind}: HTTP {res.status}", expected, ev, {"status": res.status})
    echoed, note = http.reflection(res, _payload_strings(spec.json_body) + _payload_strings(spec.body))
    if echoed:
        return Outcome("fail", f"HTTP {res.status} but the payload is echoed verbatim as "
                               f"{res.content_type or 'a body without content type'}: {echoed[0][:80]!r}",
                       expected, {**ev, "reflection": "unescaped in a body a browser renders as markup"},
                       {"status": res.status})
    if note:
        ev["reflection"] = note
    return Outcome("pass", f"HTTP {res.status}", expected, ev, {"status": res.status})


def check_database_ssl(ctx: PhaseRun[SecurityParams]) -> Check | None:
    """The server has ssl=on and this very connection is encrypted (pg_settings, pg_stat_ssl)."""
    if not ctx.settings.database_ssl:
        ctx.note("Database SSL not required here (phases.security.database_ssl is false).")
        return None

    def probe() -> Outcome:
        expected = "ssl = on and this connection uses SSL"
        _, rows = query(ctx.engine, "SELECT (SELECT setting FROM pg_settings WHERE name = 'ssl'),"
                                    " s.ssl, s.version FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()")
        setting, used, version = rows[0] if rows else (None, None, None)
        ev = without_none({"ssl_setting": setting, "connection_ssl": yes_no(used), "version": version})
        if setting != "on":
            return Outcome("fail", f"server setting ssl = {setting}", expected, ev)
        if not used:
            return Outcome("fail", "ssl = on, but this connection is not encrypted", expected, ev)
        return Outcome("pass", f"ssl = on; connection encrypted with {version}", expected, ev)

    return ctx.run("security.database.ssl", "Database connections use SSL", probe)


def check_rls(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """Each listed table has row-level security enabled (pg_class.relrowsecurity) and its policies.

    A blocker, like migrations.post.rls: a listed table holds data other tenants or candidates must not see."""
    tables = ctx.settings.rls_tables
    if not tables:
        ctx.note(not_configured("phases.security.rls_tables", "that each listed table has row-level security enabled, "
                                                              "with its policies"))
    return [ctx.run(f"security.rls.{slug(t)}", f"Row-level security on {t}", partial(_rls_outcome, ctx, t),
                    severity="blocker") for t in tables]


def _rls_outcome(ctx: PhaseRun[SecurityParams], table: str) -> Outcome:
    expected = "row-level security on (pg_class.relrowsecurity)"
    _, rows = query(ctx.engine, "SELECT c.relrowsecurity, c.relforcerowsecurity,"
                                " (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)"
                                " FROM pg_class c WHERE c.oid = to_regclass(:t)", {"t": table})
    if not rows:
        return Outcome("fail", "table does not exist", expected, {"table": table})
    enabled, forced, policies = rows[0]
    ev = {"table": table, "row-level security": "on" if enabled else "off",
          "forced for the owner too": yes_no(forced), "policies": policies}
    defined = plural(policies, "policy", "policies")
    if not enabled:
        return Outcome("fail", f"row-level security is off ({defined} defined but not enforced)", expected, ev)
    return Outcome("pass", f"row-level security on, {defined}", expected, ev, {"policies": policies})
