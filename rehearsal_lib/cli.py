"""`rehearse`: run, validate, report, list, verify, sandbox, phases, notebooks, lab.

The project (params/, outputs/, optional notebooks/) is `--project DIR`, else `$REHEARSAL_PROJECT_DIR`,
else the nearest parent of the current directory holding params/, else the current directory.

Exit codes: 0 GO, 1 NO-GO, 3 CONDITIONAL GO, 2 usage or configuration error, 130 interrupted.
`rehearse status`: the decision's code, or 4 while a sign-off or an attestation is awaited.
`rehearse verify`: 0 intact, 1 problems found (one line each), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rehearsal_lib.config import MAX_PARALLEL, ConfigError, load_params, project_root
from rehearsal_lib.extras import MissingExtra
from rehearsal_lib.extras import require as require_extra
from rehearsal_lib.results import UnreadableFile

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
MAX_LISTED = 12


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _err(message: str) -> None:
    print(f"rehearse: {message}", file=sys.stderr)


def _print_progress(line: str) -> None:
    """Progress to stdout. A reader that goes away (`rehearse run ENV | head`) must not stop the run:
    stdout then points at /dev/null and the run goes on to its report (logs/ keeps the timeline)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)

def cmd_run(args: argparse.Namespace) -> int:
    import math

    from rehearsal_lib.runlock import RunLockError
    from rehearsal_lib.runner import Runner
    from rehearsal_lib.seal import load_signing_key

    load_signing_key()  # a configured key that cannot be used stops the run before it starts
    wait_s = args.wait_timeout if args.wait_timeout is not None else (math.inf if args.wait else None)
    runner = Runner(args.env, parallel=args.parallel, allow_destructive=args.allow_destructive,
                    outputs=Path(args.outputs).resolve() if args.outputs else None, show_code=args.show_code,
                    progress=_print_progress, echo_checks=not args.quiet, wait_s=wait_s,
                    resume=Path(args.resume) if args.resume else None)
    try:
        summary = runner.run()
    except RunLockError as exc:
        _err(str(exc))
        return EXIT_USAGE
    d = summary.decision
    print(f"\nDECISION: {d.label}")
    for label, items in (("blocker", d.blockers), ("condition", d.conditions)):
        for item in items[:MAX_LISTED]:
            print(f"  {label}: {_one_line(item)}")
        if len(items) > MAX_LISTED:
            print(f"  ... and {len(items) - MAX_LISTED} more {label}(s): see the report")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:  # CI job summaries: the filled-in seed template
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write((summary.run_dir / "summary.md").read_text(encoding="utf-8") + "\n")
    print(f"report:  {summary.run_dir / 'report.html'}")
    print(f"results: {summary.run_dir / 'results.json'}  junit: {summary.run_dir / 'junit.xml'}")
    print(summary.sealed.line(), flush=True)  # the last line: a CI log anchors the ledger
    if runner.interrupted:
        return EXIT_INTERRUPTED
    return d.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    params = load_params(args.env, check_env_vars=not args.no_env)
    refs = sorted({var for var, _, _ in params.references()})
    print(f"{args.env}: OK ({params.environment.kind})")
    print(f"  phases: {', '.join(params.enabled_phases())}")
    if refs:
        print(f"  environment references: {', '.join(refs)}")
    for warning in stale_notebooks(params.enabled_phases()):
        print(f"rehearse: warning: {warning}", file=sys.stderr)
    return 0


EJECT_KEY = "rehearsal"  # the notebook metadata key `notebooks eject` stamps: {"version", "phase", "ejected_at"}


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rehearsal")
    except PackageNotFoundError:
        return "0"


def _version_key(text: str) -> tuple:
    """Orders release versions ("0.10.0" after "0.9.1"); PEP 440 through `packaging` when it is there."""
    try:
        from packaging.version import InvalidVersion, Version

        try:
            return (0, Version(text))
        except InvalidVersion:
            return (-1, text)
    except ImportError:  # pragma: no cover - packaging comes with jupyter
        import re

        return (0, tuple(int(n) for n in re.findall(r"\d+", text)))


