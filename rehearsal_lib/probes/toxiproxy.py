"""Client of the Toxiproxy HTTP API subset that Rehearsal's own fault proxy (rehearsal_lib.faultproxy) also
speaks: one client drives either (docs/fault-proxy.md)."""

from __future__ import annotations

from typing import Any

import httpx


class ToxiproxyError(Exception):
    """A non-2xx answer (or no answer) of the control API; ``status`` is None when none arrived."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status, self.body = status, body


class ToxiproxyClient:
    """``ToxiproxyClient("http://127.0.0.1:8474")``: proxies, enable/disable, upstream, toxics, reset."""

    def __init__(self, api_url: str, timeout_s: float = 5) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, what: str, json: Any = None) -> Any:
        try:
            with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
                resp = client.request(method, f"{self.api_url}{path}", json=json)
        except httpx.HTTPError as err:
            raise ToxiproxyError(f"{what}: no answer from {self.api_url}: {type(err).__name__}: {err}") from err
        if not 200 <= resp.status_code < 300:
            body = resp.text[:500]
            raise ToxiproxyError(f"{what}: HTTP {resp.status_code} from {self.api_url}{path}: {body}",
                                 resp.status_code, body)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def version(self) -> str:
        """The server's version string (Toxiproxy answers text or JSON, depending on its version)."""
        out = self._call("GET", "/version", "version")
        return str(out.get("version", out)) if isinstance(out, dict) else str(out)

    def proxies(self) -> dict[str, Any]:
        """``{name: {"name", "listen", "upstream", "enabled", "toxics": [...]}}``."""
        out = self._call("GET", "/proxies", "list proxies")
        if not isinstance(out, dict):
            raise ToxiproxyError(f"list proxies: expected a JSON object from {self.api_url}/proxies")
        return out

    def set_enabled(self, proxy: str, enabled: bool) -> dict[str, Any]:
        """Disable (close every connection, refuse new ones) or enable ``proxy``."""
        return self._call("POST", f"/proxies/{proxy}", f"{'enable' if enabled else 'disable'} proxy {proxy!r}",
                          {"enabled": enabled})

    def set_upstream(self, proxy: str, upstream: str) -> dict[str, Any]:
        """Send new connections of ``proxy`` to ``upstream`` (``host:port``); existing ones are closed."""
        return self._call("POST", f"/proxies/{proxy}", f"switch proxy {proxy!r} to {upstream}", {"upstream": upstream})

    def add_toxic(self, proxy: str, type: str, attributes: dict[str, Any], name: str | None = None,  # noqa: A002
                  stream: str = "downstream", toxicity: float = 1.0) -> str:
        """Add a toxic to ``proxy``; returns its name (Toxiproxy's default: ``<type>_<stream>``)."""
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        if name:
            body["name"] = name
        out = self._call("POST", f"/proxies/{proxy}/toxics", f"add {type} toxic to proxy {proxy!r}", body)
        return str(out.get("name") if isinstance(out, dict) and out.get("name") else name or f"{type}_{stream}")

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove toxic ``name`` from ``proxy``."""
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}", f"remove toxic {name!r} of proxy {proxy!r}")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset", "reset")
