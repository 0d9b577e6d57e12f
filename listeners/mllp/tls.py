"""TLS contexts for MLLP listeners and clients, and certificate subjects as text."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError, TlsConfig
from ..tls_keys import EncryptedKeyError, load_key_pair

__all__ = ["client_ssl_context", "server_ssl_context", "subject_text"]

_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "emailAddress",
    "serialNumber": "serialNumber",
}


def server_ssl_context(tls: TlsConfig, where: str = "tls") -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_ca`` a client certificate is required
    and must chain to that CA (mutual TLS). An encrypted key is a ConfigError (see
    :mod:`listeners.tls_keys`).

    ``where`` is the settings' table as the file writes it (``mllp.listeners[0].tls``):
    each error names the setting and the file at fault. It said ``cannot load TLS
    material (cert.pem, key.pem, None): [Errno 2] No such file or directory`` or
    ``[SSL] PEM lib``, leaving the operator to guess which of the three files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    files = {"cert": tls.cert, "key": tls.key}
    if tls.client_ca is not None:
        files["client_ca"] = tls.client_ca
    for name, path in files.items():
        _readable(path, f"{where}.{name}")
    _certificates(tls.cert, f"{where}.cert")
    try:
        load_key_pair(context, tls.cert, tls.key)
    except EncryptedKeyError:
        raise ConfigError(
            f"{where}.key: the TLS key {tls.key} is encrypted (passphrase protected); give "
            "the listener an unencrypted key, readable by the service only"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{where}.key: {tls.key} is not the private key of the certificate "
                f"{tls.cert} ({where}.cert)"
            ) from None
        raise ConfigError(
            f"{where}.key: {tls.key} holds no usable PEM private key{_reason(exc)}"
        ) from None
    if tls.client_ca is not None:
        _certificates(tls.client_ca, f"{where}.client_ca", context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _readable(path: Path, setting: str) -> None:
    """A ConfigError naming ``setting`` when ``path`` cannot be opened for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{setting}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None


def _certificates(path: Path, setting: str, context: ssl.SSLContext | None = None) -> None:
    """Load the PEM certificates of ``path`` as trust anchors of ``context`` (a scratch
    one when None: only checking that the file holds a certificate)."""
    target = context or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        target.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{setting}: {path} holds no usable PEM certificate{_reason(exc)}"
        ) from None


def _reason(exc: OSError) -> str:
    """`` (NO_CERTIFICATE_OR_CRL_FOUND)``: OpenSSL's reason code, else the system's text,
    else nothing (OpenSSL's bare ``[SSL] PEM lib (_ssl.c:3926)`` tells no more)."""
    if isinstance(exc, ssl.SSLError):
        return f" ({exc.reason})" if exc.reason else ""
    return f" ({exc.strerror})" if exc.strerror else ""


def client_ssl_context(
    *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ client context verifying the server against ``ca`` (else the system
    store), presenting ``cert``/``key`` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def subject_text(peercert: Mapping[str, Any] | None) -> str | None:
    """A verified peer certificate's subject, RFC 4514 style (``CN=x,O=y``)."""
    if not peercert:
        return None
    rdns = peercert.get("subject") or ()
    parts: list[str] = []
    for rdn in reversed(rdns):
        attrs = [f"{_SHORT_NAMES.get(name, name)}={_escape(str(value))}" for name, value in rdn]
        parts.append("+".join(attrs))
    return ",".join(parts) or None


def _escape(value: str) -> str:
    out = "".join(f"\\{char}" if char in ',+"\\<>;=' else char for char in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
