"""Execute one phase notebook with papermill, in its own process (`python -m rehearsal_lib.execute`).

Runs in a child process so the runner can time it out, interrupt it and run phases in parallel.
Only non-secret parameters (env name, run folder) reach papermill. Exit codes:
0 ran to the end; 10 a cell raised; 11 a cell timed out; 12 the kernel could not start;
13 the runner that started it died (SIGKILL, a crash): the phase stops rather than go on unowned.
A one-line JSON verdict is printed last on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

OK, CELL_ERROR, CELL_TIMEOUT, KERNEL_FAILED, RUNNER_GONE = 0, 10, 11, 12, 13


def stop_when_parent_dies(poll_s: float = 1.0) -> None:
    """Exit when the process that started this one (the runner) is gone: a phase never outlives its run.

    The kernel runs in its own session and exits when this process does (ipykernel's parent poller)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                print(json.dumps({"exit": RUNNER_GONE, "reason": f"the runner (pid {parent}) is gone; the phase "
                                  "stopped"}), flush=True)
                os._exit(RUNNER_GONE)

    threading.Thread(target=watch, name="runner-watch", daemon=True).start()


def skip_slow_optional_imports() -> None:
    """Keep jsonschema from importing rfc3987_syntax in this process.

    jsonschema imports rfc3987_syntax, when installed (JupyterLab's dependencies install it), only
    to check the "iri" string format; that module compiles a grammar at import, ~1.3 s per phase
    here. Notebook validation never uses that format, so this executor process goes without it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not installed"


def _kernel_start_failure(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("kernel died", "zmq", "address already in use", "kernel didn't respond",
                                   "timeout waiting for kernel_info", "kernel_info"))


def ipc_kernel_manager(socket_dir: Path) -> type:
    """A kernel manager using Unix-socket (IPC) transport: nothing of the kernel's traffic crosses TCP.

    Each kernel's sockets live in its own private (0700) `socket_dir`: the default IPC path is derived
    from the working directory, so kernels started side by side would otherwise share sockets.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class IpcKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _private_socket_prefix(self) -> str:
            return str(socket_dir / "ipc")

    return IpcKernelManager


def execute(notebook: Path, output: Path, env: str, run_dir: str, cell_timeout: float, cwd: Path) -> tuple[int, str]:
    """Run the notebook; return (exit code, reason). Retries once when the kernel fails to start."""
    import shutil
    import tempfile

    socket_dir = Path(tempfile.mkdtemp(prefix="rehearsal-kernel-"))
    try:
        return _execute(notebook, output, env, run_dir, cell_timeout, cwd, socket_dir)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _execute(notebook: Path, output: Path, env: str, run_dir: str, cell_timeout: float, cwd: Path,
             socket_dir: Path) -> tuple[int, str]:
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    attempts = 2
    for attempt in range(1, attempts + 1):
        try:
            pm.execute_notebook(
                str(notebook), str(output), parameters={"env": env, "run_dir": run_dir},
                kernel_name="python3", cwd=str(cwd), progress_bar=False, log_output=True,
                execution_timeout=int(cell_timeout), request_save_on_cell_execute=True, start_timeout=60,
                kernel_manager_class=ipc_kernel_manager(socket_dir),
            )
            return OK, ""
        except PapermillExecutionError as exc:
            return CELL_ERROR, f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
        except CellTimeoutError:
            return CELL_TIMEOUT, f"a cell ran longer than {cell_timeout:g} s and was stopped"
        except DeadKernelError as exc:
            return CELL_ERROR, f"the kernel died: {exc}"
        except Exception as exc:  # noqa: BLE001 - kernel start races surface as assorted errors
            if attempt < attempts and _kernel_start_failure(exc) and not output.exists():
                time.sleep(0.5)
                continue
            code = KERNEL_FAILED if _kernel_start_failure(exc) else CELL_ERROR
            return code, f"{type(exc).__name__}: {exc}"
    return KERNEL_FAILED, "the kernel did not start"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebook", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--env", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--cell-timeout", type=float, default=300)
    args = ap.parse_args(argv)
    stop_when_parent_dies()
    skip_slow_optional_imports()
    import logging

    # papermill's per-cell start/end lines, with timestamps, make logs/<phase>.log a timeline of the phase
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    # the kernel works in this process's folder: the project folder under `rehearse run` (relative paths in
    # params, e.g. a smoke command's, are relative to it), never the notebook's (site-packages when installed)
    code, reason = execute(args.notebook, args.output, args.env, args.run_dir, args.cell_timeout, Path.cwd())
    print(json.dumps({"exit": code, "reason": reason}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
