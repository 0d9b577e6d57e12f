"""The occurrences of a repeating scheduled time (HL7 v2.5 TQ1 §4.5.4, TQ §2A.81, repeat
patterns of HL7 table 0335), for the Slots of a blocked time and the first occurrence of
a repeating appointment (``scheduling.j2`` Occurrences, filter ``repeat_occurrences``).

Pure: the result depends on the arguments only (and the converter's time zone, fixed for
an environment), never on a value's position nor on the conversion's state, so that the
renderings that call it stay reusable (:mod:`.memo`). It writes no warning itself: it
returns the warning's text, which the template says.

Patterns expanded:

- a fixed interval: ``Q<n>S``, ``Q<n>M``, ``Q<n>H`` (every n seconds, minutes, hours),
  ``Q<n>D``, ``QOD``, ``Q<n>W`` (every n days, every other day, every n weeks);
- days of the week: ``Q<n>J<days>`` (every n-th week, n = 1 when left out, on the ISO
  day numbers given, 1 = Monday … 7 = Sunday: ``QJ135`` Monday, Wednesday and Friday);
- times of day: ``BID``, ``TID``, ``QID``, ``QAM``, ``QPM``, ``QHS`` (and ``<x>ID``,
  ``QSHIFT``) every day at the times given: the explicit times of the message (TQ1-4,
  SCH-11.2.2), else the institution's default times (the caller reads them from a code
  map); a code without times is not expanded.

Explicit times also place the occurrences of the patterns counted in days (``Q<n>D``,
``Q<n>W``, ``Q<n>J``…) within their days; a sub-day interval ignores them. As HL7 says
for TQ1-4, a time before the start on the start's day is not an occurrence: the first
one is the first time at or after the start.

Arithmetic: a pattern counted in whole days (``Q<n>D``, ``Q<n>W``, ``Q<n>J``, times of
day, and ``Q24H``, ``Q48H``…, whole days too) keeps the wall-clock time in the
converter's zone when the start is written in it (a weekly 09:00 stays 09:00 across a
DST change); a shorter interval is elapsed time (``Q1H`` over the night the clocks go
back has one more occurrence at 02:00, each written with the zone's offset at that
instant). A start written in another offset stays in that offset. Months (``Q<n>L``,
lunar in table 0335) and the other codes are not expanded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

__all__ = ["LIMIT", "Expansion", "RepeatPattern", "parse_pattern", "repeat_occurrences"]

#: At most this many occurrences: a year of a daily series.
LIMIT = 366
_DAY = 86400
_UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600, "D": _DAY, "W": 7 * _DAY}
_FIXED = re.compile(r"Q(\d+)([SMHDW])", re.ASCII)
_WEEKDAYS = re.compile(r"Q(\d*)J([1-7]+)", re.ASCII)
_TIMES_A_DAY = re.compile(r"(\d+)ID", re.ASCII)
#: Table 0335 codes that repeat at times of day the institution sets.
_DAILY_CODES = frozenset({"BID", "TID", "QID", "QAM", "QPM", "QHS", "QSHIFT"})
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII
)
#: A time of day: HL7 TM (``0800``, ``080000``, ``08``) or FHIR time (``08:00:00``); a
#: fraction or an offset is not read (the times are the institution's wall-clock).
_TIME = re.compile(r"(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.\d+)?(?:[+-]\d{4})?", re.ASCII)

#: (start, end); the start is None only when the one given was (an invalid value dropped).
Occurrence = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class RepeatPattern:
    """A table 0335 code as Passerelle expands it; ``kind`` says how:
    ``interval`` (every ``seconds``), ``weekdays`` (every ``weeks``-th week on
    ``weekdays``), ``daily`` (every day at times of day), ``other`` (not expanded)."""

    code: str
    kind: str
    seconds: int = 0
    weeks: int = 1
    weekdays: frozenset[int] = frozenset()

    @property
    def in_days(self) -> bool:
        """Counted in whole calendar days: wall-clock time, explicit times read."""
        return self.kind != "other" and (self.kind != "interval" or self.seconds % _DAY == 0)


@dataclass(frozen=True, slots=True)
class Expansion:
    """The occurrences, (start, end) FHIR instants in order (an end may be None when no
    length is known), and a warning's text, or None."""

    occurrences: tuple[Occurrence, ...]
    note: str | None = None


def parse_pattern(code: str) -> RepeatPattern:
    """The repeat pattern of a table 0335 code (TQ1-3.1, SCH-11.2.1), upper case."""
    code = code.strip().upper()
    fixed = _FIXED.fullmatch(code)
    if fixed and int(fixed[1]) > 0:
        return RepeatPattern(code, "interval", seconds=int(fixed[1]) * _UNIT_SECONDS[fixed[2]])
    if code == "QOD":
        return RepeatPattern(code, "interval", seconds=2 * _DAY)
    weekdays = _WEEKDAYS.fullmatch(code)
    if weekdays and int(weekdays[1] or "1") > 0:
        days = frozenset(int(day) for day in weekdays[2])
        return RepeatPattern(code, "weekdays", weeks=int(weekdays[1] or "1"), weekdays=days)
    times = _TIMES_A_DAY.fullmatch(code)
    if code in _DAILY_CODES or (times and int(times[1]) >= 5):
        return RepeatPattern(code, "daily")
    return RepeatPattern(code, "other")


