"""Data integrity: zero-row SQL checks, critical tables with row counts, expected indexes."""

from __future__ import annotations

import re
from typing import Any

from rehearsal_lib.checks.wording import not_configured
from rehearsal_lib.params_base import RehearsalMarker, ZeroRowCheck
from rehearsal_lib.phase import RUN_ID_RE, Outcome, PhaseRun, describe_exception
from rehearsal_lib.phases.integrity.params import IntegrityParams
from rehearsal_lib.probes.sql import count_and_sample, query, scalar, strip_statement
from rehearsal_lib.results import Check, StatusName


def check_zero_rows(ctx: PhaseRun[Any], spec: ZeroRowCheck, id_prefix: str = "integrity.zero_rows",
                    sample: int | None = None) -> Check:
    """A query that names defects (orphans, duplicates, mismatches) must return no rows."""
    keep = ctx.settings.evidence_rows if sample is None else sample

    def probe() -> Outcome:
        n, cols, rows = count_and_sample(ctx.engine, spec.sql, keep)
        evidence = {"query": strip_statement(spec.sql), "rows_found": n, "columns": cols, "sample": rows}
        observed = f"{n} row(s)"
        if n and spec.rehearsal_rows is not None:
            marked = rehearsal_rows(ctx, spec.sql, spec.rehearsal_rows, cols, rows)
            evidence["rehearsal_rows"] = marked
            if marked.get("rows"):
                observed += f", {marked['rows']} created by rehearsal runs"
        return Outcome("pass" if n == 0 else "fail", observed, "0 rows", evidence, {"rows": n})

    return ctx.run(f"{id_prefix}.{spec.name}", spec.title, probe, severity=spec.severity, expected="0 rows")


def rehearsal_rows(ctx: PhaseRun[IntegrityParams], sql: str, marker: RehearsalMarker, cols: list[str],
                   sample: list[list[Any]]) -> dict[str, Any]:
    """Which of a zero-row query's rows rehearsal runs created (`marker.column` LIKE `marker.pattern`):
    how many, their run ids, and a flag per sample row. Evidence only: the rows still count."""
    ident = '"' + marker.column.replace('"', '""') + '"'
    inner = strip_statement(sql)
    out: dict[str, Any] = {"column": marker.column, "pattern": marker.pattern}
    try:
        n = scalar(ctx.engine, f"SELECT count(*) FROM ({inner}) AS rehearsal_q WHERE {ident}::text LIKE :p",
                   {"p": marker.pattern})
        _, values = query(ctx.engine, f"SELECT DISTINCT {ident}::text FROM ({inner}) AS rehearsal_q "
                                      f"WHERE {ident}::text LIKE :p LIMIT 200", {"p": marker.pattern})
    except Exception as exc:  # noqa: BLE001 - the marking is evidence; the check's own count stands
        out["error"] = describe_exception(exc)
        return out
    run_ids = sorted({m.group(0) for (v,) in values for m in [RUN_ID_RE.search(str(v))] if m})
    out.update(rows=int(n or 0), run_ids=run_ids[:20])
    if marker.column in cols:
        at = cols.index(marker.column)
        like = re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in marker.pattern),
                          re.S)
        out["sample_created_by_rehearsal"] = [bool(like.fullmatch(str(r[at]))) for r in sample]
    if out["rows"]:
        ids = f" (run ids {', '.join(run_ids[:5])}{', …' if len(run_ids) > 5 else ''})" if run_ids else ""
        out["note"] = f"{out['rows']} of these rows were created by rehearsal runs{ids}"
    return out


def check_all_zero_rows(ctx: PhaseRun[IntegrityParams]) -> list[Check]:
    if not ctx.settings.zero_row_checks:
        ctx.note(not_configured("phases.integrity.zero_row_checks", "that SQL queries for orphans, duplicates "
                                                                    "and mismatches return no rows"))
    return [check_zero_rows(ctx, spec) for spec in ctx.settings.zero_row_checks]


def check_critical_tables(ctx: PhaseRun[IntegrityParams]) -> list[Check]:
    """Each critical table exists and holds at least its minimum number of rows; chart of counts."""
    counts: dict[str, int] = {}
    out = []
    if not ctx.settings.critical_tables:
        ctx.note(not_configured("phases.integrity.critical_tables", "that critical tables exist with enough rows"))
    for table in ctx.settings.critical_tables:

        def probe(table=table) -> Outcome:
            _, rows = query(ctx.engine, "SELECT to_regclass(:name) IS NOT NULL", {"name": table.name})
            expected = f"exists with >= {table.min_rows} row(s)"
            if not rows[0][0]:
                return Outcome("fail", "table does not exist", expected, {"table": table.name})
            # the name is a verified relation (to_regclass above), quoted as an identifier
            ident = ".".join('"' + part.replace('"', '""') + '"' for part in table.name.split("."))
            _, rows = query(ctx.engine, f"SELECT count(*) FROM {ident}")
            n = int(rows[0][0])
            counts[table.name] = n
            status: StatusName = "pass" if n >= table.min_rows else "fail"
            return Outcome(status, f"{n} row(s)", expected, {"table": table.name, "rows": n}, {"rows": n})

        out.append(ctx.run(f"integrity.table.{table.name}", f"Critical table {table.name}", probe,
                           severity=table.severity, expected=f"exists with >= {table.min_rows} row(s)"))
    if counts:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=list(counts.values()),
                               textposition="auto"))
        fig.update_layout(title="Rows in critical tables", height=320, margin=dict(l=40, r=20, t=50, b=40))
        ctx.figure(fig)
    return out


def check_expected_indexes(ctx: PhaseRun[IntegrityParams]) -> list[Check]:
    """Each expected index exists on its table (from pg_indexes)."""
    out = []
    if not ctx.settings.expected_indexes:
        ctx.note(not_configured("phases.integrity.expected_indexes", "that the expected indexes exist"))
    for idx in ctx.settings.expected_indexes:
        schema, _, table = idx.table.rpartition(".")

        def probe(idx=idx, schema=schema or "public", table=table) -> Outcome:
            _, rows = query(ctx.engine,
                            "SELECT indexdef FROM pg_indexes WHERE indexname = :i AND tablename = :t "
                            "AND schemaname = :s", {"i": idx.name, "t": table, "s": schema})
            expected = f"index {idx.name} on {idx.table}"
            if not rows:
                _, others = query(ctx.engine, "SELECT indexname FROM pg_indexes WHERE tablename = :t "
                                              "AND schemaname = :s ORDER BY 1", {"t": table, "s": schema})
                return Outcome("fail", "index is missing", expected,
                               {"indexes_on_table": [r[0] for r in others]})
            return Outcome("pass", "present", expected, {"indexdef": rows[0][0]})

        out.append(ctx.run(f"integrity.index.{idx.name}", f"Index {idx.name} on {idx.table}", probe,
                           severity=idx.severity, expected=f"index {idx.name} on {idx.table}"))
    return out
