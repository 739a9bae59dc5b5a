"""Plain text for what a release manager reads: numbers with a unit and a space, plurals, status mixes.

Precision rule for milliseconds and seconds: one decimal below 10, whole numbers from 10 up
("1.4 ms", "607 ms"), so figures side by side read alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta


def num(value: float) -> str:
    """One decimal below 10, a whole number from 10 up."""
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{num(value)} ms"


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{num(value)} s"


def rps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} req/s"


def days(value: float | timedelta | None) -> str:
    """'45.0 days' (a timedelta or a number of days)."""
    if value is None:
        return "n/a"
    if isinstance(value, timedelta):
        value = value.total_seconds() / 86400
    return f"{value:.1f} days"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 row', '3 rows', '1 policy', '2 policies' (pass `many` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def status_mix(mix: Mapping[str, int]) -> str:
    """{'201': 34, 'timeout': 2} -> '201 × 34, timeout × 2' ('none' when empty)."""
    return ", ".join(f"{code} × {n}" for code, n in mix.items()) or "none"
