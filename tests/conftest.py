"""Shared fixtures and helpers; the rules that keep the suite green on a busy machine.

- Waiting: every test that waits for a state uses ``wait_for`` (polls, and fails with "<what> within N s"
  when the state never comes) or ``finish`` (a subprocess, stopped and failed with its output tail when
  it overruns). Deadlines are generous; no assertion depends on how fast the machine is, except where the
  timing is the behaviour under test (a comment then says why the bound holds on any machine).
- Markers: a test that starts the sandbox, PostgreSQL or any server (an ``http.server`` thread, uvicorn,
  a server subprocess, a phase kernel) carries ``@pytest.mark.integration``. An unmarked test that tries is failed
  with the reason (see ``_servers_forbidden``), so ``pytest -m "not integration"`` stays a fast subset.
- Temporary files: each session gets its own base directory (``/tmp/rehearsal-tests-<uid>/<pid>``)
  instead of the shared ``/tmp/pytest-of-<user>``, which every pytest session of the same user resets to
  mode 0700 on start. That took the sandbox's PostgreSQL (another system user when run as root) out of
  its own data directory while another session started: "initdb ... Permission denied". ``--basetemp``
  still wins.

Busy-machine check (tests/README.md says more): with both cores busy, the whole suite must pass:

    for i in 1 2; do timeout 1800 python3 -c "while True: pass" & done
    .venv/bin/python -m pytest -q -p no:randomly; kill %1 %2
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from rehearsal_lib.processes import pid_alive

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# --------------------------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    When it never does, fail the test with ``"<what> within <timeout> s"``, e.g.
    ``wait_for(done, 120, "preflight did not finish")`` -> "preflight did not finish within 120 s";
    the test never goes on to assert something else."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s", pytrace=False)
        time.sleep(interval)


def finish(proc: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """Wait for ``proc`` and return its (stdout, stderr). When it overruns ``timeout``: SIGTERM (a run
    stops its phases and sandbox on it), SIGKILL if need be, and fail with ``"<what> within N s"`` and the
    tail of its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return out or "", err or ""
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        tail = ((out or "") + (err or ""))[-3000:]
        pytest.fail(f"{what} within {timeout:g} s; its output ended:\n{tail}", pytrace=False)


def run(args: list[str], timeout: float, what: str, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True)`` that fails the test with ``what`` (and
    stops the process cleanly) instead of raising TimeoutExpired."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    out, err = finish(proc, timeout, what)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params YAML file into tmp_path and return its path."""

    def write(text: str, name: str = "env.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture(autouse=True)
def _project_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(ROOT))
    os.environ.pop("REHEARSAL_OUTPUTS", None)


ALONE_LOCK_ENV = "REHEARSAL_TESTS_ALONE_LOCK"


