"""FHIR R4 invariant per-1 (a Period's start is not after its end), kept by assembly.

Senders write end times before start times (PV1-45 before PV1-44, PRA-10 before PRA-8,
a CDA ``high`` before its ``low``). Written as is, the Period breaks per-1 and a
validating server refuses the whole bundle; here the start is kept, the end dropped and a
warning names the element (never the values: they are patient data).

The two values are compared as FHIR dateTimes: a date, a month or a year is the interval
it names, so only an end that lies wholly before the start counts (``2024-03`` does not
end before ``2024-03-05``). Times carry their offset and compare as instants (seconds and
their fraction as one number, as FHIRPath does). A date has no zone: against a time it
may be anywhere from UTC+14:00 to UTC-12:00, so it counts only when that whole span lies
before (or after) the other instant; two dates compare as calendar days.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

__all__ = ["drop_reversed_period_ends"]

_DATE_TIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)
# Zones span UTC-12:00 to UTC+14:00: a day without zone begins at most 14 hours
# before its UTC midnight and ends at most 12 hours after the next one.
_EARLIEST_ZONE = timedelta(hours=14)
_LATEST_ZONE = timedelta(hours=12)
_Bounds = tuple[datetime, datetime, bool]  # [lower, upper) and whether it is an instant


def drop_reversed_period_ends(resources: Iterable[dict[str, Any]], warnings: list[str]) -> None:
    """Drop, in place, the ``end`` of every Period of ``resources`` that certainly ends
    before it starts, with a warning per Period naming the resource type and element."""
    for resource in resources:
        # Every object of the resource, breadth first: the list grows while it is read.
        # It runs for every resource of every bundle, so the loop makes no Python call
        # (no append, pop or recursion) on the common path; the element's path is only
        # looked for when a Period is reversed.
        nodes = [resource]
        for node in nodes:
            if (
                "end" in node
                and "start" in node
                # A resource's own start / end (Appointment, Slot) are instants, not a
                # Period, and per-1 does not apply to them.
                and node is not resource
                and _ends_before_start(node)
            ):
                del node["end"]
                warnings.append(f"{_path_to(resource, node)}: end before start; end dropped")
            for key in node:
                value = node[key]
                if type(value) is dict:
                    nodes += (value,)
                elif type(value) is list:
                    for item in value:
                        if type(item) is dict:
                            nodes += (item,)


def _path_to(resource: dict[str, Any], target: dict[str, Any]) -> str:
    """``Encounter.participant[0].period``: where ``target`` sits in ``resource``."""
    stack: list[tuple[Any, str]] = [(resource, str(resource.get("resourceType")))]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if type(node) is dict:
            stack.extend((value, f"{path}.{key}") for key, value in node.items())
        elif type(node) is list:
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(node))
    return str(resource.get("resourceType"))


def _ends_before_start(period: dict[str, Any]) -> bool:
    start, end = period["start"], period["end"]
    if type(start) is not str or type(end) is not str:
        return False
    if (
        len(start) == len(end)
        and (
            len(start) <= 10  # two dates of one precision: calendar order is text order
            or (start[10] == end[10] == "T" and start[-6:] == end[-6:] and start[-6] in "+-")
        )
    ):
        # The shape most periods have (one precision, one offset): the text orders as
        # the values do, without parsing them.
        return end < start
    first, last = _bounds(start), _bounds(end)
    if first is None or last is None:
        return False  # not a FHIR dateTime: the validator names it
    if first[2] != last[2]:
        # A zoneless date against an instant: the date may be in any zone.
        try:
            first, last = _any_zone(first), _any_zone(last)
        except OverflowError:  # the first or last day Python's dates hold
            return False
    return last[1] <= first[0]


def _bounds(text: str) -> _Bounds | None:
    """The interval ``[lower, upper)`` a FHIR dateTime names, in UTC when it has a time
    (naive otherwise), and whether it has one."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if hour is None:
            lower = datetime(int(year), int(month or 1), int(day or 1))
            if day is not None:
                upper = lower + timedelta(days=1)
            elif month is not None:
                upper = datetime(lower.year + lower.month // 12, lower.month % 12 + 1, 1)
            else:
                upper = datetime(lower.year + 1, 1, 1)
            return lower, upper, False
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second or 0), 59),  # a leap second orders as the second before it
            int((fraction or "0")[:6].ljust(6, "0")),
        )
        if offset is not None and offset != "Z":
            shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            moment = moment - shift if offset[0] == "+" else moment + shift
        upper = moment + timedelta(microseconds=1)
    except (ValueError, OverflowError):  # no such date, or past the dates Python holds
        return None
    return moment, upper, offset is not None


def _any_zone(bounds: _Bounds) -> _Bounds:
    lower, upper, instant = bounds
    if instant:
        return bounds
    return lower - _EARLIEST_ZONE, upper + _LATEST_ZONE, False
