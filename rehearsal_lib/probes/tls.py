"""TLS probe: certificate chain, hostname, expiry and protocol of one HTTPS endpoint; never raises."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
            "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
ORDER = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


def label(version: str | None) -> str:
    """'TLSv1.2' -> 'TLS 1.2' (and 'TLSv1' -> 'TLS 1.0') for the report."""
    if not version:
        return "no protocol"
    number = version.removeprefix("TLSv")
    return f"TLS {number if '.' in number else number + '.0'}" if version.startswith("TLSv") else version


@dataclass
class TlsResult:
    """What one look at an HTTPS endpoint found. `error` is set when no handshake completed at all."""

    host: str
    port: int
    error: str | None = None
    verified: bool = False
    verify_error: str | None = None
    protocol: str | None = None
    not_after: dt.datetime | None = None
    subject: str = ""
    issuer: str = ""
    sans: list[str] = field(default_factory=list)

    @property
    def days_left(self) -> float | None:
        if self.not_after is None:
            return None
        return round((self.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400, 2)

    def evidence(self) -> dict[str, Any]:
        out = {"endpoint": f"{self.host}:{self.port}", "protocol": label(self.protocol) if self.protocol else None,
               "subject": self.subject, "issuer": self.issuer, "host names": ", ".join(self.sans[:10]) or None,
               "not_after": self.not_after.isoformat() if self.not_after else None,
               "verified": "yes" if self.verified else "no",
               "verify_error": self.verify_error, "error": self.error}
        return {k: v for k, v in out.items() if v not in (None, "")}  # no 'error: None' in a report


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url}")
    return parts.hostname, parts.port or 443


def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> tuple[bytes | None, str | None]:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """The context a careful client uses: system CAs (or `ca_file`), hostname checked."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def _permissive_context(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client that verifies nothing and offers every protocol this OpenSSL has (to read what the server does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering an old version is the point
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        if maximum is not None:
            ctx.maximum_version = maximum
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def inspect(url: str, ca_file: str | None = None, timeout: float = 5.0) -> TlsResult:
    """Verify chain and hostname; then read the certificate and protocol without verifying."""
    try:
        host, port = host_port(url)
    except ValueError as exc:
        return TlsResult("?", 0, error=str(exc))
    out = TlsResult(host, port)
    try:
        _handshake(host, port, verifying_context(ca_file), timeout)
        out.verified = True
    except ssl.SSLError as exc:  # verification, or a handshake a careful client refuses (old protocol)
        out.verify_error = _reason(exc)
    except OSError as exc:
        out.error = _reason(exc)
        return out
    loose = _permissive_context()
    try:
        der, out.protocol = _handshake(host, port, loose, timeout)
    except (OSError, ssl.SSLError) as exc:
        out.error = _reason(exc)
        return out
    if der:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        out.not_after = cert.not_valid_after_utc
        out.subject, out.issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            out.sans = [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
                str(v) for v in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            pass
    return out


def accepts_below(url: str, min_version: str, timeout: float = 5.0) -> tuple[bool | None, str, str]:
    """Does the server complete a handshake capped just below `min_version`? (None: could not tell).

    Returns (accepted, plain words, technical detail)."""
    below = ORDER[ORDER.index(min_version) - 1]
    host, port = host_port(url)
    try:
        ctx = _permissive_context(VERSIONS[below])
    except (ValueError, ssl.SSLError) as exc:
        return None, f"this client cannot offer {label(below)}", f"{type(exc).__name__}: {exc}"
    try:
        _, version = _handshake(host, port, ctx, timeout)
    except (OSError, ssl.SSLError) as exc:
        return False, f"{label(below)} refused", _reason(exc)[:200]
    return True, f"server accepted {label(version)}", f"handshake completed with {version}"
