"""Session 30: UTC offsets are read without ``strptime`` (Python code, ~15 µs a call: a
C-CDA document compares its authors' times by instant, reading an offset each time),
with exactly what ``strptime("%z")`` accepts, answers and refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.templates.timestamp_filters import _utc_offset


def _by_strptime(text: str) -> timedelta | str:
    try:
        return datetime.strptime(text, "%z").utcoffset() or timedelta(0)
    except ValueError:
        return "refused"


def _ours(text: str) -> timedelta | str:
    try:
        return _utc_offset(text)
    except ValueError:
        return "refused"


@pytest.mark.parametrize(
    "text",
    ["Z", "+0100", "-0530", "+01:00", "-00:00", "+2359", "-1200", "+1400", "+0000"],
)
def test_offsets_read_as_strptime_reads_them(text: str) -> None:
    assert _utc_offset(text) == _by_strptime(text)


# "-2400": hours above 23 were read as an offset of a day (found by the property below
# in CI on 2026-12-03); strptime refuses them.
@pytest.mark.parametrize(
    "text", ["+0160", "+1", "0100", "+01:0", "+01:60", "", "z", "-2400", "+2459", "+99:00"]
)
def test_what_strptime_refuses_is_refused(text: str) -> None:
    assert _ours(text) == _by_strptime(text) == "refused"


@given(
    st.from_regex(r"\A[+-]?\d{1,6}(:\d{1,2})?\Z")
    | st.text(alphabet="+-:Z0123456789 .", max_size=10)
)
def test_any_text_reads_as_strptime_reads_it(text: str) -> None:
    assert _ours(text) == _by_strptime(text)
