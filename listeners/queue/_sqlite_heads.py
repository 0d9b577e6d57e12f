"""The per-key ``head`` invariant of the SQLite queue, shared by every writer.

Each ordering key's oldest ``pending``/``inflight`` row carries ``head = 1``. The service's
operations (:mod:`.sqlite`, on the writer thread) and the dead-letter administration
(:mod:`._sqlite_dead_letters`, on its own connections) keep it inside one
``BEGIN IMMEDIATE`` transaction (:func:`transaction`) with the queries here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["ACTIVE", "KEY_BUSY_SQL", "PROMOTE_SQL", "key_busy", "promote", "transaction"]

ACTIVE = "state IN ('pending', 'inflight')"  # must match messages_key_active verbatim
# Run per message; tests check their plans use the partial index messages_key_active.
KEY_BUSY_SQL = f"SELECT 1 FROM messages WHERE ordering_key = ? AND {ACTIVE} LIMIT 1"
PROMOTE_SQL = (
    "UPDATE messages SET head = 1 WHERE seq = (SELECT seq FROM messages"
    f" WHERE ordering_key = ? AND {ACTIVE} ORDER BY seq LIMIT 1)"
)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def key_busy(conn: sqlite3.Connection, key: str) -> bool:
    """Whether ``key`` has an active message: a new one then waits behind it (no head)."""
    return conn.execute(KEY_BUSY_SQL, (key,)).fetchone() is not None


def promote(conn: sqlite3.Connection, key: str) -> None:
    """Make the oldest active message of ``key`` (if any) its head."""
    conn.execute(PROMOTE_SQL, (key,))
