"""Database migrations: the pending plan, apply with per-migration timing, none pending afterwards,
post-conditions of the schema (SQLAlchemy inspector and PostgreSQL catalogs), a down/up round trip
on a scratch database.

Three drivers: a directory of ``NNN_name.sql`` files tracked in a table (``sql_dir``), alembic, and
any command whose output lists the pending migrations (``command``); alembic runs from its ini's folder,
in the app's own interpreter when ``alembic.python`` is set (``alembic_helper.py``). Reading the plan is read-only;
apply and the round trip write (checks declared ``writes=True``), through ``apply_database_url``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from rehearsal_lib.checks.wording import ms, plural
from rehearsal_lib.phase import Outcome, PhaseRun, describe_exception
from rehearsal_lib.phases.migrations.params import MigrationsParams
from rehearsal_lib.probes import command
from rehearsal_lib.probes.sql import query, quote_ident, split_name
from rehearsal_lib.results import Check

HELPER = Path(__file__).with_name("alembic_helper.py")
HELPER_MARK = "REHEARSAL-ALEMBIC "


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

    def __init__(self, ctx: PhaseRun[MigrationsParams]):
        cfg = ctx.settings.sql_dir
        assert cfg is not None  # DRIVERS builds the driver of the block the params configure
        self.ctx, self.cfg = ctx, cfg
        self.directory = Path(ctx.resolve(cfg.directory, secret=False) or "")
        down = ctx.resolve(cfg.down_directory, secret=False) if cfg.down_directory else None
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
        schema, tname = split_name(table)
        cols = {c["name"] for c in sa.inspect(self.ctx.engine).get_columns(tname, schema=schema)}
        checksum = "checksum::text" if "checksum" in cols else "NULL"
        _, rows = query(self.ctx.engine, f"SELECT {quote_ident(self.cfg.version_column)}::text, {checksum} "
                                         f"FROM {quote_ident(table)}")
        return {r[0]: r[1] for r in rows}

    def plan(self) -> list[Pending]:
        import hashlib

        done = self.applied()
        self.changed = [f"{v}_{n}" for v, n, p in self.files()
                        if done.get(v) and done[v] != hashlib.sha256(p.read_bytes()).hexdigest()]
        return [Pending(v, n, {"file": p.name}) for v, n, p in self.files() if v not in done]

    def known(self, version: str) -> bool:
        return any(v == version for v, _, _ in self.files())

    def apply_one(self, engine: sa.Engine, item: Pending) -> None:
        import hashlib

        path = self.directory / item.detail["file"]
        schema, table = split_name(self.cfg.table)
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
            columns = ", ".join(quote_ident(k) for k in values)
            conn.execute(sa.text(f"INSERT INTO {quote_ident(self.cfg.table)} ({columns}) "
                                 f"VALUES ({', '.join(':' + k for k in values)})"), values)

    def recorded(self, engine: sa.Engine) -> set[str]:
        """Versions the tracking table of the database behind ``engine`` records."""
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": self.cfg.table}).scalar() is None:
                return set()
            return {r[0] for r in conn.execute(sa.text(
                f"SELECT {quote_ident(self.cfg.version_column)}::text FROM {quote_ident(self.cfg.table)}"))}

    def roundtrip(self, scratch: sa.Engine, guard: LiveGuard) -> Outcome:
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
        versions = [v for v, _, _ in tail]
        if live := guard.changed("the up migrations on the scratch database"):
            return live
        if _empty(after_up):
            return Outcome("error", "the migrations left the scratch database empty: the round trip would prove "
                                    "nothing", expected, guard.evidence(), severity="blocker")
        for v, _, _ in reversed(tail):
            run_sql(downs[v])
        after_down = schema_snapshot(scratch)
        if live := guard.changed(f"the down scripts of {', '.join(versions)}"):
            return live
        for _, _, p in tail:
            run_sql(p)
        after_up2 = schema_snapshot(scratch)
        if live := guard.changed("up again on the scratch database"):
            return live
        evidence = {"round_trip": versions, "down_changed_schema": after_down != after_up,
                    "down_restores_previous": after_down == before, "up_again_identical": after_up2 == after_up,
                    "difference": _diff(after_up, after_up2) or _diff(before, after_down), **guard.evidence()}
        if after_down == after_up:
            return Outcome("error", f"the down scripts of {', '.join(versions)} changed nothing on the scratch "
                                    "database: the round trip proved nothing", expected, evidence)
        if after_down != before or after_up2 != after_up:
            return Outcome("fail", f"schema differs after down/up of {', '.join(versions)}", expected, evidence)
        return Outcome("pass", f"down/up of {', '.join(versions)} gives the same schema", expected, evidence,
                       {"migrations": len(versions)})


class MissingModule(RuntimeError):
    """A module alembic (or the app's env.py and revisions) imports is not installed where alembic runs."""


def _missing_module_line(module: str, python: str | None) -> str:
    """One line: which module is missing where, and how to fix it."""
    if python:
        return (f"module '{module}' is missing in the app's interpreter {python} (phases.migrations.alembic.python): "
                f"point `python:` at the interpreter that runs the app (its virtualenv's bin/python), or install "
                f"{module} there")
    return (f"module '{module}' is missing in Rehearsal's own environment ({sys.executable}), where alembic runs when "
            f"phases.migrations.alembic.python is not set: set `python:` to the app's interpreter (e.g. "
            f"path/to/app/.venv/bin/python), or install {module} next to Rehearsal")


def _alembic_version_heads(engine: sa.Engine, table: str = "alembic_version") -> set[str]:
    """The revisions alembic's version table records (read-only SQL, no alembic needed); empty when absent."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            return set()
        return {r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {quote_ident(table)}"))}


class Alembic:
    """An alembic project: the plan from the script directory and the database's current heads.

    Alembic runs as if started from the ini file's folder (relative ``script_location`` and
    ``prepend_sys_path`` resolve there, as with ``alembic`` run beside its ini). With ``python:`` set,
    every alembic step runs in that interpreter (``alembic_helper.py``), so Rehearsal's environment needs
    none of the app's packages; without it, alembic runs in this process."""

    supports_apply = True

    def __init__(self, ctx: PhaseRun[MigrationsParams]):
        cfg = ctx.settings.alembic
        assert cfg is not None  # DRIVERS builds the driver of the block the params configure
        self.ctx = ctx
        self.ini = Path(ctx.resolve(cfg.config, secret=False) or "").absolute()
        if not self.ini.is_file():
            raise RuntimeError(f"alembic config {self.ini} does not exist")
        self.section = cfg.section
        self.python = ctx.resolve(cfg.python, secret=False) if cfg.python else None
        if self.python is not None and not (Path(self.python).is_file() or shutil.which(self.python)):
            raise RuntimeError(f"phases.migrations.alembic.python: interpreter {self.python} does not exist")
        self.url_env = cfg.url_env
        self.timeout_s = cfg.timeout_s

    # -- in this process

    @contextmanager
    def _here(self):
        """Run alembic from the ini file's folder, as its CLI is run; a missing module becomes one line."""
        previous = os.getcwd()
        os.chdir(self.ini.parent)
        try:
            yield
        except ModuleNotFoundError as exc:
            raise MissingModule(_missing_module_line(exc.name or str(exc), None)) from None
        finally:
            os.chdir(previous)

    def _config(self, url: str | None = None) -> Any:
        from alembic.config import Config

        c = Config(str(self.ini), ini_section=self.section)
        if url:
            c.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return c

    # -- in the app's interpreter

    def _call(self, op: str, url: str | None = None, **request: Any) -> dict[str, Any]:
        """One alembic step in the app's interpreter; its answer, or an exception with one line."""
        req = {"ini": str(self.ini), "section": self.section, "op": op, "url": url, **request}
        env = dict(os.environ)
        if url and self.url_env:
            env[self.url_env] = url
        try:
            proc = subprocess.run([self.python or "", "-c", HELPER.read_text(encoding="utf-8")],
                                  input=json.dumps(req).encode(), capture_output=True, cwd=self.ini.parent,
                                  env=env, timeout=self.timeout_s, check=False,
                                  start_new_session=True)
        except FileNotFoundError as exc:
            raise RuntimeError(f"cannot run the app's interpreter {self.python}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"alembic {op} in {self.python} timed out after {self.timeout_s:g} s") from None
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        answers = [ln[len(HELPER_MARK):] for ln in out.splitlines() if ln.startswith(HELPER_MARK)]
        if not answers:
            tail = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"alembic {op} in {self.python} exited {proc.returncode} without an answer: "
                               f"{tail[0][:300]}")
        answer = json.loads(answers[-1])
        if "missing_module" in answer:
            raise MissingModule(_missing_module_line(answer["missing_module"], self.python))
        if "error" in answer:  # raised under the app's exception type: described as one raised here would be
            name = answer.get("type") or "RuntimeError"
            raise type(name if name.isidentifier() else "RuntimeError", (RuntimeError,), {})(answer["error"])
        return answer

    # -- the driver

    def plan(self) -> list[Pending]:
        current = sorted(self.recorded(self.ctx.engine))
        ask = list(self.ctx.settings.expected_pending)
        if self.python:
            answer = self._call("plan", current=current, ask=ask)
            self._known, self._script_heads = answer["known"], set(answer["heads"])
            return [Pending(p["id"], p["name"], {"down_revision": p["down_revision"]}) for p in answer["pending"]]
        from alembic.script import ScriptDirectory

        with self._here():
            script = ScriptDirectory.from_config(self._config())
            revs = list(script.iterate_revisions("heads", tuple(current) or "base"))
            self._known = {x: _known(script, x) for x in ask}
        return [Pending(r.revision, (r.doc or "").strip(), {"down_revision": str(r.down_revision)})
                for r in reversed(revs)]

    def _heads(self) -> set[str]:
        if self.python:
            if getattr(self, "_script_heads", None) is None:  # the plan read them already (one interpreter less)
                self._script_heads = set(self._call("heads")["heads"])
            return self._script_heads
        from alembic.script import ScriptDirectory

        with self._here():
            return set(ScriptDirectory.from_config(self._config()).get_heads())

    def _step(self, op: str, engine: sa.Engine, rev: str) -> None:
        url = engine.url.render_as_string(hide_password=False)
        if self.python:
            self._call(op, url=url, rev=rev)
            return
        from alembic import command as alembic_command

        with self._here():
            getattr(alembic_command, op)(self._config(url), rev)

    def apply_one(self, engine: sa.Engine, item: Pending) -> None:
        self._step("upgrade", engine, item.id)

    def recorded(self, engine: sa.Engine) -> set[str]:
        """The revisions the version table of the database behind ``engine`` records (its current heads)."""
        return _alembic_version_heads(engine)

    def known(self, revision: str) -> bool:
        return bool(getattr(self, "_known", {}).get(revision))

    def roundtrip(self, scratch: sa.Engine, guard: LiveGuard) -> Outcome:
        """Upgrade the empty scratch database to head and prove it landed there, then downgrade -1 and
        upgrade head again; the live schema is compared after every step."""
        expected = "downgrade -1 then upgrade head restores the same schema"
        heads = self._heads()
        self._step("upgrade", scratch, "heads")
        if live := guard.changed("upgrade head on the scratch database"):
            return live
        landed = self.recorded(scratch)
        if landed != heads:
            return Outcome("error", f"{NOT_ON_SCRATCH}: after upgrade head its version table there records "
                                    f"{', '.join(sorted(landed)) or 'nothing'} (expected {', '.join(sorted(heads))}); "
                                    "the downgrade was not run", expected,
                           {"scratch_version_table": sorted(landed), "expected_heads": sorted(heads),
                            **guard.evidence()}, severity="blocker")
        head = schema_snapshot(scratch)
        self._step("downgrade", scratch, "-1")
        down = schema_snapshot(scratch)
        if live := guard.changed("downgrade -1 on the scratch database"):
            return live
        self._step("upgrade", scratch, "heads")
        again = schema_snapshot(scratch)
        if live := guard.changed("upgrade head again on the scratch database"):
            return live
        evidence = {"scratch_version_table": sorted(landed), "down_changed_schema": down != head,
                    "difference": _diff(head, again), **guard.evidence()}
        if down == head:
            return Outcome("error", "downgrade -1 changed nothing on the scratch database: the round trip proved "
                                    "nothing", expected, evidence)
        if again != head:
            return Outcome("fail", "schema differs after downgrade -1 / upgrade head", expected, evidence)
        return Outcome("pass", "downgrade -1 / upgrade head gives the same schema", expected, evidence)


