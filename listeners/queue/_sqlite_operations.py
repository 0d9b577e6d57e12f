"""The SQLite queue's row operations: storing, claiming and finishing a message.

Run by the writer thread inside its transaction (:mod:`._sqlite_writer`), each returning
its result and how many new message rows it stored. The wall clock is read once per
operation (the queue's, which notices its steps), so that one operation stores and
compares one time. Every one keeps the ``head`` invariant (:mod:`._sqlite_heads`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from ._sqlite_clock import ClockSteps
from ._sqlite_duplicates import find_duplicate
from ._sqlite_heads import ACTIVE, key_busy, promote
from ._sqlite_rows import ENVELOPE_COLUMNS, envelope_from_row, error_text
from .base import Envelope, Job, PutResult

__all__ = ["CLAIM_SQL", "claim", "depth", "finish", "insert"]

# Run per message; tests check its plan uses the partial index of due heads.
CLAIM_SQL = (
    f"SELECT seq, attempts, {ENVELOPE_COLUMNS} FROM messages"
    " WHERE state = 'pending' AND head = 1 AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at, seq LIMIT ?"
)


def insert(
    conn: sqlite3.Connection,
    envelope: Envelope,
    state: str,
    error: dict[str, Any] | None,
    *,
    now: float,
    cutoff: float,
) -> tuple[PutResult, int]:
    """Store ``envelope`` as ``state`` (``pending`` or ``dead``), unless it duplicates a
    message stored after ``cutoff`` (the duplicate window's start)."""
    sender_id = envelope.sender_id or envelope.sender
    match = find_duplicate(conn, envelope, sender_id, cutoff)
    if match.seq is not None:
        return PutResult(seq=match.seq, duplicate=True), 0
    head = state == "pending" and not key_busy(conn, envelope.ordering_key)
    cursor = conn.execute(
        f"INSERT INTO messages ({ENVELOPE_COLUMNS}, sender_id, digest, state, head,"
        " attempts, next_attempt_at, last_error, stored_at, updated_at) VALUES (?, ?, ?,"
        " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (
            envelope.payload,
            envelope.sender,
            envelope.listener,
            envelope.received_at,
            envelope.ordering_key,
            envelope.control_id,
            envelope.message_type,
            envelope.input_type,
            envelope.route,
            envelope.message_id,
            envelope.correlation_id,
            sender_id,
            match.digest,
            state,
            int(head),
            now,
            None if error is None else error_text(error),
            now,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    return PutResult(seq=cursor.lastrowid, control_id_reused=match.reused), 1


def claim(
    conn: sqlite3.Connection, limit: int, *, now: float, clock_steps: ClockSteps
) -> list[Job]:
    """Up to ``limit`` heads due at ``now``, made ``inflight`` (attempts + 1)."""
    with clock_steps.following(conn, now):  # a clock stepped back delays no retry
        rows = conn.execute(CLAIM_SQL, (now, limit)).fetchall()
        conn.executemany(
            "UPDATE messages SET state = 'inflight', attempts = attempts + 1, updated_at = ?"
            " WHERE seq = ?",
            [(now, row[0]) for row in rows],
        )
    return [
        Job(seq=row[0], envelope=envelope_from_row(row[2:]), attempts=row[1] + 1) for row in rows
    ]


def finish(
    conn: sqlite3.Connection,
    seq: int,
    state: str,
    error: dict[str, Any] | None,
    *,
    clock: Callable[[], float],
) -> bool:
    """``seq`` delivered (``done``) or given up (``dead``); its key's next message becomes
    the head. False when ``seq`` is unknown or finished already (the clock not read)."""
    row = conn.execute(
        f"SELECT head, ordering_key, digest FROM messages WHERE seq = ? AND {ACTIVE}",
        (seq,),
    ).fetchone()
    if row is None:
        return False
    head, key, digest = row
    now = clock()
    if state == "dead":
        conn.execute(
            "UPDATE messages SET state = 'dead', head = 0, last_error = ?, updated_at = ?"
            " WHERE seq = ?",
            (error_text(error or {}), now, seq),
        )
    elif digest is None:  # stored by an older version: it can match nothing
        conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
    else:
        conn.execute(
            "UPDATE messages SET state = 'done', head = 0, payload = NULL,"
            " last_error = NULL, updated_at = ? WHERE seq = ?",
            (now, seq),
        )
    if head:
        promote(conn, key)
    return True


def depth(conn: sqlite3.Connection) -> int:
    """Messages not yet delivered nor dead (the counter the triggers keep)."""
    return int(conn.execute("SELECT value FROM counters WHERE name = 'active'").fetchone()[0])
