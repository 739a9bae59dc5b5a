"""Where the suite's wall time goes: `python tests/timeline.py FILE` over the lines tests/conftest.py writes
with REHEARSAL_TESTS_TIMELINE=FILE (one per module: worker, lock wait, duration)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    t0 = min(r["asked"] for r in rows)
    busy: dict[str, float] = defaultdict(float)
    waited: dict[str, float] = defaultdict(float)
    for r in sorted(rows, key=lambda r: r["got"]):
        ran, wait = r["done"] - r["got"], r["got"] - r["asked"]
        busy[r["worker"]] += ran
        waited[r["worker"]] += wait
        print(f"{r['got'] - t0:7.1f}s {r['worker']:>4} {'ALONE' if r['alone'] else '     '} "
              f"ran {ran:6.1f}s waited {wait:6.1f}s  {r['module']}")
    end = max(r["done"] for r in rows) - t0
    for w in sorted(busy):
        print(f"{w}: ran {busy[w]:.0f}s, waited for the lock {waited[w]:.0f}s, idle at the end "
              f"{end - max(r['done'] for r in rows if r['worker'] == w) + t0:.0f}s")
    alone = sum(r["done"] - r["got"] for r in rows if r["alone"])
    print(f"wall {end:.0f}s; modules that ran alone: {alone:.0f}s")


if __name__ == "__main__":
    main(sys.argv[1])
