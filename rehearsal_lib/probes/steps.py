"""One request step from params (a `JourneyStep`): send its body and headers with saved values filled in,
judge the status and every response assertion, keep the values it saves. Shared by the preflight journey,
the retention export request and the backup & recovery service checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from rehearsal_lib.auth_params import ANONYMOUS
from rehearsal_lib.probes import assertions, http
from rehearsal_lib.probes.bodies import body_spec, encode, shown_body
from rehearsal_lib.probes.placeholders import expand_text

if TYPE_CHECKING:
    from rehearsal_lib.params_base import JourneyStep
    from rehearsal_lib.phase import Outcome
    from rehearsal_lib.probes.auth import Principals

SECRET_NAME = re.compile(r"token|secret|password|passwd|api_?key|cookie|credential", re.I)


def codes(step: JourneyStep) -> list[int]:
    return step.expect_status if isinstance(step.expect_status, list) else [step.expect_status]


def expected_text(step: JourneyStep, suffix: str = "") -> str:
    """What the step requires, in words: the status and each assertion."""
    parts = [f"{step.method} {step.path} answers {' or '.join(map(str, codes(step)))}{suffix}"]
    if step.expect:
        parts.append(f"{len(step.expect)} JSON path rule(s) hold ({', '.join(step.expect)})")
    if step.expect_headers:
        parts.append(f"headers {', '.join(step.expect_headers)} as declared")
    if step.max_ms is not None:
        parts.append(f"within {step.max_ms:g} ms")
    return "; ".join(parts)


def run_step(client: httpx.Client, step: JourneyStep, saved: dict[str, Any], *, principals: Principals | None,
             resolve: Callable[[str], str] | None = None, secret: Callable[..., Any] | None = None,
             expected: str | None = None, default_as: str | None = None) -> tuple[Outcome, http.HttpResult]:
    """Send `step` and judge it: (outcome, the response). Saved values (`step.save`) are added to `saved`
    only when it passes.

    The step runs as its principal (`as:`; unset: `default_as`, else the target's default; `auth: false`:
    anonymously), whose credentials `principals` (probes/auth.py, `PhaseRun.principals`) builds; None: no
    principals at all (every step anonymous).

    `resolve` resolves ${VAR} references in bodies and headers (registering them as secrets); `secret`
    registers a saved value that names a credential (token, password, key...) so every output masks it.
    A placeholder no saved value fills raises `PlaceholderError` (the check is `error`, nothing is sent)."""
    from rehearsal_lib.phase import Outcome

    expected = expected or expected_text(step)
    want = codes(step)
    path = expand_text(step.path, saved, "path")
    spec = body_spec(step)
    content, ctype = encode(spec, saved, resolve)
    as_name = step.principal or default_as
    who = principals.name_of(as_name, step.auth) if principals is not None else ANONYMOUS
    auth = principals.get(as_name, step.auth) if principals is not None else None
    headers: dict[str, str] = {}
    for name, value in step.headers.items():
        text = expand_text(value, saved, f"headers.{name}")
        headers[name] = resolve(text) if resolve and "${" in text else text
    if ctype and not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = ctype
    res = http.request(client, step.method, path, headers=headers or None, content=content,
                       follow_redirects=step.follow_redirects, auth=auth)
    evidence = {**res.evidence(), "as": who}
    if spec is not None:
        evidence["request_body"] = shown_body(spec, saved)
    metrics = {"elapsed_ms": round(res.elapsed_ms, 2)}
    unreached = http.reached_handler(res, authenticated=step.auth and as_name != ANONYMOUS, expected=want,
                                     principal=who)
    if unreached:
        return Outcome("error", unreached, expected, evidence, metrics), res
    if res.status not in want:
        return Outcome("fail", res.describe(), expected, evidence, metrics), res
    is_json = res.body is not None or res.content_type.endswith("json")
    fails = assertions.check_response(step, res.body, res.headers, res.elapsed_ms, is_json=is_json)
    if fails:
        evidence["failed assertions"] = fails
        more = f" (+{len(fails) - 1} more)" if len(fails) > 1 else ""
        return Outcome("fail", f"{fails[0]}{more}", expected, evidence, metrics), res
    kept: dict[str, Any] = {}
    for name, source in step.save.items():
        found, value, why = assertions.extract(source, res.body, res.headers)
        if not found:
            return Outcome("fail", f"{res.describe()}; {why} to keep as {name}", expected, evidence, metrics), res
        kept[name] = str(value)
    for name, value in kept.items():
        if secret is not None and SECRET_NAME.search(name):
            secret(str(value))
        saved[name] = value
    if kept:
        evidence["saved"] = sorted(kept)
    return Outcome("pass", res.describe(), expected, evidence, metrics), res

