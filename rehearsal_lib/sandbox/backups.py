"""Backups of the sandbox database: a ``pg_dump`` (custom format) into ``<home>/<variant>/backups/`` at start.

On ``faulty`` the backup carries two planted defects (docs/sandbox.md): it was dumped without the
rows of ``events`` (a restored copy misses rows), and its file time is three days old (older than
the allowed age).
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

FAULTY_AGE_S = 3 * 24 * 3600
FAULTY_EXCLUDED_DATA = "events"


def backup_dir(vdir: Path) -> Path:
    return vdir / "backups"


def make_backup(vdir: Path, pg_bin: Path, port: int, user: str, password: str, dbname: str, variant: str) -> Path:
    """Dump ``dbname`` to ``backups/<dbname>-<UTC stamp>.dump`` (older dumps are removed); returns the file."""
    out_dir = backup_dir(vdir)
    out_dir.mkdir(mode=0o700, exist_ok=True)
    for old in out_dir.glob("*.dump"):
        old.unlink()
    taken = time.time() - (FAULTY_AGE_S if variant == "faulty" else 0)
    path = out_dir / f"{dbname}-{datetime.fromtimestamp(taken, UTC):%Y%m%dT%H%M%SZ}.dump"
    args = [str(pg_bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", dbname,
            "-Fc", "--no-owner", "--no-acl", "-f", str(path)]
    if variant == "faulty":
        args.insert(-2, f"--exclude-table-data={FAULTY_EXCLUDED_DATA}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10",
           "LC_ALL": "C"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    path.chmod(0o600)
    if variant == "faulty":
        os.utime(path, (taken, taken))
    return path