@dataclass(frozen=True, slots=True)
class _Clock:
    """How occurrences are written: in the zone, else in the start's fixed offset."""

    zone: tzinfo
    suffix: str  # the start's offset as written ("+02:00", "Z")
    offset: timedelta

    def local(self, naive: datetime) -> datetime:
        """A wall-clock time as an instant, with the offset ``fhir_instant`` gives it
        (fold 0): a time the clocks skip (02:30) is the instant of 03:30 and written so
        (:meth:`text`), a time they repeat is its first instant.

        In UTC: an aware datetime in the zone itself would keep the skipped 02:30 as its
        wall-clock time (``astimezone`` to its own zone returns it unchanged, written
        ``02:30+01:00``), and adding a length to it would be wall-clock arithmetic."""
        return naive.replace(tzinfo=self.zone).astimezone(UTC)

    def text(self, instant: datetime, fraction: str = "") -> str:
        local = instant.astimezone(self.zone)
        offset = local.utcoffset() or timedelta(0)
        if offset == self.offset:
            suffix = self.suffix
        else:
            minutes = int(offset.total_seconds()) // 60
            sign = "-" if minutes < 0 else "+"
            suffix = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return (
            f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:"
            f"{local.minute:02d}:{local.second:02d}{fraction}{suffix}"
        )


def _parse_instant(text: str) -> tuple[datetime, str, str] | None:
    """(aware datetime without fraction, fraction text, offset text), None when not an
    instant as fhir_instant writes it (or a leap second, which datetime cannot hold)."""
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        return None
    suffix = match[8]
    offset = timedelta(0)
    if suffix != "Z":
        sign = -1 if suffix[0] == "-" else 1
        offset = sign * timedelta(hours=int(suffix[1:3]), minutes=int(suffix[4:6]))
    try:
        year, month, day, hour, minute, second = (int(match[n]) for n in range(1, 7))
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        return None
    return moment, match[7] or "", suffix


def _parse_times(values: Iterable[Any]) -> tuple[list[time], bool]:
    """The distinct times of day, sorted, and whether some value was not one."""
    found: set[time] = set()
    bad = False
    for value in values:
        text = "" if value is None else str(value).strip()
        if not text:
            continue
        match = _TIME.fullmatch(text)
        hour, minute, second = (int(match[n] or 0) for n in (1, 2, 3)) if match else (99, 0, 0)
        if hour > 23 or minute > 59 or second > 59:
            bad = True
            continue
        found.add(time(hour, minute, second))
    return sorted(found), bad


def _count(value: Any) -> int:
    text = "" if value is None else str(value).strip()
    return int(text) if text.isdigit() else 0


