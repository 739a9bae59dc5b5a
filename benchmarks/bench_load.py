"""Load generators side by side against one local endpoint: wrk, Locust (FastHttpUser, HttpUser), ours.

The reference server (rehearsal_lib/load/reference_server.py, pure asyncio, ~1 answer per 30 µs)
runs pinned to the first core this process may use, every one-process generator pinned to the
second, one after the other (a repeat runs every case once, in turn), each for the same duration
with the same number of connections. Per tool: requests/s, p50/p99 ms and client CPU µs per request
(from the generator process's rusage, or its own process time for ours). Then our ratios to each, and
where we stand against the issue's targets:

- closed model >= 1.0x Locust FastHttpUser's requests/s per core;
- open model holds >= 1,000 req/s on one core with scheduler-lag p99 < 5 ms;
- `--processes N` (default 2) processes >= 1.7x one (N=2). Judged only when the machine has a core for
  the server, one for each generator process and one spare (>= 4 cores for N=2): the processes are
  then pinned to cores of their own. On fewer cores they share cores with the server: reported, not
  judged.

Each case runs `--repeat` times (default 2); the JSON keeps every run, the median and the spread.
Needs: pip install -e '.[bench]' (locust); wrk from the OS (apt-get install -y wrk) or it is skipped
with the reason. Run under the shared lock on a quiet machine:

    flock /tmp/bench.lock python benchmarks/bench_load.py [--duration 5] [--repeat 3]
    # a bigger machine, only the cases the processes target needs (see benchmarks/README.md):
    python benchmarks/bench_load.py --processes 2 --cases ours_closed,ours_closed_processes --repeat 3

Writes benchmarks/results/load.json (`--out` for another file).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rehearsal_lib.load.engine import LoadSpec, Scenario, run_load  # noqa: E402
from rehearsal_lib.load.reference_server import reference_server  # noqa: E402

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
SERVER_CPU = CORES[0]
CLIENT_CPU = CORES[1] if len(CORES) > 1 else CORES[0]


def processes_layout(processes: int) -> tuple[list[int] | None, bool]:
    """Cores for `processes` generator processes, and whether the scaling target can be judged: each process
    gets a core of its own (not the server's) when there are >= processes + 2 cores (one spare for the OS and
    the parent); otherwise the processes are left unpinned, sharing cores with the server."""
    if len(CORES) >= processes + 2:
        return CORES[1:1 + processes], True
    return None, False


def _ours(url: str, model: str, duration: float, conns: int, rate: float = 0, processes: int = 1,
          transport: str = "auto") -> dict[str, Any]:
    spec = LoadSpec(url, [Scenario("get", "/")], model=model, users=conns, rate=rate or 1, duration_s=duration,
                    max_in_flight=max(conns, 256), transport=transport)  # type: ignore[arg-type]
    r = run_load(spec, processes=processes, cpus=[CLIENT_CPU] if processes == 1 else processes_layout(processes)[0])
    st = r.scenario_stats()[0]
    lag = r.lag_p99_ms()
    return {"transport": r.generator_figures()["transport"], "rps": round(r.achieved_rate, 1), "p50_ms": st.p50_ms,
            "p99_ms": st.p99_ms,
            "cpu_us_per_req": round(r.cpu_us_per_request() or 0, 1), "errors": st.errors,
            "scheduler_lag_p99_ms": round(lag, 2) if lag is not None else None, "saturation": r.saturation(
                max_lag_p99_ms=5.0)}


def _locust(url: str, user_class: str, duration: float, conns: int) -> dict[str, Any]:
    from rehearsal_lib.load.locust_driver import run_locust

    spec = LoadSpec(url, [Scenario("get", "/")], model="closed", users=conns, duration_s=duration)
    r = run_locust(spec, user_class=user_class, cpu=CLIENT_CPU, workdir=tempfile.mkdtemp(prefix="bench-locust-"))
    st = r.scenario_stats()[0]
    # Locust's process also spends ~1 s of CPU starting up: count it, as a user pays it too
    return {"rps": round(r.achieved_rate, 1), "p50_ms": st.p50_ms, "p99_ms": st.p99_ms,
            "cpu_us_per_req": round(r.cpu_us_per_request() or 0, 1), "errors": st.errors}


def _wrk(url: str, duration: float, conns: int) -> dict[str, Any]:
    args = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s", "--latency", url + "/"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, _, ru = os.wait4(proc.pid, 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    total = rps * duration
    return {"rps": round(rps, 1), "p50_ms": round(ms("50%"), 3), "p99_ms": round(ms("99%"), 3),
            "cpu_us_per_req": round((ru.ru_utime + ru.ru_stime) * 1e6 / total, 1) if total else None, "errors": 0}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "scheduler_lag_p99_ms"):
        vals = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if vals:
            out[key] = round(statistics.median(vals), 2)
            out[f"{key}_spread"] = [round(min(vals), 2), round(max(vals), 2)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--open-rates", default="1000,1500,2000", help="open-model rates to try on one core")
    p.add_argument("--processes", type=int, default=2, help="processes of the scaling case (ours_closed_processes)")
    p.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    a = p.parse_args()
    load_before = os.getloadavg()
    results: dict[str, Any] = {"tools": {}, "skipped": {}}
    cases: dict[str, Any] = {
        "ours_closed": lambda url: _ours(url, "closed", a.duration, a.connections),
        "locust_fasthttpuser": lambda url: _locust(url, "FastHttpUser", a.duration, a.connections),
        "locust_httpuser": lambda url: _locust(url, "HttpUser", a.duration, a.connections),
        "wrk": lambda url: _wrk(url, a.duration, a.connections),
    }
    for rate in (float(x) for x in a.open_rates.split(",")):
        cases[f"ours_open_{rate:g}rps"] = lambda url, rate=rate: _ours(url, "open", a.duration, a.connections, rate)
    # the processes case: the same connections per process as the one-process case, so that N processes can
    # reach N times its rate (with the same total, each process would run fewer users than the one-process case)
    cases["ours_closed_processes"] = lambda url: _ours(url, "closed", a.duration, a.connections * a.processes,
                                                       processes=a.processes)
    # the default transport is aiohttp called directly (a core dependency); httpx over httpcore for comparison
    cases["ours_closed_httpcore"] = lambda url: _ours(url, "closed", a.duration, a.connections, transport="httpcore")
    cases["ours_open_1000rps_httpcore"] = lambda url: _ours(url, "open", a.duration, a.connections, 1000,
                                                            transport="httpcore")
    # find_spec, not import: importing locust monkey-patches this process with gevent
    if not importlib.util.find_spec("locust"):
        for k in ("locust_fasthttpuser", "locust_httpuser"):
            cases.pop(k)
            results["skipped"][k] = "locust is not installed (pip install -e '.[bench]')"
    if not shutil.which("wrk"):
        cases.pop("wrk")
        results["skipped"]["wrk"] = "wrk is not installed (apt-get install -y wrk)"
    if a.cases:
        wanted = set(a.cases.split(","))
        unknown = wanted - set(cases) - set(results["skipped"])
        if unknown:
            sys.exit(f"unknown cases: {sorted(unknown)}; known: {sorted(cases)}")
        cases = {k: v for k, v in cases.items() if k in wanted}
        results["skipped"] = {k: v for k, v in results["skipped"].items() if k in wanted}
        if "ours_closed" not in cases:
            sys.exit("--cases must include ours_closed (every ratio is to it)")
    if not hasattr(os, "sched_setaffinity") or len(CORES) < 2:
        sys.exit("needs Linux and at least 2 cores (server and generator on separate cores)")
    cpus, judged = processes_layout(a.processes)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    with reference_server("--cpu", str(SERVER_CPU)) as url:
        for i in range(a.repeat):
            for name, fn in cases.items():
                t = time.perf_counter()
                res = fn(url)
                print(f"[{i + 1}/{a.repeat}] {name}: {res} ({time.perf_counter() - t:.1f} s)", flush=True)
                runs[name].append(res)
    tools = {k: _median(v) for k, v in runs.items()}
    results["tools"] = tools
    ours = tools["ours_closed"]["rps"]
    results["ratios_ours_closed_to"] = {k: round(ours / v["rps"], 3) for k, v in tools.items()
                                        if not k.startswith("ours") and v.get("rps")}
    held = [(k, v) for k, v in tools.items() if k.startswith("ours_open_") and not k.endswith("httpcore")
            and all(not r["saturation"] for r in v["runs"])]
    best_open = max((v["rps"] for _, v in held), default=None)
    fast = tools.get("locust_fasthttpuser", {}).get("rps")
    many = tools.get("ours_closed_processes", {}).get("rps")
    results["targets"] = {
        "closed_vs_locust_fasthttpuser_per_core": {
            "target": ">= 1.0", "value": round(ours / fast, 3) if fast else None,
            "met": (ours / fast >= 1.0) if fast else None},
        "open_model_one_core": {
            "target": ">= 1000 req/s with scheduler-lag p99 < 5 ms (every repeat)", "value": best_open,
            "met": (best_open is not None and best_open >= 1000 * 0.99)
            if any(k.startswith("ours_open_") for k in tools) else None,
            "per_rate_lag_p99_ms": {k: v.get("scheduler_lag_p99_ms_spread") for k, v in tools.items()
                                    if k.startswith("ours_open_")}},
        f"{'two' if a.processes == 2 else a.processes}_processes_vs_one": {
            "target": f">= {0.85 * a.processes:g}", "value": round(many / ours, 3) if many else None,
            "met": (many / ours >= 0.85 * a.processes) if many and judged else None,
            "note": "" if judged else f"judged only with >= {a.processes + 2} cores (server, {a.processes} "
                    f"generators, one spare): here the {a.processes} processes share {len(CORES)} cores with the "
                    "server"},
    }
    results["setup"] = {"duration_s": a.duration, "connections": a.connections, "repeat": a.repeat,
                        "processes": a.processes, "processes_cpus": cpus,
                        "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU, "cpu_count": os.cpu_count(),
                        "usable_cores": len(CORES), "load_average_before": load_before,
                        "load_average_after": os.getloadavg(), "python": platform.python_version(),
                        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(a.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"ratios": results["ratios_ours_closed_to"], "targets": results["targets"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
