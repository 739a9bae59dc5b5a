"""Operations commands of the sandbox: restart, blue/green deploy, abort, rollback, status.

``python -m rehearsal_lib.sandbox.ops restart`` restarts the serving colour of the API on the same port
(the backup & recovery drills). ``deploy --version V [--bake-s S] [--abort-after-s S]`` deploys V
blue/green behind the fault proxy's ``front`` (exit 0 once V serves; with ``--abort-after-s`` it aborts
itself after S seconds, rolls back and exits 1); ``abort`` aborts the deploy in progress (its automatic
rollback switches back); ``rollback`` switches back to the previous colour (without one, since nothing
was deployed: the same restart); ``status`` prints JSON (colours, versions, which serves). The variant
comes from ``--variant`` or ``$REHEARSAL_SANDBOX_VARIANT``, the home from ``$REHEARSAL_SANDBOX_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rehearsal_lib.sandbox import bluegreen
from rehearsal_lib.sandbox.manager import restart_app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal_lib.sandbox.ops", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["restart", "rollback", "deploy", "abort", "status"])
    p.add_argument("--variant", default=os.environ.get("REHEARSAL_SANDBOX_VARIANT", "default"))
    p.add_argument("--version", help="deploy: the version to deploy")
    p.add_argument("--bake-s", type=float, default=0.0, help="deploy: stay in progress this long after the switch")
    p.add_argument("--abort-after-s", type=float, default=None, help="deploy: abort after this many seconds")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        if args.action == "restart":
            state = restart_app(args.variant)
            print(f"restart: exam-api pid {state.app_pid} answering on {state.base_url} "
                  f"after {time.monotonic() - t0:.2f} s")
        elif args.action == "rollback":
            did = bluegreen.rollback(args.variant)
            print(f"rollback: {did} after {time.monotonic() - t0:.2f} s")
        elif args.action == "deploy":
            if not args.version:
                p.error("deploy needs --version")
            out = bluegreen.deploy(args.variant, args.version, args.abort_after_s, args.bake_s,
                                   say=lambda m: print(m, flush=True))
            print(json.dumps(out))
            return 0 if out.get("outcome") == "deployed" else 1
        elif args.action == "abort":
            out = bluegreen.abort(args.variant)
            print(json.dumps(out))
        else:
            print(json.dumps(bluegreen.status(args.variant), indent=2))
    except RuntimeError as err:
        print(f"{args.action} failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
