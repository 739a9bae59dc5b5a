"""SQL identifiers go through psycopg.sql.Identifier: a hostile table name is quoted, never run as SQL.

Against the real sandbox PostgreSQL: a table whose name holds a double quote, a semicolon, mixed case
and a ``:name`` that SQLAlchemy's text() would read as a bind parameter, queried through the read-only
engine as the phase checks do: its rows are counted, and the table the name tries to drop is still there.
(A check cannot take such a name yet: check ids are built from table names and refuse these characters.)
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql as psql

from rehearsal_lib.probes.sql import identifier, query, quote_ident, read_only_engine, split_name

pytestmark = pytest.mark.integration  # the sandbox PostgreSQL

HOSTILE_TABLE = 'Ev"il; DROP TABLE victim_t; -- :tag'
HOSTILE_COLUMN = 'Seen "At"; :x'


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def hostile(sandbox):
    with psycopg.connect(_libpq(sandbox.admin_db_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS victim_t (id int)")
        conn.execute(psql.SQL("DROP TABLE IF EXISTS {}").format(psql.Identifier(HOSTILE_TABLE)))
        conn.execute(psql.SQL("CREATE TABLE {} ({} timestamptz)").format(
            psql.Identifier(HOSTILE_TABLE), psql.Identifier(HOSTILE_COLUMN)))
        conn.execute(psql.SQL("INSERT INTO {} VALUES (now() - interval '90 days'), (now() - interval '60 days'), "
                              "(now())").format(psql.Identifier(HOSTILE_TABLE)))
    yield sandbox
    with psycopg.connect(_libpq(sandbox.admin_db_url), autocommit=True) as conn:
        conn.execute(psql.SQL("DROP TABLE IF EXISTS {}").format(psql.Identifier(HOSTILE_TABLE)))
        conn.execute("DROP TABLE IF EXISTS victim_t")


def test_hostile_table_name_is_quoted_not_injected(hostile):
    """The read-only engine and the SQL text the phase checks build (as retention's window check does)."""
    engine = read_only_engine(hostile.db_url, 5000)
    try:
        table, column = quote_ident(HOSTILE_TABLE), quote_ident(HOSTILE_COLUMN)
        _, rows = query(engine, f"SELECT count(*) FROM {table} WHERE {column} < now() - make_interval(secs => :s)",
                        {"s": 30 * 86400})
        assert rows == [[2]]
        schema, name = split_name("public." + HOSTILE_TABLE)
        cols, rows = query(engine, f"SELECT {column} AS {column} FROM {quote_ident(schema)}.{quote_ident(name)} "
                                   f"ORDER BY 1 LIMIT :n", {"n": 1})
        assert cols == [HOSTILE_COLUMN] and len(rows) == 1
    finally:
        engine.dispose()
    with psycopg.connect(_libpq(hostile.admin_db_url)) as conn:
        assert conn.execute("SELECT to_regclass('public.victim_t') IS NOT NULL").fetchone() == (True,)


def test_identifier_helpers():
    assert split_name("audit.Events") == ("audit", "Events") and split_name("events") == ("public", "events")
    assert identifier("audit.Events") == psql.Identifier("audit", "Events")
    assert quote_ident('a"b; DROP') == '"a""b; DROP"'
    assert quote_ident("Sch.Tab") == '"Sch"."Tab"'
    assert quote_ident("x :y") == '"x \\:y"'  # sqlalchemy.text reads "\:" as a literal colon
