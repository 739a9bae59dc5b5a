"""Blue/green deploys of the sandbox app behind the fault proxy's ``front`` (issue #13; docs/sandbox.md).

A deploy starts the other colour with the new version on fresh ports, waits until it is ready, switches
``front`` (and ``front_tls``) to it and keeps the old colour running, frozen, for a rollback. An abort
(``ops abort``, SIGUSR1 to the deploy, or ``--abort-after-s``) rolls back automatically: ``front`` back
to the old colour, the new one stopped.

``faulty`` plants two defects here: the deploy stops the old colour before the new one serves
(cutover_drops_requests: a gap), and an abort leaves the new version serving (abort_leaves_new_version).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from rehearsal_lib.probes.toxiproxy import ToxiproxyClient
from rehearsal_lib.sandbox import manager
from rehearsal_lib.sandbox.manager import SandboxState

DEPLOY_FILE = "deploy.json"  # the deploy in progress: {pid, version, from, to, started_at, steps}
LAST_FILE = "deploy-last.json"  # how the last deploy ended
READY_TIMEOUT_S = 30.0
DRAIN_ON, DRAIN_OFF = signal.SIGUSR1, signal.SIGUSR2  # app.DRAIN_ON/OFF (not imported: the app is heavy)


class DeployAborted(Exception):
    """The deploy was told to abort."""


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def _state(vdir: Path) -> SandboxState:
    st = manager._read_state(vdir)
    if st is None or not st.fault_proxy_url:
        raise RuntimeError(f"sandbox is not running with a fault proxy (no state in {vdir})")
    return st


def _save(vdir: Path, st: SandboxState) -> None:
    manager._write_private(vdir / "state.json", json.dumps(st.to_json(), indent=2) + "\n")


def _update(vdir: Path, fn: Callable[[SandboxState], None]) -> SandboxState:
    with manager._locked(vdir):
        st = _state(vdir)
        fn(st)
        _save(vdir, st)
        return st


def colour_running(st: SandboxState, colour: str) -> bool:
    pid = int((st.colours.get(colour) or {}).get("pid") or 0)
    return bool(pid) and manager._is_app_process(pid)


def switch(vdir: Path, colour: str) -> SandboxState:
    """Point ``front``/``front_tls`` at ``colour`` and record it as serving (the other becomes previous)."""

    def apply(st: SandboxState) -> None:
        c = st.colours[colour]
        client = ToxiproxyClient(st.fault_proxy_url)
        client.set_upstream("front", f"127.0.0.1:{c['port']}")
        client.set_upstream("front_tls", f"127.0.0.1:{c['https_port']}")
        if st.serving != colour:
            st.previous, st.serving = st.serving, colour
        _signal_colour(st, colour, DRAIN_OFF)
        if st.previous:
            _signal_colour(st, st.previous, DRAIN_ON)
        st.app_pid = int(c["pid"])
        manager.point_worker_pid_file(vdir, colour)
        (vdir / "app.pid").write_text(f"{st.app_pid}\n")

    return _update(vdir, apply)


def _signal_colour(st: SandboxState, colour: str, sig: int) -> None:
    """Tell ``colour``'s supervisor it is drained (switched away from) or serves again."""
    pid = int((st.colours.get(colour) or {}).get("pid") or 0)
    if pid and manager._is_app_process(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_colour(vdir: Path, colour: str) -> None:
    """Stop ``colour`` (its supervisor stops its workers); its entry stays, with pid 0, for a rollback."""
    st = _state(vdir)
    pid = int((st.colours.get(colour) or {}).get("pid") or 0)
    if pid and manager._is_app_process(pid):
        manager._terminate(pid)

    def mark(s: SandboxState) -> None:
        if colour in s.colours:
            s.colours[colour]["pid"] = 0

    _update(vdir, mark)


def _start_colour(vdir: Path, colour: str, version: str, abort: threading.Event | None = None,
                  port: int = 0, https_port: int = 0) -> None:
    """Start ``colour`` with ``version`` and wait until /v1/ready answers 200 on its own port."""
    st = _state(vdir)
    proc, port, https_port = manager._spawn_app(vdir, st.variant, st.app_db_url or st.db_url, st.token,
                                                manager.app_env(st), port, https_port, colour=colour,
                                                version=version)

    def record(s: SandboxState) -> None:
        s.colours[colour] = {"pid": proc.pid, "port": port, "https_port": https_port, "version": version}

    _update(vdir, record)
    _wait_ready(vdir, colour, port, abort, proc.pid)


def _wait_ready(vdir: Path, colour: str, port: int, abort: threading.Event | None = None, pid: int = 0) -> None:
    """Wait until ``colour`` answers /v1/ready with 200 on its own port."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if abort is not None and abort.is_set():
                raise DeployAborted
            if pid and not manager._pid_alive(pid):
                raise RuntimeError(f"{colour} exited:\n{manager._tail(vdir / 'app.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{port}/v1/ready").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{colour} was not ready within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)


@contextlib.contextmanager
def _deploy_lock(vdir: Path) -> Iterator[None]:
    with open(vdir / ".deploy.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RuntimeError("another deploy is in progress") from err
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def deploy(variant: str, version: str, abort_after_s: float | None = None, bake_s: float = 0.0,
           home: Path | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Deploy ``version`` blue/green; returns the outcome (``{"outcome": "deployed"|"aborted"|"failed", ...}``).

    ``bake_s``: keep the deploy in progress that long after the switch (an ``ops abort`` can land then).
    ``abort_after_s``: abort after that many seconds (the deploy waits for it after the switch)."""
    vdir = manager.sandbox_home(variant, home)
    faulty = variant == "faulty"
    with _deploy_lock(vdir):
        st = _state(vdir)
        old, new, previous_before = st.serving, other(st.serving), st.previous
        old_version = (st.colours.get(old) or {}).get("version", "")
        abort = threading.Event()
        previous_handler = signal.signal(signal.SIGUSR1, lambda *_: abort.set())
        timer = threading.Timer(abort_after_s, abort.set) if abort_after_s is not None else None
        t0, wall0 = time.monotonic(), time.time()
        record: dict[str, Any] = {"pid": os.getpid(), "version": version, "from": old, "to": new,
                                  "from_version": old_version, "started_at": wall0, "steps": []}

        def step(name: str) -> None:
            record["steps"].append({"t_s": round(time.monotonic() - t0, 3), "step": name})
            (vdir / DEPLOY_FILE).write_text(json.dumps(record))
            say(f"deploy {version}: {name} (+{time.monotonic() - t0:.2f} s)")

        def check() -> None:
            if abort.is_set():
                raise DeployAborted

        switched = False
        try:
            if timer is not None:
                timer.daemon = True
                timer.start()
            step(f"start: {old} ({old_version}) serving, {new} gets {version}")
            if colour_running(st, new):
                stop_colour(vdir, new)  # a colour frozen by an earlier deploy gives way
            if faulty:  # cutover_drops_requests: the old colour is stopped before the new one serves
                stop_colour(vdir, old)
                step(f"stopped {old}")
            check()
            _start_colour(vdir, new, version, abort)
            step(f"{new} ready")
            check()
            switch(vdir, new)
            switched = True
            step(f"front switched to {new}")
            bake_until = time.monotonic() + bake_s
            while time.monotonic() < bake_until or (timer is not None and not abort.is_set()):
                check()
                time.sleep(0.02)
            check()
            step(f"done: {new} ({version}) serving, {old} kept for rollback")
            record["outcome"] = "deployed"
        except DeployAborted:
            step("abort")
            if faulty:  # abort_leaves_new_version: the "rollback" goes to the newest colour
                if not switched:
                    now = _state(vdir)
                    if colour_running(now, new):
                        _wait_ready(vdir, new, int(now.colours[new]["port"]))
                    else:
                        _start_colour(vdir, new, version)
                    switch(vdir, new)
                step(f"rollback finished: {new} ({version}) serving")
            else:
                if switched:
                    switch(vdir, old)
                stop_colour(vdir, new)
                _update(vdir, lambda s: setattr(s, "previous", previous_before))
                step(f"rolled back: {old} ({old_version}) serving, {new} stopped")
            record["outcome"] = "aborted"
        except Exception as err:  # noqa: BLE001 - reported, and the old colour keeps serving (default)
            step(f"failed: {type(err).__name__}: {err}")
            if not faulty:
                if switched:
                    switch(vdir, old)
                stop_colour(vdir, new)
            record["outcome"] = "failed"
            record["error"] = str(err)
        finally:
            if timer is not None:
                timer.cancel()
            signal.signal(signal.SIGUSR1, previous_handler)
            record["took_s"] = round(time.monotonic() - t0, 3)
            (vdir / LAST_FILE).write_text(json.dumps(record))
            (vdir / DEPLOY_FILE).unlink(missing_ok=True)
        return record


def abort(variant: str, home: Path | None = None, wait_s: float = 60.0) -> dict[str, Any]:
    """Abort the deploy in progress (SIGUSR1 to it) and wait for its automatic rollback; its outcome."""
    vdir = manager.sandbox_home(variant, home)
    try:
        current = json.loads((vdir / DEPLOY_FILE).read_text())
        pid = int(current["pid"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeError("no deploy in progress") from err
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError as err:
        raise RuntimeError(f"no deploy in progress (deploy pid {pid} is gone)") from err
    deadline = time.monotonic() + wait_s
    while (vdir / DEPLOY_FILE).exists() and manager._pid_alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the deploy (pid {pid}) did not finish its rollback within {wait_s:.0f} s")
        time.sleep(0.05)
    return json.loads((vdir / LAST_FILE).read_text())


def rollback(variant: str, home: Path | None = None) -> str:
    """Switch ``front`` back to the previous colour (started again if it was stopped); without one, restart
    the serving colour (a one-release sandbox: the backup_recovery drill's rollback). Returns what it did."""
    vdir = manager.sandbox_home(variant, home)
    st = _state(vdir)
    prev = st.previous
    if not prev or prev not in st.colours:
        st = manager.restart_app(variant, home)
        return f"restarted {st.serving} (no previous colour to roll back to)"
    c = st.colours[prev]
    if not colour_running(st, prev):
        _start_colour(vdir, prev, c.get("version", ""), port=int(c.get("port") or 0),
                      https_port=int(c.get("https_port") or 0))
    switch(vdir, prev)
    return f"front switched back to {prev} ({c.get('version')})"


def status(variant: str, home: Path | None = None) -> dict[str, Any]:
    """Colours, versions, which serves, the deploy in progress and the last one's outcome."""
    vdir = manager.sandbox_home(variant, home)
    st = _state(vdir)

    def read(name: str) -> Any:
        try:
            return json.loads((vdir / name).read_text())
        except (OSError, ValueError):
            return None

    return {
        "variant": variant,
        "serving": st.serving,
        "version": (st.colours.get(st.serving) or {}).get("version"),
        "previous": st.previous or None,
        "front": st.base_url,
        "colours": {c: {"version": v.get("version"), "port": v.get("port"), "pid": v.get("pid"),
                        "running": colour_running(st, c)} for c, v in st.colours.items()},
        "deploy_in_progress": read(DEPLOY_FILE),
        "last_deploy": read(LAST_FILE),
    }
