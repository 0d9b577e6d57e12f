"""What ``/metrics`` and ``/ready`` show of the SQLite queue besides its depth: how long
the oldest message not yet delivered has waited, how many dead letters are kept, and
whether received messages are being refused or stored ones cannot be claimed for
delivery (:class:`StoreFailures`).

Read on a short read-only connection of its own, off the writer thread (a scan there
would delay the commits that ACKs wait for). The oldest waiting message is the head of
its ordering key (each key's oldest pending or in-flight row carries ``head = 1``), so
only heads are read: the claimable ones through ``messages_ready``, the in-flight ones
through ``messages_inflight`` — never the delivered rows kept for the duplicate window.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._sqlite_schema import connect_read_only

__all__ = ["Backlog", "StoreFailures", "probe_write", "read_backlog"]

# Forced onto the partial indexes: on its own SQLite walks the table in seq order for
# min(seq), through every delivered row of the duplicate window.
_OLDEST_SQL = (
    "SELECT stored_at FROM messages WHERE seq = (SELECT min(seq) FROM ("
    "SELECT min(seq) AS seq FROM messages INDEXED BY messages_ready"
    " WHERE state = 'pending' AND head = 1"
    " UNION ALL SELECT min(seq) FROM messages INDEXED BY messages_inflight"
    " WHERE state = 'inflight'))"
)
_DEAD_SQL = "SELECT count(*) FROM messages INDEXED BY messages_dead WHERE state = 'dead'"


@dataclass(frozen=True, slots=True)
class Backlog:
    #: When the oldest message not yet delivered (nor dead) was stored (epoch seconds);
    #: None when there is none.
    oldest_stored_at: float | None
    #: Dead letters kept (until retried, purged or expired).
    dead_letters: int


def read_backlog(path: Path, *, busy_timeout_ms: int = 10_000) -> Backlog:
    """The backlog of the queue file ``path`` (raises QueueError when unreadable)."""
    conn = connect_read_only(path, busy_timeout_ms=busy_timeout_ms)
    try:
        oldest = conn.execute(_OLDEST_SQL).fetchone()
        (dead,) = conn.execute(_DEAD_SQL).fetchone()
    finally:
        conn.close()
    return Backlog(
        oldest_stored_at=None if oldest is None else float(oldest[0]), dead_letters=int(dead)
    )


class StoreFailures:
    """Whether the queue refuses a kind of write (a full disk, a read-only volume, an I/O
    error): received messages (the senders get no ACK) or the claims that feed the
    delivery workers (nothing is delivered), so ``/ready`` must say so. Before, it stayed
    green — a read succeeds on a full disk — while every message was refused, or while a
    due message waited unclaimed with only an ERROR line a second to show for it.

    Cleared by the next such write that commits, or by a probe write (:meth:`SqliteQueue.
    store_problem`) that commits: a readiness probe that stayed red until a message came
    would take the service out of its load balancer, and no message would ever come."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        doing: str = "storing received messages",
        counted: str = "refused, no ACK sent",
    ) -> None:
        self._clock = clock
        self._doing = doing
        self._counted = counted
        self.since: float | None = None
        self.count = 0
        self.reason = ""

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = self._clock()
        self.count += 1
        self.reason = str(exc)[:200]

    def stored(self) -> None:
        self.since, self.count, self.reason = None, 0, ""

    def problem(self) -> str | None:
        if self.since is None:
            return None
        seconds = max(0.0, self._clock() - self.since)
        return (
            f"{self._doing} failing for {seconds:.0f}s ({self.count} {self._counted}):"
            f" {self.reason}"
        )


def probe_write(conn: sqlite3.Connection) -> tuple[None, int]:
    """A writer operation that writes 64 KiB and deletes them: it commits only when the
    volume takes a small message again (a no-op UPDATE would fit in pages already
    allocated and say so on a full disk)."""
    conn.execute("INSERT INTO counters VALUES ('store-probe', zeroblob(65536))")
    conn.execute("DELETE FROM counters WHERE name = 'store-probe'")
    return None, 0
