"""Response assertions beyond the status: a small JSON-path subset, expectations on the values it selects,
response headers and a latency bound.

JSON paths: ``$`` is the whole document; ``.name`` a key, ``[N]`` a list index (negative counts from the
end), ``[*]`` (or ``.*``) every item of a list / value of an object. ``$.items[*].id`` selects the id of
every item. A key holding other characters is written ``['a key']``.

Each failed rule is one line naming the path, what was expected and what was observed (values
truncated; the check's usual scrubbing masks secrets in them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

MAX_SHOWN = 120
_SEGMENT = re.compile(r"\.([A-Za-z0-9_\-]+)|\.\*|\[(-?\d+)\]|\[\*\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
WILD = object()  # a [*] segment


class PathError(ValueError):
    """A JSON path outside the supported subset."""


def parse_path(path: str) -> list[Any]:
    """The segments of `path`: str keys, int indexes, WILD; raises PathError naming the bad part."""
    if not path.startswith("$"):
        raise PathError(f"JSON path {path!r} must start with $ (e.g. $.items[0].id)")
    out: list[Any] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if not m:
            raise PathError(f"JSON path {path!r}: cannot read {path[pos:]!r} (supported: .key, [N], [*], ['key'])")
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        elif m.group(3) is not None or m.group(4) is not None:
            out.append(m.group(3) if m.group(3) is not None else m.group(4))
        else:
            out.append(WILD)
        pos = m.end()
    return out


def is_multi(path: str) -> bool:
    """Whether the path may select several values (it holds a wildcard)."""
    return any(s is WILD for s in parse_path(path))


def select(doc: Any, path: str) -> list[Any]:
    """Every value `path` selects in `doc` (empty when nothing matches)."""
    current = [doc]
    for seg in parse_path(path):
        nxt: list[Any] = []
        for value in current:
            if seg is WILD:
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif isinstance(seg, int):
                if isinstance(value, list) and -len(value) <= seg < len(value):
                    nxt.append(value[seg])
            elif isinstance(value, dict) and seg in value:
                nxt.append(value[seg])
        current = nxt
    return current


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """A value as JSON, truncated."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(value: Any, want: str) -> bool:
    have = json_type(value)
    return have == want or (want == "number" and have == "integer")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1 and '1' is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _sort_key(value: Any) -> tuple[int, Any]:
    """Comparable across the JSON types a sorted list may hold (numbers, strings, null first)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def check_json(doc: Any, path: str, rule: Any) -> list[str]:
    """Failures of one JSON path rule (a `JsonExpect`) against a parsed body; empty when it holds."""
    fields = rule.model_fields_set
    values = select(doc, path)
    multi = is_multi(path)
    fails: list[str] = []
    if rule.exists is not None:
        if rule.exists and not values:
            fails.append(f"{path}: expected to exist, observed nothing at that path")
        elif not rule.exists and values:
            fails.append(f"{path}: expected absent, observed {shown(values if multi else values[0])}")
        if not rule.exists:
            return fails
    if not values:
        others = fields - {"exists"}
        if others:
            fails.append(f"{path}: expected {_describe(rule)}, observed nothing at that path")
        return fails
    if "ordered" in fields and rule.ordered is not None:
        fails.extend(_ordered(path, values, multi, rule.ordered))
    for value in values:
        where = path if not multi else f"{path} (item {shown(value, 40)})"
        if "equals" in fields and not _same(value, rule.equals):
            fails.append(f"{where}: expected {shown(rule.equals)}, observed {shown(value)}")
        if rule.type is not None and not _type_ok(value, rule.type):
            fails.append(f"{where}: expected type {rule.type}, observed {json_type(value)} {shown(value, 60)}")
        if rule.regex is not None:
            text = value if isinstance(value, str) else shown(value, 10_000)
            if not re.search(rule.regex, text):
                fails.append(f"{where}: expected to match /{rule.regex}/, observed {shown(value)}")
        if not multi:
            fails.extend(_length(path, value, rule))
    if multi and any(getattr(rule, k) is not None for k in ("length", "min_length", "max_length")):
        fails.extend(_length(path, values, rule, counted="matches"))
    return fails


def _describe(rule: Any) -> str:
    parts = []
    for key in ("equals", "type", "regex", "length", "min_length", "max_length", "ordered"):
        if key in rule.model_fields_set and (key == "equals" or getattr(rule, key) is not None):
            value = getattr(rule, key)
            value = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else value
            parts.append(f"{key} {shown(value, 60)}")
    return ", ".join(parts) or "a value"


def _length(path: str, value: Any, rule: Any, counted: str = "length") -> list[str]:
    if rule.length is None and rule.min_length is None and rule.max_length is None:
        return []
    if not isinstance(value, list | dict | str):
        return [f"{path}: expected something with a length, observed {json_type(value)} {shown(value, 60)}"]
    n = len(value)
    bad = []
    if rule.length is not None and n != rule.length:
        bad.append(f"{counted} {rule.length}")
    if rule.min_length is not None and n < rule.min_length:
        bad.append(f"{counted} at least {rule.min_length}")
    if rule.max_length is not None and n > rule.max_length:
        bad.append(f"{counted} at most {rule.max_length}")
    return [f"{path}: expected {' and '.join(bad)}, observed {counted} {n}"] if bad else []


def _ordered(path: str, values: list[Any], multi: bool, spec: Any) -> list[str]:
    order, by = (spec, None) if isinstance(spec, str) else (spec.order, spec.by)
    items = values if multi else values[0]
    if not isinstance(items, list):
        return [f"{path}: expected a list ordered {order}, observed {json_type(items)} {shown(items, 60)}"]
    if by is not None:
        missing = [i for i, it in enumerate(items) if not isinstance(it, dict) or by not in it]
        if missing:
            return [f"{path}: expected every item to have '{by}' (ordered by it), item {missing[0]} has not"]
        keys = [it[by] for it in items]
    else:
        keys = list(items)
    for i in range(1, len(keys)):
        a, b = _sort_key(keys[i - 1]), _sort_key(keys[i])
        if (order == "asc" and b < a) or (order == "desc" and b > a):
            label = f"by {by} " if by else ""
            return [f"{path}: expected ordered {label}{order}, observed {shown(keys[i - 1], 40)} before "
                    f"{shown(keys[i], 40)} at positions {i - 1} and {i}"]
    return []


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    want = name.lower()
    return next((v for k, v in (headers or {}).items() if k.lower() == want), None)


def check_header(headers: Mapping[str, str] | None, name: str, rule: Any) -> list[str]:
    """Failures of one response header rule (a `HeaderExpect`); header names are case-insensitive."""
    value = header_value(headers, name)
    if rule.exists is False:
        return [f"header {name}: expected absent, observed {shown(value)}"] if value is not None else []
    if value is None:
        return [f"header {name}: expected {'present' if rule.exists else _header_rule(rule)}, observed no such "
                "header"]
    fails = []
    if rule.equals is not None and value != rule.equals:
        fails.append(f"header {name}: expected {shown(rule.equals)}, observed {shown(value)}")
    if rule.regex is not None and not re.search(rule.regex, value):
        fails.append(f"header {name}: expected to match /{rule.regex}/, observed {shown(value)}")
    return fails


def _header_rule(rule: Any) -> str:
    return shown(rule.equals) if rule.equals is not None else f"to match /{rule.regex}/"


def check_response(spec: Any, body: Any, headers: Mapping[str, str] | None, elapsed_ms: float,
                   is_json: bool = True) -> list[str]:
    """Every failure of a `ResponseExpect` (expect, expect_headers, max_ms) against one response."""
    fails: list[str] = []
    if spec.max_ms is not None and elapsed_ms > spec.max_ms:
        fails.append(f"latency: expected at most {spec.max_ms:g} ms, observed {elapsed_ms:.0f} ms")
    if spec.expect and not is_json:
        fails.append(f"body: expected JSON for {', '.join(spec.expect)}, observed a body that is not JSON")
    else:
        for path, rule in spec.expect.items():
            fails.extend(check_json(body, path, rule))
    for name, hrule in spec.expect_headers.items():
        fails.extend(check_header(headers, name, hrule))
    return fails


def extract(source: str, body: Any, headers: Mapping[str, str] | None) -> tuple[bool, Any, str]:
    """A value to save: (found, value, why not). `source` is a JSON path ($...), header:Name or a top-level
    field of the JSON body."""
    if source.startswith("header:"):
        name = source.split(":", 1)[1].strip()
        value = header_value(headers, name)
        return (True, value, "") if value is not None else (False, None, f"no response header {name}")
    if source.startswith("$"):
        values = select(body, source)
        if len(values) == 1:
            return True, values[0], ""
        return False, None, (f"nothing at {source}" if not values else f"{source} selects {len(values)} values, "
                                                                       "not one")
    if isinstance(body, dict) and source in body:
        return True, body[source], ""
    return False, None, f"response has no '{source}'"


def read_version(cfg: Any, body: Any, text: str, headers: Mapping[str, str] | None) -> tuple[str | None, str]:
    """(the running version, where it was read or why it was not) from a version endpoint's answer.

    `cfg` is a preflight `VersionCheck` (json_path, header or regex) or None: the field `version` of a JSON
    object (the default shape, with `service` naming the service)."""
    if cfg is None:
        if not isinstance(body, dict):
            return None, "body is not a JSON object"
        version = str(body.get("version", "") or "")
        if not version:
            fields = ", ".join(sorted(map(str, body))[:10]) or "none"
            return None, (f"no 'version' field (fields: {fields}); the service is read from 'service' and the "
                          "version from 'version' (or set phases.preflight.version: json_path, header or regex)")
        return version, "field version"
    if cfg.json_path is not None:
        if body is None:
            return None, f"body is not JSON, no {cfg.json_path}"
        values = select(body, cfg.json_path)
        if len(values) != 1 or values[0] is None or isinstance(values[0], dict | list):
            seen = "nothing" if not values else shown(values if len(values) > 1 else values[0], 80)
            return None, f"{cfg.json_path} selects {seen}, not one version value"
        return str(values[0]), cfg.json_path
    if cfg.header is not None:
        value = header_value(headers, cfg.header)
        return (value.strip(), f"header {cfg.header}") if value else (None, f"no response header {cfg.header}")
    m = re.search(cfg.regex, text)
    if not m:
        return None, f"body does not match /{cfg.regex}/ (body starts {shown(text[:60])})"
    return (m.group(1) if m.groups() else m.group(0)), f"/{cfg.regex}/"
