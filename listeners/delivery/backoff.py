"""Retry delays of the delivery workers: exponential backoff, full jitter, Retry-After."""

from __future__ import annotations

from typing import Protocol

__all__ = ["RandomSource", "backoff_cap", "backoff_delay", "retry_after_capped"]

# Largest finite power of two: past it ``initial * 2.0**n`` would raise OverflowError.
_MAX_EXPONENT = 1023


class RandomSource(Protocol):
    """What :func:`backoff_delay` needs from a random generator (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


def backoff_cap(attempt: int, *, initial: float, maximum: float) -> float:
    """Upper bound of the jittered delay: ``min(maximum, initial * 2**(attempt-1))``.

    Non-decreasing in ``attempt``; ``attempt`` counts failures so far (1 = first failure;
    smaller values count as 1).
    """
    attempt = max(1, attempt)
    if initial < 0 or maximum < 0:
        raise ValueError("initial and maximum must not be negative")
    return min(maximum, initial * 2.0 ** min(attempt - 1, _MAX_EXPONENT))


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    retry_after: float | None = None,
    rng: RandomSource,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = after the first failure).

    "Full jitter": uniform in ``[0, backoff_cap(attempt)]``, which spreads the retries of many
    workers hitting the same outage. A ``retry_after`` from the server (Retry-After) is a floor
    — retrying earlier only earns another 429/503 — but one capped at ``maximum``
    (``delivery.backoff_max``): a message waiting for its retry holds back every later message
    of its patient (ordering key), across restarts, so a single answer saying
    ``Retry-After: 99999999`` (a server bug, a misconfigured proxy) must not park a feed for
    years. ``backoff_max`` is the operator's statement of the longest pause between two
    attempts; a server that is really down longer just answers 503 again. See
    :func:`retry_after_capped` to tell when the cap applied (worth a log line).
    """
    cap = backoff_cap(attempt, initial=initial, maximum=maximum)
    delay = min(cap, max(0.0, rng.uniform(0.0, cap)))
    if retry_after is not None and retry_after > delay:
        delay = min(float(retry_after), max(0.0, maximum))
    return delay


def retry_after_capped(retry_after: float | None, *, maximum: float) -> bool:
    """Whether :func:`backoff_delay` waits less than ``retry_after`` asked for."""
    return retry_after is not None and retry_after > max(0.0, maximum)
