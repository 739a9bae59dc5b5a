"""Database migrations: the pending plan, apply with per-migration timing, none pending afterwards,
post-conditions of the schema (SQLAlchemy inspector and PostgreSQL catalogs), a down/up round trip
on a scratch database.

Three drivers: a directory of ``NNN_name.sql`` files tracked in a table (``sql_dir``), alembic, and
any command whose output lists the pending migrations (``command``). Reading the plan is read-only;
apply and the round trip write (``ctx.writes_refusal()``), through ``apply_database_url``.
"""

from __future__ import annotations

import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rehearsal_lib.checks.wording import ms, plural
from rehearsal_lib.phase import Outcome, PhaseRun, describe_exception
from rehearsal_lib.probes import command
from rehearsal_lib.probes.sql import query
from rehearsal_lib.results import Check


@dataclass
class Pending:
    """One migration that is not applied yet."""

    id: str
    name: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ drivers


class SqlDir:
    """``NNN_name.sql`` files; applied versions in a tracking table (the seed's migrations style)."""

    supports_apply = True

    def __init__(self, ctx: PhaseRun):
        cfg = ctx.settings.sql_dir
        self.ctx, self.cfg = ctx, cfg
        self.directory = Path(ctx._resolve(cfg.directory, secret=False) or "")
        down = ctx._resolve(cfg.down_directory, secret=False) if cfg.down_directory else None
        self.down_directory = Path(down) if down else None

    def files(self) -> list[tuple[str, str, Path]]:
        if not self.directory.is_dir():
            raise RuntimeError(f"migrations directory {self.directory} does not exist")
        out = []
        for path in sorted(self.directory.glob("*.sql")):
            version, _, name = path.stem.partition("_")
            if version.isdigit() and name:
                out.append((version, name, path))
        return out

    def applied(self) -> dict[str, str | None]:
        """Applied versions with their recorded checksum (None when the table keeps none)."""
        table = self.cfg.table
        _, rows = query(self.ctx.engine, "SELECT to_regclass(:t) IS NOT NULL", {"t": table})
        if not rows[0][0]:
            return {}
        schema, tname = _split(table)
        cols = {c["name"] for c in sa.inspect(self.ctx.engine).get_columns(tname, schema=schema)}
        checksum = "checksum::text" if "checksum" in cols else "NULL"
        _, rows = query(self.ctx.engine, f"SELECT {_ident(self.cfg.version_column)}::text, {checksum} "
                                         f"FROM {_ident(table)}")
        return {r[0]: r[1] for r in rows}

    def plan(self) -> list[Pending]:
        import hashlib

        done = self.applied()
        self.changed = [f"{v}_{n}" for v, n, p in self.files()
                        if done.get(v) and done[v] != hashlib.sha256(p.read_bytes()).hexdigest()]
        return [Pending(v, n, {"file": p.name}) for v, n, p in self.files() if v not in done]

    def apply_one(self, engine: sa.Engine, item: Pending) -> None:
        import hashlib

        path = self.directory / item.detail["file"]
        schema, table = _split(self.cfg.table)
        with engine.begin() as conn:
            t0 = time.perf_counter()
            _exec_script(conn, path.read_text(encoding="utf-8"))
            ms = (time.perf_counter() - t0) * 1000
            insp = sa.inspect(conn)
            if not insp.has_table(table, schema=schema):
                raise RuntimeError(f"tracking table {self.cfg.table} does not exist after {path.name}")
            cols = {c["name"] for c in insp.get_columns(table, schema=schema)}
            values = {self.cfg.version_column: item.id, "name": item.name,
                      "checksum": hashlib.sha256(path.read_bytes()).hexdigest(), "duration_ms": ms}
            values = {k: v for k, v in values.items() if k in cols}
            conn.execute(sa.text(f"INSERT INTO {_ident(self.cfg.table)} ({', '.join(_ident(k) for k in values)}) "
                                 f"VALUES ({', '.join(':' + k for k in values)})"), values)

    def roundtrip(self, scratch: sa.Engine) -> Outcome:
        """Up all on an empty scratch database, then down/up the tail that has down scripts."""
        files = self.files()
        downs = {p.stem.partition("_")[0]: p for p in self.down_directory.glob("*.sql")} \
            if self.down_directory and self.down_directory.is_dir() else {}
        tail: list[tuple[str, str, Path]] = []
        for item in reversed(files):
            if item[0] not in downs:
                break
            tail.insert(0, item)
        expected = "down then up of the last migrations restores the same schema"
        if not tail:
            return Outcome("skip", "no down scripts: the round trip is not supported", expected)

        def run_sql(path: Path) -> None:
            with scratch.begin() as conn:
                _exec_script(conn, path.read_text(encoding="utf-8"))

        for _, _, p in files[: len(files) - len(tail)]:
            run_sql(p)
        before = schema_snapshot(scratch)
        for _, _, p in tail:
            run_sql(p)
        after_up = schema_snapshot(scratch)
        for v, _, _ in reversed(tail):
            run_sql(downs[v])
        after_down = schema_snapshot(scratch)
        for _, _, p in tail:
            run_sql(p)
        after_up2 = schema_snapshot(scratch)
        versions = [v for v, _, _ in tail]
        evidence = {"round_trip": versions, "down_restores_previous": after_down == before,
                    "up_again_identical": after_up2 == after_up,
                    "difference": _diff(after_up, after_up2) or _diff(before, after_down)}
        if after_down != before or after_up2 != after_up:
            return Outcome("fail", f"schema differs after down/up of {', '.join(versions)}", expected, evidence)
        return Outcome("pass", f"down/up of {', '.join(versions)} gives the same schema", expected, evidence,
                       {"migrations": len(versions)})


