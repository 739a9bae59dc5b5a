"""Markdown tables of the latest benchmark results, for the README.

Run: python benchmarks/tables.py   (reads benchmarks/results/load.json, accuracy.json, report.json and scale.json)
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


def report_table(data: dict[str, Any]) -> str:
    """README, "How long it takes": building the report vs nbconvert's HTML export (bench_report.py)."""
    s = data["setup"]
    label = {"in_process": "in one process, both imported: `render_report` vs one `HTMLExporter` over every notebook",
             "fresh_process": "a fresh process each, imports included: report.html vs one "
                              "`python -m nbconvert --to html` over every notebook",
             "rehearse_report": "`rehearse report RUN_DIR` (also results, JUnit, summary.md, scrub, seal) vs the "
                                "same nbconvert process"}
    lines = [f"{s['repeat']} repeats per run folder, alternating; measured {s['when']}, load average "
             f"{s['loadavg_before'][0]:.1f} before / {s['loadavg_after'][0]:.1f} after on {s['cpu_count']} cores; "
             "median (min–max) seconds.", "",
             "| run (notebooks) | case | ours | nbconvert | ratio |", "| --- | --- | --- | --- | --- |"]
    def secs(c: dict[str, Any], side: str) -> str:
        lo, hi = c[f"{side}_spread_s"]
        return f"{c[f'{side}_s']:.2f} ({lo:.2f}–{hi:.2f})"

    for run in data["runs"]:
        for name, c in run["cases"].items():
            lines.append(f"| {run['run'].split('/')[0]} ({run['notebooks']}) | {label.get(name, name)} "
                         f"| {secs(c, 'ours')} | {secs(c, 'nbconvert')} | **{c['ratio']:.2f}×** |")
    per_nb = [f"{r['run'].split('/')[0]} {r['nbconvert_one_process_per_notebook_s']:.1f} s" for r in data["runs"]
              if "nbconvert_one_process_per_notebook_s" in r]
    if per_nb:
        lines += ["", "nbconvert's other way, one `jupyter nbconvert --to html` process per notebook, took "
                  + ", ".join(per_nb) + " (once): the one-process export above is the faster, fairer baseline."]
    met = "met" if data["target"]["met"] else "NOT met"
    lines += ["", f"Target ≤ {data['target']['ratio_at_most']}× in every case: {met} (ratios over the run folders: "
              + ", ".join(f"{k.replace('_', ' ')} {v:.2f}×" for k, v in data["ratios"].items()) + ")."]
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def scale_table(data: dict[str, Any]) -> str:
    """One row per check, one column per scale: median time as shipped (and main's way, where they differ),
    then the rows and the seeding time per scale."""
    scales = data["scales"]
    keys = sorted(scales, key=int)
    head = [f"{int(k):,} answers" for k in keys]
    lines = [f"Median of {data.get('runs', '?')} rounds (restore: {data.get('restore_runs', '?')}), measured "
             f"{data.get('when', '?')} on {data.get('cpu_count', '?')} cores, load average "
             + ", ".join(f"{_num(scales[k].get('loadavg', [None])[0])}" for k in keys)
             + f" at the start of each scale; statement timeout {scales[keys[0]].get('statement_timeout_ms')} ms. "
             "Zero-row checks: **this branch** (main's way in the same round: no migration 016 indexes, a count "
             "then a bare LIMIT query for the sample); every other check runs the same code on both sides.", "",
             "| check | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(keys)]
    ids: list[str] = []
    for k in keys:
        ids += [c for c in scales[k]["checks"]["shipped"] if c not in ids]
    for cid in ids:
        cells = []
        for k in keys:
            sides = scales[k]["checks"]
            got = sides["shipped"].get(cid)
            if got is None:
                cells.append("–")
                continue
            text = _ms(got["median_s"])
            other = sides.get("main", sides.get("without", {})).get(cid)
            if other and cid.startswith("integrity.zero_rows."):  # the only checks whose two sides differ
                text = f"**{text}** ({_ms(other['median_s'])}"
                if [s for s in other["statuses"] if s != "pass"]:
                    text += " " + "/".join(s for s in other["statuses"] if s != "pass")
                text += ")"
            bad = [s for s in got["statuses"] if s != "pass"]
            if bad:
                text += f" ({'/'.join(bad)})"
            cells.append(text)
        lines.append(f"| `{cid}` | " + " | ".join(cells) + " |")
    lines.append("| *rows: sessions / answers / events / access_log* | " + " | ".join(
        "{sessions:,} / {answers:,} / {events:,} / {access_log:,}".format(**scales[k]["rows"]) for k in keys) + " |")
    lines.append("| *scale seed (generate_series inside PostgreSQL)* | " + " | ".join(
        _ms(scales[k]["scale_seed"].get("seconds")) for k in keys) + " |")
    lines.append("| *whole sandbox start (seed, backup, services)* | " + " | ".join(
        _ms(scales[k]["sandbox_start_s"]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    print(load_tables(json.loads((RESULTS / "load.json").read_text())))
    print()
    print(accuracy_table(json.loads((RESULTS / "accuracy.json").read_text())))
    if (RESULTS / "report.json").exists():
        print()
        print(report_table(json.loads((RESULTS / "report.json").read_text())))
    if (RESULTS / "scale.json").exists():
        print()
        print(scale_table(json.loads((RESULTS / "scale.json").read_text())))


if __name__ == "__main__":
    main()
