"""SQL probe: read-only transactions with a statement timeout, results bounded for evidence."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from psycopg import sql as psql
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    import pandas as pd

# Appended to every statement Rehearsal's read-only engine sends, so statement statistics
# (pg_stat_statements keeps trailing comments, not leading ones) can tell the tool's queries from the app's.
MARKER = "/* rehearsal */"


def _mark(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> tuple[str, Any]:
    body = statement.rstrip()
    return (body[:-1] if body.endswith(";") else body) + "\n" + MARKER, parameters


def read_only_engine(url: str, statement_timeout_ms: int, connect_timeout_s: float = 5.0) -> Engine:
    """An engine whose every session is READ ONLY with `statement_timeout` set server-side; every statement
    carries MARKER."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    options = f"-c default_transaction_read_only=on -c statement_timeout={int(statement_timeout_ms)}"
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        connect_args={"options": options, "connect_timeout": max(1, int(connect_timeout_s)),
                      "application_name": "rehearsal"},
    )
    sa.event.listen(engine, "before_cursor_execute", _mark, retval=True)
    return engine


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | bytes | memoryview):
        return str(value)
    return value


def strip_statement(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def query(engine: Engine, sql: str, params: dict[str, Any] | None = None, limit: int | None = None
          ) -> tuple[list[str], list[list[Any]]]:
    """Run a SELECT in a read-only transaction; return (columns, rows) as JSON-safe values."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params or {})
        columns = list(result.keys())
        raw = result.fetchmany(limit) if limit is not None else result.fetchall()
    return columns, [[_jsonable(v) for v in row] for row in raw]


def query_frame(engine: Engine, sql: str, params: dict[str, Any] | None = None, limit: int | None = None
                ) -> pd.DataFrame:
    """A SELECT's rows as a pandas DataFrame, for looking at evidence in a notebook (e.g.
    ``query_frame(ph.engine, "SELECT ...")`` on the phase's read-only engine). Values keep their Python
    types (datetimes, Decimals); ``limit`` caps the rows fetched."""
    import pandas as pd  # here, not at the top: phase kernels import this module; pandas takes ~0.7 s to import

    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params or {})
        columns = list(result.keys())
        raw = result.fetchmany(limit) if limit is not None else result.fetchall()
    return pd.DataFrame.from_records([tuple(row) for row in raw], columns=columns)


def scalar(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> Any:
    with engine.connect() as conn:
        return _jsonable(conn.execute(sa.text(sql), params or {}).scalar())


# Sessions of other roles that pg_stat_activity shows to this role without their details
# ('<insufficient privilege>': backend_type, state and query are NULL); background processes have no role
# or no database and are left out.
HIDDEN_SESSIONS_SQL = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL "
                       "AND datname IS NOT NULL AND usename IS NOT NULL")
_SESSION_VIEWS = re.compile(r"\bpg_stat_activity\b", re.I)


class SessionsHidden(RuntimeError):
    """The database role cannot see other roles' sessions, so a query over them proves nothing."""


def hidden_sessions_reason(hidden: int) -> str:
    return (f"this database role cannot see {hidden} session(s) of other roles in pg_stat_activity "
            "('<insufficient privilege>'), so what it counts there proves nothing: grant it "
            "pg_read_all_stats (or pg_monitor)")


def guard_session_visibility(conn: Any, sql: str) -> None:
    """Raise SessionsHidden when `sql` reads pg_stat_activity and the role cannot see other roles' sessions."""
    if _SESSION_VIEWS.search(sql):
        hidden = int(conn.execute(sa.text(HIDDEN_SESSIONS_SQL)).scalar_one())
        if hidden:
            raise SessionsHidden(hidden_sessions_reason(hidden))


_TOTAL = "rehearsal_rows_total"  # the window count's column, dropped from the sample


def count_and_sample(engine: Engine, sql: str, sample: int) -> tuple[int, list[str], list[list[Any]]]:
    """Count the rows a query returns and keep the first `sample` of them, in one execution.

    ``SELECT *, count(*) OVER () ... LIMIT sample``: the window needs every row, so the planner plans the
    query for full retrieval (hash joins), and the count comes with the sample. A bare ``LIMIT`` query would
    get a fast-start plan (nested loops, merge joins over index scans) that, when the query finds no rows,
    reads every row the slow way: 30x the buffers at 100k answers, ~4 s of a 5 s statement timeout at 1M.

    A query over pg_stat_activity by a role that cannot see other roles' sessions raises SessionsHidden:
    its "no rows" would be a pass without evidence."""
    inner = strip_statement(sql)
    with engine.connect() as conn:
        guard_session_visibility(conn, inner)
        if sample <= 0:
            columns = list(conn.execute(sa.text(f"SELECT * FROM ({inner}) AS rehearsal_q LIMIT 0")).keys())
            count = conn.execute(sa.text(f"SELECT count(*) FROM ({inner}) AS rehearsal_q")).scalar_one()
            return int(count), columns, []
        result = conn.execute(sa.text(f"SELECT *, count(*) OVER () AS {_TOTAL} FROM ({inner}) AS rehearsal_q "
                                      f"LIMIT {int(sample)}"))
        columns = list(result.keys())[:-1]
        raw = result.fetchall()
    count = int(raw[0][-1]) if raw else 0
    return count, columns, [[_jsonable(v) for v in row[:-1]] for row in raw]


def write_engine(url: str, statement_timeout_ms: int, connect_timeout_s: float = 5.0) -> Engine:
    """An engine that may write (for a phase's cleanup only), with `statement_timeout` set server-side."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return sa.create_engine(
        url, poolclass=sa.pool.NullPool,
        connect_args={"options": f"-c statement_timeout={int(statement_timeout_ms)}",
                      "connect_timeout": max(1, int(connect_timeout_s)), "application_name": "rehearsal-cleanup"},
    )


def split_name(name: str) -> tuple[str, str]:
    """(schema, table) of a possibly schema-qualified name; ``public`` when unqualified."""
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def identifier(name: str) -> psql.Identifier:
    """A (possibly dotted, schema-qualified) name as a `psycopg.sql.Identifier`, for `psycopg.sql` composition."""
    return psql.Identifier(*name.split("."))


def quote_ident(name: str) -> str:
    """A (possibly dotted) name quoted by `psycopg.sql.Identifier` for SQL text run through SQLAlchemy:
    every part double-quoted, embedded quotes doubled (``a."b;c"`` stays one identifier, never SQL), and a
    colon escaped so `sqlalchemy.text` does not take it for a bind parameter."""
    return identifier(name).as_string().replace(":", "\\:")  # text() would read ":x" as a bind parameter
