"""How long an asyncio event loop stalls while some work runs beside it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["longest_stall"]


async def longest_stall(work: asyncio.Future[Any]) -> float:
    """The longest gap between two ticks of a 1 ms ticker while ``work`` runs."""
    longest = 0.0
    last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return longest
