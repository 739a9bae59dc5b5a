"""Does sniffio matter to httpx's speed? The same client code with sniffio importable and with it absent.

sniffio is in no installed package's requirements (anyio 4.16 and httpcore 1.0.9 only try it: httpcore imports it inside
``current_async_library()`` on every async lock/semaphore set-up, falling back to "asyncio" when the
import fails; anyio imports it once at import time). So the question is only whether *our* dependency
list should pull it in. Each case runs in a fresh child process, alternating "present" and "absent";
"absent" installs a meta-path finder that does what Python does for a module that is not installed —
searches every other ``sys.path`` entry — and then raises ``ModuleNotFoundError`` (so a failed import
costs what it would really cost, not the price of a short-circuit).

Cases (``mechanism`` first: the cost itself, which a loaded machine does not blur: how many times one
``AsyncClient`` request calls httpcore's ``current_async_library()`` and what one call costs), then,
each against the reference server (rehearsal_lib/load/reference_server.py, pinned to core 0;
the client to core 1 when there are >= 2 cores), one request at a time on one keep-alive connection:

- ``sync``: ``httpx.Client`` (httpcore's sync pool);
- ``async_httpcore``: ``httpx.AsyncClient`` (httpcore's async pool: the path that imports sniffio);
- ``async_aiohttp``: ``httpx.AsyncClient(transport=AiohttpTransport())`` (the load engine's default);
- ``engine_closed``: the load engine itself, closed model, 16 users, default transport;
- ``engine_closed_httpcore``: the same with ``transport: httpcore``.

Run: python benchmarks/bench_sniffio.py [--duration 3] [--repeat 3]
Writes benchmarks/results/sniffio.json; prints requests/s per case and mode, and absent/present ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ["mechanism", "sync", "async_httpcore", "async_aiohttp", "engine_closed", "engine_closed_httpcore"]
SERVER_CPU, CLIENT_CPU = 0, 1


def _hide_sniffio() -> None:
    """Make ``import sniffio`` fail as it would were the package not installed."""
    import importlib.abc
    import importlib.machinery

    site_dir = None
    spec = importlib.machinery.PathFinder.find_spec("sniffio")
    if spec and spec.origin:
        site_dir = str(Path(spec.origin).parent.parent)

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name != "sniffio" and not name.startswith("sniffio."):
                return None
            # the search Python does for a missing module: every sys.path entry but the one that has it
            importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p != site_dir])
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Absent())
    sys.modules.pop("sniffio", None)


def _child(case: str, url: str, duration: float) -> dict[str, Any]:
    import asyncio

    import httpx

    def timed(loop_body: Any) -> tuple[int, float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        n = loop_body()
        return n, time.perf_counter() - t0, time.process_time() - c0

    if case == "sync":
        with httpx.Client() as c:
            c.get(url)

            def body() -> int:
                n, end = 0, time.perf_counter() + duration
                while time.perf_counter() < end:
                    c.get(url)
                    n += 1
                return n

            n, wall, cpu = timed(body)
    elif case in ("async_httpcore", "async_aiohttp"):
        async def main() -> tuple[int, float, float]:
            transport = None
            if case == "async_aiohttp":
                from httpx_aiohttp import AiohttpTransport
                transport = AiohttpTransport()
            async with httpx.AsyncClient(transport=transport) as c:
                await c.get(url)
                t0, c0 = time.perf_counter(), time.process_time()
                n, end = 0, time.perf_counter() + duration
                while time.perf_counter() < end:
                    await c.get(url)
                    n += 1
                return n, time.perf_counter() - t0, time.process_time() - c0

        n, wall, cpu = asyncio.run(main())
    elif case == "mechanism":
        # the cost itself, independent of the machine's load: how often one AsyncClient request calls
        # httpcore's current_async_library(), and what one call costs here
        from httpcore import _synchronization as sync_mod

        calls = 0
        real = sync_mod.current_async_library

        def counted() -> str:
            nonlocal calls
            calls += 1
            return real()

        sync_mod.current_async_library = counted

        async def per_request() -> float:
            async with httpx.AsyncClient() as c:
                await c.get(url)
                before = calls
                for _ in range(100):
                    await c.get(url)
                return (calls - before) / 100

        async def per_call() -> float:
            n = 20_000
            t0 = time.perf_counter()
            for _ in range(n):
                real()
            return (time.perf_counter() - t0) / n * 1e6

        calls_per_request = asyncio.run(per_request())
        us = min(asyncio.run(per_call()) for _ in range(5))
        return {"rps": 0.0, "cpu_us_per_req": round(calls_per_request * us, 2), "errors": 0,
                "calls_per_request": calls_per_request, "us_per_call": round(us, 3),
                "sniffio_loaded": "sniffio" in sys.modules}
    else:
        from rehearsal_lib.load.engine import LoadSpec, Scenario, run_load

        transport = "httpcore" if case.endswith("httpcore") else "auto"
        spec = LoadSpec(url, [Scenario("get", "/")], model="closed", users=16, duration_s=duration,
                        transport=transport)  # type: ignore[arg-type]
        r = run_load(spec)
        st = r.scenario_stats()[0]
        return {"rps": round(r.achieved_rate, 1), "cpu_us_per_req": round(r.cpu_us_per_request() or 0, 1),
                "errors": st.errors, "sniffio_loaded": "sniffio" in sys.modules}
    return {"rps": round(n / wall, 1), "cpu_us_per_req": round(cpu / n * 1e6, 1), "errors": 0,
            "sniffio_loaded": "sniffio" in sys.modules}


def _run_child(case: str, mode: str, url: str, duration: float, pin: bool) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", case, mode, url, str(duration)]
    if pin:
        argv = ["taskset", "-c", str(CLIENT_CPU), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, mode, url, duration = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
        if mode == "absent":
            _hide_sniffio()
        print(json.dumps(_child(case, url, duration)))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sniffio.json"))
    a = p.parse_args()
    from rehearsal_lib.load.reference_server import reference_server

    pin = sys.platform == "linux" and (os.cpu_count() or 1) >= 2
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    server_args = ("--cpu", str(SERVER_CPU)) if pin else ()
    with reference_server(*server_args) as url:
        for case in a.cases.split(","):
            runs[case] = {"present": [], "absent": []}
            for i in range(a.repeat):
                # alternate the order so a drift of the machine's load does not favour one mode
                for mode in (("present", "absent") if i % 2 == 0 else ("absent", "present")):
                    r = _run_child(case, mode, url, a.duration, pin)
                    runs[case][mode].append(r)
                    if case == "mechanism":
                        print(f"{case:24} {mode:8} {r['calls_per_request']:g} call(s)/request x "
                              f"{r['us_per_call']:.2f} µs = {r['cpu_us_per_req']:.1f} µs/request", flush=True)
                    else:
                        print(f"{case:24} {mode:8} {r['rps']:>9,.0f} req/s  {r['cpu_us_per_req']:>6.0f} µs CPU/req"
                              f"  sniffio loaded: {r['sniffio_loaded']}", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for case, modes in runs.items():
        if case == "mechanism":
            us = {m: statistics.median(r["us_per_call"] for r in rs) for m, rs in modes.items()}
            summary[case] = {"calls_per_request": modes["present"][0]["calls_per_request"],
                             "us_per_call_present": us["present"], "us_per_call_absent": us["absent"],
                             "extra_us_per_request_absent": round(modes["present"][0]["calls_per_request"]
                                                                  * (us["absent"] - us["present"]), 2)}
            continue
        med = {m: statistics.median(r["rps"] for r in rs) for m, rs in modes.items()}
        cpu = {m: statistics.median(r["cpu_us_per_req"] for r in rs) for m, rs in modes.items()}
        summary[case] = {"rps_present": med["present"], "rps_absent": med["absent"],
                         "ratio_absent_to_present": round(med["absent"] / med["present"], 3),
                         "cpu_us_present": cpu["present"], "cpu_us_absent": cpu["absent"],
                         "spread_present": [min(r["rps"] for r in modes["present"]),
                                            max(r["rps"] for r in modes["present"])],
                         "spread_absent": [min(r["rps"] for r in modes["absent"]),
                                           max(r["rps"] for r in modes["absent"])]}
    print("\nmedian req/s: present / absent = ratio (absent ÷ present)")
    for case, s in summary.items():
        if case == "mechanism":
            print(f"{case:24} httpcore's current_async_library(): {s['calls_per_request']:g} call(s) per AsyncClient "
                  f"request, {s['us_per_call_present']:.2f} µs with sniffio, {s['us_per_call_absent']:.2f} µs without "
                  f"(+{s['extra_us_per_request_absent']:.1f} µs CPU per request)")
            continue
        print(f"{case:24} {s['rps_present']:>9,.0f} / {s['rps_absent']:>9,.0f} = {s['ratio_absent_to_present']:.3f}")
    import httpx

    versions = {}
    for mod in ("httpx", "httpcore", "anyio", "sniffio", "httpx_aiohttp", "aiohttp"):
        try:
            from importlib.metadata import version
            versions[mod] = version(mod.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a package missing is recorded as such
            versions[mod] = None
    del httpx
    Path(a.out).write_text(json.dumps({
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "duration_s": a.duration,
        "repeat": a.repeat, "pinned": pin, "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "versions": versions, "summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
