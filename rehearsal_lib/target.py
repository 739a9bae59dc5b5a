"""The identity of the target a run rehearses: recorded by the runner at the start, checked by every phase.

Under `rehearse run` only the runner owns the target's lifecycle. So that no phase ever probes a target
that died and came back as another one (a new sandbox: new ports, new passwords, re-seeded data), the
runner records in run.json (`target_identity`), before the first phase:

- ``base_url``: the target's base URL (password masked);
- ``version``: what the version endpoint (``phases.preflight.version_endpoint``) answers: its
  service/version/commit-like fields, else its body; with ``phases.preflight.version`` (JSON path, header
  or regex), the version read that way;
- ``database``: the server address (host:port/database, no credentials), ``pg_postmaster_start_time()``
  and, where the role may read it, ``system_identifier`` (changes with a new cluster);
- ``sandbox``: for the project's sandbox, the instance id drawn at each start (kept by an API-only
  restart, which the backup & recovery drill performs on purpose).

Each phase reads the same things again (`check_identity`): a part that answered at the start and now
differs, or no longer answers, means a dead or different target, and the phase stops there.

A phase whose purpose is to change what the target serves (the deploy phase's cutover) records the
identity it leaves the target in (`record_update`, `<run>/identity-updates.jsonl`: phase, time, reason,
identity); later phases compare against the newest such record (`expected_identity`), and their evidence
names the phase that changed it.
"""

from __future__ import annotations

import json
from typing import Any

from rehearsal_lib.secrets import mask_url

VERSION_FIELDS = ("service", "name", "version", "commit", "build", "revision", "git_sha", "environment", "variant")
PARTS = {"version": "version answer", "database": "database server", "sandbox": "sandbox instance"}


class TargetChanged(RuntimeError):
    """The target is dead or is not the one the run started with; the phase does not go on."""


def _version(base_url: str, endpoint: str, timeout_s: float, verify_tls: bool, cfg: Any = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """What the version endpoint answers; with a `VersionCheck` (phases.preflight.version), the version read
    as it says (JSON path, header or regex), so a service without service/version fields has an identity."""
    import httpx

    from rehearsal_lib.probes.assertions import read_version

    try:
        res = httpx.get(base_url.rstrip("/") + endpoint, timeout=timeout_s, verify=verify_tls, trust_env=False,
                        follow_redirects=False, headers=headers)
    except Exception as exc:  # noqa: BLE001 - transport errors and malformed URLs alike: no answer
        return {"error": f"{endpoint}: {type(exc).__name__}: {exc}"[:300]}
    if not res.is_success:
        return {"error": f"{endpoint} answered HTTP {res.status_code}"}
    try:
        body = res.json()
    except ValueError:
        body = None
    if cfg is not None:
        version, where = read_version(cfg, body, res.text, dict(res.headers))
        if version is None:
            return {"error": f"{endpoint}: {where}"[:300]}
        return {"endpoint": endpoint, "answer": {"version": version}}
    if isinstance(body, dict) and any(k in body for k in VERSION_FIELDS):
        return {"endpoint": endpoint, "answer": {k: body[k] for k in VERSION_FIELDS if k in body}}
    return {"endpoint": endpoint, "answer": res.text.strip()[:300]}


def _database(url: str, statement_timeout_ms: int, timeout_s: float) -> dict[str, Any]:
    import sqlalchemy as sa

    from rehearsal_lib.probes.sql import read_only_engine

    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001 - an unparsable URL is reported, not raised
        return {"error": f"database URL: {type(exc).__name__}"}
    server = f"{parsed.host or 'localhost'}:{parsed.port or ''}/{parsed.database or ''}"
    if not parsed.drivername.startswith("postgres"):
        return {"server": server, "note": f"no identity query for {parsed.drivername}"}
    out: dict[str, Any] = {"server": server}
    engine = None
    try:
        engine = read_only_engine(url, statement_timeout_ms, connect_timeout_s=timeout_s)
        with engine.connect() as conn:
            out["postmaster_start_time"] = conn.execute(
                sa.text("SELECT pg_postmaster_start_time()")).scalar_one().isoformat()
        for _ in range(3):
            # optional: not every role may read it, and the server reads it from disk (global/pg_control),
            # which can fail on its own (seen: Permission denied when its data dir's parent lost o+x);
            # the server address and start time still identify the cluster
            try:
                with engine.connect() as conn:
                    out["system_identifier"] = str(conn.execute(
                        sa.text("SELECT system_identifier FROM pg_control_system()")).scalar_one())
                break
            except Exception:  # noqa: BLE001
                continue
    except Exception as exc:  # noqa: BLE001
        from rehearsal_lib.phase import describe_exception

        return {"server": server, "error": describe_exception(exc)}
    finally:
        if engine is not None:
            engine.dispose()
    return out


def read_identity(params: Any, base_url: str, database_url: str | None, sandbox_state: Any = None) -> dict[str, Any]:
    """What identifies the target now (no secrets: URLs masked, no credentials)."""
    ident: dict[str, Any] = {"base_url": mask_url(base_url)}
    preflight = getattr(params.phases, "preflight", None)
    cfg = getattr(preflight, "version", None)
    endpoint = cfg.endpoint if cfg is not None else getattr(preflight, "version_endpoint", None)
    if endpoint and base_url:
        headers = None
        if cfg is not None and cfg.auth and params.target.auth_token:
            from rehearsal_lib.config import resolve_reference

            try:
                headers = {"Authorization": f"Bearer {resolve_reference(params.target.auth_token)}"}
            except KeyError:
                headers = None
        ident["version"] = _version(base_url, endpoint, params.target.timeout_s, params.target.verify_tls, cfg,
                                    headers)
    if database_url:
        ident["database"] = _database(database_url, params.safety.sql_statement_timeout_ms, params.target.timeout_s)
    if params.sandbox is not None:
        ident["sandbox"] = ({"variant": params.sandbox.variant, "instance_id": sandbox_state.instance_id}
                            if sandbox_state is not None else
                            {"variant": params.sandbox.variant, "error": "the sandbox is not running"})
    return ident


def observed_version(ident: dict[str, Any] | None) -> str | None:
    """The version the target ran when `ident` was read (None when it was not read)."""
    answer = ((ident or {}).get("version") or {}).get("answer")
    if isinstance(answer, dict) and answer.get("version") not in (None, ""):
        return str(answer["version"])
    return None


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)[:200]


