"""Claimed jobs waiting to start: for their paused destination, or for a free worker.

The delivery workers (:mod:`listeners.worker`) claim jobs from the queue and line them up
here, by destination, in claim order; they start the head of a line when its
destination's gate lets a delivery through (:meth:`WaitingJobs.startable`). The line is
bounded: past ``max_count`` jobs or ``max_bytes`` of payload, a job claimed for a paused
destination is given back to the queue until the destination's next probe instead
(:meth:`WaitingJobs.admit`), so that a long outage with many patients cannot exhaust the
memory. Every job given back — there, or all of them at the stop
(:meth:`WaitingJobs.give_back_all`) — goes back with the attempt its claim counted taken
back: never sent, it is no attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator

from .delivery import DestinationGate, Pass
from .logs import log_fields
from .queue.base import Job, MessageQueue

__all__ = ["WaitingJobs"]

log = logging.getLogger("passerelle.delivery")
#: Jobs (and payload bytes) held in memory for paused destinations before further ones are
#: given back to the queue: a long outage with many patients must not exhaust memory.
MAX_WAITING = 10_000
MAX_WAITING_BYTES = 256 * 1024 * 1024
#: Shortest wait of a job given back for a paused destination (a probe under way has no
#: known end: without a floor the job would be claimed again at once, over and over).
_SET_ASIDE_MIN = 1.0


class WaitingJobs:
    """The claimed jobs not started yet, by destination (see the module docstring)."""

    def __init__(
        self,
        queue: MessageQueue,
        gate: DestinationGate,
        *,
        max_count: int = MAX_WAITING,
        max_bytes: int = MAX_WAITING_BYTES,
    ) -> None:
        self._queue = queue
        self._gate = gate
        self._lines: dict[str, deque[Job]] = {}
        self._count = 0
        self._bytes = 0
        self._max_count = max_count
        self._max_bytes = max_bytes

    def __bool__(self) -> bool:
        return bool(self._lines)

    def destinations(self) -> list[str]:
        """The destinations some job waits for."""
        return list(self._lines)

    async def admit(self, job: Job, destination: str) -> None:
        """Line ``job`` up for ``destination``; or, when the destination is paused and the
        line is full, give it back to the queue until the destination's next probe."""
        paused_for = self._gate.retry_in(destination)
        size = len(job.envelope.payload)
        if paused_for is not None and (
            self._count >= self._max_count or self._bytes + size > self._max_bytes
        ):
            try:
                await self._queue.give_back(
                    job.seq,
                    max(paused_for, _SET_ASIDE_MIN),
                    {
                        "kind": "DestinationPaused",
                        "reason": f"destination {destination} paused",
                        "destination": destination,
                    },
                )
            except Exception:
                log.exception("giving a job back to the queue failed; keeping it in memory")
            else:
                return
        self._lines.setdefault(destination, deque()).append(job)
        self._count += 1
        self._bytes += size

    def startable(self, free: int) -> Iterator[tuple[Job, Pass]]:
        """Up to ``free`` jobs whose destination lets them through now, each with its pass:
        one per destination in turn, each destination's in claim order. The caller starts
        each job it takes (``free``: the workers free now)."""
        while self._lines and free > 0:
            started = False
            for destination in list(self._lines):
                if free <= 0:
                    return
                granted = self._gate.try_pass(destination)
                if granted is None:
                    continue
                line = self._lines[destination]
                job = line.popleft()
                if not line:
                    del self._lines[destination]
                self._count -= 1
                self._bytes -= len(job.envelope.payload)
                free -= 1
                started = True
                yield job, granted
            if not started:
                return

    async def give_back_all(self) -> None:
        """At the stop: the jobs claimed and not started go back to the queue unsent,
        due now, the attempt their claim counted taken back."""
        jobs = [job for line in self._lines.values() for job in line]
        self._lines.clear()
        self._count = self._bytes = 0
        if not jobs:
            return
        # Concurrent: the queue's writer commits them in a few batches, not one by one.
        results = await asyncio.gather(
            *(self._queue.give_back(job.seq) for job in jobs), return_exceptions=True
        )
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            # Still in flight in the queue: delivered after the restart, the claim counted.
            log.error(
                "giving jobs not started back to the queue failed; they will be delivered "
                "after the restart, their claim counted as an attempt",
                extra=log_fields(count=len(errors), error_kind=type(errors[0]).__name__),
            )
        if len(errors) < len(jobs):
            log.info(
                "jobs not started given back to the queue",
                extra=log_fields(count=len(jobs) - len(errors)),
            )
