"""Building the report vs nbconvert's own HTML export of the same executed notebooks.

Over one or more run folders (e.g. one `rehearse run sandbox` and one `rehearse run sandbox-faulty`), in
one run of this script, alternating the two sides (which one goes first swaps every repeat):

- `in_process`: both already imported, in this process. Ours: `render_report(collect(run))` written to a
  file. nbconvert: ONE `HTMLExporter` (its template and stylesheets built once) over every notebook of
  the run, each written to a file: the faster of nbconvert's ways of exporting N notebooks.
- `fresh_process`: what a person waits for, imports included. Ours: a fresh interpreter collecting the
  run and writing report.html. nbconvert: ONE `python -m nbconvert --to html NB1 ... NBn` (one process
  over all notebooks; one invocation per notebook is far slower, see `per_notebook` when measured).
- `rehearse_report`: the whole `rehearse report RUN_DIR` (results.json, junit.xml, summary.md, report,
  scrub, sweep, seal) on a fresh copy of the run's outputs tree, against the same nbconvert process.

Ratio = median(ours) / median(nbconvert); the goal (issue #18) is <= 0.5. Writes
benchmarks/results/report.json; README's "How long it takes" table is rendered from it by tables.py.

Run (quiet machine, shared lock):  flock /tmp/bench.lock python benchmarks/bench_report.py RUN_DIR... --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OURS_SCRIPT = ("import sys; from pathlib import Path; from rehearsal_lib.evidence import collect; "
               "from rehearsal_lib.report import render_report; "
               "Path(sys.argv[2]).write_text(render_report(collect(Path(sys.argv[1]))), encoding='utf-8')")


def notebooks(run: Path) -> list[Path]:
    return sorted((run / "notebooks").glob("*.ipynb"))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_quiet(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1, 3):  # rehearse report exits with the run's decision (GO/NO-GO/COND.)
        raise SystemExit(f"{cmd[:4]}... failed ({proc.returncode}): {proc.stderr[-2000:]}")


def summarize(ours: list[float], theirs: list[float]) -> dict:
    ratios = sorted(o / t for o, t in zip(ours, theirs, strict=True))
    return {"ours_s": round(statistics.median(ours), 3), "nbconvert_s": round(statistics.median(theirs), 3),
            "ours_spread_s": [round(min(ours), 3), round(max(ours), 3)],
            "nbconvert_spread_s": [round(min(theirs), 3), round(max(theirs), 3)],
            "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
            "ratio_spread": [round(ratios[0], 3), round(ratios[-1], 3)],
            "ours_runs_s": [round(x, 3) for x in ours], "nbconvert_runs_s": [round(x, 3) for x in theirs]}


def bench_run(run: Path, repeat: int, scratch: Path, per_notebook: bool) -> dict:
    from nbconvert import HTMLExporter

    from rehearsal_lib.evidence import collect
    from rehearsal_lib.report import render_report

    nbs = notebooks(run)
    out = scratch / "out"
    out.mkdir(exist_ok=True)
    exporter = HTMLExporter()  # built once: template environment and stylesheets are reused

    def ours_in_process() -> None:
        (out / "report.html").write_text(render_report(collect(run)), encoding="utf-8")

    def nbconvert_in_process() -> None:
        for nb in nbs:
            body, _ = exporter.from_filename(str(nb))
            (out / (nb.stem + ".html")).write_text(body, encoding="utf-8")

    def ours_fresh() -> None:
        run_quiet([sys.executable, "-c", OURS_SCRIPT, str(run), str(out / "report.html")])

    def nbconvert_fresh() -> None:
        run_quiet([sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(out), *map(str, nbs)])

    copies: list[Path] = []

    def fresh_copy() -> Path:  # the run's env folder and ledger, so that resealing leaves the fixture alone
        root = Path(tempfile.mkdtemp(prefix="copy-", dir=scratch))
        shutil.copytree(run, root / run.parent.name / run.name)
        ledger = run.parent.parent / f"{run.parent.name}.ledger.jsonl"
        if ledger.exists():
            shutil.copy2(ledger, root / ledger.name)
        copies.append(root)
        return root / run.parent.name / run.name

    rehearse = str(Path(sys.executable).with_name("rehearse"))

    ours_in_process(), nbconvert_in_process()  # warm-up: lazy imports, caches, page cache
    cases: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in
                                                         ("in_process", "fresh_process", "rehearse_report")}
    for i in range(repeat):
        sides = [(0, ours_in_process), (1, nbconvert_in_process)]
        fresh = [(0, ours_fresh), (1, nbconvert_fresh)]
        if i % 2:
            sides.reverse(), fresh.reverse()
        for side, fn in sides:
            cases["in_process"][side].append(timed(fn))
        for side, fn in fresh:
            cases["fresh_process"][side].append(timed(fn))
        copy = fresh_copy()
        t_report = timed(lambda c=copy: run_quiet([rehearse, "report", str(c)], env=dict(os.environ)))
        t_nbconvert = timed(nbconvert_fresh)
        cases["rehearse_report"][0].append(t_report)
        cases["rehearse_report"][1].append(t_nbconvert)
        shutil.rmtree(copies.pop(), ignore_errors=True)
    result = {"run": f"{run.parent.name}/{run.name}", "notebooks": len(nbs),
              "cases": {name: summarize(*pair) for name, pair in cases.items()}}
    if per_notebook:  # once: one `nbconvert` process per notebook, the slower alternative
        result["nbconvert_one_process_per_notebook_s"] = round(sum(
            timed(lambda nb=nb: run_quiet([sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir",
                                           str(out), str(nb)])) for nb in nbs), 3)
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("nbconvert", "mistune", "plotly", "jinja2", "beautifulsoup4")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/<env>/<run-id>)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--per-notebook", action="store_true",
                        help="also time one nbconvert process per notebook, once (slow)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        runs = [bench_run(run.resolve(), args.repeat, Path(tmp), args.per_notebook) for run in args.runs]
    all_cases = {name: statistics.median(r["cases"][name]["ratio"] for r in runs) for name in runs[0]["cases"]}
    data = {
        "setup": {"when": started, "repeat": args.repeat, "cpu_count": os.cpu_count(),
                  "python": platform.python_version(),
                  "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()], "versions": versions(),
                  "nbconvert_side": "one HTMLExporter in one process over every notebook of the run (in_process); "
                                    "one `python -m nbconvert --to html` process over all of them (fresh_process, "
                                    "rehearse_report): the faster of nbconvert's alternatives"},
        "runs": runs,
        "ratios": {name: round(v, 3) for name, v in all_cases.items()},
        "target": {"ratio_at_most": 0.5, "met": all(v <= 0.5 for v in all_cases.values())},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: data[k] for k in ("ratios", "target")} | {"runs": [
        {"run": r["run"], **{n: (c["ours_s"], c["nbconvert_s"], c["ratio"]) for n, c in r["cases"].items()}}
        for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
