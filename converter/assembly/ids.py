"""Deterministic resource ids.

An id is a UUID-shaped digest of the conversion scope (the configured namespace), the
resource type and the business identity the template declares (``_identity``), so the
same patient, visit or order always gets the same id and re-sending a message updates
resources instead of duplicating them.
"""

from __future__ import annotations

import hashlib

__all__ = ["stable_id"]

_SEPARATOR = "\x1f"  # unit separator: cannot occur in HL7 text after decoding of delimiters
# The UUID variant digit (10xx) for each hex digit of the digest: its two low bits kept.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def stable_id(scope: str, resource_type: str, *parts: str) -> str:
    """A 36-character id, valid as a FHIR id and as the tail of a ``urn:uuid:``."""
    digest = hashlib.sha256(
        _SEPARATOR.join((scope, resource_type, *parts)).encode("utf-8")
    ).hexdigest()
    # Shape it as a version-5-like UUID so that ``urn:uuid:<id>`` is a valid URN.
    return (
        f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-"
        f"{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"
    )
