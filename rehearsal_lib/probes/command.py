"""Command probe: run an operator's command without a shell, with a timeout; every failure is data.

Used by the phases that drive a team's own tooling (migration plans, backups, restarts, smoke tests).
``{python}`` in a command line is this interpreter; other placeholders are filled by the caller.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from rehearsal_lib.probes.placeholders import expand_text

OUTPUT_TAIL = 4000


@dataclass
class CommandResult:
    """What one command did. ``error`` is set when it could not run or timed out."""

    argv: list[str]
    returncode: int | None = None
    output: str = ""
    duration_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0

    def describe(self) -> str:
        name = os.path.basename(self.argv[0]) if self.argv else "command"
        if self.error:
            return f"{name}: {self.error}"
        return f"{name} exited {self.returncode} after {self.duration_s:.2f} s"

    def evidence(self) -> dict[str, Any]:
        return {"command": shlex.join(self.argv)[:500], "exit_code": self.returncode,
                "duration_s": round(self.duration_s, 3), "output_tail": self.output[-OUTPUT_TAIL:],
                **({"error": self.error} if self.error else {})}


def fill(text: str, where: str = "command", **placeholders: str) -> str:
    """``{python}`` and the given ``{name}`` placeholders filled in one string (any other name raises
    `PlaceholderError`; see `rehearsal_lib.probes.placeholders`)."""
    return expand_text(text, {"python": sys.executable, **placeholders}, where)


def split(command: str, **placeholders: str) -> list[str]:
    """Split a command line (no shell) and fill the placeholders in each word."""
    return [fill(word, **placeholders) for word in shlex.split(command)]


def run(command: str | list[str], timeout_s: float, env: dict[str, str] | None = None, cwd: str | None = None,
        **placeholders: str) -> CommandResult:
    """Run a command (stdout and stderr together); a missing program or a timeout is an ``error``.

    An unknown placeholder in a command line raises `PlaceholderError` (the check records ``error``)."""
    argv = command if isinstance(command, list) else split(command, **placeholders)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout_s, env={**os.environ, **(env or {})}, cwd=cwd, check=False,
                              start_new_session=True)
    except FileNotFoundError as exc:
        return CommandResult(argv, error=f"cannot run: {exc.strerror}: {exc.filename}",
                             duration_s=time.perf_counter() - t0)
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        return CommandResult(argv, output=out, error=f"timed out after {timeout_s:g} s",
                             duration_s=time.perf_counter() - t0)
    return CommandResult(argv, proc.returncode, proc.stdout.decode(errors="replace"), time.perf_counter() - t0)


def libpq_args(url: str) -> tuple[list[str], dict[str, str], str]:
    """(``-h host -p port -U user`` args, environment with PGPASSWORD, database name) for pg_* tools.

    The password goes through the environment, never the command line."""
    parts = urlsplit(url.replace("+psycopg", "").replace("+psycopg2", ""))
    args = ["-h", parts.hostname or "localhost", "-p", str(parts.port or 5432)]
    if parts.username:
        args += ["-U", unquote(parts.username)]
    env = {"PGPASSWORD": unquote(parts.password)} if parts.password else {}
    env["PGCONNECT_TIMEOUT"] = "10"
    return args, env, unquote(parts.path.lstrip("/")) or "postgres"


def with_database(url: str, dbname: str) -> str:
    """The same SQLAlchemy URL pointing at another database."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).set(database=dbname).render_as_string(hide_password=False)