def stale_notebooks(names: list[str]) -> list[str]:
    """One warning per project notebook (an override of a built-in phase) ejected from an older tool."""
    import json

    from rehearsal_lib import phases

    installed, out = tool_version(), []
    for name in names:
        shipped, used = phases.shipped_notebook(name), phases.notebook_for(name)
        if shipped is None or used is None or used == shipped:
            continue
        try:
            stamp = json.loads(used.read_text(encoding="utf-8")).get("metadata", {}).get(EJECT_KEY, {})
        except (OSError, ValueError, AttributeError):
            continue  # the runner names an unreadable notebook when it runs it
        ejected = stamp.get("version") if isinstance(stamp, dict) else None
        if isinstance(ejected, str) and _version_key(ejected) < _version_key(installed):
            out.append(f"{used}: ejected from rehearsal {ejected}, older than the installed {installed}; compare it "
                       f"with the shipped notebook (rehearse notebooks eject {name} --force replaces it)")
    return out


def cmd_notebooks(args: argparse.Namespace) -> int:
    """`notebooks eject [PHASE…]`: copy the shipped notebooks into the project's notebooks/ for editing."""
    import datetime as dt
    import json

    from rehearsal_lib import phases

    names = args.phases or [s.name for s in phases.registry() if phases.shipped_notebook(s.name) is not None]
    for name in names:
        if not phases.known(name):
            raise ConfigError(name, f"no such phase (phases: {', '.join(s.name for s in phases.registry())})")
        if phases.shipped_notebook(name) is None:
            raise ConfigError(name, "this phase ships no notebook in rehearsal (a phase package keeps its own)")
    target_dir = phases.notebooks_dir()
    pairs = [(phases.shipped_notebook(n), target_dir / phases.get(n).notebook_name, n) for n in names]
    existing = [str(dst) for _, dst, _ in pairs if dst.exists()]
    if existing and not args.force:
        raise ConfigError(existing[0], "already exists; nothing was copied (--force replaces it)",
                          also=[f"{p}: already exists" for p in existing[1:]])
    target_dir.mkdir(parents=True, exist_ok=True)
    version, now = tool_version(), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for src, dst, name in pairs:
        assert src is not None
        nb = json.loads(src.read_text(encoding="utf-8"))
        nb.setdefault("metadata", {})[EJECT_KEY] = {"version": version, "phase": name, "ejected_at": now}
        dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{dst}  (phase {name}, from rehearsal {version})")
    return 0


def cmd_phases(args: argparse.Namespace) -> int:
    """The catalogue, from the registry: built-in phases and those installed packages register."""
    import json

    from rehearsal_lib import phases

    rows = []
    for spec in phases.registry():
        kind = "destructive" if spec.destructive else "disruptive" if spec.disruptive else ""
        state = "available" if phases.notebook_for(spec.name) is not None else "not built yet"
        rows.append((spec.number, spec.name, spec.title, kind, state, spec.package, spec.seed))
    if args.json:
        keys = ("order", "name", "title", "kind", "state", "package", "seed")
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))
    else:
        for r in rows:
            print(f"{r[0]:>4}  {r[1]:<16} {r[2]:<26} {r[3]:<11} {r[4]:<13} {r[5]}")
    for problem in phases.problems():
        print(f"rehearse: an installed phase cannot be used: {problem}", file=sys.stderr)
    return 2 if phases.problems() else 0


def _run_dir(value: str) -> Path:
    path = Path(value).resolve()
    if not (path / "notebooks").is_dir():
        raise ConfigError(path, "not a run folder (no notebooks/ inside)")
    return path


def _loose_notebooks(path: Path) -> list[Path] | None:
    """The executed notebooks `rehearse report PATH` turns into a report when PATH is not a run folder:
    PATH itself (a .ipynb) or the .ipynb files in the folder PATH; None for a run folder."""
    if path.suffix == ".ipynb":
        if not path.is_file():
            raise ConfigError(path, "no such notebook")
        return [path.resolve()]
    if path.is_dir() and not (path / "notebooks").is_dir():
        found = sorted(p.resolve() for p in path.glob("*.ipynb") if not p.name.startswith("."))
        if not found:
            raise ConfigError(path, "neither a run folder (no notebooks/ inside) nor a folder of executed notebooks")
        return found
    return None


