"""The occurrences of a repeating scheduled time (converter/templates/repeat_patterns.py):
fixed intervals, days of the week (Q<n>J<days>), times of day (BID, TID… at explicit or
default times), counts, series' ends, the cap, and the clocks across a DST change
(wall-clock for whole days, elapsed time below a day). Property tests check the bounds
on any series; the SIU messages are tested in tests/mappings/test_siu_repeats.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from converter.templates.repeat_patterns import (
    LIMIT,
    Expansion,
    parse_pattern,
    repeat_occurrences,
)

PARIS = ZoneInfo("Europe/Paris")


def expand(
    start: str,
    end: str | None,
    pattern: str,
    count: int | str = "",
    length: int | None = 1800,
    times: tuple[str, ...] = (),
    limit: int = LIMIT,
) -> Expansion:
    return repeat_occurrences(start, end, pattern, count, length, times, zone=PARIS, limit=limit)


def starts(expansion: Expansion) -> list[str]:
    return [str(start) for start, _ in expansion.occurrences]


# --- patterns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "seconds", "weeks", "weekdays"),
    [
        ("Q2H", "interval", 7200, 1, set()),
        ("q30m", "interval", 1800, 1, set()),
        ("QOD", "interval", 172800, 1, set()),
        ("Q1W", "interval", 604800, 1, set()),
        ("QJ135", "weekdays", 0, 1, {1, 3, 5}),
        ("Q2J2", "weekdays", 0, 2, {2}),
        ("BID", "daily", 0, 1, set()),
        ("QHS", "daily", 0, 1, set()),
        ("6ID", "daily", 0, 1, set()),
        ("4ID", "other", 0, 1, set()),  # xID is 5 or more: QID says four
        ("Q0H", "other", 0, 1, set()),
        ("Q0J1", "other", 0, 1, set()),
        ("Q1L", "other", 0, 1, set()),
        ("PRN", "other", 0, 1, set()),
    ],
)
def test_patterns(code: str, kind: str, seconds: int, weeks: int, weekdays: set[int]) -> None:
    pattern = parse_pattern(code)
    assert (pattern.kind, pattern.seconds, pattern.weeks, set(pattern.weekdays)) == (
        kind,
        seconds,
        weeks,
        weekdays,
    )


# --- what was expanded before, unchanged ---------------------------------------------------


def test_not_repeating_is_one_occurrence_start_to_end_or_length() -> None:
    given_end = expand("2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00", "")
    assert given_end == Expansion((("2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00"),))
    by_length = expand("2024-06-20T09:00:00+02:00", None, "ONCE", length=2700)
    assert by_length == Expansion((("2024-06-20T09:00:00+02:00", "2024-06-20T09:45:00+02:00"),))


def test_a_weekly_series_keeps_its_wall_clock_time_across_the_dst_change() -> None:
    weekly = expand("2024-10-21T09:00:00+02:00", "2024-11-12T11:00:00+01:00", "Q1W", length=None)
    assert weekly.note is None
    assert weekly.occurrences == (
        ("2024-10-21T09:00:00+02:00", "2024-10-21T11:00:00+02:00"),
        ("2024-10-28T09:00:00+01:00", "2024-10-28T11:00:00+01:00"),
        ("2024-11-04T09:00:00+01:00", "2024-11-04T11:00:00+01:00"),
        ("2024-11-11T09:00:00+01:00", "2024-11-11T11:00:00+01:00"),
    )


def test_a_start_in_another_offset_stays_in_it() -> None:
    # New York's offset in Paris's converter: no zone to follow, the offset is kept.
    daily = expand("2024-10-26T09:00:00-04:00", None, "Q1D", count=3)
    assert starts(daily) == [
        "2024-10-26T09:00:00-04:00",
        "2024-10-27T09:00:00-04:00",
        "2024-10-28T09:00:00-04:00",
    ]


def test_the_cap_and_its_note() -> None:
    daily = expand("2024-01-01T09:00:00+01:00", "2025-12-31T10:00:00+01:00", "Q1D")
    assert len(daily.occurrences) == LIMIT
    assert daily.note == "repeat pattern Q1D expanded to its first 366 occurrences only"
    # A count over the cap that the series' end stops first: nothing was cut.
    short = expand("2024-01-01T09:00:00+01:00", "2024-01-05T10:00:00+01:00", "Q1D", count=500)
    assert len(short.occurrences) == 5 and short.note is None


def test_the_start_is_kept_as_written() -> None:
    # "Z" in a UTC converter, and a fraction: the first occurrence is the start's text.
    utc = repeat_occurrences("2024-06-20T09:00:00.5Z", None, "Q1H", 3, 600, zone=ZoneInfo("UTC"))
    assert utc.occurrences == (
        ("2024-06-20T09:00:00.5Z", "2024-06-20T09:10:00.5Z"),
        ("2024-06-20T10:00:00.5Z", "2024-06-20T10:10:00.5Z"),
        ("2024-06-20T11:00:00.5Z", "2024-06-20T11:10:00.5Z"),
    )


# --- sub-day intervals across a DST change: elapsed time --------------------------------------


def test_hourly_over_the_night_the_clocks_go_back_has_the_repeated_hour() -> None:
    hourly = expand("2024-10-27T00:00:00+02:00", "2024-10-27T05:00:00+01:00", "Q1H")
    assert hourly.note is None
    assert starts(hourly) == [
        "2024-10-27T00:00:00+02:00",
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T04:00:00+01:00",
    ]


def test_hourly_over_the_night_the_clocks_go_forward_skips_the_missing_hour() -> None:
    hourly = expand("2024-03-31T00:00:00+01:00", "2024-03-31T05:00:00+02:00", "Q1H", length=3600)
    assert hourly.occurrences == (
        ("2024-03-31T00:00:00+01:00", "2024-03-31T01:00:00+01:00"),
        ("2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"),
        ("2024-03-31T03:00:00+02:00", "2024-03-31T04:00:00+02:00"),
        ("2024-03-31T04:00:00+02:00", "2024-03-31T05:00:00+02:00"),
    )


# --- days of the week ------------------------------------------------------------------------


def test_monday_wednesday_friday() -> None:
    # From Tuesday 18 June: the first occurrence is Wednesday.
    mwf = expand("2024-06-18T09:00:00+02:00", "2024-06-28T11:00:00+02:00", "QJ135", length=None)
    assert mwf.occurrences == (
        ("2024-06-19T09:00:00+02:00", "2024-06-19T11:00:00+02:00"),
        ("2024-06-21T09:00:00+02:00", "2024-06-21T11:00:00+02:00"),
        ("2024-06-24T09:00:00+02:00", "2024-06-24T11:00:00+02:00"),
        ("2024-06-26T09:00:00+02:00", "2024-06-26T11:00:00+02:00"),
        ("2024-06-28T09:00:00+02:00", "2024-06-28T11:00:00+02:00"),
    )


def test_every_second_tuesday_counts_weeks_from_the_start() -> None:
    fortnightly = expand("2024-06-17T14:00:00+02:00", None, "Q2J2", count=3)
    assert starts(fortnightly) == [
        "2024-06-18T14:00:00+02:00",
        "2024-07-02T14:00:00+02:00",
        "2024-07-16T14:00:00+02:00",
    ]


def test_days_of_the_week_before_the_series_end_none_said() -> None:
    # Friday only, from a Monday to the Wednesday: no Friday; the start, said.
    none = expand("2024-06-17T09:00:00+02:00", "2024-06-19T11:00:00+02:00", "QJ5", length=None)
    assert none.occurrences == (("2024-06-17T09:00:00+02:00", "2024-06-17T11:00:00+02:00"),)
    assert none.note is not None and "no occurrence before the end of the series" in none.note


# --- times of day ----------------------------------------------------------------------------


def test_twice_a_day_at_the_times_given_from_the_first_at_or_after_the_start() -> None:
    bid = expand("2024-06-20T10:00:00+02:00", None, "BID", count=4, times=("0800", "2000"))
    assert starts(bid) == [
        "2024-06-20T20:00:00+02:00",
        "2024-06-21T08:00:00+02:00",
        "2024-06-21T20:00:00+02:00",
        "2024-06-22T08:00:00+02:00",
    ]


def test_times_of_day_keep_their_wall_clock_across_the_dst_change() -> None:
    tid = expand(
        "2024-10-26T08:00:00+02:00",
        "2024-10-28T00:00:00+01:00",
        "TID",
        times=("08:00:00", "14:00:00", "20:00:00"),
    )
    assert starts(tid) == [
        "2024-10-26T08:00:00+02:00",
        "2024-10-26T14:00:00+02:00",
        "2024-10-26T20:00:00+02:00",
        "2024-10-27T08:00:00+01:00",
        "2024-10-27T14:00:00+01:00",
        "2024-10-27T20:00:00+01:00",
    ]


def test_explicit_times_place_a_daily_pattern_and_bad_ones_are_said() -> None:
    every_other_day = expand(
        "2024-06-20T07:00:00+02:00", None, "QOD", count=2, times=("0930", "2561")
    )
    assert starts(every_other_day) == ["2024-06-20T09:30:00+02:00", "2024-06-22T09:30:00+02:00"]
    assert every_other_day.note == "repeat pattern QOD: an explicit time (TQ1-4) not read"


def test_a_times_of_day_code_without_times_is_its_first_occurrence() -> None:
    shifts = expand("2024-06-20T07:00:00+02:00", None, "QSHIFT", count=6)
    assert starts(shifts) == ["2024-06-20T07:00:00+02:00"]
    assert shifts.note == (
        "repeat pattern QSHIFT, a count not expanded (no times of day (TQ1-4) for it): "
        "its first occurrence only"
    )


def test_months_are_not_expanded() -> None:
    monthly = expand("2024-06-20T09:00:00+02:00", "2024-12-20T11:00:00+01:00", "Q1L")
    assert len(monthly.occurrences) == 1
    assert monthly.note is not None and "not a fixed interval" in monthly.note


# --- properties ------------------------------------------------------------------------------

FIXED_CODES = st.builds(
    lambda n, unit: f"Q{n}{unit}",
    st.integers(1, 48),
    st.sampled_from("MHDW"),
)
WEEKDAY_CODES = st.builds(
    lambda n, days: f"Q{n}J{''.join(sorted(days))}",
    st.integers(1, 3),
    st.sets(st.sampled_from("1234567"), min_size=1),
)
TIMES = st.lists(
    st.builds(lambda h, m: f"{h:02d}{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30])),
    min_size=1,
    max_size=4,
)
LOCAL_STARTS = st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31)).map(
    lambda d: d.replace(microsecond=0, fold=0)
)


def fhir(moment: datetime) -> str:
    return moment.isoformat()


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


@settings(max_examples=150, deadline=None)
@given(
    local=LOCAL_STARTS,
    code=st.one_of(FIXED_CODES, WEEKDAY_CODES, st.sampled_from(["BID", "TID", "QID", "QOD"])),
    times=st.one_of(st.just(()), TIMES.map(tuple)),
    days=st.integers(0, 60),
    count=st.integers(0, 40),
    limit=st.integers(1, 30),
)
# The spring-forward gap as a start (found once by the search): the start as written.
@example(local=datetime(2024, 3, 31, 2, 0), code="Q1M", times=(), days=0, count=0, limit=1)
def test_occurrences_are_increasing_bounded_and_counted(
    local: datetime,
    code: str,
    times: tuple[str, ...],
    days: int,
    count: int,
    limit: int,
) -> None:
    start = local.replace(tzinfo=PARIS)
    # Through UTC: astimezone to the datetime's own zone returns it unchanged, which let
    # the spring-forward gap (2024-03-31 02:00) through this guard.
    if start.astimezone(UTC).astimezone(PARIS).replace(tzinfo=None) != local:
        return  # a time the clocks skip: the first occurrence is the start as written
    end = (start + timedelta(days=days, hours=1)) if days or not count else None
    result = expand(fhir(start), fhir(end) if end else None, code, count, 600, times, limit)
    moments = [parse(s) for s in starts(result)]
    if "no occurrence before" in (result.note or ""):
        assert moments == [start]
        return
    assert all(a < b for a, b in pairwise(moments))
    assert all(moment >= start for moment in moments)
    pattern = parse_pattern(code)
    sub_day = pattern.kind == "interval" and pattern.seconds < 86400
    if end and (end.date() > start.date() or sub_day):
        assert all(moment < end for moment in moments)  # the series' end
    assert len(moments) <= limit
    if count:
        assert len(moments) <= count
    for occurrence_start, occurrence_end in result.occurrences:
        assert occurrence_end is not None
        assert occurrence_start is not None and occurrence_end is not None
        assert parse(occurrence_end) - parse(occurrence_start) == timedelta(seconds=600)
        # Every occurrence is written with Paris's offset at that instant.
        moment = parse(occurrence_start)
        assert moment.utcoffset() == moment.astimezone(PARIS).utcoffset()


@settings(max_examples=100, deadline=None)
@given(
    local=LOCAL_STARTS, n=st.integers(1, 30), unit=st.sampled_from("DW"), count=st.integers(2, 20)
)
def test_whole_days_keep_the_wall_clock_time(
    local: datetime, n: int, unit: str, count: int
) -> None:
    start = local.replace(tzinfo=PARIS)
    if (
        start.utcoffset() != PARIS.utcoffset(local)
        or start.astimezone(PARIS).replace(tzinfo=None) != local
    ):
        return  # a time the clocks skip: not written so by fhir_instant
    result = expand(fhir(start), None, f"Q{n}{unit}", count)
    moments = [parse(s) for s in starts(result)]
    assert len(moments) == count
    step = n * (7 if unit == "W" else 1)
    for k, moment in enumerate(moments):
        wall = moment.astimezone(PARIS).replace(tzinfo=None)
        expected = local + timedelta(days=k * step)
        # The same wall-clock time, unless the clocks skip that hour that day.
        if PARIS.utcoffset(expected) == PARIS.utcoffset(expected.replace(fold=1)):
            assert wall == expected


@settings(max_examples=100, deadline=None)
@given(
    instant=st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)),
    n=st.integers(1, 23),
    unit=st.sampled_from("HM"),
    count=st.integers(2, 60),
)
def test_sub_day_intervals_are_elapsed_time(
    instant: datetime, n: int, unit: str, count: int
) -> None:
    instant = instant.replace(microsecond=0)
    start = instant.astimezone(PARIS)
    if start.fold:
        return  # the second 02:30 of the night the clocks go back: written in its offset
    result = expand(fhir(start), None, f"Q{n}{unit}", count)
    moments = [parse(s) for s in starts(result)]
    step = timedelta(hours=n) if unit == "H" else timedelta(minutes=n)
    # Compared as instants (UTC): n hours of elapsed time between two occurrences.
    assert [m.astimezone(UTC) for m in moments] == [instant + k * step for k in range(count)]
    assert all(m.utcoffset() == m.astimezone(PARIS).utcoffset() for m in moments)


def test_a_time_the_clocks_skip_is_written_at_the_offset_in_force() -> None:
    """Sunday 31 March 2024 02:00 does not exist in Paris: the occurrence is the instant
    of 03:00+02:00 (as fhir_instant reads 02:00 that day), not ``02:00+01:00`` (the same
    instant written with the winter offset, which Paris no longer has then)."""
    result = expand("2024-03-27T00:00:00+01:00", None, "Q1J127", 2, 3600, ("0200",))
    assert result.occurrences == (
        ("2024-03-31T03:00:00+02:00", "2024-03-31T04:00:00+02:00"),
        ("2024-04-01T02:00:00+02:00", "2024-04-01T03:00:00+02:00"),
    )
