"""backoff_delay (exponential, full jitter, Retry-After floor capped at the maximum) and
Retry-After parsing."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listeners.delivery import backoff_cap, backoff_delay, parse_retry_after, retry_after_capped

attempts = st.integers(min_value=1, max_value=10_000)
initials = st.just(0.0) | st.floats(min_value=1e-6, max_value=60.0, allow_nan=False)
maxima = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
retry_afters = st.none() | st.floats(min_value=0.0, max_value=86_400.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32)


class Extreme:
    """A generator that always returns one end of the interval."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@given(attempts, initials, maxima, retry_afters, seeds)
def test_bounds(
    attempt: int, initial: float, maximum: float, retry_after: float | None, seed: int
) -> None:
    delay = backoff_delay(
        attempt, initial=initial, maximum=maximum, retry_after=retry_after, rng=random.Random(seed)
    )
    cap = backoff_cap(attempt, initial=initial, maximum=maximum)
    assert 0.0 <= cap <= maximum
    assert 0.0 <= delay <= maximum  # whatever the server asks (defect: 3-year Retry-After)
    assert delay <= max(cap, retry_after or 0.0)
    if retry_after is not None:
        # Never shorter than the server asked, up to the maximum.
        assert delay >= min(retry_after, maximum)
        assert retry_after_capped(retry_after, maximum=maximum) == (retry_after > maximum)


@given(attempts, initials, maxima)
def test_cap_is_monotonic_and_exponential(attempt: int, initial: float, maximum: float) -> None:
    cap = backoff_cap(attempt, initial=initial, maximum=maximum)
    following = backoff_cap(attempt + 1, initial=initial, maximum=maximum)
    assert following >= cap
    assert following == min(maximum, 2 * cap) or cap == maximum or following == maximum


def test_full_jitter_range() -> None:
    low = Extreme(high=False)
    high = Extreme(high=True)
    assert backoff_delay(1, initial=1.0, maximum=300.0, rng=low) == 0.0
    assert [backoff_delay(n, initial=1.0, maximum=300.0, rng=high) for n in range(1, 11)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        300.0,
    ]
    assert backoff_delay(10**9, initial=1.0, maximum=300.0, rng=high) == 300.0
    assert backoff_delay(0, initial=1.0, maximum=300.0, rng=high) == 1.0  # counts as 1


def test_retry_after_is_a_floor_capped_at_the_maximum() -> None:
    rng = Extreme(high=True)
    assert backoff_delay(1, initial=1.0, maximum=300.0, retry_after=30.0, rng=rng) == 30.0
    assert backoff_delay(9, initial=1.0, maximum=300.0, retry_after=2.0, rng=rng) == 256.0
    # A server asking for more than backoff_max gets backoff_max, not years.
    assert backoff_delay(1, initial=1.0, maximum=300.0, retry_after=900.0, rng=rng) == 300.0
    low = Extreme(high=False)
    huge = backoff_delay(1, initial=1.0, maximum=300.0, retry_after=99_999_999.0, rng=low)
    assert huge == 300.0
    assert retry_after_capped(99_999_999.0, maximum=300.0)
    assert not retry_after_capped(300.0, maximum=300.0)
    assert not retry_after_capped(None, maximum=300.0)


def test_jitter_spreads_delays() -> None:
    rng = random.Random(42)
    delays = {round(backoff_delay(5, initial=1.0, maximum=300.0, rng=rng), 6) for _ in range(100)}
    assert len(delays) > 90
    assert max(delays) <= 16.0


def test_negative_settings_rejected() -> None:
    with pytest.raises(ValueError):
        backoff_delay(1, initial=-1.0, maximum=10.0, rng=random.Random(0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=lambda: now) == 90.0
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now=lambda: now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: now) == 0.0
