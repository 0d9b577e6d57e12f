"""Delivery workers: take stored messages in order, convert, deliver, settle.

For each job claimed from the queue: convert it (in the conversion pool), deliver each
bundle to its route's destination, then mark it done. A transient failure (408, 429,
5xx, timeouts, connection errors) puts it back with exponential backoff and jitter,
honouring Retry-After up to ``backoff_max``; a conversion error, a rejection by the server
or the last of ``max_attempts`` moves it to the dead letters with the error. Each outcome
gets one log line (delivered, will retry, dead-lettered) naming the kind of failure and a
short safe reason (:func:`~listeners.delivery.describe_failure`): never the server's
diagnostics, which may quote patient data. Nothing is removed from the queue before its
outcome is stored, so a crash at any moment means, at worst, delivering a message again —
which PUT with stable ids makes harmless.

**Paused destinations** (:mod:`listeners.delivery.gate`). A transient failure of a
destination pauses it: its claimed jobs wait here, in memory and still in flight in the
queue — so their patients' later messages stay behind them and the attempt the claim
counted is the one they make when let through — while jobs for other destinations keep
going; when the pause is over one job probes the destination, and its success lets every
waiting job go at once. A job that failed for its destination is put back until the
destination's next probe, not for its own backoff, so it goes as soon as the destination
is back. Except a job that fails again on its first try after the destination came back
(the destination took or refused other bundles meanwhile, or the gate would not have
opened): the server is up and fails *that* bundle (a 500 on one payload, each time). Such a
job waits for its own backoff, growing with each such failure, and does not pause the
destination: else it went again at each reopening, about once per ``backoff_initial`` for
ever, each time pausing every delivery to the destination with a WARNING "unavailable".

**Given back unsent** (:mod:`listeners.waiting_jobs`, which holds the claimed jobs not
started yet). A claim counts an attempt in the queue; a job that never goes
gives it back with :meth:`~listeners.queue.sqlite.SqliteQueue.give_back`, which puts the
job back and takes that attempt back in the same durable write: waiting, however long
and across graceful restarts, never counts as an attempt (nor ends, at ``max_attempts``,
in the dead letters):

* past ``max_waiting`` jobs (or ``max_waiting_bytes`` of payload) held for paused
  destinations, a further one is given back until the destination's next probe;
* at :meth:`DeliveryWorkers.stop`, every job claimed and not started (waiting for its
  paused destination, or for a worker) is given back, due at once.

A crash (``kill -9``, power loss) gives nothing back: the jobs it leaves in flight are
recovered at the next start with their claim counted as an attempt, as are the
deliveries still running when ``stop`` gives up waiting for them.

**Outcomes are written until they commit** (:mod:`listeners.outcomes`, through
:mod:`listeners.job_settling`, which also logs and answers them). Once a job's
outcome is reached (delivered, to be retried, dead letter), the write that records it is
retried in place when the queue refuses it, the job kept in memory and its row in flight,
so the patient's later messages wait behind it; ``/ready`` says so meanwhile
(:meth:`DeliveryWorkers.write_problem`). At :meth:`DeliveryWorkers.stop` a failing write
is tried once more, then left: the row is handled again after the restart.

**A message that kills its conversion process** fails with every conversion in progress:
each of them converts alone next time (:mod:`listeners.conversion_turns`), and the third
death while converting the same message dead-letters it, ``ConversionProcessDied``
(:mod:`listeners.conversion_deaths`). A ``MemoryError`` while delivering its bundles is
counted apart, until it is delivered: the third is a dead letter, ``DeliveryOutOfMemory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .config import DeliveryConfig
from .conversion import ConversionFailure, ConversionPool
from .conversion_deaths import ConversionDeaths, delivery_out_of_memory, retry_after_death
from .delivery import (
    DestinationGate,
    OpenFailures,
    Pass,
    Sink,
    deliver_results,
    describe_failure,
    record_conversion,
)
from .errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from .job_settling import JobSettler, job_fields
from .logs import describe_exception, log_fields
from .metrics import Metrics
from .outcomes import DeliveryOutcome, OutcomeRecorder, OutcomeWaiters, diagnostics
from .queue.base import Job, MessageQueue
from .waiting_jobs import MAX_WAITING, MAX_WAITING_BYTES, WaitingJobs

__all__ = ["DeliveryWorkers"]

log = logging.getLogger("passerelle.delivery")


class DeliveryWorkers:
    """``workers`` concurrent deliveries fed by one claiming loop."""

    def __init__(
        self,
        queue: MessageQueue,
        pool: ConversionPool,
        sinks: Mapping[str, Sink],
        destination_of: Callable[[str], str],
        config: DeliveryConfig,
        metrics: Metrics,
        *,
        idle_poll: float = 0.05,
        rng: random.Random | None = None,
        locations: Mapping[str, str] | None = None,
        max_waiting: int = MAX_WAITING,
        max_waiting_bytes: int = MAX_WAITING_BYTES,
    ) -> None:
        """``locations``: destination name → where it delivers, safe to log (masked URL)."""
        self._queue = queue
        self._pool = pool
        self._sinks = sinks
        self._destination_of = destination_of
        self._config = config
        self._metrics = metrics
        self._idle_poll = idle_poll
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._waiters = OutcomeWaiters()
        self._outcomes = OutcomeRecorder(metrics)
        self.gate = DestinationGate.for_delivery(
            locations if locations is not None else dict.fromkeys(sinks, ""),
            config,
            metrics=metrics,
            rng=self._rng,
        )
        #: Claimed jobs not started yet: waiting for their paused destination, or for a
        #: free worker.
        self._waiting = WaitingJobs(
            queue, self.gate, max_count=max_waiting, max_bytes=max_waiting_bytes
        )
        #: Job seq → transient failures while its destination was open (not a probe):
        #: two or more mean the server is up and fails that bundle (module docstring).
        #: Forgotten once the job is settled; in memory only (a restart starts afresh).
        self._open_failures: OpenFailures[int] = OpenFailures()
        #: Job seq → deaths of its conversion process: the third dead-letters it
        #: (:mod:`listeners.conversion_deaths`).
        self._deaths: ConversionDeaths[int] = ConversionDeaths()
        #: Job seq → deliveries that ran out of memory (forgotten once it is delivered).
        self._memory_errors: ConversionDeaths[int] = ConversionDeaths()
        #: Writes each job's outcome (retry later, dead letter, complete), logs it and
        #: answers its senders; what the outcome is stays decided here.
        self._settler = JobSettler(
            queue,
            config,
            metrics,
            self.gate,
            self._outcomes,
            self._waiters,
            self._open_failures,
            self._rng,
        )

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._claim_loop(), name="delivery-claims")

    def notify(self) -> None:
        """New work was stored: claim now instead of at the next poll."""
        self._wake.set()

    def wait_for(self, seq: int) -> asyncio.Future[DeliveryOutcome]:
        """A future resolved when message ``seq`` is delivered or dead-lettered."""
        return self._waiters.wait_for(seq)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; give the jobs not started back; let in-flight deliveries finish
        within ``grace`` seconds.

        Claimed jobs not started yet (waiting for a paused destination or for a worker)
        go back to the queue at once, due now, with the attempt their claim counted taken
        back: never sent, they are no attempt. Deliveries still running after ``grace``
        are cancelled: their messages stay in flight in the queue, their attempt counted,
        and are delivered again after the restart.
        """
        self._stopping = True
        self._outcomes.stop()
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._waiting.give_back_all()
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def write_problem(self) -> str | None:
        """Why outcomes are not being written to the queue (for ``/ready``), or None."""
        return self._outcomes.problem()

    async def _claim_loop(self) -> None:
        failing = 0
        while not self._stopping:
            self._dispatch()
            free = self._config.workers - len(self._running)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self._queue.claim(free)
                except Exception as exc:
                    self._metrics.queue_write_failures.labels("claim").inc()
                    # One ERROR per run of failures, not one a second for the hours a
                    # full disk may last (/ready says it meanwhile: the queue's problem).
                    failing += 1
                    log.log(
                        logging.ERROR if failing == 1 else logging.DEBUG,
                        "claiming work from the queue failed: %s; retried every second",
                        describe_exception(exc),
                        extra=log_fields(failures=failing),
                    )
                    await asyncio.sleep(1.0)
                    continue
                if failing:
                    log.info(
                        "claiming work from the queue works again",
                        extra=log_fields(failures=failing),
                    )
                    failing = 0
            for job in jobs:
                await self._waiting.admit(job, self._destination_of(job.envelope.route))
            if not jobs:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._next_turn())
        self._wake.clear()

    def _dispatch(self) -> None:
        """Start the waiting jobs whose destination lets them through while workers are
        free (:meth:`WaitingJobs.startable`)."""
        free = self._config.workers - len(self._running)
        for job, granted in self._waiting.startable(free):
            task = asyncio.create_task(self._process(job, granted), name=f"deliver-{job.seq}")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _next_turn(self) -> float:
        """How long to sleep when idle: the poll interval, or until a paused destination
        with jobs waiting for it may be probed, if sooner."""
        timeout = self._idle_poll
        for destination in self._waiting.destinations():
            remaining = self.gate.retry_in(destination)
            # None: open (waiting for a worker); 0: probed now, or probe due (a worker's
            # end wakes the loop).
            if remaining:
                timeout = min(timeout, remaining)
        return timeout

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _process(self, job: Job, granted: Pass) -> None:
        fields = log_fields(seq=job.seq, control_id=job.envelope.control_id, attempt=job.attempts)
        try:
            try:
                await self._deliver(job, granted)
            except asyncio.CancelledError:
                raise
            except (BrokenProcessPool, MemoryError) as exc:
                # A conversion process died (the pool replaces itself), or ran out of memory.
                # Maybe another message's doing: retried alone, dead-lettered at the third.
                memory = isinstance(exc, MemoryError)
                failure = self._deaths.died(job.seq, out_of_memory=memory)
                if failure is not None:
                    await self._settler.conversion_failed(job, failure)
                    return
                await self._settler.retry(
                    job,
                    retry_after_death(log, out_of_memory=memory, fields=fields),
                    self._destination_of(job.envelope.route),
                    fields,
                    limited=False,
                )
            except Exception as exc:
                # A bug or a broken worker process must not strand the job in flight: retry it.
                log.exception("delivery crashed; will retry", extra=fields)
                await self._settler.retry(
                    job,
                    TransientDeliveryError(f"internal error: {type(exc).__name__}"),
                    self._destination_of(job.envelope.route),
                    fields,
                    cause=exc,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nothing may escape a worker's task: nobody awaits it. (Queue writes do not
            # raise, they are retried in place: this is a bug.) The row stays in flight
            # until the restart.
            log.error(
                "handling a job failed (%s); it stays in flight until the restart",
                describe_exception(exc),
                extra=fields,
            )
        finally:
            # No verdict on the destination (conversion error, crash, cancellation): a
            # probe passes on to the next job. A no-op once the outcome was reported.
            self.gate.abandoned(granted)

    async def _deliver(self, job: Job, granted: Pass) -> None:
        envelope = job.envelope
        fields = job_fields(job)
        outcome = await self._pool.convert(
            envelope.route,
            envelope.payload,
            input_type=envelope.input_type,
            # After a death, alone: then a death is its own, and an innocent message converts.
            alone=self._deaths.deaths(job.seq) > 0,
        )
        self._deaths.converted(job.seq)
        if isinstance(outcome, ConversionFailure):
            await self._settler.conversion_failed(job, outcome)
            return
        destination = self._destination_of(envelope.route)
        sink = self._sinks[destination]
        record_conversion(self._metrics, outcome)
        try:
            await deliver_results(sink, outcome, envelope, destination, self._metrics)
        except MemoryError:
            # Building or sending the request, in this process: the destination gets no
            # verdict (not paused). Caught here: taken for a conversion's, its count was
            # reset by the next conversion, which succeeded, and it was retried for ever.
            await self._delivery_out_of_memory(job, destination, fields)
            return
        except TransientDeliveryError as exc:
            rank = self._open_failures.count(job.seq, granted)
            if rank >= 2:
                # Failed before, the destination came back since, and this bundle fails
                # again: its own backoff; the other deliveries keep going.
                await self._settler.retry(job, exc, destination, fields, backoff_attempt=rank)
                return
            self.gate.failed(granted, exc)
            await self._settler.retry(job, exc, destination, fields, paused=True)
            return
        except RejectedDeliveryError as exc:
            self._open_failures.forget(job.seq)
            self.gate.succeeded(granted)  # the server answered: the bundle was at fault
            failure = describe_failure(exc)
            await self._settler.dead_letter(
                job,
                exc.dead_letter_record(destination),
                reason="rejected",
                line="destination rejected the bundle; message dead-lettered (%s)",
                why=failure.reason,
                facts=log_fields(destination=destination, status=exc.status),
                outcome=DeliveryOutcome(False, diagnostics(exc)),
            )
            return
        except DeliveryError as exc:
            self.gate.failed(granted, exc)
            await self._settler.retry(
                job,
                TransientDeliveryError(str(exc), status=exc.status, outcome=exc.outcome),
                destination,
                fields,
                cause=exc,
                paused=True,
            )
            return
        self._open_failures.forget(job.seq)
        self._memory_errors.converted(job.seq)
        self.gate.succeeded(granted)
        await self._settler.delivered(job, destination, fields)

    async def _delivery_out_of_memory(
        self, job: Job, destination: str, fields: dict[str, Any]
    ) -> None:
        """Retry a job whose delivery ran out of memory, or dead-letter it at the third
        time (:func:`~listeners.conversion_deaths.delivery_out_of_memory`)."""
        record = delivery_out_of_memory(self._memory_errors.add(job.seq), destination)
        if record is None:
            error = TransientDeliveryError("delivery ran out of memory")
            await self._settler.retry(job, error, destination, fields, limited=False)
            return
        self._memory_errors.converted(job.seq)
        await self._settler.dead_letter(
            job,
            record,
            reason="out-of-memory",
            line="delivery ran out of memory; message dead-lettered",
            facts=log_fields(destination=destination),
            outcome=DeliveryOutcome(False, f"{record['kind']}: {record['reason']}"),
        )
