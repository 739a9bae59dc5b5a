"""Schema migrations, app-role grants and planted defects of the sandbox ``exam`` database."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
PLANT_DEFECTS_SQL = Path(__file__).parent / "faulty" / "plant_defects.sql"
APP_ROLE = "rehearsal_app"
DB_NAME = "exam"
# The release the sandbox rehearses brings these migrations; `release_pending` starts without them.
RELEASE_MIGRATIONS = ("017", "018", "019")


@dataclass(frozen=True)
class Migration:
    """One SQL migration file ``NNN_name.sql``."""

    version: str
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version."""
    out = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit() or not name:
            raise ValueError(f"bad migration file name: {path.name} (expected NNN_name.sql)")
        out.append(Migration(version, name, path))
    return out


def apply_migrations(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR,
                     skip: tuple[str, ...] = ()) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns the applied versions.

    Versions in ``skip`` are left pending (the release a rehearsal is to apply).

    Already applied versions are skipped; a changed file of an applied version raises ``RuntimeError``.
    ``conn`` must be in autocommit mode (so that ``conn.transaction()`` opens real transactions).
    """
    if not conn.autocommit:
        raise ValueError("apply_migrations needs an autocommit connection")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), duration_ms double precision NOT NULL)"
    )
    done: dict[str, str] = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    applied = []
    for m in list_migrations(directory):
        if m.version in skip:
            continue
        if m.version in done:
            if done[m.version] != m.checksum:
                raise RuntimeError(f"migration {m.version}_{m.name} changed after it was applied")
            continue
        with conn.transaction():
            t0 = time.perf_counter()
            conn.execute(m.text.encode())  # bytes: no parameter parsing, multi-statement allowed
            ms = (time.perf_counter() - t0) * 1000
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, duration_ms) VALUES (%s, %s, %s, %s)",
                (m.version, m.name, m.checksum, ms),
            )
        applied.append(m.version)
    return applied


def grant_app_role(conn: psycopg.Connection, role: str = APP_ROLE) -> None:
    """Least privilege for the app role: SELECT/INSERT/UPDATE on tables, sequence usage, no DDL.

    Default privileges give the same on tables and sequences that later migrations create (the release's,
    applied by the migrations phase as the owner)."""
    ident = sql.Identifier(role)
    with conn.transaction():
        for stmt in (
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {}",
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}",
        ):
            conn.execute(sql.SQL(stmt).format(ident))  # type: ignore[arg-type]


def plant_defects(conn: psycopg.Connection, path: Path = PLANT_DEFECTS_SQL) -> None:
    """Apply the ``faulty`` variant's planted defects (needs a superuser connection)."""
    with conn.transaction():
        conn.execute(path.read_bytes())
