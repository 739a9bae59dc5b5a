"""Cleanup: a phase removes the records it created, at its end (`phases.<phase>.cleanup`).

Every record a rehearsal creates carries the run id (`PhaseRun.run_id`); the cleanup's SQL binds it
as `:run_id` and runs through the block's own write URL (never the read-only target engine), its
API calls get it as `{run_id}` (any other placeholder is an `error`). It writes, so production refuses it
(`skip` with the reason) unless the run allows destructive steps.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from rehearsal_lib.checks.wording import plural
from rehearsal_lib.params_base import Cleanup
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.probes.http import request
from rehearsal_lib.probes.placeholders import expand, expand_text
from rehearsal_lib.probes.sql import strip_statement, write_engine
from rehearsal_lib.results import Check


def check_cleanup(ctx: PhaseRun, created: int | None = None) -> Check | None:
    """Run this phase's `cleanup` block; `created` (records the phase knows it created) turns a cleanup
    that removed nothing into a `warn`: its statements probably do not match the run id."""
    spec: Cleanup | None = getattr(ctx.settings, "cleanup", None)
    if spec is None:
        ctx.note(f"{ctx.name}.cleanup is not configured: what this phase created stays on the target "
                 f"(marked with run id {ctx.run_id}).")
        return None
    run_id = ctx.run_id
    expected = f"the records of run {run_id} removed"

    def probe() -> Outcome:
        evidence: dict[str, Any] = {"run_id": run_id, "statements": [], "calls": []}
        removed = 0
        if spec.sql:
            engine = write_engine(ctx.resolve(spec.database_url) or "", ctx.params.safety.sql_statement_timeout_ms,
                                  ctx.params.target.timeout_s)
            try:
                with engine.begin() as conn:  # one transaction: all statements or none
                    for stmt in spec.sql:
                        n = max(conn.execute(sa.text(stmt), {"run_id": run_id}).rowcount, 0)
                        evidence["statements"].append({"sql": strip_statement(stmt), "rows_removed": n})
                        removed += n
            finally:
                engine.dispose()
        for call in spec.api:
            path = expand_text(call.path, {"run_id": run_id}, "path")
            res = request(ctx.http, call.method, path, headers=ctx.auth_headers() if call.auth else {},
                          json_body=expand(call.json_body, {"run_id": run_id}, "json"))
            evidence["calls"].append({"request": f"{call.method} {path}", "response": res.evidence()})
            if res.error:
                return Outcome("error", f"{call.method} {path}: {res.describe()}", expected, evidence)
            if res.status not in call.expect_status:
                return Outcome("fail", f"{call.method} {path} answered HTTP {res.status}: this run's records may "
                                       "remain", expected, evidence)
            if call.removed_field and isinstance(res.body, dict):
                removed += int(res.body.get(call.removed_field) or 0)
        evidence["rows_removed"] = removed
        if created and not removed:
            return Outcome("warn", f"removed nothing, though this phase created {plural(created, 'record')}: "
                                   "does the cleanup match the run id?", expected, evidence, {"removed": 0})
        return Outcome("pass", f"removed {plural(removed, 'record')} of run {run_id}", expected, evidence,
                       {"removed": removed})

    return ctx.run(f"{ctx.name}.cleanup", "Records this phase created are removed", probe, severity=spec.severity,
                   expected=expected, writes=True)
