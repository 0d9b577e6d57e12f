"""What the delivery workers do with a job's outcome once it is reached.

:class:`OutcomeRecorder` writes it to the queue (``complete``, ``retry_later``,
``dead_letter``) until the write commits; :class:`OutcomeWaiters` hands it, as a
:class:`DeliveryOutcome`, to the senders waiting on ``ack_after = "delivery"``.

**Outcomes are written until they commit.** A write the queue refuses (disk full, I/O
error, file locked) is retried in place, with a capped backoff, the job kept in memory
meanwhile: the row stays in flight and its key's head, so the patient's later messages
wait behind it, and nothing escapes the worker's task (an escaped exception left the row in
flight with no task to settle it: the patient's feed stopped until a restart). While such
writes fail, the ``queue`` component of ``/ready`` says so (:meth:`OutcomeRecorder.problem`),
``passerelle_outcomes_unrecorded`` counts the jobs held and
``passerelle_queue_write_failures_total`` the failed writes; one ERROR when a job's write
first fails, one INFO when it is written. After :meth:`OutcomeRecorder.stop` a failing write
is tried once more, then left: the row, still in flight, is handled again after the restart
(a delivered message is delivered again, harmless with PUT).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import DeliveryError
from .logs import log_fields
from .metrics import Metrics
from .retry_in_place import FailingWrites, retry_in_place, why_failed

__all__ = ["DeliveryOutcome", "OutcomeRecorder", "OutcomeWaiters", "diagnostics"]

log = logging.getLogger("passerelle.delivery")
_RECENT_OUTCOMES = 10_000


class DeliveryOutcome:
    """What became of a message, for senders waiting on ack_after="delivery"."""

    __slots__ = ("delivered", "diagnostics", "hl7_error_code", "location")

    def __init__(
        self,
        delivered: bool,
        diagnostics: str = "",
        hl7_error_code: str = "207",
        location: str | None = None,
    ) -> None:
        self.delivered = delivered
        self.diagnostics = diagnostics
        self.hl7_error_code = hl7_error_code
        #: The HL7 place of a conversion failure (``PID-7``), for the AE's ERR-2.
        self.location = location


class OutcomeWaiters:
    """Senders waiting for a message's outcome, and the outcomes settled lately."""

    def __init__(self) -> None:
        #: seq → futures of senders waiting for the delivery outcome.
        self._waiters: dict[int, list[asyncio.Future[DeliveryOutcome]]] = {}
        #: Outcomes settled lately: a sender may ask just after a fast delivery settled.
        self._recent: OrderedDict[int, DeliveryOutcome] = OrderedDict()

    def wait_for(self, seq: int) -> asyncio.Future[DeliveryOutcome]:
        """A future resolved when message ``seq`` is delivered or dead-lettered."""
        future: asyncio.Future[DeliveryOutcome] = asyncio.get_running_loop().create_future()
        settled = self._recent.get(seq)
        if settled is not None:
            future.set_result(settled)
        else:
            self._waiters.setdefault(seq, []).append(future)
        return future

    def resolve(self, seq: int, outcome: DeliveryOutcome) -> None:
        self._recent[seq] = outcome
        while len(self._recent) > _RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        for future in self._waiters.pop(seq, []):
            if not future.done():
                future.set_result(outcome)


class OutcomeRecorder:
    """Writes outcomes already reached to the queue, retrying in place (see the module
    docstring), and keeps count of those not written yet."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._stopping = False
        #: Set by :meth:`stop`: ends the pauses between attempts to write an outcome.
        self._stop_requested = asyncio.Event()
        #: The outcomes reached and not written to the queue yet, by job seq.
        self._unrecorded = FailingWrites()

    def stop(self) -> None:
        """The service stops: a failing write is tried once more, then left."""
        self._stopping = True
        self._stop_requested.set()

    def problem(self) -> str | None:
        """Why outcomes are not being written to the queue (for ``/ready``), or None."""
        summary = self._unrecorded.summary()
        if summary is None:
            return None
        seconds, why = summary
        return (
            f"writing delivery outcomes to the queue failing for {seconds:.0f}s"
            f" ({len(self._unrecorded)} message(s) held, retried in place): {why}"
        )

    async def record(
        self,
        seq: int,
        operation: str,
        write: Callable[[], Awaitable[None]],
        fields: dict[str, Any],
    ) -> bool:
        """Write the outcome of job ``seq``, retrying in place until it commits; False when
        :meth:`stop` came first and the last try failed too: the row stays in flight,
        handled again after the restart. Never raises but ``CancelledError``."""

        def failed(exc: Exception, failures: int) -> bool:
            self._metrics.queue_write_failures.labels(operation).inc()
            if failures == 1:
                why = why_failed(exc)
                self._unrecorded.start(seq, why)
                self._metrics.outcomes_unrecorded.set(len(self._unrecorded))
                log.error(
                    "writing the outcome to the queue failed (%s: %s); the message is"
                    " kept in memory and the write retried until it commits",
                    operation,
                    why,
                    extra=fields | log_fields(error_kind=type(exc).__name__),
                )
            if self._stopping and failures > 1:
                log.error(
                    "stopping before the outcome was written to the queue (%s); the"
                    " message stays in flight and is handled again after the restart",
                    operation,
                    extra=fields | log_fields(count=failures),
                )
                return True
            return False

        try:
            written, _, failures = await retry_in_place(
                write, wake=self._stop_requested, failed=failed
            )
            if written and failures:
                log.info(
                    "outcome written to the queue after %d failed attempt(s) (%s)",
                    failures,
                    operation,
                    extra=fields | log_fields(count=failures),
                )
            return written
        finally:
            if self._unrecorded.end(seq):
                self._metrics.outcomes_unrecorded.set(len(self._unrecorded))


def diagnostics(exc: DeliveryError) -> str:
    """The server's OperationOutcome diagnostics, for an AE sent to the sender."""
    issues = (exc.outcome or {}).get("issue", []) if isinstance(exc.outcome, dict) else []
    texts = [
        str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code"))
        for i in issues
        if isinstance(i, dict)
    ]
    return "; ".join(t for t in texts if t) or str(exc)
