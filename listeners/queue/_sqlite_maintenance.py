"""The SQLite queue's housekeeping, run by its writer thread between the batches it
commits: delivered rows pruned once the duplicate window has passed, dead letters deleted
once past their retention, and the WAL emptied.

Apart from the message path (store, claim, settle: :mod:`.sqlite`) because it answers to
other promises: what the files keep of patients once they no longer need it, and in how
long. Each step is a short transaction (a chunk), so the messages waiting for the writer
are committed in between; the checkpoint never waits for a reader.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from ._sqlite_dead_letters import expire
from ._sqlite_heads import transaction

__all__ = ["PRUNE_BATCH", "Maintenance"]

#: Delivered rows deleted per transaction by the writer's maintenance.
PRUNE_BATCH = 5000


class Maintenance:
    """Prunes, expires and checkpoints one queue file, on the writer's connection."""

    def __init__(
        self,
        *,
        cutoff: Callable[[float], float],
        window: float,
        retention: float | None,
        busy_timeout_ms: int,
        on_expired: Callable[[int], None] | None,
        logger: logging.Logger,
    ) -> None:
        #: The wall-clock time before which a row is that old (``ForwardSteps.cutoff``).
        self._cutoff = cutoff
        self._window = window
        self._retention = retention
        self._busy_timeout_ms = busy_timeout_ms
        self._on_expired = on_expired
        self._log = logger
        #: Dead letters deleted by the retention since the queue was created.
        self.expired = 0

    def step(self, conn: sqlite3.Connection) -> bool:
        """Prune one batch of expired delivered rows and delete one chunk of dead letters
        past their retention; whether more is left to do at once. When nothing is, the
        WAL is emptied."""
        with transaction(conn):
            pruned = self.prune(conn, PRUNE_BATCH)
        expired, more = 0, False
        if self._retention is not None:
            with transaction(conn):
                expired, more = expire(conn, self._cutoff(self._retention))
            if expired:
                self._count_expired(expired)
        if more or pruned >= PRUNE_BATCH:
            return True
        self.checkpoint(conn)
        return False

    def prune(self, conn: sqlite3.Connection, limit: int | None) -> int:
        """Delete delivered rows stored before the duplicate window (up to ``limit``;
        None: all), inside the caller's transaction; returns how many."""
        cutoff = self._cutoff(self._window)
        if limit is None:
            return conn.execute(
                "DELETE FROM messages WHERE state = 'done' AND stored_at < ?", (cutoff,)
            ).rowcount
        return conn.execute(
            "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages"
            " WHERE state = 'done' AND stored_at < ? LIMIT ?)",
            (cutoff, limit),
        ).rowcount

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the file and empty it. Until then a delivered or deleted
        message stays readable: its old pages in the file (the zeroed ones are still in
        the WAL) and in WAL frames not yet overwritten — for days on a quiet feed, and in
        every copy of the files. Never waits: busy (a reader), it is tried next time."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def _count_expired(self, count: int) -> None:
        self.expired += count
        # Counts and the setting only: which messages they were is patient data.
        self._log.info(
            "dead letters older than queue.dead_letter_retention deleted",
            extra={
                "count": count,
                "retention_days": round((self._retention or 0.0) / 86400, 3),
                "event": "dead_letters_expired",
            },
        )
        if self._on_expired is not None:
            try:
                self._on_expired(count)
            except Exception:  # a metric must not stop the writer's maintenance
                self._log.warning("counting expired dead letters failed", exc_info=True)
