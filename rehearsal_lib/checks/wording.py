"""Plain wording for what a release manager reads: numbers with a unit and a space, plurals, counts,
yes/no, status mixes, header patterns.

Precision rule for milliseconds and seconds: one decimal below 10 (a trailing ".0" dropped), whole
numbers from 10 up ("1.4 ms", "3 s", "607 ms"), so figures side by side read alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any


def num(value: float) -> str:
    """One decimal below 10 (without a trailing '.0'), a whole number from 10 up."""
    text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
    return text.removesuffix(".0")


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{num(value)} ms"


def rps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} req/s"


def days(value: float | timedelta | None) -> str:
    """'45.0 days' (a timedelta or a number of days)."""
    if value is None:
        return "n/a"
    if isinstance(value, timedelta):
        value = value.total_seconds() / 86400
    return f"{value:.1f} days"


def status_mix(mix: Mapping[str, int]) -> str:
    """{'201': 34, 'timeout': 2} -> '201 × 34, timeout × 2' ('none' when empty)."""
    return ", ".join(f"{code} × {n}" for code, n in mix.items()) or "none"


def plural(n: float, word: str, many: str | None = None) -> str:
    """'1 policy', '2 policies', '0 fields'."""
    return f"{n:g} {word if n == 1 else many or word + 's'}"


def times(n: int) -> str:
    """'once', 'twice', '3 times', '0 times'."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def secs(value: float | None) -> str:
    """Seconds with a space before the unit: '3 s', '0.1 s', '2.5 s', '360 s'."""
    return "n/a" if value is None else f"{num(value)} s"


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def tally(values: list[Any], unit: str = "") -> str:
    """'HTTP 200 × 45' style summary, most frequent first: '45 × HTTP 200, 3 × HTTP 429'."""
    pre = f"{unit} " if unit else ""
    return ", ".join(f"{n} × {pre}{v}" for v, n in Counter(values).most_common())


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None (a report should not read 'error: None')."""
    return {k: v for k, v in values.items() if v is not None}


_LITERAL = re.compile(r"[A-Za-z0-9 _.;=/-]+")


def pattern_text(pattern: str) -> str:
    """A header pattern as words where it is a plain literal or alternation ('nosniff', 'DENY or SAMEORIGIN');
    otherwise the regular expression itself, marked as one."""
    core = pattern.removeprefix("(?i)")
    anchored = core.startswith("^") and core.endswith("$") and not core.endswith(r"\$")
    body = core[1:-1] if anchored else core
    if body.startswith("(") and body.endswith(")") and body.count("(") == 1:
        body = body[1:-1]
    words = body.split("|")
    if all(_LITERAL.fullmatch(w) for w in words):
        shown = [w.upper() if pattern.startswith("(?i)") and len(words) > 1 else w for w in words]
        text = " or ".join(shown) if anchored else " or ".join(f"containing '{w}'" for w in shown)
        return text + (" (any case)" if pattern.startswith("(?i)") and len(words) == 1 else "")
    if re.fullmatch(r"[A-Za-z-]+=\\d\+", body):
        return f"{body[:-3]}<number>"
    return f"matching the pattern /{pattern}/"


def not_configured(key: str, would_check: str) -> str:
    """The note of a section with nothing configured: what it would check and the params key enabling it."""
    return (f"Not configured: {key}. This section would check {would_check}. To enable it, set {key} in the "
            "params file (docs/params.md).")
