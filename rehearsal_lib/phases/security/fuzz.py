"""Schema-driven hostile inputs (`phases.security.fuzz`): Schemathesis' Python API generates requests from the
service's OpenAPI document, sent as a principal; any 5xx, any answer that breaks its declared schema and any
answer slower than the bound is a finding, kept with its reproducing request as a curl command (masked).

Schemathesis (the `fuzz` extra) is imported only here, lazily. Generation is bounded per operation
(`max_examples`) and in time (`time_budget_s`); only GET, HEAD and OPTIONS operations are fuzzed unless
`allow_writes` is set, and then every check runs through the write-safety rule (`ctx.run(..., writes=True)`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from rehearsal_lib.checks.wording import plural
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.security.params import SAFE_METHODS, FuzzParams, SecurityParams
from rehearsal_lib.results import Check

KINDS = {"server_errors": "no generated request is answered 5xx",
         "schema": "every answer matches the schema the document declares for its status",
         "latency": "every answer within {ms:g} ms"}
KEEP = 10  # findings kept as evidence per check


@dataclass
class Finding:
    kind: str
    operation: str
    status: int | None
    elapsed_ms: float
    detail: str
    curl: str


@dataclass
class FuzzRun:
    """What one bounded fuzzing session sent and saw (shared by the three checks)."""

    operations: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # unsafe operations not fuzzed (allow_writes is false)
    sent: int = 0
    answered: int = 0  # reached a handler: not 401/403 while authenticated, not a redirect
    unauthenticated: int = 0
    network_errors: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    slowest_ms: float = 0.0
    stopped: str = ""
    error: str = ""
    not_generated: list[str] = field(default_factory=list)


def load_document(ctx: PhaseRun[SecurityParams], ref: str) -> dict[str, Any]:
    """The OpenAPI document: an existing file, else a URL or a path on base_url, fetched with GET."""
    where = ctx.resolve(ref, secret=False) or ""
    if not where.startswith(("http://", "https://")) and Path(where).is_file():
        text = Path(where).read_text(encoding="utf-8")
    else:
        res = ctx.http.get(where)
        if res.status_code != 200:
            raise ValueError(f"GET {where} answered HTTP {res.status_code}, not an OpenAPI document")
        text = res.text
    doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    if not isinstance(doc, dict) or not ("openapi" in doc or "swagger" in doc):
        raise ValueError(f"{where} is not an OpenAPI document (no `openapi` key)")
    return doc


def _chosen(label: str, method: str, path: str, wanted: list[str]) -> bool:
    if not wanted:
        return True
    return any(w == label or (w.startswith("/") and w == path) for w in wanted)


def fuzz(ctx: PhaseRun[SecurityParams], cfg: FuzzParams) -> FuzzRun:
    """Run the bounded fuzzing session once; every request and answer is judged as it arrives."""
    out = FuzzRun()
    try:
        import schemathesis
        from hypothesis.configuration import set_hypothesis_home_dir
        from schemathesis.core.failures import FailureGroup
        from schemathesis.core.result import Ok
        from schemathesis.specs.openapi.checks import response_schema_conformance
    except ImportError as exc:
        out.error = f"the fuzz check needs: pip install 'rehearsal[fuzz]' ({exc})"
        return out
    try:
        schema = schemathesis.openapi.from_dict(load_document(ctx, cfg.openapi))
    except Exception as exc:  # noqa: BLE001 - an unreadable document is this check's error, with the reason
        out.error = f"OpenAPI document {cfg.openapi}: {type(exc).__name__}: {exc}"
        return out
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            continue
        op = result.ok()
        method = op.method.upper()
        if not _chosen(f"{method} {op.path}", method, op.path, cfg.operations):
            continue
        if method not in SAFE_METHODS and not cfg.allow_writes:
            out.left_out.append(f"{method} {op.path}")
            continue
        operations.append(op)
    out.operations = [f"{op.method.upper()} {op.path}" for op in operations]
    if not operations:
        listed = ", ".join(cfg.operations) or "any"
        out.error = f"no operation of the document matches {listed} (safe methods only unless allow_writes)"
        return out
    base = ctx.base_url.rstrip("/")
    authenticated = ctx.wants_auth(cfg.principal, cfg.auth)
    headers = ctx.auth_headers(cfg.principal) if authenticated else {}
    deadline = time.monotonic() + cfg.time_budget_s
    timeout = ctx.params.target.timeout_s
    seen: set[tuple[str, str, int | None]] = set()

    def record(kind: str, case: Any, status: int | None, ms: float, detail: str) -> None:
        out.counts[kind] = out.counts.get(kind, 0) + 1
        key = (kind, case.operation.label, status)
        if key in seen or sum(f.kind == kind for f in out.findings) >= KEEP:
            return
        seen.add(key)
        curl = case.as_curl_command(headers=headers, base_url=base)
        out.findings.append(Finding(kind, f"{case.method.upper()} {case.path}", status, round(ms, 1),
                                    ctx.secrets.scrub(detail[:600]), ctx.secrets.scrub(curl)))

    def send(case: Any) -> None:
        if time.monotonic() > deadline:
            out.stopped = f"time budget of {cfg.time_budget_s:g} s reached"
            return
        try:
            res = case.call(base_url=base, headers=dict(headers), timeout=timeout, allow_redirects=False)
        except Exception as exc:  # noqa: BLE001 - no answer: counted, never a verdict
            out.sent += 1
            if len(out.network_errors) < KEEP:
                out.network_errors.append(ctx.secrets.scrub(f"{case.operation.label}: {type(exc).__name__}: "
                                                            f"{str(exc)[:200]}"))
            return
        out.sent += 1
        status, ms = res.status_code, res.elapsed * 1000
        if 300 <= status < 400 or (authenticated and status in (401, 403)):
            out.unauthenticated += status in (401, 403)
            return
        out.answered += 1
        out.slowest_ms = max(out.slowest_ms, ms)
        if status >= 500:
            record("server_errors", case, status, ms, f"HTTP {status}: {res.text[:300]}")
        try:
            case.validate_response(res, checks=[response_schema_conformance], headers=dict(headers))
        except FailureGroup as group:
            detail = "; ".join(f"{f.title}: {f.message}" for f in group.exceptions)
            record("schema", case, status, ms, f"HTTP {status}: {detail}")
        except AssertionError as exc:
            record("schema", case, status, ms, f"HTTP {status}: {exc}")
        if ms > cfg.max_response_ms:
            record("latency", case, status, ms, f"HTTP {status} after {ms:.0f} ms")

    per_mode = max(1, cfg.max_examples // len(cfg.modes))
    # Hypothesis keeps a cache in ./.hypothesis: in a scratch folder, never in the operator's project
    scratch = tempfile.TemporaryDirectory(prefix="rehearsal-hypothesis-")
    set_hypothesis_home_dir(scratch.name)
    try:
        _generate(ctx, cfg, operations, per_mode, deadline, send, out)
    finally:
        set_hypothesis_home_dir(None)
        scratch.cleanup()
    return out


def _generate(ctx: PhaseRun[SecurityParams], cfg: FuzzParams, operations: list[Any], per_mode: int, deadline: float,
              send: Any, out: FuzzRun) -> None:
    """Each operation, each mode: at most `per_mode` generated requests, while the time budget lasts."""
    import hypothesis
    import hypothesis.errors
    import schemathesis

    with ctx.progress("fuzz", total_s=cfg.time_budget_s,
                      sample=lambda: f"{out.sent} sent, {sum(out.counts.values())} findings"):
        for op in operations:
            for mode in cfg.modes:
                if time.monotonic() > deadline:
                    break
                strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

                @hypothesis.settings(max_examples=per_mode, deadline=None, database=None, derandomize=True,
                                     phases=[hypothesis.Phase.generate], print_blob=False,
                                     suppress_health_check=list(hypothesis.HealthCheck))
                @hypothesis.given(case=strategy)
                def one(case: Any) -> None:
                    send(case)

                try:
                    one()
                except hypothesis.errors.Unsatisfiable:  # e.g. negative mode on an operation with nothing to negate
                    out.not_generated.append(f"{op.method.upper()} {op.path} ({mode}): no {mode} input can be "
                                             "generated from its schema")


def _outcome(ctx: PhaseRun[SecurityParams], cfg: FuzzParams, memo: dict[str, FuzzRun], kind: str) -> Outcome:
    expected = KINDS[kind].format(ms=cfg.max_response_ms)
    if "run" not in memo:
        memo["run"] = fuzz(ctx, cfg)
    run = memo["run"]
    who = ctx.principal_name(cfg.principal, cfg.auth)
    ev: dict[str, Any] = {"openapi": cfg.openapi, "as": who, "operations": run.operations,
                          "requests sent": run.sent, "answered by a handler": run.answered,
                          "answered 401/403 (not exercised)": run.unauthenticated,
                          "max_examples per operation": cfg.max_examples, "time_budget_s": cfg.time_budget_s}
    if run.left_out:
        ev["not fuzzed (writes; allow_writes is false)"] = run.left_out
    if run.stopped:
        ev["stopped"] = run.stopped
    if run.not_generated:
        ev["not generated"] = run.not_generated
    if run.network_errors:
        ev["no answer"] = run.network_errors
    if run.error:
        return Outcome("error", run.error, expected, ev)
    if run.answered == 0:
        why = []
        if run.unauthenticated:
            why.append(f"{run.unauthenticated} answered 401/403 with {who}'s credentials")
        if run.network_errors:
            why.append(f"{len(run.network_errors)} got no answer")
        return Outcome("error", "no generated request reached a handler, the behaviour under test was not "
                                f"exercised ({'; '.join(why) or 'redirects only'})", expected, ev)
    found = [f for f in run.findings if f.kind == kind]
    metrics: dict[str, float | int | None] = {"requests": run.sent, "findings": run.counts.get(kind, 0)}
    if kind == "latency":
        metrics["slowest_ms"] = round(run.slowest_ms, 1)
    scope = f"{plural(run.sent, 'generated request')} to {plural(len(run.operations), 'operation')}"
    if found:
        ev["findings"] = [{"operation": f.operation, "status": f.status, "elapsed_ms": f.elapsed_ms,
                           "detail": f.detail, "reproduce": f.curl} for f in found]
        first = found[0]
        return Outcome("fail", f"{plural(run.counts[kind], 'finding')} in {scope}; first: {first.operation} → "
                               f"{first.detail[:160]}", expected, ev, metrics)
    slowest = f", slowest {run.slowest_ms:.0f} ms" if kind == "latency" else ""
    refused = f"; {run.unauthenticated} answered 401/403 with {who}'s credentials, not exercised" \
        if run.unauthenticated else ""
    return Outcome("pass", f"none in {scope} ({run.answered} answered by a handler{slowest}{refused})", expected, ev,
                   metrics)


def check_fuzz(ctx: PhaseRun[SecurityParams]) -> list[Check]:
    """`security.fuzz.server_errors`, `.schema`, `.latency` from one bounded Schemathesis session."""
    cfg = ctx.settings.fuzz
    if cfg is None:
        ctx.note("Schema-driven hostile inputs not configured (phases.security.fuzz): no generated requests.")
        return []
    memo: dict[str, FuzzRun] = {}
    writes = cfg.allow_writes  # unsafe operations write: the one write-safety rule decides
    titles = {"server_errors": "Generated requests never get a 5xx",
              "schema": "Answers to generated requests match their declared schema",
              "latency": f"Answers to generated requests within {cfg.max_response_ms:g} ms"}
    return [ctx.run(f"security.fuzz.{kind}", titles[kind], partial(_outcome, ctx, cfg, memo, kind),
                    severity=cfg.severity, expected=KINDS[kind].format(ms=cfg.max_response_ms), writes=writes)
            for kind in KINDS]
