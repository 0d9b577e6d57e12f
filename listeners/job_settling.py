"""How the delivery workers settle a claimed job once its outcome is reached.

:class:`JobSettler` records the outcome in the queue (through
:class:`~listeners.outcomes.OutcomeRecorder`, until the write commits) and then, only
once it is written, counts it, logs its one line and answers the senders waiting for it
(:class:`~listeners.outcomes.OutcomeWaiters`):

* :meth:`JobSettler.delivered` — the job is complete;
* :meth:`JobSettler.retry` — put back for later: when its paused destination is probed
  again, or after its own backoff (Retry-After honoured up to ``backoff_max``); at
  ``max_attempts`` a dead letter "attempts exhausted" instead;
* :meth:`JobSettler.dead_letter` — a dead letter with its error record, logged as an ERROR
  for a message killing its conversion process or running out of memory
  (:func:`~listeners.conversion_deaths.dead_letter_level`), else a WARNING.

What the outcome is (which failure is transient, what a death or a ``MemoryError``
counts toward) is :mod:`listeners.worker`'s decision, not this module's.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from .config import DeliveryConfig
from .conversion import ConversionFailure
from .conversion_deaths import dead_letter_level
from .delivery import DestinationGate, OpenFailures, backoff_delay, describe_failure, retry_detail
from .errors import TransientDeliveryError
from .logs import log_fields
from .metrics import Metrics
from .outcomes import DeliveryOutcome, OutcomeRecorder, OutcomeWaiters, diagnostics
from .queue.base import Job, MessageQueue

__all__ = ["JobSettler", "job_fields"]

# The workers' logger: a job's outcome lines are the delivery's, wherever they are written.
log = logging.getLogger("passerelle.delivery")


class JobSettler:
    """Writes, counts, logs and answers the outcomes of one set of delivery workers
    (module docstring). ``open_failures`` is the workers' count of each job's failures
    while its destination was open, forgotten once the job's attempts are exhausted."""

    def __init__(
        self,
        queue: MessageQueue,
        config: DeliveryConfig,
        metrics: Metrics,
        gate: DestinationGate,
        outcomes: OutcomeRecorder,
        waiters: OutcomeWaiters,
        open_failures: OpenFailures[int],
        rng: random.Random,
    ) -> None:
        self._queue = queue
        self._config = config
        self._metrics = metrics
        self._gate = gate
        self._outcomes = outcomes
        self._waiters = waiters
        self._open_failures = open_failures
        self._rng = rng

    async def delivered(self, job: Job, destination: str, fields: dict[str, Any]) -> None:
        """Mark ``job`` complete, log "delivered" and answer its senders."""
        # Delivered, whether or not the write below commits before a stop (then it is
        # delivered again after the restart).
        await self._outcomes.record(
            job.seq, "complete", lambda: self._queue.complete(job.seq), fields
        )
        log.info("delivered", extra=fields | log_fields(destination=destination))
        self._waiters.resolve(job.seq, DeliveryOutcome(True))

    async def conversion_failed(self, job: Job, outcome: ConversionFailure) -> None:
        """Dead-letter a message that did not convert, with one line naming the kind."""
        await self.dead_letter(
            job,
            outcome.as_record() | {"stage": "conversion"},
            reason="conversion",
            line="conversion failed; message dead-lettered",
            facts=log_fields(location=outcome.location, template=outcome.template),
            outcome=DeliveryOutcome(
                False,
                f"{outcome.kind}: {outcome.reason}",
                outcome.hl7_error_code,
                outcome.location,
            ),
        )

    async def retry(
        self,
        job: Job,
        exc: TransientDeliveryError,
        destination: str,
        fields: dict[str, Any],
        *,
        cause: BaseException | None = None,
        paused: bool = False,
        backoff_attempt: int | None = None,
        limited: bool = True,
    ) -> None:
        """Put the job back for later, or dead-letter it at ``max_attempts``. ``cause``:
        the original exception when ``exc`` wraps it (what the log line describes);
        ``paused``: a failure of the destination, reported to the gate, whose next probe
        decides when the job is due (not its own backoff); ``backoff_attempt``: the step
        of the job's own backoff (by default its attempts); ``limited=False``: a death or
        a ``MemoryError``, which its own limit dead-letters with its kind (not as
        "attempts exhausted")."""
        failure = describe_failure(cause if cause is not None else exc)
        facts = log_fields(destination=destination, status=exc.status, error_kind=failure.kind)
        limit = self._config.max_attempts
        if limited and limit and job.attempts >= limit:
            self._open_failures.forget(job.seq)
            # Settled: its one line, like every other outcome (the README promises it).
            await self.dead_letter(
                job,
                exc.dead_letter_record(destination, job.attempts),
                reason="attempts-exhausted",
                line="delivery failed; attempts exhausted, message dead-lettered (%s)",
                why=failure.reason,
                facts=facts | log_fields(attempt=job.attempts),
                outcome=DeliveryOutcome(False, diagnostics(exc)),
            )
            return
        # Due when its destination is tried again: it then waits for the probe's verdict
        # with the other jobs for the destination, and goes at once when it is back.
        delay = self._gate.retry_in(destination) if paused else None
        if delay is None:
            delay = backoff_delay(
                backoff_attempt if backoff_attempt is not None else job.attempts,
                initial=self._config.backoff_initial,
                maximum=self._config.backoff_max,
                retry_after=exc.retry_after,
                rng=self._rng,
            )
        reason = str(exc.status) if exc.status else "connection"
        error = exc.as_record()
        if not await self._outcomes.record(
            job.seq, "retry_later", lambda: self._queue.retry_later(job.seq, delay, error), fields
        ):
            return
        self._metrics.retried.labels(destination, reason).inc()
        detail = retry_detail(
            failure, retry_after=exc.retry_after, maximum=self._config.backoff_max
        )
        log.warning(
            "delivery failed; will retry (%s)",
            detail,
            extra=fields | facts | log_fields(delay_s=round(delay, 3)),
        )

    async def dead_letter(
        self,
        job: Job,
        record: dict[str, Any],
        *,
        reason: str,
        line: str,
        facts: dict[str, Any],
        outcome: DeliveryOutcome,
        why: str | None = None,
    ) -> None:
        """Dead-letter ``job`` with ``record``, then log ``line`` (``why``: its ``%s``) with
        the record's kind and ``facts``, and answer its senders with ``outcome``; nothing
        more when the stop came before the dead letter was written."""
        fields = job_fields(job)
        if not await self._outcomes.record(
            job.seq, "dead_letter", lambda: self._queue.dead_letter(job.seq, record), fields
        ):
            return
        self._metrics.dead_lettered.labels(reason, job.envelope.message_type or "unknown").inc()
        kind = record.get("kind")
        # A message killing its conversion process or running out of memory is an ERROR:
        # the host's memory or a library needs looking at, not only the message.
        log.log(
            dead_letter_level(kind),
            line,
            *(() if why is None else (why,)),
            extra=fields | log_fields(error_kind=kind) | facts,
        )
        self._waiters.resolve(job.seq, outcome)


def job_fields(job: Job) -> dict[str, Any]:
    """What a delivery's log lines say about its message (no content)."""
    envelope = job.envelope
    return log_fields(
        seq=job.seq,
        control_id=envelope.control_id,
        sender=envelope.sender,
        message_type=envelope.message_type or "unknown",
        route=envelope.route,
        attempt=job.attempts,
    )
