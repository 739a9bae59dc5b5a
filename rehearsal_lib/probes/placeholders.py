"""One placeholder language for request bodies, paths, headers and command lines.

A placeholder is ``{name}`` where name is lowercase letters, digits and ``_``; a few built-ins of the
load phase take two integer arguments, ``{randint:A:B}``. Anything else between braces (``{Name}``,
``{"a": 1}``, ``{}``) is plain text, so JSON written inside a string stays as it is, and ``${NAME}`` is
an environment reference resolved elsewhere, never a placeholder.

One rule for unknown names: a placeholder that no value fills raises `PlaceholderError`, naming the
placeholder, where it was (``path``, ``json.items[0].id``, ``headers.X-Run``, ``command``) and the names
known there. A check turns that exception into ``error`` with this message: a request or command is
never sent with a ``{typo}`` left in it.

A string that is exactly one placeholder becomes the value itself (an int stays an int in a JSON body);
elsewhere the value is inserted with ``str()``. Strings are expanded inside dicts and lists, recursively;
dict keys and other values are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

PATTERN = re.compile(r"(?<!\$)\{([a-z0-9_]+)(?::(-?\d+):(-?\d+))?\}")

# A value is the value itself, or a function: of no arguments (called per use), or of the two integers.
Values = Mapping[str, Any]


class PlaceholderError(ValueError):
    """A placeholder no value fills (or arguments given to one that takes none)."""

    def __init__(self, name: str, where: str, known: Iterable[str], why: str = "unknown placeholder") -> None:
        self.name, self.where, self.known = name, where, sorted(known)
        shown = ", ".join("{" + k + "}" for k in self.known) or "none"
        super().__init__(f"{why} {{{name}}} in {where} (known here: {shown})")


def has_placeholders(value: Any) -> bool:
    """Whether any string in `value` (recursively) holds a placeholder."""
    return any(True for _ in names(value))


def names(value: Any) -> Iterator[str]:
    """Every placeholder name in the strings of `value`, in order (repeats included)."""
    if isinstance(value, str):
        for m in PATTERN.finditer(value):
            yield m.group(1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from names(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from names(v)


def unknown(value: Any, known: Iterable[str]) -> list[str]:
    """Placeholder names in `value` that `known` does not hold (sorted, once each)."""
    have = set(known)
    return sorted({n for n in names(value) if n not in have})


class _Missing(Exception):
    """Raised deep inside `_expand`; `expand` turns it into PlaceholderError with the full path (building
    the path only on error keeps the load engine's per-request rendering cheap)."""

    def __init__(self, name: str, why: str = "unknown placeholder") -> None:
        self.name, self.why = name, why
        self.path: list[str] = []
        super().__init__(name)


def _lookup(m: re.Match[str], values: Values) -> Any:
    name = m.group(1)
    try:
        value = values[name]
    except KeyError:
        raise _Missing(name) from None
    if m.group(2) is not None:
        if not callable(value):
            raise _Missing(f"{name}:{m.group(2)}:{m.group(3)}", "arguments given to a placeholder that takes none:")
        return value(int(m.group(2)), int(m.group(3)))
    return value() if callable(value) else value


def _expand(value: Any, values: Values) -> Any:
    if isinstance(value, str):
        if "{" not in value:
            return value
        whole = PATTERN.fullmatch(value)
        if whole:
            return _lookup(whole, values)
        return PATTERN.sub(lambda m: str(_lookup(m, values)), value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[k] = _expand(v, values)
            except _Missing as exc:
                exc.path.append(f".{k}")
                raise
        return out
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_expand(v, values))
            except _Missing as exc:
                exc.path.append(f"[{i}]")
                raise
        return items
    return value


def expand(value: Any, values: Values, where: str) -> Any:
    """`value` with every placeholder in its strings filled from `values` (see the module docstring).

    A value in `values` may be a function: called with no arguments for ``{name}`` (a fresh uuid per
    use), with the two integers for ``{name:A:B}``. `where` names `value` in the error message."""
    try:
        return _expand(value, values)
    except _Missing as exc:
        raise PlaceholderError(exc.name, where + "".join(reversed(exc.path)), values.keys(), exc.why) from None


def expand_text(text: str, values: Values, where: str) -> str:
    """`text` with its placeholders filled, always a string (for paths, header values, command words)."""
    out = expand(text, values, where)
    return out if isinstance(out, str) else str(out)


def partial(value: Any, values: Values) -> Any:
    """Fill only the names `values` holds and leave every other placeholder as it is, for a template that
    is expanded in two steps (the run id first, per-request values later). The second step's `expand`
    still applies the unknown-name rule."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        return PATTERN.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values and m.group(2) is None
                           else m.group(0), value)
    if isinstance(value, dict):
        return {k: partial(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [partial(v, values) for v in value]
    return value

