"""Built-in injectors: what a fault scenario does to the target, and its restore as data (`Restore`).

Each injector is made from its params block and `resolve` (the phase's `${VAR}` resolution). `restore()`
returns the `Restore` the phase registers BEFORE `inject()` runs (params values, `${VAR}` unresolved), so the
runner can undo the fault after a killed kernel; `None` when there is nothing to undo (terminated backends:
the service must reconnect by itself, which is what the scenario checks).

- `command`: the team's inject and restore commands.
- `process`: SIGSTOP (restore SIGCONT) or SIGKILL/SIGTERM (restore: optional start command, then wait until
  the pid file names a live process again: `python -m rehearsal_lib.disruption.waitpid`).
- `pg_terminate`: pg_terminate_backend of the backends with an application_name, through an admin URL.
- `proxy`: a Toxiproxy-API proxy (ours, `rehearsal_lib.faultproxy`, or a team's Toxiproxy): disable/enable
  a proxy, or add/remove a toxic.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

from rehearsal_lib.disruption.params import CommandInjector, PgTerminateInjector, ProcessInjector, ProxyInjector
from rehearsal_lib.disruption.waitpid import alive, read_pid
from rehearsal_lib.probes import command as cmd
from rehearsal_lib.restores import Restore

Resolve = Callable[[str], str]


class Injector:
    """One fault: `restore()` (as data, registered first), then `inject()` -> what it did."""

    description = ""

    def restore(self) -> Restore | None:
        raise NotImplementedError

    def inject(self) -> str:
        raise NotImplementedError

    def refresh(self) -> None:
        """Re-read what the fault targets, just before its restore is registered and it is injected."""


class CommandFault(Injector):
    def __init__(self, cfg: CommandInjector, resolve: Resolve):
        self.cfg, self.resolve = cfg, resolve
        self.description = f"command {shlex.split(cfg.inject)[0] if cfg.inject.strip() else ''}"

    def restore(self) -> Restore:
        # {python} filled now; ${VAR} references stay unresolved (the runner resolves them when it runs it)
        return Restore(f"restore command of {self.description}", kind="command",
                       command=shlex.join(cmd.split(self.cfg.restore)), timeout_s=self.cfg.timeout_s)

    def inject(self) -> str:
        res = cmd.run(self.resolve(self.cfg.inject), self.cfg.timeout_s)
        if not res.ok:
            raise RuntimeError(f"inject command failed: {res.describe()}: {res.output[-300:].strip()}")
        return res.describe()


class ProcessFault(Injector):
    def __init__(self, cfg: ProcessInjector, resolve: Resolve):
        self.cfg, self.resolve = cfg, resolve
        self.pid_file = resolve(cfg.pid_file)
        self.refresh()

    def refresh(self) -> None:
        """The pid as the file names it now (read before the restore is registered: it names this pid). The
        harness reads it again after the traffic's first window: a file that names the process serving the
        traffic (the sandbox's worker pid file) may name another one by then."""
        self.pid = read_pid(self.pid_file)
        if not alive(self.pid):
            raise RuntimeError(f"pid {self.pid} from {self.pid_file} is not a live process")
        self.description = f"{self.cfg.signal} to pid {self.pid} ({os.path.basename(self.pid_file)})"

    def restore(self) -> Restore:
        if self.cfg.signal == "SIGSTOP":
            return Restore(f"SIGCONT to pid {self.pid}", kind="command", command=f"kill -CONT {self.pid}",
                           timeout_s=10)
        parts = [sys.executable, "-m", "rehearsal_lib.disruption.waitpid", "--pid-file",
                 self.cfg.pid_file, "--not-pid", str(self.pid), "--within-s", f"{self.cfg.back_within_s:g}"]
        if self.cfg.start_command:
            parts += ["--start", shlex.join(cmd.split(self.cfg.start_command))]
        # the pid file path may be a ${VAR} reference: `perform` resolves it when the restore runs
        return Restore(f"a live process in {os.path.basename(self.pid_file)} again", kind="command",
                       command=shlex.join(parts), timeout_s=self.cfg.back_within_s + 30)

    def inject(self) -> str:
        os.kill(self.pid, getattr(signal, self.cfg.signal))
        return f"sent {self.description}"


class PgTerminateFault(Injector):
    def __init__(self, cfg: PgTerminateInjector, resolve: Resolve):
        self.cfg, self.resolve = cfg, resolve
        self.description = f"pg_terminate_backend where application_name = {cfg.application_name!r}"

    def restore(self) -> None:
        return None  # nothing to undo: the service must reconnect (the recovery check)

    def inject(self) -> str:
        import sqlalchemy as sa

        url = self.resolve(self.cfg.database_url)
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5,
                                                                                 "application_name": "rehearsal"})
        try:
            with engine.begin() as conn:
                rows = conn.execute(sa.text(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app AND pid <> pg_backend_pid()"),
                    {"app": self.cfg.application_name}).all()
        finally:
            engine.dispose()
        done = sum(1 for _, ok in rows if ok)
        if not rows:
            raise RuntimeError(f"no backend with application_name {self.cfg.application_name!r}: nothing to "
                               "terminate (the fault was not exercised)")
        return f"terminated {done} of {len(rows)} backend(s) with application_name {self.cfg.application_name!r}"


class ProxyFault(Injector):
    def __init__(self, cfg: ProxyInjector, resolve: Resolve):
        self.cfg, self.resolve = cfg, resolve
        self.api_url = resolve(cfg.api_url).rstrip("/")
        self.toxic_name = f"rehearsal_{cfg.toxic.type}" if cfg.toxic else ""
        what = f"toxic {cfg.toxic.type} {cfg.toxic.attributes}" if cfg.toxic else "disabled"
        self.description = f"proxy {cfg.proxy}: {what}"

    def _client(self) -> Any:
        from rehearsal_lib.probes.toxiproxy import (  # type: ignore[import-not-found, unused-ignore]  # lazily
            ToxiproxyClient,
        )

        return ToxiproxyClient(self.api_url)

    def restore(self) -> Restore:
        base = self.cfg.api_url.rstrip("/")  # as the params spell it (a ${VAR} stays unresolved)
        if self.cfg.action == "disable":
            return Restore(f"enable proxy {self.cfg.proxy}", kind="url", method="POST",
                           url=f"{base}/proxies/{self.cfg.proxy}", json_body={"enabled": True}, auth=False)
        return Restore(f"remove toxic {self.toxic_name} of proxy {self.cfg.proxy}", kind="url", method="DELETE",
                       url=f"{base}/proxies/{self.cfg.proxy}/toxics/{self.toxic_name}", auth=False)

    def inject(self) -> str:
        client = self._client()
        if self.cfg.action == "disable":
            client.set_enabled(self.cfg.proxy, False)
        else:
            t = self.cfg.toxic
            assert t is not None
            client.add_toxic(self.cfg.proxy, t.type, dict(t.attributes), name=self.toxic_name, stream=t.stream,
                             toxicity=t.toxicity)
        return self.description


def make(cfg: Any, resolve: Resolve) -> Injector:
    """The injector for one params block (its `type`)."""
    kinds: dict[str, type[Injector]] = {"command": CommandFault, "process": ProcessFault,
                                        "pg_terminate": PgTerminateFault, "proxy": ProxyFault}
    return kinds[cfg.type](cfg, resolve)  # type: ignore[call-arg]