def compare(start: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences, parts verified equal). A part that answered at the start and now does not is a
    difference (the target is dead); one that answers now but did not at the start is one too."""
    diffs: list[str] = []
    same: list[str] = []
    if start.get("base_url") != now.get("base_url"):
        diffs.append(f"base URL {start.get('base_url')} at the start, now {now.get('base_url')}")
    for key, label in PARTS.items():
        a, b = start.get(key), now.get(key)
        if a is None and b is None:
            continue
        a, b = a or {"error": "not read"}, b or {"error": "not read"}
        if "error" in a and "error" in b:
            continue  # unreadable both times: proves nothing either way
        if "error" in b:
            diffs.append(f"{label} no longer answers: {b['error']}")
        elif "error" in a:
            diffs.append(f"{label} answers now but did not at the start of the run ({a['error']})")
        else:
            # a field read only once (system_identifier is optional) is not compared
            fields = sorted(set(a) & set(b))
            changed = [f"{f} {_show(a.get(f))} at the start, now {_show(b.get(f))}"
                       for f in fields if a.get(f) != b.get(f)]
            if changed:
                diffs.append(f"{label} changed: " + "; ".join(changed))
            else:
                same.append(label)
    return diffs, same


def unreadable(ident: dict[str, Any]) -> str:
    """Why the parts of `ident` could not be read, joined."""
    return "; ".join(f"{PARTS[k]}: {ident[k]['error']}" for k in PARTS if isinstance(ident.get(k), dict)
                     and "error" in ident[k]) or "no version endpoint, database or sandbox configured"


IDENTITY_UPDATES = "identity-updates.jsonl"


def record_update(run_dir: Any, phase: str, identity: dict[str, Any], reason: str) -> dict[str, Any]:
    """Append the identity `phase` left the target in (fsynced; read by every later phase)."""
    import json
    import os
    from datetime import UTC, datetime
    from pathlib import Path

    entry = {"phase": phase, "time": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason,
             "identity": identity}
    with (Path(run_dir) / IDENTITY_UPDATES).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def expected_identity(run_dir: Any, start: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the identity a phase must find now, the update that set it or None for the run's start)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / IDENTITY_UPDATES
    latest: dict[str, Any] | None = None
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed kernel: the earlier records stand
            if isinstance(entry, dict) and isinstance(entry.get("identity"), dict):
                latest = entry
    return (latest["identity"], latest) if latest else (start, None)
