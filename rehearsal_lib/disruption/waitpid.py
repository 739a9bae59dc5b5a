"""The restore of a killed process, as a command the runner can run after a killed kernel (light imports):

    python -m rehearsal_lib.disruption.waitpid --pid-file F --not-pid OLD --within-s S [--start CMD]

It launches the start command (when given; not waited for: it may run the process in the foreground), then
waits until the pid file names a live process other than OLD. Exit 0 when it does, 1 with the reason."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

from rehearsal_lib.processes import pid_alive as alive  # one answer for "alive" (zombies are dead)


def read_pid(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read a pid from {path}: {exc}") from None



def wait_pid(pid_file: str, not_pid: int, within_s: float, start: str | None = None) -> tuple[bool, str]:
    starter = None
    if start:
        try:
            starter = subprocess.Popen(shlex.split(start), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            return False, f"start command cannot run: {exc}"
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            pid = read_pid(pid_file)
        except RuntimeError:
            pid = 0
        if pid and pid != not_pid and alive(pid):
            return True, f"pid {pid} is live"
        if starter is not None and starter.poll() not in (None, 0):
            return False, f"start command exited {starter.returncode}"
        time.sleep(0.1)
    return False, f"no live process other than {not_pid} in {pid_file} within {within_s:g} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal_lib.disruption.waitpid")
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--not-pid", type=int, default=0)
    parser.add_argument("--within-s", type=float, default=30)
    parser.add_argument("--start", default=None)
    args = parser.parse_args(argv)
    ok, what = wait_pid(args.pid_file, args.not_pid, args.within_s, args.start)
    print(what)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
