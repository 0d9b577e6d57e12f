"""TLS settings of a FHIR destination: its CA bundle, its client certificate and key."""

from __future__ import annotations

import ssl

import certifi

from ..config import ConfigError, DestinationConfig
from ..tls_keys import EncryptedKeyError, load_key_pair

__all__ = ["ssl_context"]


def ssl_context(destination: DestinationConfig) -> ssl.SSLContext:
    """TLS settings of ``destination``: its CA bundle (else system + certifi), client cert."""
    try:
        if destination.ca_bundle is not None:
            context = ssl.create_default_context(cafile=str(destination.ca_bundle))
        else:
            context = ssl.create_default_context()
            context.load_verify_locations(cafile=certifi.where())
        if destination.client_cert is not None:
            load_key_pair(context, destination.client_cert, destination.client_key)
        elif destination.client_key is not None:
            raise ConfigError(f"destinations.{destination.name}: client_key without client_cert")
    except EncryptedKeyError:
        raise ConfigError(
            f"destinations.{destination.name}: the client key is encrypted (passphrase "
            "protected); give client_key an unencrypted key, readable by the service only"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"destinations.{destination.name}: cannot load TLS files: {exc}"
        ) from None
    return context
