"""Secret values: resolved only where used, remembered so they can be scrubbed from any output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_LEN = 4


def url_password(url: str) -> str | None:
    """The password part of a URL such as postgresql://user:pw@host/db, if any."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return unquote(parts.password) if parts.password else None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    pw = url_password(url)
    if not pw:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return parts._replace(netloc=netloc).geturl()


class SecretSet:
    """The secret values in play; `scrub` replaces each of them (and URL-encoded forms) with ***."""

    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        self._compiled: re.Pattern[str] | None = None
        for v in values:
            self.add(v)

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LEN:
            return
        self._compiled = None
        self._values.add(value)
        pw = url_password(value)
        if pw and len(pw) >= MIN_SECRET_LEN:
            self._values.add(pw)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _pattern(self) -> re.Pattern[str] | None:
        """One regex of every secret and its URL-encoded forms, compiled once per set of values."""
        if not self._values:
            return None
        if self._compiled is not None:
            return self._compiled
        from urllib.parse import quote

        forms = set()
        for v in self._values:
            forms.update({v, quote(v, safe=""), quote(v)})
        alternatives = sorted(forms, key=len, reverse=True)
        self._compiled = re.compile("|".join(re.escape(a) for a in alternatives))
        return self._compiled

    def scrub(self, text: str) -> str:
        pattern = self._pattern()
        return pattern.sub(MASK, text) if pattern else text

    def found_in(self, text: str) -> bool:
        pattern = self._pattern()
        return bool(pattern and pattern.search(text))

    def scrub_tree(self, root: Path) -> list[Path]:
        """Scrub every text file below root in place; return the files that had to change."""
        changed = []
        pattern = self._pattern()
        if pattern is None:
            return changed
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            new = pattern.sub(MASK, text)
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
        return changed
