"""Secret values: resolved only where used, remembered so they can be scrubbed from any output.

One `SecretSet` covers a whole run (the runner and every phase kernel build the same one from the
params file and the environment, see `add_params`): every `${VAR}` value of the params file that
is not in a public position, database URL passwords, the sandbox's secrets. `scrub` masks each of
them as `***` in every form a program may have written it in: raw, JSON-escaped (ASCII or not,
nested up to three levels, e.g. JSON of HTML of JSON), HTML/XML-escaped (named, decimal and hex
entities), Python repr / unicode escapes, URL-encoded (`quote`, `quote_plus`, either hex case) and
base64 (standard and URL-safe, at any byte alignment, so `Basic base64(user:secret)` is covered).

Each character of a secret is matched as the alternation of its encodings, so any mix of the above
(nested encodings are character-wise) is one regex. `sweep` is the last look before sealing: it
names every file that still holds a secret (binary files are never rewritten by `scrub_tree`) and
redacts it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_SECRET_LEN = 4
# params keys whose `${VAR}` value is public (where it is shown as is: URLs, paths). A variable used
# under one of them is public everywhere (e.g. the base URL passed again as SMOKE_BASE_URL); the
# password of a URL found there is still a secret.
PUBLIC_KEYS = frozenset({"base_url", "url", "ca_file", "file", "path", "directory", "down_directory", "config",
                         "pg_bin_dir", "junit_path"})
JSON_SUFFIXES = (".json", ".ipynb")
REDACTED = ("Redacted by Rehearsal before sealing: this file still held a secret after scrubbing "
            "(binary or unreadable content cannot be scrubbed in place). The run is NO-GO.")
_MIN_BASE64_FORM = 8  # shorter base64 fragments would match by chance


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


# -- encodings -----------------------------------------------------------------------------------------
_SPECIAL = set("\"'&<>")


def _entity_chars(s: str) -> Callable[[Callable[[str], str]], str]:
    def apply(fmt: Callable[[str], str]) -> str:
        return "".join(fmt(c) if (c in _SPECIAL or ord(c) > 126 or ord(c) < 32) else c for c in s)
    return apply


def _lower_hex(s: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


def _upper_u(s: str) -> str:
    return re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), s)


_ENCODERS: tuple[Callable[[str], str], ...] = (
    lambda s: json.dumps(s)[1:-1],                                      # JSON, ensure_ascii (\u00e4)
    lambda s: json.dumps(s, ensure_ascii=False)[1:-1],                  # JSON, UTF-8
    lambda s: _upper_u(json.dumps(s)[1:-1]),                            # \u00E4
    lambda s: json.dumps(s)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")
    .replace("&", "\\u0026").replace("'", "\\u0027"),                   # HTML-safe JSON (jinja tojson)
    lambda s: s.replace("/", "\\/"),                                    # JSON with escaped slashes
    lambda s: html.escape(s, quote=True),                               # &quot; &#x27;
    lambda s: html.escape(s, quote=False),                              # XML/HTML text
    lambda s: html.escape(s, quote=False).replace('"', "&#34;").replace("'", "&#39;"),  # markupsafe
    lambda s: html.escape(s, quote=False).replace('"', "&quot;").replace("'", "&apos;"),  # XML attribute
    lambda s: _entity_chars(s)(lambda c: f"&#{ord(c)};"),               # &#228;
    lambda s: _entity_chars(s)(lambda c: f"&#x{ord(c):x};"),            # &#xe4;
    lambda s: _entity_chars(s)(lambda c: f"&#x{ord(c):X};"),            # &#xE4;
    lambda s: repr('"' + s)[2:-1],                                      # Python repr ('...' with \')
    lambda s: s.encode("unicode_escape").decode("ascii"),               # \xe4 \u20ac
    lambda s: repr(s.encode("utf-8"))[2:-1],                            # bytes repr \xc3\xa4
    lambda s: quote(s, safe=""),                                        # %C3%A4
    lambda s: _lower_hex(quote(s, safe="")),                            # %c3%a4
    lambda s: quote_plus(s, safe=""),                                   # space as +
    lambda s: _markdown(s),                                             # summary.md's md filter: \| \` &lt;
)


def _markdown(s: str) -> str:
    """A value as summary.md's `md` filter writes it (views.md): `\\`, `|` and a backtick escaped with a
    backslash, then `&`, `<` and `>` as entities."""
    for ch in "\\`|":
        s = s.replace(ch, "\\" + ch)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_DEPTH = 3  # e.g. evidence JSON -> HTML badge -> notebook JSON


@lru_cache(maxsize=4096)
def char_forms(c: str) -> tuple[str, ...]:
    """Every way one character may be written by up to three nested encoders, longest first."""
    forms = {c}
    frontier = {c}
    for _ in range(_DEPTH):
        frontier = {enc(f) for f in frontier for enc in _ENCODERS} - forms
        forms |= frontier
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def base64_forms(value: str) -> list[str]:
    """Base64 (standard and URL-safe) of the value wherever it starts in the encoded data: for each
    of the three byte alignments, the characters that depend on the value's bytes only."""
    raw = value.encode("utf-8")
    out = []
    for shift in range(3):
        data = b"\0" * shift + raw
        full = 4 * (len(data) // 3)  # characters of the groups fully inside the data
        start = 4 if shift else 0    # the first group mixes in unknown preceding bytes
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            form = enc(data).decode("ascii")[start:full]
            if len(form) >= _MIN_BASE64_FORM:
                out.append(form)
    return out


def _trie_regex(words: Iterable[str]) -> str:
    """A regex matching any of the words, as a trie (one character test per step instead of one per
    word: a secret starting with `"` would otherwise try 130 alternatives at every quote of a file)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word may end here: the longer continuation is optional (and preferred)
            return f"(?:{body})?"
        return body

    return build(trie)


@lru_cache(maxsize=4096)
def _char_pattern(c: str) -> str:
    forms = char_forms(c)
    return re.escape(c) if len(forms) == 1 else f"(?:{_trie_regex(forms)})"


def _value_pattern(value: str) -> str:
    return "".join(_char_pattern(c) for c in value)


# -- the set --------------------------------------------------------------------------------------------
class SecretSet:
    """The secret values in play; `scrub` replaces each of them, in any encoding, with ***."""

    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        self._compiled: re.Pattern[str] | None = None
        self.refused: list[str] = []  # names of values too short to be treated as secrets
        for v in values:
            self.add(v)

    def add(self, value: str | None, name: str | None = None) -> bool:
        """Remember a secret (and a URL's password and user:password); False when refused as too short."""
        if not value:
            return False
        if len(value) < MIN_SECRET_LEN:
            if name and name not in self.refused:
                self.refused.append(name)
            return False
        self._compiled = None
        self._values.add(value)
        pw = url_password(value)
        if pw and len(pw) >= MIN_SECRET_LEN:
            self._values.add(pw)
            user = urlsplit(value).username
            if user:
                self._values.add(f"{unquote(user)}:{pw}")
        return True

    def add_params(self, params: Any, environ: dict[str, str] | None = None) -> None:
        """Add the value of every `${VAR}` of a params file, as the environment resolves it.

        Public positions (`PUBLIC_KEYS`: base URL, URLs, paths) are not secrets, nor is a variable
        also used in one; a URL's password is a secret wherever it is. Values shorter than
        MIN_SECRET_LEN are refused (named in `refused`): masking them would blank ordinary text.
        """
        from rehearsal_lib.config import REF_RE, string_values

        env = os.environ if environ is None else environ
        public: set[str] = set()
        found: list[tuple[str, str, str]] = []
        for key, text in string_values(params.model_dump(mode="json")):
            leaf = re.sub(r"\[\d+\]$", "", key).rsplit(".", 1)[-1]
            for m in REF_RE.finditer(text):
                var, default = m.group(1), m.group(2)
                value = env.get(var, default)
                if value is None:
                    continue
                if leaf in PUBLIC_KEYS:
                    public.add(var)
                    pw = url_password(value)
                    if pw:
                        self.add(pw, f"password of ${{{var}}}")
                else:
                    found.append((var, key, value))
        for var, key, value in found:
            if var not in public:
                self.add(value, f"${{{var}}} ({key})")

    def __bool__(self) -> bool:
        return bool(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _pattern(self) -> re.Pattern[str] | None:
        """One regex of every secret in every form, compiled once per set of values."""
        if not self._values:
            return None
        if self._compiled is not None:
            return self._compiled
        literals: set[str] = set()
        for v in self._values:
            literals.add(v)
            literals.update(base64_forms(v))
        alternatives = sorted(literals, key=len, reverse=True)  # a longer secret holding a shorter one wins
        self._compiled = re.compile("|".join(_value_pattern(a) for a in alternatives))
        return self._compiled

    def scrub(self, text: str) -> str:
        pattern = self._pattern()
        return pattern.sub(MASK, text) if pattern else text

    def found_in(self, text: str) -> bool:
        pattern = self._pattern()
        return bool(pattern and pattern.search(text))

    def scrub_obj(self, obj: Any) -> Any:
        """A copy of a JSON-like structure with every string (keys too) scrubbed; a number that is a
        secret becomes "***". A list of lines (nbformat's multi-line strings) is scrubbed as one text."""
        if not self:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            if len(obj) > 1 and all(isinstance(x, str) for x in obj) and all(x.endswith("\n") for x in obj[:-1]):
                joined = "".join(obj)
                if self.found_in(joined):
                    return self.scrub(joined).splitlines(keepends=True)
                return list(obj)
            return [self.scrub_obj(v) for v in obj]
        if isinstance(obj, int | float) and not isinstance(obj, bool) and self.found_in(str(obj)):
            return MASK
        return obj

    def _holds(self, obj: Any) -> bool:
        """Whether a JSON structure still holds a secret in a string, key, line list or number."""
        if isinstance(obj, str):
            return self.found_in(obj)
        if isinstance(obj, dict):
            return any(self._holds(k) or self._holds(v) for k, v in obj.items())
        if isinstance(obj, list):
            if obj and all(isinstance(x, str) for x in obj):
                return self.found_in("".join(obj))
            return any(self._holds(v) for v in obj)
        if isinstance(obj, int | float) and not isinstance(obj, bool):
            return self.found_in(str(obj))
        return False

    # -- files ------------------------------------------------------------------------------------------
    def scrub_file(self, path: Path) -> bool:
        """Scrub one UTF-8 text file in place (JSON stays valid JSON); True if it changed.
        Binary files are left alone: `sweep` catches a secret in them."""
        if not self or not path.is_file():
            return False
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            return False
        if not self.found_in(text):
            return False
        new = self.scrub(text)
        if path.suffix in JSON_SUFFIXES:
            new = self._keep_json_valid(path, text, new)
        if new == text:
            return False
        path.write_text(new, encoding="utf-8")
        return True

    def _keep_json_valid(self, path: Path, before: str, after: str) -> str:
        """The text-level result when it is valid JSON holding no secret, else a structural scrub
        (a match may start inside an escape sequence or take a string's quote)."""
        try:
            data = json.loads(before)
        except ValueError:
            return after  # was not JSON: nothing to keep valid
        try:
            if not self._holds(json.loads(after)):
                return after
        except ValueError:
            pass
        if path.suffix == ".ipynb":  # nbformat's own layout
            return json.dumps(self.scrub_obj(data), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        return json.dumps(self.scrub_obj(data), indent=2, ensure_ascii=False)

    def scrub_tree(self, root: Path) -> list[Path]:
        """Scrub every text file below root in place; return the files that had to change."""
        if not self:
            return []
        return [p for p in sorted(root.rglob("*")) if p.is_file() and self.scrub_file(p)]

    def holds_secret(self, path: Path) -> bool:
        """Whether a file (text or binary) holds any form of a secret; JSON is read as its decoded strings."""
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self.found_in(data.decode("utf-8", errors="surrogateescape"))
        if path.suffix in JSON_SUFFIXES:
            try:
                return self._holds(json.loads(text))
            except ValueError:
                pass
        return self.found_in(text)

    def sweep(self, root: Path) -> list[str]:
        """The last look before sealing: every file below root that still holds a secret (in its
        content or its name) is redacted; returns their paths relative to root (scrubbed)."""
        if not self:
            return []
        found = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if self.found_in(rel):
                target = root / self.scrub(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                path = path.rename(target)
                found.append(f"the name of {self.scrub(rel)}")
            if self.holds_secret(path):
                _redact(path)
                found.append(self.scrub(rel))
        return found


def _redact(path: Path) -> None:
    """Replace a file's content with a note (a notebook stays a readable notebook)."""
    if path.suffix == ".ipynb":
        nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": f"**{REDACTED}**"}],
              "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
        path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps({"redacted": REDACTED}), encoding="utf-8")
    else:
        path.write_text(REDACTED + "\n", encoding="utf-8")
