"""Destination URLs: shown without their secrets, and joined without breaking their query.

A destination URL may carry credentials: userinfo (``https://user:password@host/…``) or an
API key in the query string (``…/fhir?apikey=…``). Whatever shows a URL — error messages,
readiness reasons (``/ready`` is open to anyone), dead-letter reasons, AE acknowledgements
sent back to the senders, logs — shows :func:`redact_url` of it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# The masking of ``--print-config``: one rule for every place a URL is shown.
from ..config.model import mask_url

__all__ = ["join_url", "normalize_base", "redact_url"]

_UNPARSEABLE = "(url not shown: unparseable)"


def redact_url(url: str | None) -> str:
    """``url`` for display: the password of its userinfo masked (``user:***@``, or ``***@``
    for a lone token), the query string masked (``?***``: API keys travel there) and the
    fragment dropped. Scheme, host, port and path stay: they are what an operator needs."""
    if not url:
        return ""
    try:
        parts = urlsplit(mask_url(url) or "")
    except ValueError:  # e.g. an unbalanced "[" in the host: show nothing rather than all
        return _UNPARSEABLE
    return urlunsplit(parts._replace(fragment=""))


def join_url(base: str, *segments: str) -> str:
    """``base`` with ``segments`` appended to its *path*, its query string kept after them:
    ``https://h/fhir?k=v`` + ``metadata`` → ``https://h/fhir/metadata?k=v`` (appending the
    text would give ``…?k=v/metadata``, another resource altogether)."""
    parts = urlsplit(base)
    path = "/".join([parts.path.rstrip("/"), *(s.strip("/") for s in segments)])
    return urlunsplit(parts._replace(path=path))


def normalize_base(url: str) -> str:
    """The FHIR base without a trailing slash on its path (query and fragment kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/")))
