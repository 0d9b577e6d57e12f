"""The SQLite queue's writer thread: one connection, group commit.

Coroutines submit operations (functions of the connection); the thread takes the first
waiting one, then gathers whatever else arrives within the commit interval (up to a row
and byte cap; the wait ends early once as many as in the previous batch have arrived),
runs them all in one ``BEGIN IMMEDIATE … COMMIT`` (each in a savepoint, so one failing
operation does not undo the others) and only then resolves every caller's future. One
fsync'd commit thus acknowledges a whole batch. On some errors ("database or disk is
full", an I/O error, out of memory) SQLite rolls the whole transaction back itself: the
failing operation gets its error and the others run again in a new transaction — before,
all failed with "no such savepoint": a message refused on a full disk took its batch-mates'
ACKs and a delivery claim with it.

The thread is the only way to the file: should it end on an error nothing expected
(a bug in its bookkeeping, a MemoryError, an exception SQLite was not expected to raise),
every operation it had taken (the batch in hand), every one waiting and every later one
fails at once with :attr:`Writer.failure` — before, the batch in hand was never resolved
and its callers (an MLLP ACK, an AMQP consumer's commit) waited forever — and the queue
reports itself stopped for good (``SqliteQueue.failure``: ``/health`` red, the process
must be restarted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import QueueError
from ._sqlite_schema import storage_error

__all__ = ["Operation", "Writer"]

T = TypeVar("T")

#: An operation run in the writer's transaction: returns its result and the number of new
#: message rows it stored (for the ``rows_committed`` counter).
Operation = Callable[[sqlite3.Connection], tuple[T, int]]

_Settlement = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Request:
    __slots__ = ("future", "loop", "op", "size")

    def __init__(
        self,
        op: Operation[Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        size: int,
    ) -> None:
        self.op = op
        self.loop = loop
        self.future = future
        self.size = size


class _Stop:
    """Sentinel: finish what is queued before it, then close the connection."""


class Writer:
    """Owns the queue's write connection on a dedicated thread."""

    def __init__(
        self,
        *,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        maintain: Callable[[sqlite3.Connection], float],
        interval_s: float,
        max_batch: int,
        max_batch_bytes: int,
        logger: logging.Logger,
        on_begin: Callable[[], None] = lambda: None,
        on_rollback: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_begin``/``on_rollback``: called on the writer thread when a transaction of
        submitted operations begins, and when one that began does not commit (for state
        the operations keep outside the file)."""
        self._name = name
        self._on_begin = on_begin
        self._on_rollback = on_rollback
        self._connect = connect
        self._maintain = maintain
        self._interval = max(0.0, interval_s)
        self._max_batch = max(1, max_batch)
        self._max_bytes = max_batch_bytes
        self._log = logger
        self._inbox: queue.SimpleQueue[_Request | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = False
        self._failure: QueueError | None = None
        self._thread: threading.Thread | None = None
        #: The operations taken from the inbox and not yet resolved (writer thread): those
        #: a failure of the thread must still resolve, being in no inbox any more.
        self._in_hand: list[_Request] = []
        self._expected = 1  # operations in the previous batch
        #: Transactions committed for submitted operations.
        self.commits = 0
        #: New message rows made durable by those commits.
        self.rows_committed = 0

    @property
    def failure(self) -> QueueError | None:
        """Why the thread ended on an unexpected error (nothing can be written until the
        queue is started again), or None."""
        return self._failure

    # -- event-loop side ----------------------------------------------------------------
    async def start(self) -> None:
        """Start the thread; returns once the connection is open (or raises QueueError)."""
        if self._thread is not None and self._thread.is_alive():
            # Also the thread of a stop cancelled before it ended: a second thread would
            # take operations from the same inbox, on a connection of its own.
            raise QueueError("the queue is already started (or its last stop has not ended)")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._failure = None
        self._inbox = queue.SimpleQueue()  # nothing stale from a previous run
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    def submit(self, op: Operation[T], size: int = 0) -> asyncio.Future[T]:
        """Queue ``op`` for the next batch; the future resolves after its COMMIT."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if not self._accepting:
                # A new error each time: raising the same one again and again (the workers
                # claim every second) would lengthen its traceback without end, and with
                # it the frames — stored messages among their locals — kept alive.
                raise QueueError(str(self._failure or "the queue is not open"))
            self._inbox.put(_Request(op, loop, future, size))
        return future

    async def stop(self) -> None:
        """Run what was submitted, then close the connection and end the thread. The
        thread stays this writer's until it ended: a stop cancelled meanwhile (a disk that
        does not answer) is finished by calling this again, and no start runs a second
        thread beside it."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            self._accepting = False
            self._inbox.put(_Stop())  # a second one, after a cancelled stop, is never read
        await asyncio.to_thread(thread.join)
        if self._thread is thread:
            self._thread = None

    # -- writer thread ------------------------------------------------------------------
    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            ready.set_exception(storage_error(exc, "opening the queue"))
            return
        with self._lock:
            self._accepting = True
        ready.set_result(None)
        try:
            self._serve(conn)
        except BaseException as exc:
            self._stopped(exc)
        finally:
            conn.close()

    def _stopped(self, exc: BaseException) -> None:
        """The thread ends on ``exc``: refuse what comes, fail what was taken or waits."""
        try:
            failure = QueueError(f"{storage_error(exc, 'writing')}; {_STOPPED}")
        except BaseException:  # MemoryError again: a message prepared in advance
            failure = _STOPPED
        with self._lock:
            self._accepting = False
            self._failure = failure
        self._fail_remaining(failure)
        # One line, by kind and place only: the text of an exception that is not ours
        # may quote the message being stored.
        self._log.error("%s", failure, extra={"event": "queue_writer_stopped"})

    def _serve(self, conn: sqlite3.Connection) -> None:
        next_maintenance = time.monotonic()
        while True:
            wait = next_maintenance - time.monotonic()
            try:
                first = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                next_maintenance = time.monotonic() + self._maintenance(conn)
                continue
            if isinstance(first, _Stop):
                return
            self._in_hand = [first]
            stop = self._gather()
            self._execute(conn, self._in_hand)
            self._in_hand = []
            if stop:
                return

    def _maintenance(self, conn: sqlite3.Connection) -> float:
        try:
            return self._maintain(conn)
        except Exception as exc:
            _rollback(conn)
            # Why, as the queue's other errors say it (SQLite's text, which quotes no
            # content; of anything else its kind and place): the line said only
            # "exception=OperationalError", a full volume and a locked file alike.
            error = storage_error(exc, "pruning and checkpointing")
            self._log.warning(
                "queue maintenance failed; will try again in 60s",
                exc_info=(type(error), error, exc.__traceback__),
            )
            return 60.0

    def _gather(self) -> bool:
        """Add to the batch in hand (its first operation) what arrives within the commit
        interval, up to the caps; whether a stop came after them.

        The wait ends early once as many operations as in the previous batch have arrived
        (then only what is already queued is added): concurrent producers re-submit right
        after their commit, so a steady load forms full batches without waiting out the
        interval, and a lone producer never waits at all.
        """
        batch = self._in_hand  # filled in place: a failure meanwhile still resolves it
        size = batch[0].size
        expected = self._expected
        deadline = time.monotonic() + self._interval
        while len(batch) < self._max_batch and size < self._max_bytes:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and len(batch) < expected:
                    item = self._inbox.get(timeout=remaining)
                else:
                    item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Stop):
                return True
            batch.append(item)
            size += item.size
        self._expected = len(batch)
        return False

    def _execute(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        while batch:
            batch = self._transaction(conn, batch)

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Request]) -> list[_Request]:
        """Run ``batch`` in one transaction and settle it; returns the operations to run
        again (SQLite rolled the transaction back itself on another one's error)."""
        settlements: list[tuple[_Request, Any, BaseException | None]] = []
        rows = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._settle_all(batch, storage_error(exc, "starting a transaction"))
            return []
        self._on_begin()
        try:
            for index, request in enumerate(batch):
                conn.execute("SAVEPOINT op")
                try:
                    value, stored = request.op(conn)
                except Exception as exc:
                    error = storage_error(exc, "storing") if isinstance(exc, sqlite3.Error) else exc
                    if not conn.in_transaction:
                        # Undone with the transaction, the others' work was not theirs to
                        # fail; each run removes one operation, so this ends.
                        self._on_rollback()
                        self._settle([(request, None, error)])
                        return batch[:index] + batch[index + 1 :]
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    settlements.append((request, None, error))
                else:
                    conn.execute("RELEASE op")
                    settlements.append((request, value, None))
                    rows += stored
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            self._on_rollback()
            self._settle_all(batch, storage_error(exc, "committing"))
            if not isinstance(exc, sqlite3.Error):
                raise
            return []
        self.commits += 1
        self.rows_committed += rows
        self._settle(settlements)
        return []

    def _settle_all(self, batch: list[_Request], error: QueueError) -> None:
        self._settle([(request, None, error) for request in batch])

    def _settle(self, settlements: list[tuple[_Request, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for request, value, error in settlements:
            by_loop.setdefault(request.loop, []).append((request.future, value, error))
        for loop, items in by_loop.items():
            # A closed event loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items)

    def _fail_remaining(self, error: QueueError) -> None:
        # The batch in hand first: an operation of it already resolved (a result settled
        # before the failure) keeps its result, _resolve skipping a future done.
        pending, self._in_hand = self._in_hand, []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Request):
                pending.append(item)
        self._settle_all(pending, error)


#: The failure when even building its message fails (out of memory).
_STOPPED = QueueError(
    "the queue writer stopped: nothing can be stored until the service is restarted"
)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _resolve(items: list[_Settlement]) -> None:
    for future, value, error in items:
        if future.done():  # the caller was cancelled; the work itself stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