def _clock_seconds(moment: datetime) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def _day_dates(pattern: RepeatPattern, first: date) -> Iterator[date]:
    """The days a pattern counted in days falls on, from the start's day."""
    if pattern.kind == "interval":
        step = timedelta(days=pattern.seconds // _DAY)
    else:
        step = timedelta(days=1)
    monday = first - timedelta(days=first.isoweekday() - 1)
    day = first
    while True:
        if pattern.kind != "weekdays" or (
            day.isoweekday() in pattern.weekdays and ((day - monday).days // 7) % pattern.weeks == 0
        ):
            yield day
        try:
            day = day + step
        except OverflowError:
            return


def _starts(
    pattern: RepeatPattern, start: datetime, clock: _Clock, times: Sequence[time]
) -> Iterator[datetime]:
    """Every occurrence start from ``start`` on, in order (unbounded)."""
    if not pattern.in_days:
        step = timedelta(seconds=pattern.seconds)
        moment = start
        while True:
            yield moment
            try:
                moment = moment + step  # aware + timedelta: elapsed time
            except OverflowError:
                return
    naive = start.replace(tzinfo=None)  # the start is written in the clock's offset
    own_time = naive.time()
    for day in _day_dates(pattern, naive.date()):
        # In order of the instants, once each: on the night the clocks go forward a
        # time they skip (02:30) is the instant of another (03:30), after 03:15.
        moments = {clock.local(datetime.combine(day, at)) for at in times or (own_time,)}
        yield from sorted(moment for moment in moments if moment >= start)


def repeat_occurrences(
    start: Any,
    end: Any,
    pattern: Any,
    count: Any,
    length: int | None,
    times: Iterable[Any] = (),
    *,
    zone: tzinfo,
    limit: int = LIMIT,
) -> Expansion:
    """The occurrences of a scheduled time that may repeat.

    ``start``, ``end``: FHIR instants (TQ1-7 / TQ1-8, SCH-11.4 / SCH-11.5); ``end`` may be
    None. ``pattern``: the table 0335 code (TQ1-3.1, SCH-11.2.1; empty or ONCE: none).
    ``count``: total occurrences (TQ1-14, SCH-11.12). ``length``: an occurrence's
    seconds when known (TQ1-13, else SCH-9/10). ``times``: the times of day (TQ1-4, else
    the institution's for the code). ``zone``: the converter's time zone.

    Not repeating: one occurrence, start to end (else start plus length). Repeating: the
    end is the series' end, unless on the start's own date with a pattern counted in days
    (a sender giving the first occurrence's times with a count), where it is that
    occurrence's; an occurrence lasts ``length``, else from its start to the end's time of
    day. Expanded while the count and the series' end (exclusive) allow, ``limit`` at
    most; a pattern not expanded, or one with neither count nor series' end, gives its
    first occurrence only and a note.
    """
    start_text = "" if start is None else str(start).strip()
    end_text = "" if end is None else str(end).strip()
    code = ("" if pattern is None else str(pattern)).strip().upper()
    total = _count(count)
    parsed = _parse_instant(start_text)
    parsed_end = _parse_instant(end_text) if end_text else None
    if parsed is None or (end_text and parsed_end is None):
        # Not an instant this module can count with (a leap second): left as given.
        note = f"repeat pattern {code or '(none)'} not expanded (a time not read)"
        repeating = code not in ("", "ONCE") or total > 1
        return Expansion(((start_text or None, end_text or None),), note if repeating else None)
    first, fraction, suffix = parsed
    series_end = parsed_end[0] if parsed_end else None
    offset = first.utcoffset() or timedelta(0)
    # In the zone when the zone gives its wall-clock time the offset written, as
    # fhir_instant does (fold 0): the second 02:30 of the night the clocks go back is
    # written in its fixed offset, and so are its occurrences.
    in_zone = zone.utcoffset(first.replace(tzinfo=None)) == offset
    clock = _Clock(zone if in_zone else timezone(offset), suffix, offset)

    def occurrence(moment: datetime, seconds: int | None, own: bool) -> Occurrence:
        text = clock.text(moment, fraction if own else "")
        if moment == first and own:
            text = start_text  # the start exactly as given: it is the Slot's identity
        if not seconds:
            return text, None
        try:
            return text, clock.text(moment + timedelta(seconds=seconds), fraction if own else "")
        except OverflowError:
            return text, None

    if code in ("", "ONCE") and total <= 1:
        if end_text:
            return Expansion(((start_text, end_text),))
        return Expansion((occurrence(first, length, True),))

    kind = parse_pattern(code)
    # A sub-day interval ends its series the same day; a longer one cannot.
    sub_day = kind.kind == "interval" and kind.seconds < _DAY
    ends_series = series_end is not None and (end_text[:10] > start_text[:10] or sub_day)
    if not length and series_end is not None and not (ends_series and sub_day):
        gap = _clock_seconds(series_end) - _clock_seconds(first)
        length = gap if gap > 0 else None
    day_times, bad_time = _parse_times(times) if kind.in_days else ([], False)
    expandable = kind.kind in ("interval", "weekdays") or bool(day_times)
    if expandable and (total or ends_series) and length:
        found: list[Occurrence] = []
        own = not day_times
        for moment in _starts(kind, first, clock, day_times):
            if (ends_series and series_end is not None and moment >= series_end) or (
                total and len(found) >= total
            ):
                break
            if len(found) > limit:
                break
            found.append(occurrence(moment, length, own))
        notes = []
        if len(found) > limit:
            found = found[:limit]
            notes.append(f"repeat pattern {code} expanded to its first {limit} occurrences only")
        if not found:
            found = [occurrence(first, length, True)]
            notes.append(
                f"repeat pattern {code}: no occurrence before the end of the series, "
                "the start given only"
            )
        if bad_time:
            notes.append(f"repeat pattern {code}: an explicit time (TQ1-4) not read")
        return Expansion(tuple(found), "; ".join(notes) or None)
    if not length:
        why = "no occurrence duration (TQ1-13, SCH-9)"
    elif expandable:
        why = "no count (TQ1-14) nor end of the series"
    elif kind.kind == "daily":
        why = "no times of day (TQ1-4) for it"
    else:
        why = "not a fixed interval, days of the week or times of day"
    first_only = occurrence(first, length, True) if length else (start_text, end_text or None)
    note = (
        f"repeat pattern {code or '(none)'}"
        + (", a count" if total else "")
        + (" until an end of the series" if ends_series else "")
        + f" not expanded ({why}): its first occurrence only"
        + (
            ", ending at the end given (TQ1-8 / SCH-11.5), which may be the series'"
            if not length and end_text
            else ""
        )
    )
    return Expansion((first_only,), note)
