"""Destination URLs: shown without their secrets, and joined without breaking their query.

A destination URL may carry credentials: userinfo (``https://user:password@host/…``) or an
API key in the query string (``…/fhir?apikey=…``). Whatever shows a URL — error messages,
readiness reasons (``/ready`` is open to anyone), dead-letter reasons, AE acknowledgements
sent back to the senders, logs — shows :func:`redact_url` of it.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

# The masking of ``--print-config``: one rule for every place a URL is shown.
from ..config.model import mask_url

__all__ = ["join_url", "normalize_base", "origin", "redact_url"]

_UNPARSEABLE = "(url not shown: unparseable)"
#: A host name or IP address as :func:`urllib.parse.urlsplit` gives it (no brackets).
_HOST = re.compile(r"[a-z0-9._:%-]{1,253}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


def origin(url: str | None, base: str | None = None) -> tuple[str, str] | None:
    """``(scheme://host:port, host)`` of ``url`` (resolved against ``base`` when relative,
    as a redirect's ``Location`` may be), or ``None`` when it is no readable http(s) URL.
    What a redirect may show: no userinfo, path or query (a Location may hold a patient's
    id, or a token), and a host only if it looks like one."""
    if not url:
        return None
    try:
        parts = urlsplit(urljoin(base, url) if base else url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:  # a port out of range, an unbalanced "["
        return None
    if scheme not in _DEFAULT_PORTS or not host or not _HOST.fullmatch(host):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port or _DEFAULT_PORTS[scheme]}", host
