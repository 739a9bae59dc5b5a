"""Plain wording for what a release manager reads: counts, plurals, seconds, yes/no, header patterns."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any


def plural(n: float, word: str, many: str | None = None) -> str:
    """'1 policy', '2 policies', '0 fields'."""
    return f"{n:g} {word if n == 1 else many or word + 's'}"


def times(n: int) -> str:
    """'once', 'twice', '3 times', '0 times'."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def secs(value: float) -> str:
    """Seconds with a space before the unit: '3 s', '0.1 s', '2.5 s'."""
    return f"{value:g} s"


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