@pytest.fixture(scope="module", autouse=True)
def _alone_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under pytest-xdist (`-n 2 --dist loadfile`, the README's test command): a module marked ``alone``
    (its verdicts depend on having the machine to itself: load generation, timeouts, rate-limit windows)
    holds an exclusive lock for the whole module, every other module a shared one, so a marked module
    never runs beside another. Autouse and module-scoped: it is taken before the module's own fixtures
    (e.g. a whole rehearsal) run. Without xdist there is nothing to share the machine with."""
    if not hasattr(request.config, "workerinput") or not os.environ.get(ALONE_LOCK_ENV):
        yield
        return
    import fcntl

    alone = request.node.get_closest_marker("alone") is not None
    asked = time.time()
    with open(os.environ[ALONE_LOCK_ENV], "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        got = time.time()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            _timeline(request, alone=alone, asked=asked, got=got, done=time.time())


def _timeline(request: pytest.FixtureRequest, **fields: object) -> None:
    """With REHEARSAL_TESTS_TIMELINE=FILE: one JSON line per module (worker, lock wait, duration), to see
    where the suite's wall time goes (`python tests/timeline.py FILE`)."""
    path = os.environ.get("REHEARSAL_TESTS_TIMELINE")
    if path:
        worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
        line = json.dumps({"module": request.node.name, "worker": worker, **fields})
        with open(path, "a") as fh:
            fh.write(line + "\n")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    """A real default sandbox in a temporary home, started once per test module and stopped after it.

    Only for tests marked ``integration`` (an unmarked test using it fails before it starts)."""
    from rehearsal_lib.sandbox import start_sandbox, stop_sandbox

    home = tmp_path_factory.mktemp("sbx")
    yield start_sandbox("default", home=home)
    stop_sandbox("default", home=home)


# ------------------------------------------------------------------------------- temporary files


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A base temporary directory of this session's own (see the module docstring), pruning the ones
    of finished sessions but the two newest; under pytest-xdist, the lock file its workers share.

    Ctrl-C tests send SIGINT to a child `rehearse run`: a suite started in the background of a
    non-interactive shell inherits SIGINT ignored, and so would every child (Python keeps an ignored
    SIGINT ignored), so the interrupted run would never stop. The suite takes SIGINT back."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(config, "workerinput"):
        # run locks per xdist worker: two workers' tests both running an environment named `scratch` with the
        # default lock folder refused each other ("environment scratch is in use"); one worker's tests run
        # one after another, and a test's own runs (and their subprocesses) share its worker's folder
        base = os.environ.get("REHEARSAL_LOCK_DIR") or f"{tempfile.gettempdir()}/rehearsal-tests-{os.getuid()}"
        os.environ["REHEARSAL_LOCK_DIR"] = str(Path(base) / f"locks-{config.workerinput['workerid']}-{os.getpid()}")
    if not hasattr(config, "workerinput") and not os.environ.get(ALONE_LOCK_ENV):
        lock_parent = Path(tempfile.gettempdir()) / f"rehearsal-tests-{os.getuid()}"
        lock_parent.mkdir(mode=0o711, exist_ok=True)
        os.environ[ALONE_LOCK_ENV] = str(lock_parent / f"alone-{os.getpid()}.lock")  # workers inherit it
    if config.option.basetemp:
        return
    parent = Path(tempfile.gettempdir()) / f"rehearsal-tests-{os.getuid()}"
    parent.mkdir(mode=0o711, exist_ok=True)
    finished = []
    for d in parent.iterdir():
        if d.is_dir() and d.name.isdigit() and not pid_alive(int(d.name)):
            finished.append(d)
    for d in sorted(finished, key=lambda p: p.stat().st_mtime)[:-2]:
        shutil.rmtree(d, ignore_errors=True)
    config.option.basetemp = str(parent / str(os.getpid()))



# ------------------------------------------------------------------------------ marker guard

# argv words that start a server: the sandbox's programs, the load tests' reference server, and a phase
# executor (its kernel serves ZeroMQ sockets; tens of seconds on a busy machine)
SERVER_PROGRAMS = ("pg_ctl", "initdb", "postgres", "redis-server", "uvicorn", "papermill")
SERVER_MODULES = ("rehearsal_lib.sandbox", "rehearsal_lib.load.reference_server", "uvicorn", "http.server",
                  "rehearsal_lib.execute", "ipykernel", "papermill")


def _server_in(args: object) -> str | None:
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    for i, word in enumerate(argv):
        if Path(word).name in SERVER_PROGRAMS:
            return Path(word).name
        if word == "-m" and i + 1 < len(argv) and argv[i + 1].startswith(SERVER_MODULES):
            return f"python -m {argv[i + 1]}"
    return None


@contextmanager
def _servers_forbidden(item: pytest.Item) -> Iterator[None]:
    """For a test without the integration marker: fail it, with the reason, when it (or a fixture it
    sets up) uses the ``sandbox`` fixture, listens on a socket in this process, or starts a server
    program."""
    if item.get_closest_marker("integration") is not None:
        yield
        return
    advice = "mark it @pytest.mark.integration (or give its module pytestmark = pytest.mark.integration)"
    if "sandbox" in getattr(item, "fixturenames", ()):
        pytest.fail(f"{item.nodeid} uses the sandbox fixture but is not marked integration: {advice}",
                    pytrace=False)
    own_listen, popen_init = socket.socket.__dict__.get("listen"), subprocess.Popen.__init__

    def guarded_listen(self: socket.socket, *args: object) -> None:
        pytest.fail(f"{item.nodeid} starts a server (listens on a socket) but is not marked integration: "
                    f"{advice}", pytrace=False)

    def guarded_popen(self: subprocess.Popen, args: object, *rest: object, **kw: object) -> None:
        server = _server_in(args)
        if server:
            pytest.fail(f"{item.nodeid} starts a server ({server}) but is not marked integration: {advice}",
                        pytrace=False)
        popen_init(self, args, *rest, **kw)

    socket.socket.listen = guarded_listen  # type: ignore[method-assign]
    subprocess.Popen.__init__ = guarded_popen  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own_listen is None:
            del socket.socket.listen  # back to the one socket.socket inherits
        else:
            socket.socket.listen = own_listen  # type: ignore[method-assign]
        subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _servers_forbidden(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _servers_forbidden(item):
        return (yield)