def _known(script: Any, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown or ambiguous id
        return False


class Command:
    """Any tool: a plan command whose output lines name the pending migrations."""

    def __init__(self, ctx: PhaseRun[MigrationsParams]):
        cfg = ctx.settings.command
        assert cfg is not None  # DRIVERS builds the driver of the block the params configure
        self.ctx, self.cfg = ctx, cfg
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

    def roundtrip(self, scratch: sa.Engine | None, guard: LiveGuard | None = None) -> Outcome:
        expected = "the round-trip command exits 0 and leaves the live schema unchanged"
        if not self.cfg.roundtrip_command:
            return Outcome("skip", "no roundtrip_command configured", expected)
        res = command.run(self.cfg.roundtrip_command, self.cfg.timeout_s)
        if guard is not None and (live := guard.changed("the roundtrip_command")):
            live.evidence["command"] = res.evidence()
            return live
        return Outcome("pass" if res.ok else ("error" if res.error else "fail"), res.describe(), expected,
                       {**res.evidence(), **(guard.evidence() if guard else {})})


DRIVERS = {"sql_dir": SqlDir, "alembic": Alembic, "command": Command}


# ------------------------------------------------------------------------------------------ helpers


def _exec_script(conn: sa.Connection, script: str) -> None:
    """Run a multi-statement SQL script as is (no parameter parsing) inside the connection's transaction."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # a checked-out connection holds its DBAPI connection until it is closed
    with closing(dbapi.cursor()) as cur:
        cur.execute(script.encode())


def schema_snapshot(engine: sa.Engine, schema: str = "public") -> dict[str, Any]:
    """Tables with columns, indexes, keys, foreign keys and checks, plus functions and views (catalog reads
    only): comparable between states."""
    with engine.connect() as conn:  # one connection for every catalog read (a scratch engine does not pool)
        return _snapshot(conn, schema)


_R = TypeVar("_R")


def _by_table(reflected: Mapping[tuple[str | None, str], _R]) -> dict[str, _R]:
    """SQLAlchemy's get_multi_* result keyed by table name alone (one schema)."""
    return {k[1]: v for k, v in reflected.items()}


def _snapshot(conn: sa.Connection, schema: str) -> dict[str, Any]:
    insp = sa.inspect(conn)
    # bulk reflection: one catalog query per kind of object for all tables
    cols = _by_table(insp.get_multi_columns(schema=schema))
    idx = _by_table(insp.get_multi_indexes(schema=schema))
    fks = _by_table(insp.get_multi_foreign_keys(schema=schema))
    checks = _by_table(insp.get_multi_check_constraints(schema=schema))
    pks = _by_table(insp.get_multi_pk_constraint(schema=schema))
    uniq = _by_table(insp.get_multi_unique_constraints(schema=schema))
    tables: dict[str, Any] = {}
    for t in sorted(cols):
        pk = pks.get(t)
        tables[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in cols[t]],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in idx.get(t, [])),
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in fks.get(t, [])),
            "checks": sorted(c["name"] or "" for c in checks.get(t, [])),
            "constraints": sorted([("unique", tuple(u["column_names"])) for u in uniq.get(t, [])]
                                  + [("primary key", tuple((pk.get("constrained_columns") if pk else None) or ()))]),
        }
    funcs = sorted(r[0] for r in conn.execute(sa.text(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"), {"s": schema}))
    views = sorted(insp.get_view_names(schema=schema))
    return {"tables": tables, "functions": funcs, "views": views}


def _label(kind: str, item: Any) -> str:
    if kind == "indexes":
        return f"index {item[0]} ({', '.join(item[1])})"
    if kind == "foreign_keys":
        return f"foreign key ({', '.join(item[0])}) -> {item[1]}"
    if kind == "checks":
        return f"check constraint {item}"
    return f"{item[0]} ({', '.join(item[1])})"


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What changed from snapshot ``a`` to ``b``, in words ("column user.created_at dropped")."""
    out = []
    for t in sorted(set(a["tables"]) | set(b["tables"])):
        ta, tb = a["tables"].get(t), b["tables"].get(t)
        if ta == tb:
            continue
        if ta is None or tb is None:
            out.append(f"table {t} {'added' if ta is None else 'dropped'}")
            continue
        ca, cb = {c[0]: c for c in ta["columns"]}, {c[0]: c for c in tb["columns"]}
        out += [f"column {t}.{c} dropped" for c in ca if c not in cb]
        out += [f"column {t}.{c} added" for c in cb if c not in ca]
        out += [f"column {t}.{c} changed ({ca[c][1]}{'' if ca[c][2] else ' not null'} -> "
                f"{cb[c][1]}{'' if cb[c][2] else ' not null'})" for c in ca if c in cb and ca[c] != cb[c]]
        for kind in ("indexes", "foreign_keys", "checks", "constraints"):
            xa, xb = ta.get(kind, []), tb.get(kind, [])
            out += [f"{_label(kind, x)} on {t} dropped" for x in xa if x not in xb]
            out += [f"{_label(kind, x)} on {t} added" for x in xb if x not in xa]
    for key in ("functions", "views"):
        out += [f"{key[:-1]} {n} dropped" for n in a[key] if n not in b[key]]
        out += [f"{key[:-1]} {n} added" for n in b[key] if n not in a[key]]
    return out[:20]


def _empty(snapshot: dict[str, Any]) -> bool:
    return not (snapshot["tables"] or snapshot["functions"] or snapshot["views"])


def db_identity(engine: sa.Engine) -> dict[str, Any]:
    """Which database a URL reaches: its name, the server's address and port, and the server's start time."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT current_database(), host(inet_server_addr()), inet_server_port(), "
                                   "pg_postmaster_start_time()::text")).one()
    return {"database": row[0], "server_address": row[1], "port": row[2], "server_started": row[3]}


def _same_database(apply_engine: sa.Engine, target_engine: sa.Engine) -> str | None:
    """None when apply_database_url and the target's database_url reach the same database; else why not."""
    a, t = db_identity(apply_engine), db_identity(target_engine)
    same = a["database"] == t["database"] and a["server_started"] == t["server_started"] and (
        a["port"] is None or t["port"] is None or a["port"] == t["port"])
    if same:
        return None
    return (f"apply_database_url reaches database {a['database']} (port {a['port']}) but the target's database_url "
            f"reaches {t['database']} (port {t['port']}): the plan and the checks after apply would not describe "
            "the database apply changes")


class LiveGuard:
    """Read-only snapshots of the live schema (the target's read-only engine) around steps meant to touch
    only a scratch database: any difference names the step and what changed."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.before = schema_snapshot(engine)
        self.steps: list[str] = []

    def changed(self, step: str) -> Outcome | None:
        """None while the live schema is as before; else a blocker ``fail`` naming what ``step`` changed."""
        self.steps.append(step)
        diff = _diff(self.before, schema_snapshot(self.engine))
        if not diff:
            return None
        return Outcome("fail", f"the LIVE database changed during {step}, a step meant to touch only a scratch "
                               f"database: {'; '.join(diff)}",
                       "steps meant for a scratch database leave the live schema unchanged",
                       {"live_schema_changed": diff, "steps_checked": self.steps}, severity="blocker")

    def evidence(self) -> dict[str, Any]:
        return {"live_schema_unchanged_after": self.steps}


NOT_ON_SCRATCH = ("the migration tool did not write to the scratch database; its env.py probably ignores the URL "
                  "it is given")


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

    def __init__(self, ctx: PhaseRun[MigrationsParams]):
        self.ctx = ctx
        self.driver: Any = None
        self.driver_error: str | None = None
        try:
            self.driver = DRIVERS[ctx.settings.driver](ctx)
        except Exception as exc:  # noqa: BLE001 - a broken driver config is evidence
            self.driver_error = describe_exception(exc)
        self.pending: list[Pending] | None = None
        self.not_rehearsed: dict[str, str] = {}  # announced by the release but not pending: id -> why
        self.applied = False
        self.stopped: str | None = None

    def _apply_url(self) -> str:
        url = self.ctx.resolve(self.ctx.settings.apply_database_url)
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
            pending_ids = {p.id for p in self.pending}
            unknown = []
            for x in sorted(expected_ids - pending_ids):
                if isinstance(self.driver, Command):
                    self.not_rehearsed[x] = "not pending: already applied before this rehearsal or unknown to the tool"
                elif self.driver.known(x):
                    self.not_rehearsed[x] = "already applied before this rehearsal"
                else:
                    unknown.append(x)
            rows = [{"migration": p.id, "name": p.name, "announced by the release": "yes" if p.id in expected_ids
                     else "no", "status": "pending"} for p in self.pending]
            rows += [{"migration": x, "name": "", "announced by the release": "yes",
                      "status": f"{why} (not rehearsed)"} for x, why in self.not_rehearsed.items()]
            unexpected = [p.id for p in self.pending if p.id not in expected_ids]
            changed = getattr(self.driver, "changed", [])
            evidence: dict[str, Any] = {"pending": rows, "changed since applied": ", ".join(changed) or "none"}
            if isinstance(self.driver, Command):
                evidence["plan_output"] = self.driver.outputs[-1]
            metrics = {"pending": len(self.pending), "unexpected": len(unexpected),
                       "not_rehearsed": len(self.not_rehearsed)}
            if changed:
                return Outcome("fail", f"applied migration(s) changed since: {', '.join(changed)}", expected,
                               evidence, metrics)
            if unexpected:
                return Outcome("fail", f"{plural(len(unexpected), 'unexpected pending migration')}: "
                                       f"{', '.join(unexpected)}",
                               expected, evidence, metrics)
            if unknown:
                return Outcome("fail", f"announced by the release but no such migration: {', '.join(unknown)}",
                               expected, evidence, metrics)
            observed = f"{len(self.pending)} pending" + (
                f": {', '.join(p.id for p in self.pending)}" if self.pending else "")
            if self.not_rehearsed:
                observed += "; " + self._not_rehearsed_text()
            return Outcome("pass", observed, expected, evidence, metrics)

        check = self.ctx.run("migrations.plan.pending", "Pending migrations (the plan)", _one_line(probe, expected),
                             severity="blocker", expected=expected)
        if self.pending or self.not_rehearsed:
            _table(self.ctx, "Plan", ["migration", "name", "status"],
                   [[p.id, p.name, "pending"] for p in self.pending or []]
                   + [[x, "", f"{why} (not rehearsed)"] for x, why in self.not_rehearsed.items()])
        return check

    def _not_rehearsed_text(self) -> str:
        """"017, 018 already applied before this rehearsal (not rehearsed)", grouped by reason."""
        by_reason: dict[str, list[str]] = {}
        for x, why in self.not_rehearsed.items():
            by_reason.setdefault(why, []).append(x)
        return "; ".join(f"{', '.join(ids)} {why} (not rehearsed)" for why, ids in by_reason.items())

    def apply(self) -> Check:
        expected = "every pending migration applies"
        s = self.ctx.settings

        def probe() -> Outcome:
            if self.pending is None:
                return Outcome("skip", "not tried: the plan could not be read", expected)
            if not self.pending:
                if self.not_rehearsed:
                    return Outcome("skip", f"nothing to apply: {self._not_rehearsed_text()}", expected,
                                   {"not_rehearsed": self.not_rehearsed}, {"applied": 0})
                return Outcome("pass", "nothing to apply", expected, metrics={"applied": 0})
            if not s.apply:
                return Outcome("skip", "apply is off (phases.migrations.apply: false)", expected)
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
                mismatch = _same_database(engine, self.ctx.engine)
                if mismatch:
                    self.stopped = mismatch
                    return Outcome("error", mismatch, expected, severity="blocker")
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
                        if len(rows) == 1 and item.id not in (landed := self.driver.recorded(engine)):
                            # proof of landing: the first write must show in apply_database_url's version table
                            rows[-1]["status"] = "not recorded where intended"
                            self.stopped = (f"the migration tool did not write to the database apply_database_url "
                                            f"names: after applying {item.id} its version table there records "
                                            f"{', '.join(sorted(landed)) or 'nothing'}; its env.py probably ignores "
                                            "the URL it is given, so the migration went to another database")
                    except MissingModule as exc:  # nothing ran: the tool could not even start
                        self.stopped = str(exc)
                        return Outcome("error", self.stopped, expected, {"migrations": rows}, severity="blocker")
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
            if self.stopped and rows[0]["status"] == "not recorded where intended":
                return Outcome("error", self.stopped, expected, {"migrations": rows}, metrics, severity="blocker")
            if self.stopped:
                return Outcome("fail", self.stopped + "; the database is as the migration left it", expected,
                               {"migrations": rows}, metrics)
            if self.not_rehearsed:
                return Outcome("skip", f"{len(done)} applied in {ms(total)}; {self._not_rehearsed_text()}",
                               expected, {"migrations": rows, "not_rehearsed": self.not_rehearsed}, metrics)
            return Outcome("pass", f"{len(done)} applied in {ms(total)}", expected, {"migrations": rows}, metrics)

        return self.ctx.run("migrations.apply", "Apply pending migrations", _one_line(probe, expected),
                            severity="blocker", expected=expected, writes=True)

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

        return self.ctx.run("migrations.none_pending", "Nothing pending afterwards", _one_line(probe, expected),
                            severity="blocker", expected=expected)

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
            if isinstance(self.driver, Command):
                return self.driver.roundtrip(None, LiveGuard(self.ctx.engine) if self.ctx.database_url else None)
            with scratch_database(self._apply_url()) as scratch:
                return self.driver.roundtrip(scratch, LiveGuard(self.ctx.engine))

        return self.ctx.run("migrations.roundtrip", "Down/up round trip on a scratch database",
                            _one_line(probe, expected), severity="major", expected=expected, writes=True)


def _one_line(probe: Any, expected: str) -> Any:
    """The probe, with a missing module reported as its one line (an ``error``), not a traceback."""

    def guarded() -> Outcome:
        try:
            return probe()
        except MissingModule as exc:
            return Outcome("error", str(exc), expected)

    return guarded


def _table(ctx: PhaseRun[MigrationsParams], title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A plain table under the notebook's own heading (no caption: the heading already names it)."""
    import html

    from rehearsal_lib.phase import display_bundle

    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    display_bundle({"text/html": f"<table><tr>{head}</tr>{body}</table>",
              "text/plain": f"{title}: " + "; ".join(", ".join(f"{c} {v}" for c, v in zip(columns, r, strict=True))
                                                      for r in rows)})


def _durations_chart(ctx: PhaseRun[MigrationsParams], rows: list[dict[str, Any]]) -> None:
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


def check_postconditions(ctx: PhaseRun[MigrationsParams]) -> list[Check]:
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
        schema, table = split_name(name)
        return insp().has_table(table, schema=schema)

    def table_item(name: str) -> dict[str, Any]:
        ok = has_table(name)
        return {"item": name, "ok": ok, "problem": f"table {name} missing"}

    def columns_item(entry: tuple[str, list[Any]]) -> dict[str, Any]:
        table, cols = entry
        schema, tname = split_name(table)
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
        schema, tname = split_name(spec.table)
        names = {i["name"] for i in insp().get_indexes(tname, schema=schema)} if has_table(spec.table) else set()
        pk = insp().get_pk_constraint(tname, schema=schema).get("name") if has_table(spec.table) else None
        ok = spec.name in names or spec.name == pk
        return {"item": f"{spec.table}.{spec.name}", "ok": ok, "problem": f"index {spec.name} on {spec.table} missing"}

    def fk_item(spec: Any) -> dict[str, Any]:
        schema, tname = split_name(spec.table)
        fks = insp().get_foreign_keys(tname, schema=schema) if has_table(spec.table) else []
        ok = any(f["constrained_columns"] == spec.columns and f["referred_table"] == split_name(spec.references)[1]
                 for f in fks)
        label = f"{spec.table}({', '.join(spec.columns)}) -> {spec.references}"
        return {"item": label, "ok": ok, "problem": f"foreign key {label} missing"}

    def check_item(spec: Any) -> dict[str, Any]:
        schema, tname = split_name(spec.table)
        names = {c["name"] for c in insp().get_check_constraints(tname, schema=schema)} \
            if has_table(spec.table) else set()
        return {"item": f"{spec.table}.{spec.name}", "ok": spec.name in names,
                "problem": f"check constraint {spec.name} on {spec.table} missing"}

    def unique_item(spec: Any) -> dict[str, Any]:
        schema, tname = split_name(spec.table)
        label = f"{spec.table}({', '.join(spec.columns)})"
        if not has_table(spec.table):
            return {"item": label, "ok": False, "problem": f"table {spec.table} missing"}
        i = insp()
        found: dict[tuple[str, ...], str | None] = {}  # columns -> name (a constraint is also listed as an index)
        for c in i.get_unique_constraints(tname, schema=schema):
            found.setdefault(tuple(c["column_names"]), c.get("name"))
        for x in i.get_indexes(tname, schema=schema):
            if x.get("unique"):
                found.setdefault(tuple(c for c in x["column_names"] if c), x.get("name"))
        hit = next((cols for cols in found if set(cols) == set(spec.columns) and len(cols) == len(spec.columns)),
                   None)
        seen = "; ".join(f"({', '.join(c)})" for c in found) or "none"
        return {"item": label, "ok": hit is not None,
                "problem": f"no unique constraint or unique index on {label} (unique on {spec.table}: {seen})"}

    def pk_item(spec: Any) -> dict[str, Any]:
        schema, tname = split_name(spec.table)
        label = f"{spec.table}({', '.join(spec.columns)})"
        if not has_table(spec.table):
            return {"item": label, "ok": False, "problem": f"table {spec.table} missing"}
        cols = insp().get_pk_constraint(tname, schema=schema).get("constrained_columns") or []
        ok = set(cols) == set(spec.columns) and len(cols) == len(spec.columns)
        return {"item": label, "ok": ok, "problem": f"primary key of {spec.table} is "
                                                    f"{'(' + ', '.join(cols) + ')' if cols else 'missing'}, "
                                                    f"not ({', '.join(spec.columns)})"}

    def function_item(name: str) -> dict[str, Any]:
        schema, fname = split_name(name)
        _, rows = query(ctx.engine, "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                                    "WHERE n.nspname = :s AND p.proname = :f", {"s": schema, "f": fname})
        return {"item": name, "ok": rows[0][0] > 0, "problem": f"function {name} missing"}

    def rls_item(spec: Any) -> dict[str, Any]:
        schema, tname = split_name(spec.table)
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
    family("unique", "Unique constraints exist", pc.unique, unique_item, ("unique constraint", "unique constraints"))
    family("primary_keys", "Primary keys as declared", pc.primary_keys, pk_item, ("primary key", "primary keys"))
    family("functions", "Functions exist", pc.functions, function_item, ("function", "functions"))
    family("rls", "Row-level security enabled with policies", pc.rls, rls_item,
           ("table's row-level security and policies", "tables' row-level security and policies"))
    if not out:
        ctx.note("No post-conditions declared (phases.migrations.postconditions).")
    return out


def check_postconditions_after(run: MigrationsRun) -> list[Check]:
    """Post-conditions, unless a failed migration stopped the phase (then skipped, with the reason)."""
    reason = run.stopped or (f"apply did not run: {plural(len(run.pending), 'migration')} still pending"
                             if run.pending and not run.applied else None)
    if reason:
        return [run.ctx.run("migrations.post.not_checked", "Post-conditions", lambda: Outcome(
            "skip", f"not tried: {reason}", "post-conditions hold"), severity="blocker")]
    return check_postconditions(run.ctx)
