"""One run at a time per environment (and per sandbox variant): a lock held for the whole run.

Each lock is a file ``<lock dir>/<key>.lock`` locked with ``flock`` (the kernel releases it when
the holding process dies, however it dies) and holding its holder as JSON: pid, host, run id,
environment, started_at. The lock dir is ``$REHEARSAL_LOCK_DIR``, else
``~/.local/state/rehearsal/locks``, in a subfolder per ``$REHEARSAL_SANDBOX_HOME`` when that is set:
runs that share a sandbox home share its locks, and separate sandbox homes (separate sandboxes,
e.g. test runs side by side) do not block each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rehearsal_lib.processes import pid_alive


def lock_dir() -> Path:
    """Where run locks live (see the module docstring)."""
    if os.environ.get("REHEARSAL_LOCK_DIR"):
        return Path(os.environ["REHEARSAL_LOCK_DIR"]).expanduser().resolve()
    base = Path("~/.local/state/rehearsal/locks").expanduser().resolve()
    if os.environ.get("REHEARSAL_SANDBOX_HOME"):
        home = str(Path(os.environ["REHEARSAL_SANDBOX_HOME"]).expanduser().resolve())
        return base / f"home-{hashlib.sha256(home.encode()).hexdigest()[:12]}"
    return base


def env_key(env: str) -> str:
    return "env-" + re.sub(r"[^A-Za-z0-9_.-]", "_", env)


def sandbox_key(variant: str) -> str:
    return "sandbox-" + re.sub(r"[^A-Za-z0-9_.-]", "_", variant)


def describe(holder: dict[str, Any]) -> str:
    """'run X of env E (pid N on host H, since T)'."""
    return (f"run {holder.get('run_id', '?')} of {holder.get('env', '?')} (pid {holder.get('pid', '?')} "
            f"on {holder.get('host', '?')}, since {holder.get('started_at', '?')})")


class RunLockError(Exception):
    """The run cannot take its lock (exit 2)."""


class LockHeld(RunLockError):
    """Another run holds the lock; `holder` says who."""

    def __init__(self, what: str, holder: dict[str, Any], waited_s: float | None = None):
        self.what, self.holder = what, holder
        waited = f" (waited {waited_s:.0f} s)" if waited_s is not None else ""
        super().__init__(f"{what} is in use by {describe(holder)}{waited}; "
                         "wait for it to finish, or pass --wait")


def _read_holder(fh: IO[str]) -> dict[str, Any]:
    fh.seek(0)
    try:
        data = json.loads(fh.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}



@dataclass
class RunLock:
    """Locks held by one run; `notes` says which stale locks it took over."""

    holder: dict[str, Any]
    files: list[tuple[Path, IO[str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Clear the holder record and unlock (in reverse order of taking)."""
        for _path, fh in reversed(self.files):
            with contextlib.suppress(OSError):
                if _read_holder(fh).get("run_id") == self.holder["run_id"]:
                    fh.seek(0)
                    fh.truncate()
                    fh.flush()
                fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        self.files.clear()

    def paths(self) -> list[str]:
        return [str(p) for p, _ in self.files]


def _take_one(lock: RunLock, path: Path, what: str, wait_s: float | None,
              on_wait: Callable[[str], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - held open for the whole run
    except OSError as exc:
        raise RunLockError(f"cannot take the run lock {path}: {exc}") from None
    t0, told = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _read_holder(fh)
            waited = time.monotonic() - t0
            if wait_s is None or waited >= wait_s:
                fh.close()
                raise LockHeld(what, holder, waited if wait_s is not None else None) from None
            if not told:
                on_wait(f"  waiting: {what} is in use by {describe(holder)}")
                told = True
            time.sleep(min(1.0, max(0.05, wait_s - waited)))
    previous = _read_holder(fh)
    if previous.get("pid") is not None:
        # the lock was free, yet a holder is on record: that run ended without releasing it (killed, crashed)
        gone = "is gone" if not pid_alive(previous.get("pid")) else "no longer holds it"
        lock.notes.append(f"took over the lock of {what} left by {describe(previous)}: that process {gone}")
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(lock.holder) + "\n")
    fh.flush()
    lock.files.append((path, fh))


def acquire(env: str, run_id: str, sandbox_variant: str | None = None, wait_s: float | None = None,
            on_wait: Callable[[str], None] = print) -> RunLock:
    """Lock environment `env` (and the sandbox variant it uses) for run `run_id`.

    Raises `LockHeld` naming the holder; with `wait_s` (seconds, may be `math.inf`) waits that long first.
    """
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id, "env": env,
              "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    lock = RunLock(holder)
    keys = [(env_key(env), f"environment {env}")]
    if sandbox_variant is not None:
        keys.append((sandbox_key(sandbox_variant), f"sandbox {sandbox_variant}"))
    t0 = time.monotonic()
    try:
        for key, what in keys:
            left = None if wait_s is None else max(0.0, wait_s - (time.monotonic() - t0))
            _take_one(lock, lock_dir() / f"{key}.lock", what, left, on_wait)
    except BaseException:
        lock.release()
        raise
    return lock


def holder_of_sandbox(variant: str) -> dict[str, Any] | None:
    """The run holding sandbox `variant`, or None when no run does."""
    path = lock_dir() / f"{sandbox_key(variant)}.lock"
    if not path.is_file():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fh) or {"run_id": "?"}
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None
