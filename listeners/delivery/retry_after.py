"""Parsing of the HTTP ``Retry-After`` header (RFC 9110 §10.2.3)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after"]


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    A date in the past gives 0; an absent or unreadable value gives ``None``, and so does a
    date out of any calendar's range: the header is then ignored, it never raises. Fractional
    seconds, which some servers send although the RFC says digits only, are accepted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT anyway
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now())
    # OverflowError: a year of eleven digits ("Sun, 06 Nov 99999999999 …"), which made a
    # 422 a "delivery crashed" retried for ever; OSError: a date the platform cannot hold.
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
