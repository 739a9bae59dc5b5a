"""What one phase pays before its first check runs, with and without this project's start-up choices.

Side by side in one run, in fresh interpreters:
- the executor process importing papermill, as shipped (jsonschema's optional IRI checker skipped)
  versus plain;
- a phase kernel importing the check modules, as shipped (nbformat imported lazily) versus with
  nbformat imported as it used to be.
Writes benchmarks/results/startup.json with medians and the ratios. Run: python benchmarks/bench_phase_startup.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
SKIP = "import sys; sys.modules.setdefault('rfc3987_syntax', None); "
CASES = {
    "executor_imports_papermill_shipped": SKIP + "import papermill",
    "executor_imports_papermill_plain": "import papermill",
    "kernel_imports_checks_shipped": "import rehearsal_lib.phases.preflight.checks, "
                                     "rehearsal_lib.phases.integrity.checks",
    "kernel_imports_checks_with_nbformat": "import nbformat, rehearsal_lib.phases.preflight.checks, "
                                           "rehearsal_lib.phases.integrity.checks",
    "bare_interpreter": "pass",
}


def median_seconds(code: str) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    results = {name: round(median_seconds(code), 3) for name, code in CASES.items()}
    results["ratio_executor_plain_over_shipped"] = round(
        results["executor_imports_papermill_plain"] / results["executor_imports_papermill_shipped"], 2)
    results["ratio_kernel_with_nbformat_over_shipped"] = round(
        results["kernel_imports_checks_with_nbformat"] / results["kernel_imports_checks_shipped"], 2)
    results["runs_per_case"] = RUNS
    out = Path(__file__).parent / "results" / "startup.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
