"""Durations as the configuration writes them (``"30d"``, ``"12h"``, ``"90m"``,
``"3600s"``, ``"off"``): the units read by :func:`listeners.config.values._duration`, and
the text ``--print-config`` shows for a duration held in seconds."""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["DURATION_UNITS", "duration_text"]

#: Seconds in each unit a duration setting may be written in.
DURATION_UNITS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_text(seconds: float | None) -> str:
    """``2592000.0`` → ``"30d"``, ``None`` → ``"off"``: in the largest unit that holds it
    whole, as the documentation writes it (``2592000`` read as a number of days was the
    misreading the unit is required against). The text reads back as the same duration:
    ``"1.5d"`` shows as ``"36h"``, ``"0.5s"`` as ``"0.5s"``."""
    if seconds is None:
        return "off"
    if not math.isfinite(seconds) or seconds <= 0:
        # Not a value the configuration can hold: shown as it is rather than hidden.
        return f"{seconds!r}s"
    for unit in ("d", "h", "m"):
        count = seconds / DURATION_UNITS[unit]
        if count >= 1 and count.is_integer():
            return f"{int(count)}{unit}"
    if seconds.is_integer():
        return f"{int(seconds)}s"
    # Positional, never an exponent ("1e-05s" would not read back).
    return f"{Decimal(repr(seconds)):f}s"
