"""Markdown tables of the latest load and accuracy benchmark results, for the README.

Run: python benchmarks/tables.py   (reads benchmarks/results/load.json and accuracy.json)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _cell(tool: dict[str, Any], key: str, digits: int = 1) -> str:
    spread = tool.get(f"{key}_spread")
    text = _num(tool.get(key), digits)
    if spread and len(spread) == 2 and spread[0] != spread[1]:
        text += f" ({_num(spread[0], digits)}–{_num(spread[1], digits)})"
    return text


def _load(setup: dict[str, Any]) -> str:
    """The 1-min load average before and after the run, when the JSON has it (a busy machine blurs every figure)."""
    before, after = setup.get("load_average_before"), setup.get("load_average_after")
    parts = [f"{_num(v[0])} {w}" for v, w in ((before, "before"), (after, "after")) if v]
    return f", 1-min load average {', '.join(parts)}" if parts else ""


def load_tables(data: dict[str, Any]) -> str:
    setup = data.get("setup", {})
    lines = [
        f"{setup.get('repeat', '?')} repeats of {_num(setup.get('duration_s'), 0)} s, {setup.get('connections', '?')} "
        f"connections, server on core {setup.get('server_cpu', '?')}, generator on core {setup.get('client_cpu', '?')} "
        f"of {setup.get('cpu_count', '?')}; measured {setup.get('when', '?')}{_load(setup)}; median (min–max).",
        "",
        "| tool | req/s | p50 ms | p99 ms | client CPU µs/request | scheduler lag p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, tool in data["tools"].items():
        lags = [r["scheduler_lag_p99_ms"] for r in tool.get("runs", []) if r.get("scheduler_lag_p99_ms") is not None]
        lag = f"{_num(min(lags))}–{_num(max(lags))}" if lags else "–"
        lines.append(f"| {name} | {_cell(tool, 'rps', 0)} | {_cell(tool, 'p50_ms', 2)} | {_cell(tool, 'p99_ms', 1)} "
                     f"| {_cell(tool, 'cpu_us_per_req', 0)} | {lag} |")
    for name, reason in (data.get("skipped") or {}).items():
        lines.append(f"| {name} | skipped: {reason} | | | | |")
    ratios = data.get("ratios_ours_closed_to") or {}
    lines += ["", "Our closed model's requests/s as a ratio of each tool's: "
              + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()) + ".", "",
              "| target | measured | met |", "| --- | --- | --- |"]
    for name, t in (data.get("targets") or {}).items():
        value = t.get("value")
        if name == "open_model_one_core":
            lags = t.get("per_rate_lag_p99_ms") or {}
            value = "; ".join(f"{k.removeprefix('ours_open_')}: lag p99 {_num(v[0])}–{_num(v[1])} ms"
                              for k, v in lags.items())
        elif isinstance(value, int | float):
            value = f"{value:.2f}×"
        met = {True: "yes", False: "no", None: "not judged"}[t.get("met")]
        if t.get("note"):
            met += f" ({t['note']})"
        lines.append(f"| {name.replace('_', ' ')} ({t.get('target', '')}) | {value} | {met} |")
    return "\n".join(lines)


def accuracy_table(data: dict[str, Any]) -> str:
    s = data["schedule"]
    lines = [f"Stall schedule: {s['stall_s'] * 1000:.0f} ms every {s['period_s']} s for {s['duration_s']:.0f} s; "
             f"open model at {s['rate']} req/s vs a closed loop of {s['closed_users']} users.", "",
             "| model | p99 ms, median (min–max) | error vs the true p99 | runs judged |", "| --- | --- | --- | --- |"]
    for name, m in data["models"].items():
        lo, hi = m["p99_spread_ms"]
        elo, ehi = m["error_spread"]
        lines.append(f"| {name} | {_num(m['p99_ms'])} ({_num(lo)}–{_num(hi)}) | {m['error_vs_truth']:+.1%} "
                     f"({elo:+.1%} to {ehi:+.1%}) | {m['judged_runs']} of {len(m['runs'])} |")
    met = "yes" if data["target"]["met"] else "no"
    lines += ["", f"Target: open-model p99 within {data['target']['open_p99_within']}: {met}."]
    return "\n".join(lines)


def main() -> None:
    print(load_tables(json.loads((RESULTS / "load.json").read_text())))
    print()
    print(accuracy_table(json.loads((RESULTS / "accuracy.json").read_text())))


if __name__ == "__main__":
    main()