class Alembic:
    """An alembic project: the plan from the script directory and the database's current heads."""

    supports_apply = True

    def __init__(self, ctx: PhaseRun):
        from alembic.config import Config

        cfg = ctx.settings.alembic
        self.ctx = ctx
        self.ini = Path(ctx._resolve(cfg.config, secret=False) or "")
        if not self.ini.is_file():
            raise RuntimeError(f"alembic config {self.ini} does not exist")
        self.section = cfg.section

        def config(url: str | None = None) -> Config:
            c = Config(str(self.ini), ini_section=self.section)
            if url:
                c.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
            return c

        self.config = config

    def _script(self) -> Any:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config())

    def plan(self) -> list[Pending]:
        from alembic.runtime.migration import MigrationContext

        script = self._script()
        with self.ctx.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
        revs = list(script.iterate_revisions("heads", current or "base"))
        return [Pending(r.revision, (r.doc or "").strip(), {"down_revision": str(r.down_revision)})
                for r in reversed(revs)]

    def apply_one(self, engine: sa.Engine, item: Pending) -> None:
        from alembic import command as alembic_command

        alembic_command.upgrade(self.config(engine.url.render_as_string(hide_password=False)), item.id)

    def roundtrip(self, scratch: sa.Engine) -> Outcome:
        from alembic import command as alembic_command

        cfg = self.config(scratch.url.render_as_string(hide_password=False))
        expected = "downgrade -1 then upgrade head restores the same schema"
        alembic_command.upgrade(cfg, "heads")
        head = schema_snapshot(scratch)
        alembic_command.downgrade(cfg, "-1")
        down = schema_snapshot(scratch)
        alembic_command.upgrade(cfg, "heads")
        again = schema_snapshot(scratch)
        evidence = {"down_changed_schema": down != head, "difference": _diff(head, again)}
        if again != head:
            return Outcome("fail", "schema differs after downgrade -1 / upgrade head", expected, evidence)
        return Outcome("pass", "downgrade -1 / upgrade head gives the same schema", expected, evidence)


class Command:
    """Any tool: a plan command whose output lines name the pending migrations."""

    def __init__(self, ctx: PhaseRun):
        self.ctx, self.cfg = ctx, ctx.settings.command
        self.supports_apply = bool(self.cfg.apply_command)
        self.outputs: list[dict[str, Any]] = []

    def plan(self) -> list[Pending]:
        res = command.run(self.cfg.plan_command, self.cfg.timeout_s)
        self.outputs.append(res.evidence())
        if not res.ok:
            raise RuntimeError(f"plan command failed: {res.describe()}: {res.output.strip()[-300:]}")
        rx = re.compile(self.cfg.pending_regex)
        return [Pending(line.strip()) for line in res.output.splitlines() if line.strip() and rx.search(line)]

    def apply_all(self) -> command.CommandResult:
        return command.run(self.cfg.apply_command or "", self.cfg.timeout_s)

    def roundtrip(self, scratch: sa.Engine | None) -> Outcome:
        expected = "the round-trip command exits 0"
        if not self.cfg.roundtrip_command:
            return Outcome("skip", "no roundtrip_command configured", expected)
        res = command.run(self.cfg.roundtrip_command, self.cfg.timeout_s)
        return Outcome("pass" if res.ok else ("error" if res.error else "fail"), res.describe(), expected,
                       res.evidence())


