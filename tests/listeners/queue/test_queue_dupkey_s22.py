"""Session 22: duplicate detection of messages without a control id (schema version 4,
``listeners.queue._sqlite_duplicates``).

An AMQP message with MSH-10 empty, stored (mode "commit") by a consumer killed before its
ack, is delivered again by the broker to the next consumer: it used to be stored and
delivered a second time. It is now matched on (sender, AMQP message id, bytes), or on
(sender, bytes) when it has no message id and the broker flags it ``redelivered``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from listeners.queue import _sqlite_schema
from listeners.queue._sqlite_duplicates import UNCONTROLLED_SQL
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.queue.test_sqlite_queue import WINDOW_HOURS, Clock, rows, run

MSH = b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240301101500||ADT^A01^ADT_A01||P|2.5.1"
BODY = MSH + b"\rPID|1||A-1^^^HOSP^MR||ALPHA^ANN||19800101|F\r"
OTHER = BODY.replace(b"ALPHA", b"OMEGA")


def envelope(
    payload: bytes = BODY,
    *,
    message_id: str | None = None,
    redelivered: bool = False,
    sender_id: str = "amqp/APP|FAC",
    key: str = "k",
) -> Envelope:
    return Envelope(
        payload=payload,
        sender="amqp/APP^FAC",
        listener="amqp",
        received_at=1.0,
        ordering_key=key,
        control_id=None,
        message_type="ADT^A01",
        message_id=message_id,
        sender_id=sender_id,
        redelivered=redelivered,
    )


async def _stored_and_delivered(queue: SqliteQueue, first: Envelope) -> int:
    """``first`` stored, claimed and delivered (its ack to the broker then lost)."""
    stored = await queue.put(first)
    assert not stored.duplicate
    (job,) = await queue.claim(10)
    await queue.complete(job.seq)
    return stored.seq


@pytest.mark.parametrize(
    ("first", "again"),
    [
        # No message id: the broker's redelivered flag is the evidence.
        (envelope(), envelope(redelivered=True)),
        # A message id: the publisher's own id, flagged redelivered or published again.
        (envelope(message_id="m-1"), envelope(message_id="m-1", redelivered=True)),
        (envelope(message_id="m-1"), envelope(message_id="m-1")),
    ],
    ids=["redelivered-no-message-id", "redelivered-message-id", "republished-message-id"],
)
def test_a_redelivered_copy_of_a_delivered_message_is_a_duplicate(
    tmp_path: Path, first: Envelope, again: Envelope
) -> None:
    async def body(queue: SqliteQueue) -> tuple[int, Any]:
        seq = await _stored_and_delivered(queue, first)
        return seq, await queue.put(again)

    seq, result = run(tmp_path, body)
    assert result.duplicate and result.seq == seq
    # Kept for the window to serve as the key, but without the patient's message.
    (row,) = rows(tmp_path / "queue.db")
    assert row["state"] == "done" and row["payload"] is None and row["digest"] is not None


def test_a_redelivered_copy_of_a_message_still_queued_is_a_duplicate(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> tuple[int, Any]:
        first = await queue.put(envelope())
        return first.seq, await queue.put(envelope(redelivered=True))

    seq, result = run(tmp_path, body)
    assert result.duplicate and result.seq == seq
    assert [r["state"] for r in rows(tmp_path / "queue.db")] == ["pending"]


@pytest.mark.parametrize(
    ("first", "again"),
    [
        # Two identical messages sent on purpose without any id: nothing says it is a copy.
        (envelope(), envelope()),
        # Another message id: another message, whatever the flag.
        (envelope(message_id="m-1"), envelope(message_id="m-2", redelivered=True)),
        (envelope(message_id="m-1"), envelope(message_id="m-2")),
        # A redelivery keeps its message id: one with none is not the copy of one with one.
        (envelope(message_id="m-1"), envelope(redelivered=True)),
        (envelope(), envelope(message_id="m-1", redelivered=True)),
        # Same message id, other content (a producer reusing ids).
        (envelope(message_id="m-1"), envelope(OTHER, message_id="m-1", redelivered=True)),
        (envelope(), envelope(OTHER, redelivered=True)),
        # Bytes, not the HL7 digest: MSH-7 alone may tell two genuine messages apart.
        (
            envelope(),
            envelope(BODY.replace(b"20240301101500", b"20240301101501"), redelivered=True),
        ),
        # Another sender.
        (envelope(), envelope(sender_id="amqp/APP|OTHER", redelivered=True)),
    ],
    ids=[
        "identical-not-redelivered",
        "other-message-id-redelivered",
        "other-message-id",
        "message-id-lost",
        "message-id-gained",
        "same-message-id-other-content",
        "other-content-redelivered",
        "other-msh7-redelivered",
        "other-sender",
    ],
)
def test_a_message_that_is_not_a_copy_is_stored(
    tmp_path: Path, first: Envelope, again: Envelope
) -> None:
    async def body(queue: SqliteQueue) -> tuple[int, Any]:
        seq = await _stored_and_delivered(queue, first)
        return seq, await queue.put(again)

    seq, result = run(tmp_path, body)
    assert not result.duplicate and result.seq != seq and not result.control_id_reused
    assert [r["state"] for r in rows(tmp_path / "queue.db")] == ["done", "pending"]


def test_rows_past_the_window_do_not_match_and_are_pruned(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> tuple[Any, Any]:
        await _stored_and_delivered(queue, envelope(message_id="m-1"))
        await _stored_and_delivered(queue, envelope(OTHER))
        clock.advance(WINDOW_HOURS * 3600 + 1)
        late = (
            await queue.put(envelope(message_id="m-1", redelivered=True)),
            await queue.put(envelope(OTHER, redelivered=True)),
        )
        await queue.prune()
        return late

    late = run(tmp_path, body, clock=clock)
    assert not any(result.duplicate for result in late)
    # The two delivered rows are gone once past the window; the two late copies remain.
    assert [r["state"] for r in rows(tmp_path / "queue.db")] == ["pending", "pending"]


def test_the_lookup_uses_its_index(tmp_path: Path) -> None:
    conn = _sqlite_schema.connect(tmp_path / "queue.db")
    try:
        plan = " / ".join(
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {UNCONTROLLED_SQL}", ("s", b"d", None, 0.0)
            )
        )
    finally:
        conn.close()
    assert "messages_uncontrolled" in plan, plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


def _version_3_file(path: Path) -> None:
    """A queue file as version 3 left it: one pending message without control id (no
    digest: version 3 computed none for it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {_sqlite_schema.APPLICATION_ID}")
    for migration in _sqlite_schema.MIGRATIONS[:3]:
        migration(conn)
    now = 1_700_000_000.0
    conn.execute(
        "INSERT INTO messages (payload, sender, listener, received_at, ordering_key,"
        " message_type, input_type, route, message_id, sender_id, state, head, attempts,"
        " next_attempt_at, stored_at, updated_at) VALUES (?, 'amqp/APP^FAC', 'amqp', ?,"
        " 'k', 'ADT^A01', 'hl7v2', 'default', 'm-1', 'amqp/APP|FAC', 'pending', 1, 0, 0, ?, ?)",
        (BODY, now, now, now),
    )
    conn.execute("PRAGMA user_version = 3")
    conn.close()


def test_a_version_3_queue_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    _version_3_file(path)

    async def body(queue: SqliteQueue) -> tuple[Any, Any]:
        (job,) = await queue.claim(10)  # the pending message survives the migration
        assert job.envelope.payload == BODY and job.envelope.control_id is None
        await queue.complete(job.seq)
        # Without a digest it can match nothing: deleted on completion, as before.
        assert rows(path) == []
        again = await queue.put(envelope(message_id="m-1", redelivered=True))
        # New rows are keyed at once.
        return again, await queue.put(envelope(message_id="m-1", redelivered=True))

    again, copy = run(tmp_path, body, clock=Clock(1_700_000_100.0))
    assert not again.duplicate and copy.duplicate and copy.seq == again.seq
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "messages_uncontrolled" in indexes
