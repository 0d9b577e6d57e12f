"""HL7 timestamps (v2 DTM/TS, CDA TS) to FHIR date, dateTime, instant and time.

Precision is kept (``2024`` stays a year, ``202403`` a month); an offset written by the
sender is kept as written. A timestamp with a time of day but no offset gets the offset
of the configured zone *at that local time* (daylight saving applied); there is no
fallback to the machine's zone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError

__all__ = ["InvalidTimestamp", "TimestampConverter"]

_DTM = re.compile(
    r"""
    (?P<year>\d{4})
    (?:(?P<month>\d{2})
      (?:(?P<day>\d{2})
        (?:(?P<hour>\d{2})
          (?:(?P<minute>\d{2})
            (?:(?P<second>\d{2})(?:\.(?P<fraction>\d{1,4}))?)?
          )?
        )?
      )?
    )?
    (?P<offset>[+-]\d{4}|Z)?
    """,
    re.VERBOSE | re.ASCII,  # ASCII digits only: "١٢٣٤" is not a year
)


_LEAP_SECOND = "second 60 is a leap second, only at 23:59:60 UTC"


def _offset_minutes(offset: str) -> int:
    """``+0530`` → 330, ``-0100`` → -60, ``Z`` → 0."""
    if offset == "Z":
        return 0
    sign = -1 if offset[0] == "-" else 1
    return sign * (int(offset[1:3]) * 60 + int(offset[3:5]))


def _leap_second_time(hour: str, minute: str | None, offset_minutes: int) -> bool:
    """Whether ``hh:mm:60`` at this UTC offset can be a leap second: 23:59:60 UTC
    (``00:59:60+0100`` in Paris), the only time ITU-R TF.460 inserts one."""
    utc = int(hour) * 60 + int(minute or 0) - offset_minutes
    return utc % (24 * 60) == 23 * 60 + 59


class InvalidTimestamp(ValueError):
    """A timestamp that is not a valid HL7 DTM; callers turn it into a located error."""


class TimestampConverter:
    """Converts HL7 timestamps with one configured default zone."""

    __slots__ = ("_zone", "zone_name")

    def __init__(self, default_zone: str) -> None:
        if default_zone.strip().lower() in ("localtime", "posixrules"):
            # Files in the zoneinfo folder that are the machine's own zone, not a zone.
            raise ConfigurationError(f"time zone {default_zone!r} is the machine's zone")
        try:
            self._zone = ZoneInfo(default_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
            raise ConfigurationError(f"unknown time zone {default_zone[:100]!r}") from None
        self.zone_name = default_zone

    def _parse(self, text: str) -> re.Match[str]:
        match = _DTM.fullmatch(text.strip())
        if match is None:
            raise InvalidTimestamp("not an HL7 timestamp (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
        year, month, day = match["year"], match["month"], match["day"]
        hour, minute, second = match["hour"], match["minute"], match["second"]
        if second and int(second) > 60:
            raise InvalidTimestamp("timestamp out of range")
        offset = match["offset"]
        if (
            second == "60"
            and offset
            and not _leap_second_time(hour, minute, _offset_minutes(offset))
        ):
            # FHIR's pattern allows 60 for a leap second; without a written offset, the
            # one applied is checked when it is known (_with_time).
            raise InvalidTimestamp(_LEAP_SECOND)
        try:
            datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                min(int(second or 0), 59),
            )
        except ValueError:
            raise InvalidTimestamp("timestamp out of range") from None
        if int(year) == 0:
            raise InvalidTimestamp("year 0000 is not a date")
        if offset and offset != "Z":
            hours, minutes = int(offset[1:3]), int(offset[3:5])
            if hours > 14 or minutes > 59 or (hours == 14 and minutes):
                raise InvalidTimestamp("offset out of range")
        return match

    def date(self, text: str) -> str:
        """FHIR ``date``: the date part at its own precision (YYYY, YYYY-MM, YYYY-MM-DD)."""
        match = self._parse(text)
        out = match["year"]
        if match["month"]:
            out += "-" + match["month"]
            if match["day"]:
                out += "-" + match["day"]
        return out

    def date_time(self, text: str, default_offset: str | None = None) -> str:
        """FHIR ``dateTime``: date precision kept; a time of day always carries an offset.

        ``default_offset`` (``+0200``) replaces the configured zone for this value: a CDA
        document's own offset applies to its timestamps written without one.
        """
        match = self._parse(text)
        if not match["hour"]:
            return self.date(text)
        return self._with_time(match, default_offset)

    def instant(self, text: str, default_offset: str | None = None) -> str:
        """FHIR ``instant``: needs a time of day; missing seconds are written ``:00``."""
        match = self._parse(text)
        if not match["hour"]:
            raise InvalidTimestamp("an instant needs a time of day")
        return self._with_time(match, default_offset)

    def instant_or_midnight(self, text: str, default_offset: str | None = None) -> str:
        """Like :meth:`instant`, a full date without a time being taken at 00:00:00."""
        match = self._parse(text)
        if match["day"] and not match["hour"]:
            return self.instant(
                match["year"] + match["month"] + match["day"] + "0000" + (match["offset"] or ""),
                default_offset,
            )
        return self.instant(text, default_offset)

    def time(self, text: str) -> str:
        """FHIR ``time`` (hh:mm:ss) from an HL7 TM value."""
        stripped = text.strip()
        tm = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?", stripped, re.ASCII)
        if tm is None or int(tm[1]) > 23 or int(tm[2] or 0) > 59 or int(tm[3] or 0) > 59:
            raise InvalidTimestamp("not an HL7 time (HH[MM[SS[.S]]])")
        return f"{tm[1]}:{tm[2] or '00'}:{tm[3] or '00'}"

    def _with_time(self, match: re.Match[str], default_offset: str | None = None) -> str:
        year, month, day = match["year"], match["month"], match["day"]
        hour, minute = match["hour"], match["minute"] or "00"
        second = match["second"] or "00"
        out = f"{year}-{month}-{day}T{hour}:{minute}:{second}"
        if match["fraction"]:
            out += "." + match["fraction"]
        offset = match["offset"]
        if offset == "Z":
            return out + "Z"
        if offset:
            return f"{out}{offset[:3]}:{offset[3:]}"
        if default_offset:
            if second == "60" and not _leap_second_time(
                hour, minute, _offset_minutes(default_offset)
            ):
                raise InvalidTimestamp(_LEAP_SECOND)
            return f"{out}{default_offset[:3]}:{default_offset[3:]}"
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59)
        )
        delta = self._zone.utcoffset(local) or timedelta(0)
        if second == "60" and not _leap_second_time(hour, minute, int(delta.total_seconds()) // 60):
            raise InvalidTimestamp(_LEAP_SECOND)
        return out + _format_offset(delta)


def _format_offset(delta: timedelta) -> str:
    total = int(delta.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{sign}{total // 60:02d}:{total % 60:02d}"
