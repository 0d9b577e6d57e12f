"""Loading a certificate and its private key without a passphrase prompt.

Without a passphrase callback, OpenSSL asks for the passphrase of an encrypted key on
the process's terminal: a service started from one (an operator's first run, ``docker
run -it``) waited there for ever; without a terminal it failed with ``[Errno 22]
Invalid argument``. The configuration has no passphrase setting, so an encrypted key is
refused with :class:`EncryptedKeyError`, which callers turn into a configuration error
naming their setting.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["EncryptedKeyError", "load_key_pair"]


class EncryptedKeyError(Exception):
    """The private key is encrypted (passphrase protected)."""


def _no_passphrase() -> str:
    # OpenSSL's passphrase callback: called only for an encrypted key.
    raise EncryptedKeyError


def load_key_pair(context: ssl.SSLContext, cert: Path | str, key: Path | str | None) -> None:
    """``context.load_cert_chain(cert, key)``, an encrypted key raising
    :class:`EncryptedKeyError` instead of prompting."""
    context.load_cert_chain(
        str(cert), str(key) if key is not None else None, password=_no_passphrase
    )