DRIVERS = {"sql_dir": SqlDir, "alembic": Alembic, "command": Command}


# ------------------------------------------------------------------------------------------ helpers


def _exec_script(conn: sa.Connection, script: str) -> None:
    """Run a multi-statement SQL script as is (no parameter parsing) inside the connection's transaction."""
    with conn.connection.dbapi_connection.cursor() as cur:
        cur.execute(script.encode())


def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def _ident(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def schema_snapshot(engine: sa.Engine, schema: str = "public") -> dict[str, Any]:
    """Tables with columns, indexes, foreign keys and checks, plus functions: comparable between states."""
    insp = sa.inspect(engine)
    tables: dict[str, Any] = {}
    for t in sorted(insp.get_table_names(schema=schema)):
        tables[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t, schema=schema)],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(t, schema=schema)),
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"])
                                   for f in insp.get_foreign_keys(t, schema=schema)),
            "checks": sorted(c["name"] or "" for c in insp.get_check_constraints(t, schema=schema)),
        }
    with engine.connect() as conn:
        funcs = sorted(r[0] for r in conn.execute(sa.text(
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"), {"s": schema}))
        views = sorted(insp.get_view_names(schema=schema))
    return {"tables": tables, "functions": funcs, "views": views}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for t in sorted(set(a["tables"]) | set(b["tables"])):
        if a["tables"].get(t) != b["tables"].get(t):
            out.append(f"table {t}")
    for key in ("functions", "views"):
        for name in sorted(set(a[key]) ^ set(b[key])):
            out.append(f"{key[:-1]} {name}")
    return out[:20]


@contextmanager
def scratch_database(admin_url: str, prefix: str = "rehearsal_scratch"):
    """A temporary empty database on the same server, dropped afterwards (needs CREATEDB)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine = sa.create_engine(command.with_database(admin_url, name), poolclass=sa.pool.NullPool)
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# ------------------------------------------------------------------------------------------ checks


class MigrationsRun:
    """The phase's state across its check families: the driver, the plan, whether apply stopped."""

    def __init__(self, ctx: PhaseRun):
        self.ctx = ctx
        self.driver: Any = None
        self.driver_error: str | None = None
        try:
            self.driver = DRIVERS[ctx.settings.driver](ctx)
        except Exception as exc:  # noqa: BLE001 - a broken driver config is evidence
            self.driver_error = describe_exception(exc)
        self.pending: list[Pending] | None = None
        self.applied = False
        self.stopped: str | None = None

    def _apply_url(self) -> str:
        url = self.ctx._resolve(self.ctx.settings.apply_database_url)
        if not url:
            raise RuntimeError("phases.migrations.apply_database_url is not configured")
        return url

    def plan(self) -> Check:
        expected_ids = set(self.ctx.settings.expected_pending)
        expected = ("pending migrations are only the release's: " + ", ".join(sorted(expected_ids))) \
            if expected_ids else "no pending migrations"

        def probe() -> Outcome:
            if self.driver is None:
                return Outcome("error", f"driver {self.ctx.settings.driver}: {self.driver_error}", expected)
            self.pending = self.driver.plan()
            rows = [{"migration": p.id, "name": p.name, "announced by the release": "yes" if p.id in expected_ids
                     else "no"} for p in self.pending]
            unexpected = [p.id for p in self.pending if p.id not in expected_ids]
            changed = getattr(self.driver, "changed", [])
            evidence: dict[str, Any] = {"pending": rows, "changed since applied": ", ".join(changed) or "none"}
            if isinstance(self.driver, Command):
                evidence["plan_output"] = self.driver.outputs[-1]
            metrics = {"pending": len(self.pending), "unexpected": len(unexpected)}
            if changed:
                return Outcome("fail", f"applied migration(s) changed since: {', '.join(changed)}", expected,
                               evidence, metrics)
            if unexpected:
                return Outcome("fail", f"{plural(len(unexpected), 'unexpected pending migration')}: "
                                       f"{', '.join(unexpected)}",
                               expected, evidence, metrics)
            return Outcome("pass", f"{len(self.pending)} pending" + (
                f": {', '.join(p.id for p in self.pending)}" if self.pending else ""), expected, evidence, metrics)

        check = self.ctx.run("migrations.plan.pending", "Pending migrations (the plan)", probe, severity="blocker",
                             expected=expected)
        if self.pending:
            _table(self.ctx, "Plan", ["migration", "name"], [[p.id, p.name] for p in self.pending])
        return check

    def apply(self) -> Check:
        expected = "every pending migration applies"
        s = self.ctx.settings

        def probe() -> Outcome:
            if self.pending is None:
                return Outcome("skip", "not tried: the plan could not be read", expected)
            if not self.pending:
                return Outcome("pass", "nothing to apply", expected, metrics={"applied": 0})
            if not s.apply:
                return Outcome("skip", "apply is off (phases.migrations.apply: false)", expected)
            refusal = self.ctx.writes_refusal()
            if refusal:
                return Outcome("skip", refusal, expected)
            if not self.driver.supports_apply:
                return Outcome("skip", "the driver has no apply_command", expected)
            if isinstance(self.driver, Command):
                res = self.driver.apply_all()
                self.applied = res.ok
                if not res.ok:
                    self.stopped = f"apply command failed: {res.describe()}"
                    return Outcome("fail", self.stopped, expected, res.evidence())
                return Outcome("pass", f"{len(self.pending)} applied in {res.duration_s:.1f} s", expected,
                               res.evidence(), {"applied": len(self.pending), "duration_s": round(res.duration_s, 3)})
            engine = sa.create_engine(self._apply_url(), poolclass=sa.pool.NullPool)
            rows: list[dict[str, Any]] = []
            try:
                for item in self.pending:
                    if self.stopped:
                        rows.append({"migration": item.id, "name": item.name, "status": "not tried",
                                     "duration_ms": None})
                        continue
                    t0 = time.perf_counter()
                    try:
                        self.driver.apply_one(engine, item)
                        rows.append({"migration": item.id, "name": item.name, "status": "applied",
                                     "duration_ms": round((time.perf_counter() - t0) * 1000, 2)})
                    except Exception as exc:  # noqa: BLE001 - the migration's error is the evidence
                        self.stopped = f"migration {item.id} failed: {describe_exception(exc)}"
                        rows.append({"migration": item.id, "name": item.name, "status": "failed",
                                     "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
                                     "error": describe_exception(exc)})
            finally:
                engine.dispose()
            self.applied = True
            _table(self.ctx, "Apply", ["migration", "name", "status", "duration"],
                   [[r["migration"], r["name"], r["status"], ms(r["duration_ms"]) if r["duration_ms"] is not None
                     else "—"] for r in rows])
            _durations_chart(self.ctx, rows)
            done = [r for r in rows if r["status"] == "applied"]
            total = sum(r["duration_ms"] or 0 for r in rows)
            metrics = {"applied": len(done), "total_ms": round(total, 2)}
            if self.stopped:
                return Outcome("fail", self.stopped + "; the database is as the migration left it", expected,
                               {"migrations": rows}, metrics)
            return Outcome("pass", f"{len(done)} applied in {ms(total)}", expected, {"migrations": rows}, metrics)

        return self.ctx.run("migrations.apply", "Apply pending migrations", probe, severity="blocker",
                            expected=expected)

    def none_pending(self) -> Check:
        expected = "no pending migrations after apply"

        def probe() -> Outcome:
            if self.stopped:
                return Outcome("skip", f"not tried: {self.stopped}", expected)
            if self.pending is None:
                return Outcome("skip", "not tried: the plan could not be read", expected)
            if self.pending and not self.applied:
                return Outcome("skip", "apply did not run", expected)
            left = self.driver.plan()
            evidence = {"pending": [p.id for p in left]}
            if left:
                return Outcome("fail", f"{len(left)} still pending: {', '.join(p.id for p in left)}", expected,
                               evidence, {"pending": len(left)})
            return Outcome("pass", "none pending", expected, evidence, {"pending": 0})

        return self.ctx.run("migrations.none_pending", "Nothing pending afterwards", probe, severity="blocker",
                            expected=expected)

    def roundtrip(self) -> Check | None:
        s = self.ctx.settings
        expected = "down/up round trip on a scratch database restores the same schema"
        if not s.roundtrip:
            self.ctx.note("Round trip off (phases.migrations.roundtrip: false).")
            return None

        def probe() -> Outcome:
            if self.driver is None:
                return Outcome("error", f"driver: {self.driver_error}", expected)
            if self.stopped:
                return Outcome("skip", f"not tried: {self.stopped}", expected)
            refusal = self.ctx.writes_refusal()
            if refusal:
                return Outcome("skip", refusal, expected)
            if isinstance(self.driver, Command):
                return self.driver.roundtrip(None)
            with scratch_database(self._apply_url()) as scratch:
                return self.driver.roundtrip(scratch)

        return self.ctx.run("migrations.roundtrip", "Down/up round trip on a scratch database", probe,
                            severity="major", expected=expected)


def _table(ctx: PhaseRun, title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A plain table under the notebook's own heading (no caption: the heading already names it)."""
    import html

    from rehearsal_lib.phase import _display

    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    _display({"text/html": f"<table><tr>{head}</tr>{body}</table>",
              "text/plain": f"{title}: " + "; ".join(", ".join(f"{c} {v}" for c, v in zip(columns, r, strict=True))
                                                      for r in rows)})


def _durations_chart(ctx: PhaseRun, rows: list[dict[str, Any]]) -> None:
    """Durations per migration, worth a chart only from two migrations on (one is in the table)."""
    done = [r for r in rows if r["duration_ms"] is not None]
    if len(done) < 2:
        return
    import plotly.graph_objects as go

    colors = ["#2da44e" if r["status"] == "applied" else "#cf222e" for r in done]
    fig = go.Figure(go.Bar(x=[f"{r['migration']} {r['name']}" for r in done], y=[r["duration_ms"] for r in done],
                           marker_color=colors, text=[ms(r["duration_ms"]) for r in done], textposition="outside",
                           cliponaxis=False))
    fig.update_layout(title="Migration durations (red: failed)", yaxis_title="ms", height=320,
                      margin=dict(l=50, r=20, t=50, b=80))
    ctx.figure(fig)


# ------------------------------------------------------------------------------------ post-conditions


def check_postconditions(ctx: PhaseRun) -> list[Check]:
    """One check per declared family: tables, columns (and types), indexes, foreign keys, checks,
    functions, RLS enabled with its policies."""
    pc = ctx.settings.postconditions
    out: list[Check] = []

    def family(name: str, title: str, items: list[Any], probe_item, noun: tuple[str, str]) -> None:
        if not items:
            return
        expected = f"{plural(len(items), *noun)} as declared"

        def probe() -> Outcome:
            rows = [probe_item(it) for it in items]
            bad = [r for r in rows if not r["ok"]]
            evidence = {"columns": ["declared", "as declared", "detail"],
                        "sample": [[r["item"], "yes" if r["ok"] else "no", _detail(r)] for r in rows]}
            if bad:
                return Outcome("fail", "; ".join(r["problem"] for r in bad)[:400], expected, evidence,
                               {"missing": len(bad)})
            seen = "as declared" if len(items) == 1 else f"all {len(items)} as declared"
            return Outcome("pass", seen, expected, evidence, {"checked": len(items)})

        out.append(ctx.run(f"migrations.post.{name}", title, probe, severity="blocker", expected=expected))

    def _detail(r: dict[str, Any]) -> str:
        if not r["ok"]:
            return r["problem"]
        if "types" in r:
            return ", ".join(f"{c} {t}" for c, t in r["types"].items())
        if "policies" in r:
            return f"row-level security {r['row-level security']}, {plural(r['policies'], 'policy', 'policies')}"
        return ""

    def insp() -> Any:
        return sa.inspect(ctx.engine)

    def has_table(name: str) -> bool:
        schema, table = _split(name)
        return insp().has_table(table, schema=schema)

    def table_item(name: str) -> dict[str, Any]:
        ok = has_table(name)
        return {"item": name, "ok": ok, "problem": f"table {name} missing"}

    def columns_item(entry: tuple[str, list[Any]]) -> dict[str, Any]:
        table, cols = entry
        schema, tname = _split(table)
        if not has_table(table):
            return {"item": table, "ok": False, "problem": f"table {table} missing"}
        present = {c["name"] for c in insp().get_columns(tname, schema=schema)}
        _, rows = query(ctx.engine, "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                                    "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped",
                        {"t": f"{schema}.{tname}"})
        types = dict((r[0], r[1]) for r in rows)
        problems = []
        for c in cols:
            if c.name not in present:
                problems.append(f"{table}.{c.name} missing")
            elif c.type and types.get(c.name, "").lower() != c.type.lower():
                problems.append(f"{table}.{c.name} is {types.get(c.name)}, not {c.type}")
        return {"item": table, "ok": not problems, "problem": "; ".join(problems),
                "types": {c.name: types.get(c.name) for c in cols}}

    def index_item(spec: Any) -> dict[str, Any]:
        schema, tname = _split(spec.table)
        names = {i["name"] for i in insp().get_indexes(tname, schema=schema)} if has_table(spec.table) else set()
        pk = insp().get_pk_constraint(tname, schema=schema).get("name") if has_table(spec.table) else None
        ok = spec.name in names or spec.name == pk
        return {"item": f"{spec.table}.{spec.name}", "ok": ok, "problem": f"index {spec.name} on {spec.table} missing"}

    def fk_item(spec: Any) -> dict[str, Any]:
        schema, tname = _split(spec.table)
        fks = insp().get_foreign_keys(tname, schema=schema) if has_table(spec.table) else []
        ok = any(f["constrained_columns"] == spec.columns and f["referred_table"] == _split(spec.references)[1]
                 for f in fks)
        label = f"{spec.table}({', '.join(spec.columns)}) -> {spec.references}"
        return {"item": label, "ok": ok, "problem": f"foreign key {label} missing"}

    def check_item(spec: Any) -> dict[str, Any]:
        schema, tname = _split(spec.table)
        names = {c["name"] for c in insp().get_check_constraints(tname, schema=schema)} \
            if has_table(spec.table) else set()
        return {"item": f"{spec.table}.{spec.name}", "ok": spec.name in names,
                "problem": f"check constraint {spec.name} on {spec.table} missing"}

    def function_item(name: str) -> dict[str, Any]:
        schema, fname = _split(name)
        _, rows = query(ctx.engine, "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                                    "WHERE n.nspname = :s AND p.proname = :f", {"s": schema, "f": fname})
        return {"item": name, "ok": rows[0][0] > 0, "problem": f"function {name} missing"}

    def rls_item(spec: Any) -> dict[str, Any]:
        schema, tname = _split(spec.table)
        _, rows = query(ctx.engine, "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policies p WHERE "
                                    "p.schemaname = :s AND p.tablename = :t) FROM pg_class c WHERE c.oid = "
                                    "to_regclass(:q)", {"s": schema, "t": tname, "q": f"{schema}.{tname}"})
        if not rows:
            return {"item": spec.table, "ok": False, "problem": f"table {spec.table} missing"}
        enabled, policies = bool(rows[0][0]), int(rows[0][1])
        problems = []
        if enabled != spec.enabled:
            problems.append(f"row-level security {'off' if not enabled else 'on'} on {spec.table} "
                            f"(declared {'on' if spec.enabled else 'off'})")
        if policies < spec.min_policies:
            problems.append(f"{plural(policies, 'policy', 'policies')} on {spec.table}, expected at least "
                            f"{spec.min_policies}")
        return {"item": spec.table, "ok": not problems, "problem": "; ".join(problems),
                "row-level security": "on" if enabled else "off", "policies": policies}

    family("tables", "Tables exist", pc.tables, table_item, ("table", "tables"))
    family("columns", "Columns and types", list(pc.columns.items()), columns_item,
           ("table with its columns", "tables with their columns"))
    family("indexes", "Indexes exist", pc.indexes, index_item, ("index", "indexes"))
    family("foreign_keys", "Foreign keys exist", pc.foreign_keys, fk_item, ("foreign key", "foreign keys"))
    family("check_constraints", "Check constraints exist", pc.check_constraints, check_item,
           ("check constraint", "check constraints"))
    family("functions", "Functions exist", pc.functions, function_item, ("function", "functions"))
    family("rls", "Row-level security enabled with policies", pc.rls, rls_item,
           ("table's row-level security and policies", "tables' row-level security and policies"))
    if not out:
        ctx.note("No post-conditions declared (phases.migrations.postconditions).")
    return out


def check_postconditions_after(run: MigrationsRun) -> list[Check]:
    """Post-conditions, unless a failed migration stopped the phase (then skipped, with the reason)."""
    if run.stopped:
        return [run.ctx.run("migrations.post.not_checked", "Post-conditions", lambda: Outcome(
            "skip", f"not tried: {run.stopped}", "post-conditions hold"), severity="blocker")]
    return check_postconditions(run.ctx)
