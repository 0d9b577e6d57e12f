"""Queue writes that must not be dropped, retried in place until they commit.

Both the delivery workers (writing an outcome already reached: :mod:`.outcomes`) and the
AMQP consumer in mode "commit" (storing a consumed message: :mod:`.amqp.ordering`) keep a
write the queue refuses (disk full, I/O error, locked file, no publisher confirm) in
memory and try it again, with a pause doubling from 0.1 s up to 5 s, rather than letting
it go: giving up would strand a row in flight, or let a patient's next message be stored
first. :func:`retry_in_place` is that loop; :class:`FailingWrites` keeps the writes
failing meanwhile, for ``/ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import QueueError
from .logs import describe_exception

__all__ = ["FailingWrites", "pause_unless", "retry_in_place", "why_failed"]

T = TypeVar("T")

#: Pauses between the attempts of a write the queue refused: doubling, capped.
RETRY_INITIAL = 0.1
RETRY_MAX = 5.0


async def retry_in_place(
    attempt: Callable[[], Awaitable[T]],
    *,
    wake: asyncio.Event,
    failed: Callable[[Exception, int], bool],
) -> tuple[bool, T | None, int]:
    """Run ``attempt`` until it succeeds: ``(True, its result, failures before it)``.

    After each failure ``failed(exc, failures)`` says whether to give up (it also logs and
    counts): then ``(False, None, failures)``. Between attempts it waits for the pause, or
    until ``wake`` is set (the service stops). Only ``CancelledError`` escapes.
    """
    pause = RETRY_INITIAL
    failures = 0
    while True:
        try:
            return True, await attempt(), failures
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failed(exc, failures):
                return False, None, failures
            await pause_unless(wake, pause)
            pause = min(pause * 2, RETRY_MAX)


def why_failed(exc: Exception) -> str:
    """Why a write failed, safe to show: a queue error's own text (ours, without message
    content), else the exception's kind and place."""
    return str(exc) if isinstance(exc, QueueError) else describe_exception(exc)


class FailingWrites:
    """Writes failing and retried in place: key → (since when, why the first failed)."""

    def __init__(self) -> None:
        self._failing: dict[object, tuple[float, str]] = {}

    def __len__(self) -> int:
        return len(self._failing)

    def start(self, key: object, why: str) -> None:
        self._failing[key] = (time.monotonic(), why)

    def end(self, key: object) -> bool:
        """Forget ``key``; whether it was failing."""
        return self._failing.pop(key, None) is not None

    def summary(self) -> tuple[float, str] | None:
        """Seconds since the oldest failing write, and why one of them fails; None when
        none fails."""
        if not self._failing:
            return None
        since = min(first for first, _ in self._failing.values())
        why = next(reason for _, reason in self._failing.values())
        return time.monotonic() - since, why


async def pause_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or until ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
