"""Request bodies from params: JSON, form-encoded, multipart (form fields + file parts) or raw.

`body_spec` turns a `RequestBody` params model into a plain, JSON-serialisable dict (the load engine ships it
to other processes and to Locust); `encode` renders that dict, placeholders filled, into (bytes, content type).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from rehearsal_lib.probes.placeholders import Values, expand, expand_text

Resolve = Callable[[str], str]


def body_spec(model: Any) -> dict[str, Any] | None:
    """The body a `RequestBody` declares, as a plain dict; None when it sends none."""
    if getattr(model, "json_body", None) is not None:
        return {"json": model.json_body}
    if getattr(model, "form", None) is not None or getattr(model, "files", None) is not None:
        files = {k: f.model_dump() for k, f in (model.files or {}).items()}
        return {"form": model.form or {}, "files": files}
    if getattr(model, "body", None) is not None:
        return {"body": model.body, "content_type": model.content_type}
    return None


def _resolved(value: Any, resolve: Resolve | None) -> Any:
    """Strings with their ${VAR} references resolved (recursively), when a resolver is given."""
    if resolve is None:
        return value
    if isinstance(value, str):
        return resolve(value) if "${" in value else value
    if isinstance(value, dict):
        return {k: _resolved(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, resolve) for v in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def encode(spec: dict[str, Any] | None, values: Values, resolve: Resolve | None = None) -> tuple[bytes | None,
                                                                                              str | None]:
    """(body bytes, content type) of a `body_spec`, placeholders filled from `values` (an unknown one
    raises `PlaceholderError`) and ${VAR} references resolved by `resolve`."""
    if spec is None:
        return None, None
    if "json" in spec:
        data = _resolved(expand(spec["json"], values, "json"), resolve)
        return json.dumps(data).encode(), "application/json"
    if "body" in spec:
        text = _resolved(expand_text(spec["body"], values, "body"), resolve)
        return text.encode(), spec["content_type"]
    form = _resolved(expand(spec.get("form") or {}, values, "form"), resolve)
    fields = [(k, _text(v)) for k, v in form.items()]
    files = spec.get("files") or {}
    if not files:
        return urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"
    import httpx

    parts: dict[str, tuple[str, bytes, str]] = {}
    for name, part in files.items():
        if part.get("path") is not None:
            path = _resolved(expand_text(part["path"], values, f"files.{name}.path"), resolve)
            with open(path, "rb") as fh:
                data = fh.read()
            filename = part.get("filename") or os.path.basename(path)
        else:
            data = _resolved(expand_text(part["content"], values, f"files.{name}.content"), resolve).encode()
            filename = part.get("filename") or name
        parts[name] = (filename, data, part.get("content_type") or "application/octet-stream")
    req = httpx.Request("POST", "http://body.invalid/", data=dict(fields), files=parts)
    return req.read(), req.headers["content-type"]


def shown_body(spec: dict[str, Any] | None, values: Values) -> Any:
    """What the evidence shows of a request body (placeholders filled; file parts by name and size only)."""
    if spec is None:
        return None
    if "json" in spec:
        return expand(spec["json"], values, "json")
    if "body" in spec:
        return expand_text(spec["body"], values, "body")[:500]
    out: dict[str, Any] = {"form": expand(spec.get("form") or {}, values, "form")}
    if spec.get("files"):
        out["files"] = {k: (p.get("filename") or p.get("path") or k) for k, p in spec["files"].items()}
    return out
