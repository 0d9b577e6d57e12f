"""The durable queue on SQLite: WAL, ``synchronous=FULL``, group commit, ordered per key.

Design
------
* **Durability.** All writes of the running service go through one connection owned by a
  writer thread (:mod:`._sqlite_writer`). ``put()`` resolves only after the COMMIT — an
  fsync of the WAL — that contains its row. Concurrent ``put()`` calls arriving within
  ``commit_interval_ms`` (up to ``max_batch`` rows / ``max_batch_bytes``) share that commit;
  the wait ends as soon as as many operations as in the previous batch have arrived, so a
  lone producer does not wait and a steady load commits in full batches.
* **Ordering.** Each ordering key's oldest ``pending``/``inflight`` row carries
  ``head = 1``; only pending heads that are due are claimable, through a partial index, so
  a claim costs O(limit · log n) whatever the backlog. A message waiting for its retry is
  still its key's head, so later messages of the key wait behind it (no longer when
  the wall clock is stepped back: :mod:`._sqlite_clock`).
* **Dead letters do not block their key.** ``dead_letter()`` passes the head to the key's
  next message: one unprocessable message must not stop a patient's feed forever; the
  operator sees it in ``passerelle dead-letters``. Every writer keeps the ``head``
  invariant with the queries of :mod:`._sqlite_heads`.
* **Retrying a dead letter re-sequences it**: it is stored again as a new row (new
  ``seq``, attempts reset, ``requeued_from`` = the original seq) at the *tail* of its key,
  and the dead row is removed. Keeping its old seq would make it the head again in front
  of (possibly in-flight) newer messages of its key — two in flight for one key — and
  would replay it "in the past" although newer messages have already been delivered.
  The re-queue is the operator's decision taken now, so it is ordered as new work: after
  what is already queued for the key, never overtaking it.
* **Duplicates.** A ``put()`` whose (``sender_id`` or else ``sender``, control_id,
  content digest — :mod:`.digest`) was stored less than ``duplicate_window_hours`` ago
  returns the original seq with ``duplicate=True``; the same control id on other content
  is a new message (``control_id_reused=True``: the caller warns). Without a control id,
  an AMQP redelivery is matched on its message id or, flagged ``redelivered``, on its
  bytes (:mod:`._sqlite_duplicates`). Delivered rows keep their digest but no payload
  until the window has passed (pruned by the writer thread every minute). The window,
  like the retention below, is never shortened by a wall clock stepped forward under the
  running queue (:class:`._sqlite_clock.ForwardSteps`).
* **Attempts.** A claim counts one (``attempts + 1``), kept by ``retry_later()`` and by
  crash recovery. A job claimed but never sent (its destination paused) is put back with
  ``give_back()``, which takes that attempt back in the same commit: durable, so a
  restart does not count it.
* **Crash recovery.** ``start()`` puts rows left ``inflight`` back to ``pending``:
  at-least-once delivery. ``start()`` also takes an exclusive lock (``<file>.lock``,
  :mod:`._sqlite_lock`): one service per queue file. Should the writer thread end on an
  unexpected error, every write fails at once from then on (none waits for ever) and
  :meth:`SqliteQueue.failure` says why: only a restart mends it (``/health`` red).
* **Dead-letter administration** (:mod:`._sqlite_dead_letters`, which these methods
  delegate to): synchronous, own short connection and short transactions, so the CLI
  may use it while the service runs.
* **Retention** (:mod:`._sqlite_maintenance`). Dead letters hold patients' messages: the
  writer thread deletes those that failed more than ``dead_letter_retention`` seconds ago
  (30 days by default, None: never), in chunks between the batches it commits, as it
  prunes delivered rows. Every connection sets ``secure_delete``: what is deleted is
  overwritten, not left in free pages; and the maintenance empties the WAL (a TRUNCATE
  checkpoint that never waits), whose old frames and not yet checkpointed pages would
  keep delivered messages.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import QueueError
from ._sqlite_backlog import Backlog, StoreFailures, probe_write, read_backlog
from ._sqlite_clock import ClockSteps, ForwardSteps, elapsed_clock
from ._sqlite_dead_letters import SQLITE_MAX_INT, DeadLetters
from ._sqlite_duplicates import DUPLICATE_SQL as _DUPLICATE_SQL  # noqa: F401 - tests' name
from ._sqlite_duplicates import REUSED_SQL as _REUSED_SQL  # noqa: F401 - tests' name
from ._sqlite_heads import ACTIVE as _ACTIVE
from ._sqlite_heads import transaction
from ._sqlite_lock import ServiceLock
from ._sqlite_maintenance import Maintenance
from ._sqlite_operations import CLAIM_SQL as _CLAIM_SQL  # noqa: F401 - tests' name
from ._sqlite_operations import claim, depth, finish, insert
from ._sqlite_rows import error_text
from ._sqlite_schema import connect, storage_error
from ._sqlite_writer import Operation, Writer
from .base import (
    DEFAULT_DEAD_LETTER_RETENTION,
    DeadLetter,
    Envelope,
    Job,
    MessageQueue,
    PutResult,
)

__all__ = ["SQLITE_MAX_INT", "SqliteQueue"]

T = TypeVar("T")

#: Seconds between two maintenance steps with nothing left to do (:meth:`SqliteQueue._maintain`).
_MAINTENANCE_INTERVAL = 60.0


class SqliteQueue:
    """A :class:`~listeners.queue.base.MessageQueue` in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        commit_interval_ms: float = 2.0,
        duplicate_window_hours: float = 168.0,
        clock: Callable[[], float] = time.time,
        max_batch: int = 512,
        max_batch_bytes: int = 32 * 1024 * 1024,
        busy_timeout_ms: int = 10_000,
        dead_letter_retention: float | None = DEFAULT_DEAD_LETTER_RETENTION,
        on_expired: Callable[[int], None] | None = None,
        elapsed: Callable[[], float] | None = None,
    ) -> None:
        """``dead_letter_retention``: seconds a dead letter is kept after it failed (None:
        until purged). ``on_expired(n)``: called on the writer thread after ``n`` dead
        letters were deleted for it (a metric). ``elapsed``: the monotonic clock that
        tells a step of ``clock`` from time passing (:mod:`._sqlite_clock`); by default
        the system's with the system's wall clock, and ``clock`` itself with another
        (a test's clock, moved by hand, is both)."""
        self.path = Path(path)
        self._window = duplicate_window_hours * 3600.0
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._log = logging.getLogger("passerelle.queue")
        if elapsed is None:
            elapsed = elapsed_clock() if clock is time.time else clock
        self._forward = ForwardSteps(clock, elapsed, self._log)
        #: The wall clock of the writer's operations (what they store, what they compare).
        self._now = self._forward.now
        self._maintenance = Maintenance(
            cutoff=self._forward.cutoff,
            window=self._window,
            retention=dead_letter_retention,
            busy_timeout_ms=busy_timeout_ms,
            on_expired=on_expired,
            logger=self._log,
        )
        self._lock = ServiceLock(self.path)
        self._clock_steps = ClockSteps(self._log)
        self._store_failures = StoreFailures(clock)
        self._claim_failures = StoreFailures(
            clock,
            doing="claiming stored messages for delivery",
            counted="claims failed, nothing delivered meanwhile",
        )
        self._dead_letters = DeadLetters(
            self.path, busy_timeout_ms=busy_timeout_ms, clock=clock, logger=self._log
        )
        self._writer = Writer(
            name=f"queue-writer:{self.path.name}",
            connect=self._open_service,
            maintain=self._maintain,
            interval_s=commit_interval_ms / 1000.0,
            max_batch=max_batch,
            max_batch_bytes=max_batch_bytes,
            logger=self._log,
            on_begin=self._clock_steps.begin,
            on_rollback=self._clock_steps.rolled_back,
        )

    # -- counters -----------------------------------------------------------------------
    @property
    def commits(self) -> int:
        """Transactions committed by the writer (each one fsync)."""
        return self._writer.commits

    @property
    def rows_committed(self) -> int:
        """Messages made durable by those transactions."""
        return self._writer.rows_committed

    def failure(self) -> str | None:
        """Why the queue stopped for good — its writer thread, the only way to the file,
        ended on an unexpected error — or None. Every write fails meanwhile; only a
        restart mends it (``/health``: ``Metrics.watch_vital``)."""
        failure = self._writer.failure
        return None if failure is None else str(failure)

    @property
    def dead_letters_expired(self) -> int:
        """Dead letters deleted by the retention since the queue was created."""
        return self._maintenance.expired

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the file (create / migrate), recover in-flight rows, start the writer."""
        if self._lock.held:
            raise QueueError("the queue is already started")
        self._lock.acquire()
        try:
            await self._writer.start()
        except BaseException:
            self._lock.release()
            raise

    async def close(self) -> None:
        """Finish submitted work, close the file and release the service lock — released
        even if the stop fails or is cancelled (a disk slow to answer): held, it refused
        every later start in this process ("already used by a running service")."""
        try:
            await self._writer.stop()
        finally:
            self._lock.release()

    async def __aenter__(self) -> SqliteQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- MessageQueue -------------------------------------------------------------------
    async def put(self, envelope: Envelope) -> PutResult:
        """Store ``envelope``; returns once it is committed (or is a known duplicate)."""
        return await self._store(
            lambda conn: self._put(conn, envelope, "pending", None), len(envelope.payload)
        )

    async def put_dead_letter(self, envelope: Envelope, error: dict[str, Any]) -> PutResult:
        """Store ``envelope`` directly as a dead letter (``on_unsupported="dead-letter"``)."""
        return await self._store(
            lambda conn: self._put(conn, envelope, "dead", error), len(envelope.payload)
        )

    async def _store(self, op: Operation[PutResult], size: int) -> PutResult:
        try:
            result = await self._submit(op, size)
        except QueueError as exc:
            self._store_failures.failed(exc)
            raise
        if not result.duplicate:  # a duplicate wrote nothing: it proves no room
            self._store_failures.stored()
        return result

    async def store_problem(self) -> str | None:
        """Why received messages are refused, or stored ones not claimed for delivery
        (for ``/ready``), or None. After a refusal, each call writes 64 KiB and deletes
        them in one commit: once that commits (room again on the disk), the refusal is
        over even if no message came meanwhile. A failed claim lasts until a claim
        commits: the workers try again every second."""
        stopped = self.failure()
        if stopped is not None:  # no write will ever commit: nothing to probe
            return stopped
        problems = [self._claim_failures.problem()]
        if self._store_failures.problem() is not None:
            try:
                await self._submit(probe_write)
            except QueueError:
                problems.insert(0, self._store_failures.problem())
            else:
                self._store_failures.stored()
        return "; ".join(p for p in problems if p) or None

    async def claim(self, limit: int) -> list[Job]:
        """Up to ``limit`` due heads of their keys, made ``inflight`` (attempts + 1)."""
        if limit <= 0:
            return []
        try:
            jobs = await self._submit(lambda conn: (self._claim(conn, limit), 0))
        except QueueError as exc:
            # The workers only log it and try again: without this, /ready stayed green
            # while a due message could not be claimed (a full disk on a quiet night).
            self._claim_failures.failed(exc)
            raise
        self._claim_failures.stored()
        return jobs

    async def complete(self, seq: int) -> None:
        """Delivered: the key's next message becomes claimable. Unknown seq: no-op."""
        await self._submit(lambda conn: (self._finish(conn, seq, "done", None), 0))

    async def retry_later(self, seq: int, delay: float, error: dict[str, Any]) -> None:
        """Back to pending, due in ``delay`` seconds; still blocks its key meanwhile."""

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            now = self._now()
            conn.execute(
                "UPDATE messages SET state = 'pending', next_attempt_at = ?, last_error = ?,"
                f" updated_at = ? WHERE seq = ? AND {_ACTIVE}",
                (now + max(0.0, delay), error_text(error), now, seq),
            )
            return None, 0

        await self._submit(op)

    async def give_back(
        self, seq: int, delay: float = 0.0, error: dict[str, Any] | None = None
    ) -> None:
        """Claimed ``seq`` was never sent: back to pending, due in ``delay`` seconds, and
        the attempt its claim counted taken back (never below 0), in the same commit — so
        it is not counted again after a restart. Still blocks its key meanwhile, like
        :meth:`retry_later`. ``error``: its new ``last_error`` (None: the last one kept).
        Only an ``inflight`` row: a pending one was not claimed (or was given back
        already), so it has no attempt to take back; then, or for an unknown or finished
        seq, a no-op."""

        def op(conn: sqlite3.Connection) -> tuple[None, int]:
            now = self._now()
            conn.execute(
                "UPDATE messages SET state = 'pending', next_attempt_at = ?,"
                " attempts = max(attempts - 1, 0), last_error = coalesce(?, last_error),"
                " updated_at = ? WHERE seq = ? AND state = 'inflight'",
                (now + max(0.0, delay), None if error is None else error_text(error), now, seq),
            )
            return None, 0

        await self._submit(op)

    async def bring_forward(self, latest: float) -> int:
        """Make pending messages due in more than ``latest`` seconds due then; returns how
        many. A retry scheduled by an earlier version or configuration (a server's
        Retry-After of years was once honoured whole) would otherwise hold its patient's
        later messages back for that long, restarts included."""

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            now = self._now()
            cursor = conn.execute(
                "UPDATE messages SET next_attempt_at = ?, updated_at = ?"
                " WHERE state = 'pending' AND next_attempt_at > ?",
                (now + latest, now, now + latest),
            )
            return cursor.rowcount, 0

        return await self._submit(op)

    async def dead_letter(self, seq: int, error: dict[str, Any]) -> None:
        """Give up on ``seq``; its key's next message becomes claimable (see module doc)."""
        await self._submit(lambda conn: (self._finish(conn, seq, "dead", error), 0))

    async def depth(self) -> int:
        """Messages not yet delivered nor dead (pending + inflight)."""
        return await self._submit(lambda conn: (depth(conn), 0))

    async def prune(self) -> int:
        """Delete delivered rows older than the duplicate window now; returns how many."""
        return await self._submit(lambda conn: (self._prune(conn, None), 0))

    def backlog(self) -> Backlog:
        """The oldest waiting message's time and the dead letters kept, read on a
        read-only connection of its own (synchronous: ``asyncio.to_thread``)."""
        return read_backlog(self.path, busy_timeout_ms=min(self._busy_timeout_ms, 1000))

    # -- dead letters (synchronous: the CLI, or ``asyncio.to_thread``) ------------------
    # Delegated to :class:`._sqlite_dead_letters.DeadLetters` (own short connections).
    def count_dead_letters(self) -> int:
        """How many dead letters there are."""
        return self._dead_letters.count()

    def list_dead_letters(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first; metadata only (``envelope.payload`` is empty)."""
        return self._dead_letters.page(limit, offset)

    def state(self, seq: int) -> str | None:
        """``pending``, ``inflight``, ``done`` or ``dead``; None when unknown (pruned)."""
        return self._dead_letters.state(seq)

    def get_dead_letter(self, id: int) -> DeadLetter | None:
        """One dead letter with its payload, or None."""
        return self._dead_letters.get(id)

    def retry_dead_letter(self, id: int) -> bool:
        """Queue dead letter ``id`` again as new work (new seq, tail of its key)."""
        return self._dead_letters.retry(id)

    def retry_all_dead_letters(self) -> int:
        """Queue every dead letter again, oldest first; returns how many.

        Only those dead when the call starts: a message failing again meanwhile stays dead.
        """
        return self._dead_letters.retry_all()

    def purge_dead_letter(self, id: int) -> bool:
        """Delete dead letter ``id`` (overwritten on disk); whether there was one."""
        return self._dead_letters.purge_one(id)

    def purge_dead_letters(self, older_than: float | None = None) -> int:
        """Delete dead letters that failed more than ``older_than`` seconds ago (None: all)."""
        return self._dead_letters.purge(older_than)

    # -- operations (writer thread, inside its transaction: :mod:`._sqlite_operations`) -
    def _put(
        self, conn: sqlite3.Connection, envelope: Envelope, state: str, error: dict[str, Any] | None
    ) -> tuple[PutResult, int]:
        now = self._now()
        return insert(
            conn, envelope, state, error, now=now, cutoff=self._forward.cutoff(self._window)
        )

    def _claim(self, conn: sqlite3.Connection, limit: int) -> list[Job]:
        return claim(conn, limit, now=self._now(), clock_steps=self._clock_steps)

    def _finish(
        self, conn: sqlite3.Connection, seq: int, state: str, error: dict[str, Any] | None
    ) -> bool:
        return finish(conn, seq, state, error, clock=self._now)

    def _prune(self, conn: sqlite3.Connection, limit: int | None) -> int:
        return self._maintenance.prune(conn, limit)

    # -- plumbing -----------------------------------------------------------------------
    async def _submit(self, op: Operation[T], size: int = 0) -> T:
        return await self._writer.submit(op, size)

    def _open_service(self) -> sqlite3.Connection:
        """The writer's connection: open, then recover rows a crash left in flight."""
        conn = connect(self.path, busy_timeout_ms=self._busy_timeout_ms)
        self._forward.start()
        try:
            with transaction(conn):
                recovered = conn.execute(
                    "UPDATE messages SET state = 'pending' WHERE state = 'inflight'"
                ).rowcount
                # Recount once (O(n)); the triggers keep it from then on.
                conn.execute(
                    "UPDATE counters SET value = (SELECT count(*) FROM messages"
                    f" WHERE {_ACTIVE}) WHERE name = 'active'"
                )
        except BaseException as exc:
            conn.close()
            raise storage_error(exc, "recovering in-flight messages") from None
        if recovered:
            self._log.warning(
                "messages in flight at the last stop will be delivered again",
                extra={"count": recovered, "event": "queue_recovered"},
            )
        return conn

    def _maintain(self, conn: sqlite3.Connection) -> float:
        """The writer's housekeeping (:mod:`._sqlite_maintenance`): one step; returns
        seconds until the next one (0: more to do, after the batches waiting meanwhile)."""
        return 0.0 if self._maintenance.step(conn) else _MAINTENANCE_INTERVAL


if TYPE_CHECKING:

    def _implements_protocol(queue: SqliteQueue) -> MessageQueue:
        return queue  # mypy checks SqliteQueue against the MessageQueue protocol
