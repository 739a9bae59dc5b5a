"""One percentile for every figure Rehearsal reports (preflight latency, load stages, scheduler lag)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100): the smallest sample with at least pct % of the samples at or
    below it, always one of the samples (no interpolation). None when there are no samples.

    p50 of [1, 2, 3, 4] is 2, p95 of 1..100 is 95, p100 is the maximum, p0 the minimum."""
    n = len(values)
    if not n:
        return None
    ordered = sorted(values)
    return ordered[max(1, min(n, math.ceil(pct * n / 100))) - 1]
