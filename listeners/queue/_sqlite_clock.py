"""The wall clock stepped back under a running queue.

The queue's times are wall-clock times (they outlive the process): a message is due at
``next_attempt_at`` — its storage time, or when its retry comes. When the clock is stepped
back (NTP correcting a clock that ran ahead, a virtual machine resumed or migrated), every
message waiting was scheduled by the old clock and would come due that much later: an
hour back held each retry, and each message stored before the step once it became its
key's head, an hour more. The step is noticed at the next claim (the workers claim every
few seconds at most) and the waiting messages are brought back by as much (less the time
between the two claims, a few seconds), never before now. A restart already caps them
(``bring_forward`` at start), so only a running queue needs this (:class:`ClockSteps`).

When the clock is stepped *forward* (NTP correcting a clock that ran behind, a host whose
clock was wrong at boot), every time stored before the step looks that much older than it
is: a month forward, and the retention deleted every dead letter at once — the only copy
of messages not delivered — and the duplicate window lost its delivered rows, so a
retransmission came through as a new message. :class:`ForwardSteps` measures how far the
wall clock has run ahead of the time really elapsed since the queue started (a monotonic
clock that counts suspension, ``CLOCK_BOOTTIME`` on Linux) and the purges wait that much
longer: no row stored by the running process goes before its time in real elapsed time.
A clock stepped back and then forward again counts too (rows stored in between carry the
earlier times). What it cannot see: a step while the service was stopped, or rows stored
by another process (``passerelle dead-letters retry``); and ``passerelle dead-letters
purge --older-than-days`` is the operator's own reading of the wall clock.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator

__all__ = ["STEP_TOLERANCE", "ClockSteps", "ForwardSteps", "elapsed_clock"]

#: Seconds back the clock may go between two claims without counting as a step.
STEP_TOLERANCE = 1.0


class ClockSteps:
    """Follows the clock from claim to claim (writer thread only).

    What it last saw is undone with what the claim wrote: a claim that fails (its savepoint
    rolled back) or whose transaction SQLite rolls back (the claim then runs again) has
    its step noticed again by the next claim."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: float | None = None
        self._at_begin: float | None = None

    def begin(self) -> None:
        """A writer transaction begins (the writer's hook)."""
        self._at_begin = self._last

    def rolled_back(self) -> None:
        """The transaction that began did not commit (the writer's hook)."""
        self._last = self._at_begin

    @contextlib.contextmanager
    def following(self, conn: sqlite3.Connection, now: float) -> Iterator[None]:
        """Around a claim of what is due at ``now``, inside its savepoint: a step back
        since the last claim first brings the waiting messages back as much."""
        previous = self._last
        try:
            if previous is not None and now < previous - STEP_TOLERANCE:
                self._step_back(conn, previous - now, now)
            self._last = now
            yield
        except BaseException:
            self._last = previous
            raise

    def _step_back(self, conn: sqlite3.Connection, back: float, now: float) -> None:
        moved = conn.execute(
            "UPDATE messages SET next_attempt_at = max(?, next_attempt_at - ?)"
            " WHERE state = 'pending' AND next_attempt_at > ?",
            (now, back, now),
        ).rowcount
        self._log.warning(
            "the clock went back %.0f s; waiting messages brought back as much",
            back,
            extra={"count": moved, "seconds": round(back, 3), "event": "clock_stepped_back"},
        )


def elapsed_clock() -> Callable[[], float]:
    """Seconds really elapsed, time suspended included where the system counts it (a
    wall clock stepped forward after a host's suspension is no step)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    return lambda: time.clock_gettime(boottime)


class ForwardSteps:
    """How far the wall clock has been stepped forward under the running queue, for its
    purges (writer thread only: every time it stores is read through :meth:`now`)."""

    def __init__(
        self, clock: Callable[[], float], elapsed: Callable[[], float], logger: logging.Logger
    ) -> None:
        self._clock = clock
        self._elapsed = elapsed
        self._log = logger
        self._origin: float | None = None
        #: The least the wall clock was ahead of the elapsed time when it was read (0 at
        #: start, below after a step back): rows stored then carry times that far behind.
        self._least = 0.0
        self._reported = 0.0

    def start(self) -> None:
        """The queue starts: steps are counted from now."""
        self._origin = self._clock() - self._elapsed()
        self._least = self._reported = 0.0

    def now(self) -> float:
        """The wall clock, for a time to store or compare."""
        return self._read()[0]

    def cutoff(self, age: float) -> float:
        """The wall-clock time before which what the running queue stored is ``age``
        seconds old or more in real elapsed time: ``now - age``, less the steps forward."""
        now, forward = self._read()
        return now - age - forward

    def _read(self) -> tuple[float, float]:
        now = self._clock()
        if self._origin is None:
            return now, 0.0
        ahead = now - self._elapsed() - self._origin
        self._least = min(self._least, ahead)
        forward = ahead - self._least
        if forward > self._reported + STEP_TOLERANCE:
            self._log.warning(
                "the clock went %.0f s forward under the running queue; dead letters and"
                " delivered rows are kept as much longer",
                forward - self._reported,
                extra={"seconds": round(forward, 3), "event": "clock_stepped_forward"},
            )
        self._reported = forward
        return now, forward
