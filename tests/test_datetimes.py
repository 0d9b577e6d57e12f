"""HL7 timestamps to FHIR date, dateTime, instant and time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.datetimes import InvalidTimestamp, TimestampConverter
from converter.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
PARIS = TimestampConverter("Europe/Paris")
UTC = TimestampConverter("UTC")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", "2024"),
        ("202403", "2024-03"),
        ("20240312", "2024-03-12"),
        ("2024031210", "2024-03-12T10:00:00+01:00"),
        ("202403121015", "2024-03-12T10:15:00+01:00"),
        ("20240312101530", "2024-03-12T10:15:30+01:00"),
        ("20240312101530.1", "2024-03-12T10:15:30.1+01:00"),
        ("20240312101530.1234", "2024-03-12T10:15:30.1234+01:00"),
        ("20240312101530+0200", "2024-03-12T10:15:30+02:00"),
        ("20240312101530-0330", "2024-03-12T10:15:30-03:30"),
        ("20240312101530.12+0000", "2024-03-12T10:15:30.12+00:00"),
        ("202403121015+1400", "2024-03-12T10:15:00+14:00"),
        ("202403121015Z", "2024-03-12T10:15:00Z"),
        ("20240312+0200", "2024-03-12"),  # no time of day: the offset has nothing to qualify
        # A leap second: 23:59:60 UTC, 00:59:60 in Paris in winter.
        ("20170101005960", "2017-01-01T00:59:60+01:00"),
        ("20161231235960+0000", "2016-12-31T23:59:60+00:00"),
        ("20161231235960Z", "2016-12-31T23:59:60Z"),
        ("20170101052960+0530", "2017-01-01T05:29:60+05:30"),
        ("  20240312  ", "2024-03-12"),
    ],
)
def test_date_time_keeps_precision_and_offsets(text: str, expected: str) -> None:
    assert PARIS.date_time(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", "2024"),
        ("202403", "2024-03"),
        ("20240312", "2024-03-12"),
        ("20240312101530.1234+0200", "2024-03-12"),
    ],
)
def test_date_keeps_the_date_precision(text: str, expected: str) -> None:
    assert PARIS.date(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Winter: CET, +01:00; summer: CEST, +02:00 (switches on 2024-03-31 and 2024-10-27).
        ("202401151030", "2024-01-15T10:30:00+01:00"),
        ("202407151030", "2024-07-15T10:30:00+02:00"),
        ("202403310159", "2024-03-31T01:59:00+01:00"),
        ("202403310300", "2024-03-31T03:00:00+02:00"),
        ("202410270300", "2024-10-27T03:00:00+01:00"),
        ("202410270159", "2024-10-27T01:59:00+02:00"),
    ],
)
def test_the_default_zone_applies_daylight_saving(text: str, expected: str) -> None:
    assert PARIS.date_time(text) == expected
    assert PARIS.instant(text) == expected


def test_other_zones() -> None:
    assert UTC.date_time("202407151030") == "2024-07-15T10:30:00+00:00"
    new_york = TimestampConverter("America/New_York")
    assert new_york.date_time("202401151030") == "2024-01-15T10:30:00-05:00"
    assert new_york.date_time("202407151030") == "2024-07-15T10:30:00-04:00"
    kolkata = TimestampConverter("Asia/Kolkata")
    assert kolkata.date_time("202401151030") == "2024-01-15T10:30:00+05:30"
    assert kolkata.zone_name == "Asia/Kolkata"


def test_instants_need_a_time_of_day() -> None:
    assert PARIS.instant("20240312101530.5-0100") == "2024-03-12T10:15:30.5-01:00"
    assert PARIS.instant("2024031210") == "2024-03-12T10:00:00+01:00"
    for text in ("2024", "202403", "20240312", "20240312+0100"):
        with pytest.raises(InvalidTimestamp):
            PARIS.instant(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10", "10:00:00"), ("1015", "10:15:00"), ("101530", "10:15:30"), ("101530.25", "10:15:30")],
)
def test_time(text: str, expected: str) -> None:
    assert PARIS.time(text) == expected


@pytest.mark.parametrize("text", ["24", "1060", "101561", "1", "10:15", "abc", "", "\u0661\u0660"])
def test_invalid_time(text: str) -> None:
    with pytest.raises(InvalidTimestamp):
        PARIS.time(text)


@pytest.mark.parametrize(
    "text",
    [
        "20241341",  # month 13
        "20240001",  # month 0
        "20240230",  # 30 February
        "20230229",  # 29 February of a common year
        "20240100",  # day 0
        "0000",  # year 0
        "00000101",
        "2024031224",  # hour 24
        "202403121060",  # minute 60
        "20240312101561",  # second 61
        "20240312101599",
        "garbage",
        "",
        "24",
        "2024031",  # odd number of digits
        "20240312 1015",
        "2024-03-12",
        "20240312101530.",  # fraction without digits
        "20240312101530.12345",  # five fraction digits
        "20240312.5",  # fraction without seconds
        "20240312101530+2400",  # offset out of range
        "20240312101530+0160",
        "20240312101530+1430",
        "20240312101530+01",
        "20240312101530 +0100",
        "\u0661\u0662\u0663\u0664",  # non-ASCII digits
    ],
)
def test_invalid_timestamps_are_refused(text: str) -> None:
    for convert in (PARIS.date, PARIS.date_time, PARIS.instant):
        with pytest.raises(InvalidTimestamp):
            convert(text)


@pytest.mark.parametrize(
    "text",
    [
        "20240315123460",  # any minute: not a leap second
        "20241231235960",  # 23:59:60 in Paris is 22:59:60 UTC
        "20240315123460+0000",
        "20161231235960+0100",
        "20170101002960+0530",
    ],
)
def test_second_60_is_refused_unless_it_is_23_59_60_utc(text: str) -> None:
    for convert in (PARIS.date_time, PARIS.instant):
        with pytest.raises(InvalidTimestamp, match="leap second"):
            convert(text)


def test_a_leap_second_in_the_zone_or_a_document_offset() -> None:
    assert UTC.instant("20161231235960") == "2016-12-31T23:59:60+00:00"
    assert PARIS.date_time("20161231235960", "+0000") == "2016-12-31T23:59:60+00:00"
    with pytest.raises(InvalidTimestamp):
        PARIS.date_time("20170101005960", "+0000")


def test_invalid_timestamp_messages_do_not_quote_the_value() -> None:
    with pytest.raises(InvalidTimestamp) as caught:
        PARIS.date("20241341")
    assert "20241341" not in str(caught.value)


@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2100, 12, 31)))
def test_any_valid_local_time_round_trips(moment: datetime) -> None:
    text = moment.strftime("%Y%m%d%H%M%S")
    result = PARIS.date_time(text)
    parsed = datetime.fromisoformat(result)
    # The text carries no fold: a time in the autumn's repeated hour, or in the spring's
    # gap, takes the offset in force before the change (fold=0), as Python does.
    expected_offset = ZoneInfo("Europe/Paris").utcoffset(moment.replace(microsecond=0, fold=0))
    assert parsed.replace(tzinfo=None) == moment.replace(microsecond=0)
    assert parsed.utcoffset() == expected_offset


@pytest.mark.parametrize("zone", ["Not/AZone", "", "localtime", "posixrules", "../etc/passwd"])
def test_unknown_or_machine_zones_are_configuration_errors(zone: str) -> None:
    with pytest.raises(ConfigurationError):
        TimestampConverter(zone)


def test_the_machine_zone_has_no_effect_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    if hasattr(time, "tzset"):
        time.tzset()
    monkeypatch.setattr(time, "tzname", ("JST", "JST"))
    monkeypatch.setattr(time, "timezone", -9 * 3600)
    try:
        assert TimestampConverter("Europe/Paris").date_time("202401151030") == (
            "2024-01-15T10:30:00+01:00"
        )
        assert TimestampConverter("UTC").date_time("202401151030") == "2024-01-15T10:30:00+00:00"
    finally:
        monkeypatch.undo()
        if hasattr(time, "tzset"):
            time.tzset()


@pytest.mark.parametrize("machine_zone", ["Asia/Tokyo", "America/Los_Angeles", "UTC"])
def test_the_machine_zone_has_no_effect_in_a_fresh_process(machine_zone: str) -> None:
    code = (
        "from converter.datetimes import TimestampConverter as T\n"
        "print(T('Europe/Paris').date_time('202401151030'))\n"
        "print(T('Europe/Paris').date_time('202407151030'))\n"
        "print(T('UTC').instant('202407151030'))\n"
    )
    env = {**os.environ, "TZ": machine_zone}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [
        "2024-01-15T10:30:00+01:00",
        "2024-07-15T10:30:00+02:00",
        "2024-07-15T10:30:00+00:00",
    ]
