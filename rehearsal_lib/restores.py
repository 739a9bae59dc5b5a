"""Restores: what a disruptive check undoes, declared as data so the runner can undo it too.

A check that degrades the target (a readiness toggle, an injected fault) registers its restore
before it disrupts anything (`PhaseRun.register_restore`). The restore is a request or a command
written to `<run folder>/restores/<phase>.jsonl` as the params file spells it (`${VAR}` references
unresolved, no token: the auth header comes from `target.auth_token` when the restore runs). The
check runs it itself when it is done; when the phase never gets there (killed on timeout, Ctrl-C,
a crashed kernel), the runner runs every restore still pending after the phase ends and records
it in run.json (`restores`), as Chaos Toolkit runs an experiment's rollbacks.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

RESTORES_DIR = "restores"
MAX_OBSERVED = 300


@dataclass(frozen=True)
class Restore:
    """One way back to a healthy target: an HTTP request to the target, a request to an absolute URL (`url`:
    e.g. a fault proxy's control API; never sent with the target's token), or a shell command."""

    description: str
    kind: Literal["http", "command", "url"] = "http"
    method: str = "PUT"
    path: str = ""
    json_body: Any = None
    auth: bool = True  # send target.auth_token as a bearer token
    command: str = ""
    timeout_s: float = 30.0
    id: str = field(default_factory=lambda: secrets.token_hex(4))
    url: str = ""  # kind "url": the absolute URL (may hold ${VAR} references)

    def __post_init__(self) -> None:
        if self.kind == "url" and not self.url.startswith(("http://", "https://", "${")):
            raise ValueError("a url restore needs an absolute http(s) URL")
        if self.kind == "http" and not self.path:
            raise ValueError("an http restore needs a path")
        if self.kind == "command" and not self.command.strip():
            raise ValueError("a command restore needs a command")


def restores_file(run_dir: Path | str, phase: str) -> Path:
    return Path(run_dir) / RESTORES_DIR / f"{phase}.jsonl"


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the disruption starts: a killed kernel cannot lose it


def record_registered(run_dir: Path | str, phase: str, restore: Restore, check_id: str) -> None:
    _append(restores_file(run_dir, phase), {"event": "registered", "check": check_id, **asdict(restore)})


def record_done(run_dir: Path | str, phase: str, restore_id: str, ok: bool, observed: str, by: str) -> None:
    _append(restores_file(run_dir, phase), {"event": "done", "id": restore_id, "ok": ok,
                                            "observed": observed[:MAX_OBSERVED], "by": by})


def pending(run_dir: Path | str, phase: str) -> list[tuple[str, Restore]]:
    """The restores of `phase` registered and not done, in registration order, with their check ids."""
    path = restores_file(run_dir, phase)
    if not path.is_file():
        return []
    registered: dict[str, tuple[str, Restore]] = {}
    done: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: the registration before it is whole (fsync)
        if rec.get("event") == "registered":
            fields = {k: rec[k] for k in Restore.__dataclass_fields__ if k in rec}
            try:
                registered[str(rec.get("id"))] = (str(rec.get("check", "")), Restore(**fields))
            except (TypeError, ValueError):
                continue
        elif rec.get("event") == "done":
            done.add(str(rec.get("id")))
    return [item for rid, item in registered.items() if rid not in done]


def perform(restore: Restore, *, base_url: str, auth_token: str | None, verify: bool | str = True,
            timeout_s: float = 10.0, run_id: str = "", cwd: str | None = None) -> tuple[bool, str]:
    """Run one restore; (succeeded, what happened). `${VAR}` references resolve from this process's environment."""
    from rehearsal_lib.config import resolve_reference

    try:
        if restore.kind == "command":
            cmd = resolve_reference(restore.command)
            t0 = time.monotonic()
            proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=restore.timeout_s,
                                  cwd=cwd, env={**os.environ, "REHEARSAL_RUN_ID": run_id})
            took = time.monotonic() - t0
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
            what = f"`{shlex.split(cmd)[0] if cmd.strip() else cmd}` exited {proc.returncode} in {took:.1f} s"
            return proc.returncode == 0, (what + (f": {tail[0]}" if tail[0] else ""))[:MAX_OBSERVED]
        import httpx

        body = json.loads(resolve_reference(json.dumps(restore.json_body))) if restore.json_body is not None else None
        if restore.kind == "url":  # an absolute URL (a fault proxy's API): no target token
            url = resolve_reference(restore.url)
            with httpx.Client(timeout=timeout_s) as client:
                res = client.request(restore.method, url, json=body)
            gone = restore.method == "DELETE" and res.status_code == 404  # removed already (e.g. a toxic)
            return 200 <= res.status_code < 300 or gone, f"{restore.method} {url} answered HTTP {res.status_code}"
        path = resolve_reference(restore.path)
        headers = {"Authorization": f"Bearer {auth_token}"} if restore.auth and auth_token else {}
        with httpx.Client(base_url=base_url, timeout=timeout_s, verify=verify) as client:
            res = client.request(restore.method, path, json=body, headers=headers)
        ok = 200 <= res.status_code < 300
        return ok, f"{restore.method} {path} answered HTTP {res.status_code}"
    except subprocess.TimeoutExpired:
        return False, f"restore command did not finish in {restore.timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - a restore that cannot run is reported, never raised
        return False, f"{type(exc).__name__}: {exc}"[:MAX_OBSERVED]
