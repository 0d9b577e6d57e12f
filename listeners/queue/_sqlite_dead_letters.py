"""The SQLite queue's dead-letter administration (``passerelle dead-letters``).

Synchronous: each call opens its own short-lived connection and uses short transactions,
so the CLI may run while the service does (SQLite's locking orders it with the writer
thread; the ``head`` invariant is kept as in :mod:`._sqlite_heads`). ``SqliteQueue``
delegates its dead-letter methods (count, list, get, retry, retry all, purge) and
``state()`` to :class:`DeadLetters`.

Retrying re-sequences: the dead row is stored again as a new row at the tail of its key
and removed (see the design notes of :mod:`.sqlite`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from ._sqlite_heads import key_busy, transaction
from ._sqlite_rows import DEAD_LETTER_COLUMNS, ENVELOPE_COLUMNS, dead_letter_from_row
from ._sqlite_schema import connect, storage_error
from .base import DeadLetter

__all__ = ["SQLITE_MAX_INT", "DeadLetters", "requeue"]

_RETRY_ALL_CHUNK = 500
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
        with self._admin() as conn:
            (count,) = conn.execute("SELECT count(*) FROM messages WHERE state = 'dead'").fetchone()
        return int(count)

    def page(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first; metadata only (``envelope.payload`` is empty)."""
        with self._admin() as conn:
            rows = conn.execute(
                f"SELECT {DEAD_LETTER_COLUMNS} FROM messages WHERE state = 'dead'"
                " ORDER BY seq LIMIT ? OFFSET ?",
                (_clamp(limit), _clamp(offset)),
            ).fetchall()
        return [dead_letter_from_row(row, b"") for row in rows]

    def state(self, seq: int) -> str | None:
        """``pending``, ``inflight``, ``done`` or ``dead``; None when unknown (pruned)."""
        with self._admin() as conn:
            row = conn.execute("SELECT state FROM messages WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def get(self, id: int) -> DeadLetter | None:
        """One dead letter with its payload, or None."""
        with self._admin() as conn:
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
        Chunks of ``_RETRY_ALL_CHUNK``, each its own transaction.
        """
        total = 0
        with self._admin() as conn:
            (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
            while True:
                with transaction(conn):
                    ids = [
                        row[0]
                        for row in conn.execute(
                            "SELECT seq FROM messages WHERE state = 'dead' AND seq <= ?"
                            " ORDER BY seq LIMIT ?",
                            (last, _RETRY_ALL_CHUNK),
                        )
                    ]
                    now = self._clock()
                    for id in ids:
                        requeue(conn, id, now, self._log)
                total += len(ids)
                if len(ids) < _RETRY_ALL_CHUNK:
                    return total

    def purge(self, older_than: float | None = None) -> int:
        """Delete dead letters that failed more than ``older_than`` seconds ago (None: all)."""
        with self._admin() as conn, transaction(conn):
            if older_than is None:
                cursor = conn.execute("DELETE FROM messages WHERE state = 'dead'")
            else:
                cursor = conn.execute(
                    "DELETE FROM messages WHERE state = 'dead' AND updated_at <= ?",
                    (self._clock() - older_than,),
                )
            return cursor.rowcount

    @contextlib.contextmanager
    def _admin(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection for the synchronous (CLI) methods."""
        conn = connect(self.path, busy_timeout_ms=self._busy_timeout_ms)
        try:
            yield conn
        except sqlite3.Error as exc:
            raise storage_error(exc, "managing dead letters") from None
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
