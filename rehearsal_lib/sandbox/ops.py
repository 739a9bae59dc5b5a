"""Operations commands of the sandbox, for the backup & recovery drills.

``python -m rehearsal_lib.sandbox.ops restart`` restarts only the API process on the same port;
``rollback`` redeploys the previous release, which for the sandbox (one release) is the same restart.
The variant comes from ``--variant`` or ``$REHEARSAL_SANDBOX_VARIANT``, the home from
``$REHEARSAL_SANDBOX_HOME``, as for every sandbox command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rehearsal_lib.sandbox.manager import restart_app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal_lib.sandbox.ops", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["restart", "rollback"])
    p.add_argument("--variant", default=os.environ.get("REHEARSAL_SANDBOX_VARIANT", "default"))
    args = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        state = restart_app(args.variant)
    except RuntimeError as err:
        print(f"{args.action} failed: {err}", file=sys.stderr)
        return 1
    print(f"{args.action}: exam-api pid {state.app_pid} answering on {state.base_url} "
          f"after {time.monotonic() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
