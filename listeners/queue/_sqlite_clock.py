"""The wall clock stepped back under a running queue.

The queue's times are wall-clock times (they outlive the process): a message is due at
``next_attempt_at`` — its storage time, or when its retry comes. When the clock is stepped
back (NTP correcting a clock that ran ahead, a virtual machine resumed or migrated), every
message waiting was scheduled by the old clock and would come due that much later: an
hour back held each retry, and each message stored before the step once it became its
key's head, an hour more. The step is noticed at the next claim (the workers claim every
few seconds at most) and the waiting messages are brought back by as much (less the time
between the two claims, a few seconds), never before now. A restart already caps them
(``bring_forward`` at start), so only a running queue needs this.
"""

from __future__ import annotations

import logging
import sqlite3

__all__ = ["STEP_TOLERANCE", "ClockSteps"]

#: Seconds back the clock may go between two claims without counting as a step.
STEP_TOLERANCE = 1.0


class ClockSteps:
    """Follows the clock from claim to claim (writer thread only)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: float | None = None
        self._before: float | None = None

    def follow(self, conn: sqlite3.Connection, now: float) -> None:
        """Inside the claim's transaction, before it reads what is due at ``now``."""
        last, self._last = self._last, now
        self._before = last
        if last is None or now >= last - STEP_TOLERANCE:
            return
        back = last - now
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

    def rolled_back(self) -> None:
        """The claim's transaction did not commit: a step it noticed is noticed again."""
        self._last = self._before
