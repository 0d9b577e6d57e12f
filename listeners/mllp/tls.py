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


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_ca`` a client certificate is required
    and must chain to that CA (mutual TLS). An encrypted key is a ConfigError (see
    :mod:`listeners.tls_keys`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        load_key_pair(context, tls.cert, tls.key)
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=tls.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except EncryptedKeyError:
        raise ConfigError(
            f"the TLS key {tls.key} is encrypted (passphrase protected); give the listener "
            "an unencrypted key, readable by the service only"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS material ({tls.cert}, {tls.key}, {tls.client_ca}): {exc}"
        ) from None
    return context


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
