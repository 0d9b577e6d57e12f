"""TLS settings of a FHIR destination: its CA bundle, its client certificate and key."""

from __future__ import annotations

import ssl

import certifi

from ..config import ConfigError, DestinationConfig

__all__ = ["ssl_context"]


class _EncryptedKey(Exception):
    """The client key asks for a passphrase (see :func:`ssl_context`)."""


def _no_passphrase() -> str:
    """OpenSSL's passphrase callback: called only for an encrypted key, which the
    configuration has no passphrase for."""
    raise _EncryptedKey


def ssl_context(destination: DestinationConfig) -> ssl.SSLContext:
    """TLS settings of ``destination``: its CA bundle (else system + certifi), client cert."""
    try:
        if destination.ca_bundle is not None:
            context = ssl.create_default_context(cafile=str(destination.ca_bundle))
        else:
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=certifi.where())
        if destination.client_cert is not None:
            # ``password``: without it OpenSSL prompts for the passphrase of an encrypted
            # key on the terminal, and a service started from one waits there for ever.
            context.load_cert_chain(
                str(destination.client_cert),
                str(destination.client_key) if destination.client_key is not None else None,
                password=_no_passphrase,
            )
        elif destination.client_key is not None:
            raise ConfigError(f"destinations.{destination.name}: client_key without client_cert")
    except _EncryptedKey:
        raise ConfigError(
            f"destinations.{destination.name}: the client key is encrypted (passphrase "
            "protected); give client_key an unencrypted key, readable by the service only"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"destinations.{destination.name}: cannot load TLS files: {exc}"
        ) from None
    return context
