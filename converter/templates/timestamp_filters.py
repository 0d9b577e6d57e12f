"""Timestamp filters: HL7 timestamps as FHIR date, dateTime, instant and time, a FHIR
dateTime written back as an HL7 key naming one instant, and the occurrences of a
repeating scheduled time; all in the configured zone (or the session's default offset)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context

from ..active_session import ACTIVE_SESSION
from ..datetimes import InvalidTimestamp
from .filter_base import FilterBase, text_of
from .repeat_patterns import Expansion, repeat_occurrences

__all__ = ["TimestampFilters"]


class TimestampFilters(FilterBase):
    """``fhir_date``, ``fhir_datetime``, ``fhir_instant``, ``fhir_time``,
    ``hl7_timestamp`` and ``repeat_occurrences``."""

    def _timestamp(
        self, ctx: Context, value: Any, convert: Callable[..., str], with_offset: bool = True
    ) -> str | None:
        text = text_of(value)
        if not text:
            return None
        session = ACTIVE_SESSION.get()
        offset = session.default_offset if session is not None and with_offset else None
        try:
            return convert(text, offset) if offset else convert(text)
        except InvalidTimestamp as exc:
            self._invalid(ctx, value, f"invalid timestamp: {exc}")
            return None

    @pass_context
    def fhir_date(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.date, with_offset=False)

    @pass_context
    def fhir_datetime(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.date_time)

    @pass_context
    def fhir_instant(self, ctx: Context, value: Any, midnight: bool = False) -> str | None:
        """``midnight=True`` takes a date-only value at 00:00 (for required instants)."""
        if midnight:
            return self._timestamp(ctx, value, self._timestamps.instant_or_midnight)
        return self._timestamp(ctx, value, self._timestamps.instant)

    @pass_context
    def fhir_time(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.time, with_offset=False)

    @staticmethod
    def hl7_timestamp(value: str, zone: tzinfo | None = None) -> str:
        """A FHIR date or dateTime written back in HL7's form, as a key naming that
        instant: ``2026-11-30T10:30:00+01:00`` → ``20261130103000+0100``, a zero
        fraction dropped (``.500`` → ``.5``), ``Z`` as ``+0000``; a date stays a date.

        With ``zone``, the time at ``zone``'s wall clock first (:func:`_in_zone`): one
        instant sent with two offsets is one key."""
        if zone is not None:
            value = _in_zone(value, zone)
        date = value[:10].replace("-", "")
        clock = value[10:].replace("T", "").replace(":", "").replace("Z", "+0000")
        if clock:
            body, zone_text = clock[:-5], clock[-5:]
            if "." in body:
                second, fraction = body.split(".", 1)
                fraction = fraction.rstrip("0")
                body = second + ("." + fraction if fraction else "")
            clock = body + zone_text
        return date + clock

    def hl7_timestamp_key(self, value: str) -> str:
        """The ``hl7_timestamp`` filter: in the zone that times without an offset are
        read in (the session's default offset, else the configured zone)."""
        session = ACTIVE_SESSION.get()
        offset = session.default_offset if session is not None else None
        zone = timezone(_utc_offset(offset)) if offset else ZoneInfo(self._timestamps.zone_name)
        return self.hl7_timestamp(value, zone)

    def repeat_occurrences(self, start: Any, *args: Any, **kwargs: Any) -> Expansion:
        """The occurrences of a repeating scheduled time in the configured zone
        (:func:`.repeat_patterns.repeat_occurrences`): pure, no warning said."""
        zone = ZoneInfo(self._timestamps.zone_name)  # ZoneInfo keeps one per name
        return repeat_occurrences(start, *args, zone=zone, **kwargs)


def _utc_offset(text: str) -> timedelta:
    """``+0130``, ``+01:30`` or ``Z`` as a timedelta (an offset a parser accepted)."""
    return datetime.strptime(text, "%z").utcoffset() or timedelta(0)


#: A FHIR dateTime with a time of day, as the timestamp filters write it.
_FHIR_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def _in_zone(value: str, zone: tzinfo) -> str:
    """A FHIR dateTime at ``zone``'s wall clock (``2026-01-02T09:00:00Z`` in Europe/Paris
    → ``2026-01-02T10:00:00+01:00``) when its offset is not the one ``zone`` gives that
    wall clock; else (the text a time sent without offset is read as, its key since the
    start, even in the hour a spring DST change skips), and for a date, a leap second or
    an offset not in whole minutes (local mean time before 1911), unchanged."""
    match = _FHIR_TIME.fullmatch(value)
    if match is None or match[6] == "60":
        return value
    offset = _utc_offset(match[8])
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    wall = datetime(year, month, day, hour, minute, second)
    if zone.utcoffset(wall) == offset:
        return value
    try:
        local = wall.replace(tzinfo=timezone(offset)).astimezone(zone)
    except (OverflowError, ValueError):  # year 1 or 9999 moved out of range
        return value
    total = (local.utcoffset() or timedelta(0)).total_seconds()
    if total % 60:
        return value
    sign, minutes = ("+" if total >= 0 else "-"), int(abs(total)) // 60
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:"
        f"{local.minute:02d}:{local.second:02d}{match[7] or ''}{sign}{minutes // 60:02d}:"
        f"{minutes % 60:02d}"
    )