def _report_notebooks(args: argparse.Namespace, notebooks: list[Path]) -> int:
    """`rehearse report NOTEBOOK|FOLDER`: the offline report of interactively executed notebooks."""
    from rehearsal_lib.report import notebook_report

    if args.reseal or args.reason:
        raise ConfigError(Path(args.run_dir), "--reseal/--reason are for run folders: notebooks on their own "
                                              "have no seal")
    path = Path(args.run_dir)
    if args.out:
        out = Path(args.out)
    elif path.is_dir():
        out = path.resolve().parent / f"{path.resolve().name}.report.html"
    else:
        out = path.with_name(path.name.removesuffix(".ipynb") + ".report.html")
    try:
        written, summary = notebook_report(notebooks, out.resolve(), show_code=args.show_code)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    print(f"{summary.decision.decision} over {len(notebooks)} notebook(s) (not a run: no seal, no ledger): {written}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rehearsal_lib.evidence import crash_info
    from rehearsal_lib.runner import finalize
    from rehearsal_lib.runrecord import read_run_record
    from rehearsal_lib.seal import SealRefused, load_signing_key

    notebooks = _loose_notebooks(Path(args.run_dir))
    if notebooks is not None:
        return _report_notebooks(args, notebooks)
    if args.out:
        raise ConfigError(Path(args.run_dir), "--out is for executed notebooks; a run folder's report is its "
                                              "report.html")
    run_dir = _run_dir(args.run_dir)
    record = read_run_record(run_dir)  # one line naming run.json when it is corrupt or of the wrong shape
    if record.runner_pid and not record.finished_at and crash_info(record) is None:
        raise ConfigError(run_dir, f"this run is still going (runner pid {record.runner_pid} on "
                                   f"{record.runner_host}, heartbeat {record.heartbeat_at}); "
                                   "its runner writes the report when it ends")
    if args.reseal and not (args.reason or "").strip():
        raise ConfigError(run_dir, "--reseal needs --reason TEXT: why the sealed evidence is being resealed")
    if args.reason and not args.reseal:
        raise ConfigError(run_dir, "--reason goes with --reseal")
    load_signing_key()
    try:
        reason = args.reason.strip() if args.reseal else None
        summary = finalize(run_dir, show_code=args.show_code, reseal_reason=reason)
    except SealRefused as exc:
        _err(str(exc) + ":")
        for problem in exc.problems:
            _err(f"  {problem}")
        _err("to rebuild it anyway and record who, when and why in its reseal log: "
             f"rehearse report {args.run_dir} --reseal --reason TEXT")
        return EXIT_USAGE
    if summary.crashed:
        from rehearsal_lib.evidence import crash_line

        print(f"CRASHED: {crash_line(summary.crashed)}")
        print(f"  to run the phases that did not complete into this folder: rehearse run "
              f"{summary.record.env or 'ENV'} --resume {args.run_dir}")
    print(f"{summary.decision.decision}: {run_dir / 'report.html'}")
    print(summary.sealed.line())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from rehearsal_lib.seal import load_public_key, verify_run

    run_dir = _run_dir(args.run_dir)
    ledger = Path(args.ledger).resolve() if args.ledger else None
    if ledger is not None and not ledger.is_file():
        raise ConfigError(ledger, "no such ledger file")
    if args.expect and args.no_ledger:
        raise ConfigError(run_dir, "--expect checks the ledger; it cannot go with --no-ledger")
    public_key = load_public_key(Path(args.public_key)) if args.public_key else None
    result = verify_run(run_dir, ledger=ledger, check_ledger=not args.no_ledger, public_key=public_key,
                        expect_entry=args.expect)
    for p in result.problems:
        print(f"  {p}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"{run_dir}: {'intact' if result.intact else f'{len(result.problems)} problem(s)'}")
    return 0 if result.intact else 1


def cmd_list(args: argparse.Namespace) -> int:
    from rehearsal_lib.results import format_counts
    from rehearsal_lib.runner import outputs_root

    folder = (Path(args.outputs).resolve() if args.outputs else outputs_root()) / args.env
    runs = sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []
    if not runs:
        print(f"no runs of {args.env} in {folder}")
        return 0
    print(f"{'run id':<28} {'decision':<15} {'duration':>9}  checks")
    for run in runs:
        print(_list_line(run, format_counts))
    return 0


def _list_line(run: Path, format_counts: Callable[[dict[str, int]], str]) -> str:
    """One line of `rehearse list`; a folder whose files cannot be read says which one."""
    from rehearsal_lib.evidence import crash_info
    from rehearsal_lib.results import UnreadableFile, read_json_file
    from rehearsal_lib.runrecord import read_run_record

    try:
        if (run / "results.json").is_file():
            data = read_json_file(run / "results.json")
            counts = Counter(c.get("status", "?") if isinstance(c, dict) else "?" for c in data.get("checks", []))
            dur = data.get("duration_s")
            dur = dur if isinstance(dur, int | float) else 0.0
            flag = " (interrupted)" if data.get("interrupted") else ""
            flag += " (crashed)" if data.get("crashed") else ""
            flag += " (resumed)" if data.get("resumed") else ""
            return f"{run.name:<28} {str(data.get('decision', '?')):<15} {dur:>8.1f}s  {format_counts(counts)}{flag}"
        record = read_run_record(run)
    except UnreadableFile as exc:
        return f"{run.name:<28} {'(unreadable)':<15} {'':>9}  {_one_line(str(exc.path.name) + ': ' + exc.problem)}"
    if record.recorded and not record.finished_at:
        crashed = crash_info(record)
        state = "(crashed)" if crashed else "(running)"
        return f"{run.name:<28} {state:<15} {'':>9}  " + (f"at about {crashed['at']}; not reported yet" if crashed
                                                          else f"runner pid {record.runner_pid}")
    return f"{run.name:<28} {'(no results)':<15}"


def cmd_sandbox(args: argparse.Namespace) -> int:
    require_extra("sandbox", "the sandbox")
    from rehearsal_lib import sandbox

    if args.action == "up":
        from rehearsal_lib.sandbox.scale import parse_scale

        try:
            rows = parse_scale(args.scale) if args.scale else 0
        except ValueError as exc:
            _err(str(exc))
            return EXIT_USAGE
        state = sandbox.start_sandbox(args.variant, release_pending=args.release_pending, scale_rows=rows)
        if state.replaced:
            print(f"note: {state.replaced}")
        if rows and not state.scale:
            print(f"note: sandbox {args.variant} was already running; --scale applies to a fresh start "
                  "(`rehearse sandbox down` first)")
        elif state.scale:
            print("scale seed: " + ", ".join(f"{k} +{v:,}" for k, v in state.scale.items() if k != "seconds")
                  + f" in {state.scale.get('seconds', 0):.1f} s")
        print(f"sandbox {args.variant} running: {state.base_url} (state in {state.home})")
    elif args.action == "down":
        from rehearsal_lib.runlock import describe, holder_of_sandbox

        holder = holder_of_sandbox(args.variant)
        if holder is not None:
            _err(f"sandbox {args.variant} is in use by {describe(holder)}; it stops it when it started it")
            return EXIT_USAGE
        stopped = sandbox.stop_sandbox(args.variant)
        print(f"sandbox {args.variant} {'stopped' if stopped else 'was not running'}")
    else:
        found = sandbox.sandbox_status(args.variant)
        if found is None:
            print(f"sandbox {args.variant}: not running")
            return 1
        from rehearsal_lib.sandbox.manager import orphaned_by

        state = found
        print(f"sandbox {args.variant}: running at {state.base_url} since {state.started_at} (app pid {state.app_pid})")
        if state.owner:
            orphan = orphaned_by(state)
            print(f"  started by run {state.owner.get('run_id')}"
                  + (f": an orphan left by {orphan}; the next run or `sandbox up` replaces it" if orphan else ""))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    require_extra("lab", "rehearse lab")
    from rehearsal_lib.phases import SHIPPED_NOTEBOOKS

    root = project_root()
    os.environ["REHEARSAL_PROJECT_DIR"] = str(root)
    folder = root / "notebooks"
    if not folder.is_dir():  # no overrides: the shipped notebooks (in a clone, the repository's own files)
        folder = SHIPPED_NOTEBOOKS
        print(f"note: {root} has no notebooks/; opening the shipped ones ({folder}). To edit a phase's notebook "
              "for this project: rehearse notebooks eject PHASE", file=sys.stderr)
    jupyter = Path(sys.executable).with_name("jupyter")
    argv = [str(jupyter), "lab", f"--notebook-dir={folder}", *args.lab_args]
    os.execv(argv[0], argv)
    return 0  # pragma: no cover


def _parallel(value: str) -> int:
    """--parallel N: the same bounds as run.parallel in a params file (1 to MAX_PARALLEL)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_PARALLEL}, not {value[:20]!r}")
    return number


ENV_HELP = "environment name (params/ENV.yaml) or a path to a params file"
RUN_DIR_HELP = "a run folder, e.g. outputs/sandbox/20261124T101500Z-1a2b3c"


PROJECT_HELP = ("the project folder (its params/, outputs/, notebooks/); default: $REHEARSAL_PROJECT_DIR, else the "
                "nearest parent of the current directory holding params/, else the current directory")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rehearse", description="Release rehearsals as code.",
                                 epilog="exit codes: 0 GO, 1 NO-GO, 3 CONDITIONAL GO, 2 usage/config error, "
                                        "130 interrupted; rehearse status: 4 awaiting sign-off/attestation")
    ap.add_argument("--project", metavar="DIR", help=PROJECT_HELP)
    common = argparse.ArgumentParser(add_help=False)  # --project after the command too
    common.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS, help=PROJECT_HELP)
    sub = ap.add_subparsers(dest="command", required=True)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    p = command("run", help="run a full rehearsal of ENV (params/ENV.yaml) and write the evidence")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--parallel", type=_parallel, default=None, metavar="N", help="run up to N phases at once")
    p.add_argument("--allow-destructive", action="store_true",
                   help="allow destructive phases (required for them in a production environment)")
    p.add_argument("--outputs", metavar="DIR", help="folder for run folders (default: outputs/)")
    p.add_argument("--show-code", action="store_true", help="show notebook code in the report")
    p.add_argument("--quiet", action="store_true", help="one line per phase, not one per check")
    p.add_argument("--wait", action="store_true",
                   help="when another run holds this environment (or its sandbox), wait for it instead of exiting 2")
    p.add_argument("--wait-timeout", type=float, default=None, metavar="S",
                   help="like --wait, but exit 2 after waiting S seconds")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a crashed or interrupted run of ENV in its own folder: run only the phases that "
                        "did not complete (and the decision), recorded in run.json and the report")
    p.set_defaults(func=cmd_run)

    p = command("init", help="write params/NAME.yaml from what a running service says about itself "
                             "(OpenAPI, database catalogue, /metrics); GET and read-only SQL only")
    p.add_argument("name", help="environment name: the file is params/NAME.yaml")
    p.add_argument("--base-url", required=True, metavar="URL", help="the running service")
    p.add_argument("--openapi", metavar="URL_OR_FILE", help="its OpenAPI document (default: GET /openapi.json)")
    p.add_argument("--database-url-env", metavar="VAR", help="variable holding a (read-only) database URL: the "
                                                              "catalogue is read when it is set")
    p.add_argument("--metrics", metavar="PATH", help="Prometheus metrics path or URL (default: /metrics, if any)")
    p.add_argument("--force", action="store_true", help="replace an existing params/NAME.yaml")
    from rehearsal_lib.init_params import cmd_init

    p.set_defaults(func=cmd_init)

    p = command("validate", help="check params/ENV.yaml without running anything")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--no-env", action="store_true",
                   help="check structure only; do not require the ${VAR} references to be set (for linting in CI)")
    p.set_defaults(func=cmd_validate)

    p = command("report", help="rebuild report/results/junit and reseal a run folder from its notebooks "
                                      "(refused when the folder no longer matches its seal)")
    p.add_argument("run_dir", help=RUN_DIR_HELP + "; or an executed phase notebook (or a folder of them) run on its "
                                  "own, e.g. in JupyterLab: its offline report goes to NOTEBOOK.report.html "
                                  "(FOLDER.report.html), not sealed")
    p.add_argument("--out", metavar="HTML", help="with notebooks: where to write the report")
    p.add_argument("--show-code", action="store_true", help="show notebook code in the report")
    p.add_argument("--reseal", action="store_true",
                   help="rebuild even though files changed since sealing; keeps the old manifest and records "
                        "who, when and why in reseal.log (shown in the report)")
    p.add_argument("--reason", metavar="TEXT", help="why the folder is resealed (required with --reseal)")
    p.set_defaults(func=cmd_report)

    p = command("verify", help="check a run folder: files, manifest, SHA256SUMS, reseal log, ledger, "
                                      "signature (exit 0 intact, 1 problems)")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("--ledger", metavar="PATH", help="the environment's ledger (default: <env>.ledger.jsonl next to the "
                                                    "folder of runs)")
    p.add_argument("--no-ledger", action="store_true",
                   help="do not check the ledger (the folder is then only shown consistent with itself)")
    p.add_argument("--public-key", metavar="PEM", help="check manifest.sig with this Ed25519 public key")
    p.add_argument("--expect", metavar="LINE", help="the run's 'ledger: ...' line from the CI log (or its entry "
                                                    "digest): the ledger's entry for the run must be that one")
    p.set_defaults(func=cmd_verify)

    from rehearsal_lib.people_cli import add_commands as add_people_commands  # attest, signoff, status

    add_people_commands(command)

    p = command("list", help="past runs of ENV and their decisions")
    p.add_argument("env", help="environment name (the folder under outputs/)")
    p.add_argument("--outputs", metavar="DIR", help="folder holding run folders (default: outputs/)")
    p.set_defaults(func=cmd_list)

    from rehearsal_lib import trend, vault  # evidence across runs: the release vault and the trend page

    vault.add_arguments(command("archive", help="write a sealed run folder as one tar.gz named with its manifest "
                                                "digest to a folder or fsspec URL, read it back and verify it"))
    trend.add_arguments(command("trend", help="an offline HTML page of ENV's key figures across its runs"))

    p = command("sandbox", help="start, stop or inspect the embedded sandbox target")
    p.add_argument("action", choices=["up", "down", "status"],
                   help="up: start (no-op when running); down: stop; status: exit 0 when running, 1 when not")
    p.add_argument("--variant", choices=["default", "faulty"], default="default",
                   help="faulty plants the defects listed in docs/sandbox.md")
    p.add_argument("--release-pending", action="store_true",
                   help="up: start one release behind (migrations 017-019 pending), as `rehearse run sandbox` does")
    p.add_argument("--scale", metavar="N",
                   help="up: after the seed, add N answers (e.g. 1k, 100k, 1M) with their sessions (~N/6.7) and "
                        "events (~1.25 N), and N access_log rows, generated inside PostgreSQL (docs/sandbox.md)")
    p.set_defaults(func=cmd_sandbox)

    p = command("phases", help="the phase catalogue: built-in phases and those installed packages register")
    p.add_argument("--json", action="store_true", help="as JSON (order, name, title, kind, state, package, seed)")
    p.set_defaults(func=cmd_phases)

    p = command("notebooks", help="eject: copy the shipped phase notebooks into the project's notebooks/ "
                                         "to edit them (the project's copy then overrides the shipped one)")
    p.add_argument("action", choices=["eject"])
    p.add_argument("phases", nargs="*", metavar="PHASE", help="phases to eject (default: every built-in phase)")
    p.add_argument("--force", action="store_true", help="replace notebooks already in the project's notebooks/")
    p.set_defaults(func=cmd_notebooks)

    p = command("lab", help="open JupyterLab on the project's notebooks/ (else the shipped notebooks)",
                description="Open JupyterLab on the project's notebooks/ (else the shipped notebooks). Every "
                            "argument after `lab` goes to jupyter lab unchanged, e.g. `rehearse lab --port 8899 "
                            "--no-browser`; as root add --allow-root.")
    p.add_argument("lab_args", nargs=argparse.REMAINDER,
                   help="passed on to jupyter lab untouched (options too, e.g. --port 8899)")
    p.set_defaults(func=cmd_lab)
    return ap


def _lab_passthrough(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """`rehearse [--project DIR] lab ARGS...`: (the global options before `lab`, ARGS exactly as given: order
    and values untouched, e.g. `--port 8899`); None for `rehearse lab -h/--help` (rehearse's own help) and
    for other commands."""
    i = 0
    while i < len(argv) and argv[i] != "lab":
        if argv[i] == "--project":
            i += 2
        elif argv[i].startswith("--project="):
            i += 1
        else:
            return None
    if i >= len(argv) or argv[i + 1:] in (["-h"], ["--help"]):
        return None
    return argv[:i], list(argv[i + 1:])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = _lab_passthrough(argv)
    if passthrough is not None:
        before, lab_args = passthrough
        args = parser.parse_args([*before, "lab"])
        args.lab_args = lab_args
    else:
        args = parser.parse_args(argv)
    if args.project:
        project = Path(args.project).expanduser().resolve()
        if not project.is_dir():
            _err(f"--project {args.project}: no such folder")
            return EXIT_USAGE
        os.environ["REHEARSAL_PROJECT_DIR"] = str(project)  # kernels and sandbox processes inherit it
    try:
        return args.func(args)
    except ConfigError as exc:
        _err(str(exc))
        for problem in exc.also:
            _err(f"also: {problem}")
        return EXIT_USAGE
    except MissingExtra as exc:  # an optional part of the install (pyproject's extras) is not installed
        _err(str(exc))
        return EXIT_USAGE
    except UnreadableFile as exc:  # a truncated or corrupt run.json / results.json / notebook: one line
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
