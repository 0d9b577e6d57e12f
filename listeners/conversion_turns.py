"""Turns of the conversion pool: a conversion may ask to run alone.

When a conversion process dies, every conversion in progress fails with it, and nothing
tells which message killed it (:mod:`listeners.conversion_deaths`). A message whose
conversion process died therefore converts *alone* next time: it waits for the
conversions running to end, and the others wait for it (those asking first go first, so
it is not starved). A death then is its own; and an innocent message, failed once by
another's death, converts alone and is delivered, whatever the timing: before, a slow
innocent message (2 s) converting beside a poison message was hit at each of the poison's
retries and dead-lettered with it. The cost: after a death, the pool converts one message
at a time for each message that was in progress, the poison's own retries included (which
then fail no other conversion).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

__all__ = ["ConversionTurns"]


class ConversionTurns:
    """Shared turns (any number at once) and turns alone (nothing else at once)."""

    def __init__(self) -> None:
        self._shared = 0
        self._alone = False
        #: Turns alone asked for and not started: shared turns wait behind them.
        self._waiting_alone = 0
        self._changed: asyncio.Event | None = None

    @contextlib.asynccontextmanager
    async def turn(self, *, alone: bool = False) -> AsyncIterator[None]:
        if alone:
            self._waiting_alone += 1
            try:
                await self._until(lambda: not self._alone and self._shared == 0)
            finally:
                self._waiting_alone -= 1
                self._change()
            self._alone = True
        else:
            await self._until(lambda: not self._alone and self._waiting_alone == 0)
            self._shared += 1
        try:
            yield
        finally:
            # No await here: a cancelled conversion gives its turn back all the same.
            if alone:
                self._alone = False
            else:
                self._shared -= 1
            self._change()

    @property
    def busy(self) -> int:
        """Conversions holding a turn now (for tests)."""
        return self._shared + int(self._alone)

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _change(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
