"""`rehearse attest`, `rehearse signoff`, `rehearse status`: people after the run (rehearsal_lib/people.py).

attest/signoff exit 0 once the answer is recorded and the folder resealed, 2 on a usage error (an unknown
check or role, naming the known ones; a non-manual check; a folder that no longer matches its seal, unless
--reseal --reason says why). status exits with the decision's code: 0 GO, 1 NO-GO, 3 CONDITIONAL GO, 4 awaiting
sign-off or attestation, 2 when the folder no longer matches its seal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rehearsal_lib.config import ConfigError

EXIT_USAGE = 2


def _reseal_reason(args: argparse.Namespace, run_dir: Path) -> str | None:
    if args.reseal and not (args.reason or "").strip():
        raise ConfigError(run_dir, "--reseal needs --reason TEXT: why the changed folder is resealed")
    if args.reason and not args.reseal:
        raise ConfigError(run_dir, "--reason goes with --reseal")
    return args.reason.strip() if args.reseal else None


def _recorded(call: Any, run_dir: Path, retry: str) -> int:
    """Run attest/sign_off; print the new decision and the seal line, or why the seal refused."""
    from rehearsal_lib.people import status_lines
    from rehearsal_lib.seal import SealRefused, load_signing_key

    load_signing_key()
    try:
        summary = call()
    except SealRefused as exc:
        print(f"rehearse: {exc}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"rehearse:   {problem}", file=sys.stderr)
        print(f"rehearse: nothing was recorded; to record it anyway, with who, when and why in the reseal log: "
              f"{retry} --reseal --reason TEXT", file=sys.stderr)
        return EXIT_USAGE
    for line in status_lines(summary):
        print(line)
    print(f"report:  {run_dir / 'report.html'}")
    print(summary.sealed.line(), flush=True)
    return 0


def cmd_attest(args: argparse.Namespace) -> int:
    from rehearsal_lib.people import attest

    run_dir = Path(args.run_dir).resolve()
    reason = _reseal_reason(args, run_dir)
    return _recorded(lambda: attest(run_dir, args.check, args.by, args.status, args.note or "", reason), run_dir,
                     f"rehearse attest {args.run_dir} {args.check} --by ... --status {args.status}")


def cmd_signoff(args: argparse.Namespace) -> int:
    from rehearsal_lib.people import sign_off

    run_dir = Path(args.run_dir).resolve()
    reason = _reseal_reason(args, run_dir)
    return _recorded(lambda: sign_off(run_dir, args.role, args.by, args.approve, args.note or "", reason), run_dir,
                     f"rehearse signoff {args.run_dir} --role {args.role!r} --by ... "
                     f"{'--approve' if args.approve else '--reject'}")


def cmd_status(args: argparse.Namespace) -> int:
    from rehearsal_lib.people import open_run, status_lines
    from rehearsal_lib.seal import verify_run

    run_dir = Path(args.run_dir).resolve()
    summary = open_run(run_dir)
    for line in status_lines(summary):
        print(line)
    problems = verify_run(run_dir).problems
    if problems:
        print(f"seal: {len(problems)} problem(s): the folder no longer matches its seal "
              f"(rehearse verify {args.run_dir})")
        for p in problems[:12]:
            print(f"  {p}")
        return EXIT_USAGE
    print("seal: intact")
    return summary.decision.status_code


def add_commands(command: Any) -> None:
    """The three subcommands, added to `rehearse`'s parser by `cli.build_parser` (`command(name, help=...)`)."""
    def reseal_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reseal", action="store_true",
                       help="record it even though the folder no longer matches its seal (needs --reason)")
        p.add_argument("--reason", metavar="TEXT", help="why the changed folder is resealed (with --reseal)")

    p = command("attest", help="record an operator's answer for a check awaiting attestation; decide again and "
                               "reseal the run folder (reason 'attestation: CHECK by NAME')")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<env>/<run-id>)")
    p.add_argument("check", metavar="CHECK", help="the id of a manual check of the run, e.g. attestation.frontend")
    p.add_argument("--by", required=True, metavar="NAME", help="who attests")
    p.add_argument("--status", required=True, choices=["pass", "fail"], help="the answer")
    p.add_argument("--note", default="", metavar="TEXT", help="what was checked, how")
    reseal_options(p)
    p.set_defaults(func=cmd_attest)

    p = command("signoff", help="record a required role's sign-off (approve or reject); decide again and reseal")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<env>/<run-id>)")
    p.add_argument("--role", required=True, metavar="ROLE", help="one of params signoff.required_roles")
    p.add_argument("--by", required=True, metavar="NAME", help="who signs")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true", dest="approve", default=None)
    group.add_argument("--reject", action="store_false", dest="approve")
    p.add_argument("--note", default="", metavar="TEXT", help="the reason (required with --reject)")
    reseal_options(p)
    p.set_defaults(func=cmd_signoff)

    p = command("status", help="decision, pending attestations and sign-offs of a run folder (exit 0 GO, 1 NO-GO, "
                               "3 CONDITIONAL GO, 4 awaiting sign-off/attestation, 2 seal broken)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<env>/<run-id>)")
    p.set_defaults(func=cmd_status)
