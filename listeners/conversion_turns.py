"""Turns of the process converting alone: a suspect message converts by itself.

When a conversion process dies, every conversion in progress in the pool fails with it,
and nothing tells which message killed it (:mod:`listeners.conversion_deaths`). Each of
those messages therefore converts *alone* next time: in a process of its own (started on
first need, :class:`listeners.conversion.ConversionPool`), one message at a time, while the
pool goes on converting the others. A death there is the message's own: the culprit dies
again and fails no other conversion; an innocent message, failed once by another's death,
converts and is delivered, whatever the timing.

Alone first meant the whole pool converting nothing else: a turn alone waited for the
conversions running to end and held back every other one meanwhile (API requests too).
One conversion of 15 s in progress when a poison message came back for its retry stalled
a steady feed for 15 s (delivery latency 0.3 s → 12.8 s median); up to
``conversion_timeout`` (60 s) at each retry, for ever with ``conversion_timeout = 0`` and a
conversion that never ends.

A turn ends when the process has finished the conversion, not when its caller stops
waiting for it (a stop, a released AMQP partition): the next message must not be queued
in the process behind one still converting, whose death would fail it too and count
against it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import TypeVar

__all__ = ["AloneTurns"]

_T = TypeVar("_T")


class AloneTurns:
    """One conversion at a time in the process converting alone, in the order asked."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # fair: first come, first served
        #: Conversions handed to the process and not finished (0 or 1; for tests).
        self.busy = 0

    async def run(self, submit: Callable[[], concurrent.futures.Future[_T]]) -> _T:
        """Wait for the turn, then ``submit`` the conversion and wait for its result."""
        await self._lock.acquire()
        try:
            future = submit()
        except BaseException:
            self._lock.release()
            raise
        self.busy += 1
        loop = asyncio.get_running_loop()

        def finished(_: concurrent.futures.Future[_T]) -> None:
            # From the executor's thread; the loop may be closed by then (the service
            # stopped): nobody is waiting for the turn any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._give_back)

        future.add_done_callback(finished)
        return await asyncio.wrap_future(future)

    def _give_back(self) -> None:
        self.busy -= 1
        self._lock.release()
