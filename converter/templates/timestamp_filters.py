"""Timestamp filters: HL7 timestamps as FHIR date, dateTime, instant and time, a FHIR
dateTime written back as an HL7 key naming one instant, the bounds of an interval given
by its center and width, and the occurrences of a repeating scheduled time; all in the
configured zone (or the session's default offset)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
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
    ``hl7_timestamp``, ``center_bounds`` and ``repeat_occurrences``."""

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
        read in (:meth:`_reading_zone`)."""
        return self.hl7_timestamp(value, self._reading_zone())

    def _reading_zone(self) -> tzinfo:
        """The zone times without an offset are read in: the session's default offset
        (a CDA document's), else the configured zone."""
        session = ACTIVE_SESSION.get()
        offset = session.default_offset if session is not None else None
        return timezone(_utc_offset(offset)) if offset else ZoneInfo(self._timestamps.zone_name)

    def center_bounds(self, center: Any, width: Any, unit: Any) -> list[str] | None:
        """The low and high (HL7 timestamps) of an IVL_TS given by its center and its
        width, a PQ of time (HL7 V3 Data Types R1, IVL: center - width/2, center +
        width/2), when they are exact at the center's precision; else None (the caller
        keeps the center), as for an invalid center or width: pure, no warning said.

        The bounds keep the center's precision and its offset as written; a time of day
        without one is read as ``fhir_datetime`` reads it (the session's default offset,
        else the configured zone) and its bounds carry that offset, the zone's at their
        own instant. ``s``, ``min``, ``h``, ``d`` and ``wk`` are exact durations: half the
        width must be a whole number of the center's last unit (a day center ± 12 h is
        not a day). ``mo`` and ``a`` are calendar months and years, from a month or year
        center only, by a whole number of them: UCUM's are mean ones (30.4375 d, 365.25
        d), which from a day or a time name no calendar day."""
        text, size = text_of(center), text_of(width)
        match = _CENTER.fullmatch(text)
        if match is None or not _WIDTH.fullmatch(size):
            return None
        try:
            self._timestamps.date_time(text)  # a date that exists, an offset in range
        except InvalidTimestamp:
            return None
        digits, offset, unit_text = match["digits"], match["offset"] or "", text_of(unit)
        half = Decimal(size) / 2
        try:
            if half <= 0:
                return None
            if unit_text in _CALENDAR_MONTHS:
                return _calendar_bounds(digits, offset, half * _CALENDAR_MONTHS[unit_text])
            if unit_text not in _SECONDS or len(digits) < 8:
                return None
            seconds = half * _SECONDS[unit_text]
            if len(digits) == 8:
                return _day_bounds(digits, offset, seconds)
            return self._clock_bounds(digits, match["fraction"] or "", offset, seconds)
        except (InvalidOperation, OverflowError):  # a width too large; beyond year 9999
            return None

    def _clock_bounds(
        self, digits: str, fraction: str, offset: str, seconds: Decimal
    ) -> list[str] | None:
        """``center_bounds`` of a time of day (YYYYMMDDHH[MM[SS[.S]]])."""
        step = Decimal(1).scaleb(-len(fraction)) if fraction else _STEPS[len(digits)]
        if seconds % step or digits[12:14] == "60":  # finer than the center; a leap second
            return None
        if offset:
            zone: tzinfo = UTC if offset == "Z" else timezone(_utc_offset(offset))
        else:
            zone = self._reading_zone()
        wall = datetime.strptime(digits.ljust(14, "0"), "%Y%m%d%H%M%S").replace(
            microsecond=int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=zone
        )
        half = timedelta(seconds=int(seconds), microseconds=int(seconds % 1 * 1_000_000))
        # In UTC: an aware datetime's own arithmetic is the wall clock's (DST ignored).
        moments = [(wall.astimezone(UTC) + sign * half).astimezone(zone) for sign in (-1, 1)]
        texts = [_clock_text(moment, len(digits), len(fraction), offset) for moment in moments]
        return [text for text in texts if text] if all(texts) else None

    def repeat_occurrences(self, start: Any, *args: Any, **kwargs: Any) -> Expansion:
        """The occurrences of a repeating scheduled time in the configured zone
        (:func:`.repeat_patterns.repeat_occurrences`): pure, no warning said."""
        zone = ZoneInfo(self._timestamps.zone_name)  # ZoneInfo keeps one per name
        return repeat_occurrences(start, *args, zone=zone, **kwargs)


def _utc_offset(text: str) -> timedelta:
    """``+0130``, ``+01:30`` or ``Z`` as a timedelta (an offset a parser accepted).

    Read here, not by ``strptime("%z")`` (Python code: ~15 µs, and a CDA document reads
    its offset for every author time it compares); anything else is left to it, which
    accepts the same and refuses what it refused."""
    if text == "Z":
        return timedelta(0)
    match = _OFFSET.fullmatch(text)
    if match is None:
        return datetime.strptime(text, "%z").utcoffset() or timedelta(0)
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return -offset if sign == "-" else offset


#: What ``%z`` reads of an offset in hours and minutes (hours 00-23, minutes 00-59).
_OFFSET = re.compile(r"([+-])([01]\d|2[0-3]):?([0-5]\d)", re.ASCII)


#: An HL7 timestamp, split for center_bounds (center_bounds checks it with date_time).
_CENTER = re.compile(
    r"(?P<digits>\d{4}(?:\d{2}){0,5})(?:\.(?P<fraction>\d{1,4}))?(?P<offset>[+-]\d{4}|Z)?",
    re.ASCII,
)
#: A PQ value (an XML Schema decimal), not an exponent nor an infinity.
_WIDTH = re.compile(r"\+?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
#: UCUM units of time an IVL_TS width is written in, in seconds: exact durations.
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "wk": 604800}
#: The calendar units, in months (center_bounds: from a month or a year only).
_CALENDAR_MONTHS = {"mo": 1, "a": 12}
#: The last unit of a timestamp with a time of day, in seconds, by its number of digits.
_STEPS = {10: Decimal(3600), 12: Decimal(60), 14: Decimal(1)}


def _calendar_bounds(digits: str, offset: str, months: Decimal) -> list[str] | None:
    """``center_bounds`` of a year (YYYY) or a month (YYYYMM) by whole months (whole
    years from a year)."""
    if len(digits) > 6 or months % (12 if len(digits) == 4 else 1):
        return None
    center = int(digits[:4]) * 12 + int(digits[4:6] or 1) - 1
    bounds = (center - int(months), center + int(months))
    if not all(1 <= month // 12 <= 9999 for month in bounds):
        return None
    return [f"{month // 12:04d}{month % 12 + 1:02d}"[: len(digits)] + offset for month in bounds]


def _day_bounds(digits: str, offset: str, seconds: Decimal) -> list[str] | None:
    """``center_bounds`` of a date (YYYYMMDD) by whole days."""
    if seconds % 86400:
        return None
    day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    half = timedelta(days=int(seconds // 86400))
    bounds = (day - half, day + half)
    return [f"{d.year:04d}{d.month:02d}{d.day:02d}{offset}" for d in bounds]


def _clock_text(moment: datetime, size: int, places: int, offset: str) -> str | None:
    """``moment`` at the precision of a center of ``size`` digits and ``places`` decimal
    places, with the center's written offset, else the one ``moment`` has; None when a
    finer part is not zero (an offset change of 30 min from an hour center)."""
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}"
        f"{moment.minute:02d}{moment.second:02d}{moment.microsecond:06d}"
    )
    if text[size + places :].strip("0"):
        return None
    text = text[:size] + ("." + text[14 : 14 + places] if places else "")
    if offset:
        return text + offset
    minutes = int((moment.utcoffset() or timedelta(0)).total_seconds()) // 60
    return f"{text}{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


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
