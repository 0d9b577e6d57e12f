"""The SQLite queue's dead-letter administration (``passerelle dead-letters``).

Synchronous: each call opens its own short-lived connection and uses short transactions,
so the CLI may run while the service does (SQLite's locking orders it with the writer
thread; the ``head`` invariant is kept as in :mod:`._sqlite_heads`). ``SqliteQueue``
delegates its dead-letter methods (count, list, get, retry, retry all, purge) and
``state()`` to :class:`DeadLetters`.

Reading (count, list, get, state) opens the file read-only: no migration, no write, so
a CLI of another version beside a running service changes nothing. Retry and purge
write through SQLite's locks like the service's writer, never migrate, and refuse a file
of another schema version. Deleting (purge, the retention of :func:`expire`) goes in
chunks of short transactions: one long ``DELETE`` would hold the write lock past the
service writer's busy timeout, and its messages would be refused meanwhile.

Retrying re-sequences: the dead row is stored again as a new row at the tail of its key
and removed (see the design notes of :mod:`.sqlite`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ._sqlite_heads import key_busy, transaction
from ._sqlite_rows import DEAD_LETTER_COLUMNS, ENVELOPE_COLUMNS, dead_letter_from_row
from ._sqlite_schema import connect, connect_read_only, storage_error
from .base import DeadLetter

__all__ = ["SQLITE_MAX_INT", "DeadLetters", "expire", "requeue"]

_RETRY_ALL_CHUNK = 500
#: Dead letters deleted per transaction (purge, retention).
DELETE_CHUNK = 200
#: The most message bytes per transaction of retry --all, purge and retention: a retry
#: copies each message, ``secure_delete`` overwrites every page freed, so a chunk of
#: 10 MiB messages must stay a short write too (and a short growth of the WAL on a disk
#: nearly full).
CHUNK_BYTES = 2 * 1024 * 1024
#: Pause between two chunks of the CLI's retry --all and purge: SQLite's busy handler
#: retries a waiting writer (the service's) every 100 ms at most, so it gets the lock
#: between two chunks rather than losing every race to the next one.
PAUSE = 0.1
#: SQLite's largest integer: a larger LIMIT or OFFSET raises OverflowError.
SQLITE_MAX_INT = 2**63 - 1


def _clamp(value: int) -> int:
    return min(max(0, value), SQLITE_MAX_INT)


class DeadLetters:
    """Dead letters of the queue file ``path``, managed through short connections."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int,
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._log = logger

    def count(self) -> int:
        """How many dead letters there are."""
        with self._reader() as conn:
            (count,) = conn.execute("SELECT count(*) FROM messages WHERE state = 'dead'").fetchone()
        return int(count)

    def page(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first; metadata only (``envelope.payload`` is empty)."""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {DEAD_LETTER_COLUMNS} FROM messages WHERE state = 'dead'"
                " ORDER BY seq LIMIT ? OFFSET ?",
                (_clamp(limit), _clamp(offset)),
            ).fetchall()
        return [dead_letter_from_row(row, b"") for row in rows]

    def state(self, seq: int) -> str | None:
        """``pending``, ``inflight``, ``done`` or ``dead``; None when unknown (pruned)."""
        with self._reader() as conn:
            row = conn.execute("SELECT state FROM messages WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def get(self, id: int) -> DeadLetter | None:
        """One dead letter with its payload, or None."""
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {DEAD_LETTER_COLUMNS}, payload FROM messages"
                " WHERE seq = ? AND state = 'dead'",
                (id,),
            ).fetchone()
        return None if row is None else dead_letter_from_row(row[:-1], row[-1] or b"")

    def retry(self, id: int) -> bool:
        """Queue dead letter ``id`` again as new work (new seq, tail of its key)."""
        with self._admin() as conn, transaction(conn):
            return requeue(conn, id, self._clock(), self._log) is not None

    def retry_all(self) -> int:
        """Queue every dead letter again, oldest first; returns how many.

        Only those dead when the call starts: a message failing again meanwhile stays dead.
        In chunks (``_RETRY_ALL_CHUNK`` dead letters, :data:`CHUNK_BYTES` of messages),
        each its own transaction, with a pause between them for the service's writer.
        """
        total = 0
        with self._admin() as conn:
            (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
            while True:
                with transaction(conn):
                    ids, more = _chunk(
                        conn.execute(
                            "SELECT seq, coalesce(length(payload), 0) FROM messages"
                            " WHERE state = 'dead' AND seq <= ? ORDER BY seq LIMIT ?",
                            (last, _RETRY_ALL_CHUNK),
                        ).fetchall(),
                        _RETRY_ALL_CHUNK,
                    )
                    now = self._clock()
                    for id in ids:
                        requeue(conn, id, now, self._log)
                total += len(ids)
                if not more:
                    return total
                time.sleep(PAUSE)

    def purge(self, older_than: float | None = None) -> int:
        """Delete dead letters that failed more than ``older_than`` seconds ago (None: all),
        in chunks (:func:`expire`), each its own transaction; returns how many.

        Only those dead when the call starts (and, with ``older_than``, failed before
        it): the running service does not wait on one long transaction."""
        total = 0
        with self._admin() as conn:
            (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
            cutoff = None if older_than is None else self._clock() - older_than
            while True:
                with transaction(conn):
                    deleted, more = expire(conn, cutoff, last_seq=last)
                # Copy the zeroed pages into the file now, from this process, rather than
                # leave the service's next commit to do it while its messages wait.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                total += deleted
                if not more:
                    return total
                time.sleep(PAUSE)

    def purge_one(self, id: int) -> bool:
        """Delete dead letter ``id``; whether there was one. A dead letter holds no
        ``head``: its key's order is not touched."""
        with self._admin() as conn:
            with transaction(conn):
                deleted = conn.execute(
                    "DELETE FROM messages WHERE seq = ? AND state = 'dead'", (_clamp(id),)
                ).rowcount
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # as purge: the zeroed pages
        return deleted > 0

    def _reader(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A short-lived read-only connection (list, show)."""
        conn = connect_read_only(self.path, busy_timeout_ms=self._busy_timeout_ms)
        return _short_lived(conn, "reading dead letters")

    def _admin(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A short-lived connection for the synchronous (CLI) methods that write."""
        conn = connect(self.path, busy_timeout_ms=self._busy_timeout_ms, migrate=False)
        return _short_lived(conn, "managing dead letters")


@contextlib.contextmanager
def _short_lived(conn: sqlite3.Connection, doing: str) -> Iterator[sqlite3.Connection]:
    """``conn``, closed on the way out; an SQLite error while it is used is the queue's
    storage error, saying what was being done."""
    try:
        yield conn
    except sqlite3.Error as exc:
        raise storage_error(exc, doing) from None
    finally:
        conn.close()


def requeue(conn: sqlite3.Connection, id: int, now: float, log: logging.Logger) -> int | None:
    """Store dead letter ``id`` again as a pending row at the tail of its key (attempts
    reset, ``requeued_from`` = the original seq) and delete the dead row; returns the new
    seq, None when ``id`` is not a dead letter. Inside the caller's transaction."""
    row = conn.execute(
        "SELECT ordering_key FROM messages WHERE seq = ? AND state = 'dead'", (id,)
    ).fetchone()
    if row is None:
        return None
    head = not key_busy(conn, row[0])
    cursor = conn.execute(
        f"INSERT INTO messages ({ENVELOPE_COLUMNS}, sender_id, digest, state, head,"
        " attempts, next_attempt_at, last_error, stored_at, updated_at, requeued_from)"
        f" SELECT {ENVELOPE_COLUMNS}, sender_id, digest, 'pending', ?, 0, ?, NULL,"
        " stored_at, ?,"
        " coalesce(requeued_from, seq) FROM messages WHERE seq = ?",
        (int(head), now, now, id),
    )
    conn.execute("DELETE FROM messages WHERE seq = ?", (id,))
    log.info(
        "dead letter queued again",
        extra={"seq": cursor.lastrowid, "event": "dead_letter_retry"},
    )
    return cursor.lastrowid


def expire(
    conn: sqlite3.Connection, cutoff: float | None, *, last_seq: int | None = None
) -> tuple[int, bool]:
    """Delete the oldest dead letters that failed at or before ``cutoff`` (None: any), and
    with ``last_seq`` only those up to it: up to :data:`DELETE_CHUNK` of them or
    :data:`CHUNK_BYTES` of messages. Inside the caller's transaction; returns how
    many, and whether more may be left. A dead letter is never its key's head: nothing to
    promote."""
    rows = conn.execute(
        "SELECT seq, coalesce(length(payload), 0) FROM messages WHERE state = 'dead'"
        " AND seq <= ? AND updated_at <= ? ORDER BY seq LIMIT ?",
        (
            SQLITE_MAX_INT if last_seq is None else last_seq,
            float("inf") if cutoff is None else cutoff,
            DELETE_CHUNK,
        ),
    ).fetchall()
    chosen, more = _chunk(rows, DELETE_CHUNK)
    conn.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in chosen])
    return len(chosen), more


def _chunk(rows: list[tuple[int, int]], limit: int) -> tuple[list[int], bool]:
    """The seqs of ``rows`` (seq, message size; at most ``limit`` of them) up to
    :data:`CHUNK_BYTES` of messages, at least one; and whether more may be left."""
    chosen: list[int] = []
    size = 0
    for seq, length in rows:
        chosen.append(seq)
        size += length
        if size >= CHUNK_BYTES:
            return chosen, True
    return chosen, len(rows) == limit
