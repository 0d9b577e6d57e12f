"""Duplicate detection of the SQLite queue keys on content: only a true retransmission is
dropped (``listeners.queue.digest``, ``SqliteQueue.put``, schema version 3).

A sender that reuses an MSH-10 for another message (a counter reset by a restart, a
per-day sequence) once had that message acknowledged and silently dropped.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from listeners.queue import _sqlite_schema
from listeners.queue.base import Envelope
from listeners.queue.digest import content_digest
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.queue.test_sqlite_queue import WINDOW_HOURS, Clock, rows, run

MSH = b"MSH|^~\\&|APP|FAC^1.2.3^ISO|RCV|RFAC|20240301101500||ADT^A01^ADT_A01|CTL-1|P|2.5.1"
PID_A = b"PID|1||A-1^^^HOSP^MR||ALPHA^ANN||19800101|F"
PID_B = b"PID|1||B-2^^^HOSP^MR||BETA^BOB||19700101|M"


def message(*segments: bytes, end: bytes = b"\r") -> bytes:
    return end.join((MSH, b"EVN|A01|20240301101500", *segments)) + end


def envelope(
    payload: bytes,
    *,
    control_id: str | None = "CTL-1",
    sender: str = "mllp/APP^FAC",
    sender_id: str | None = "mllp/APP|FAC^1.2.3^ISO",
    key: str = "k",
) -> Envelope:
    return Envelope(
        payload=payload,
        sender=sender,
        listener="mllp",
        received_at=1.0,
        ordering_key=key,
        control_id=control_id,
        message_type="ADT^A01",
        sender_id=sender_id,
    )


# -- the digest -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "resent",
    [
        message(PID_A),
        message(PID_A, end=b"\r\n"),  # segment separators: CR, LF, CRLF alike
        message(PID_A, end=b"\n"),
        message(PID_A) + b"\r\n\r",  # trailing blank lines
        b"\xef\xbb\xbf" + message(PID_A),  # a BOM
        message(PID_A + b"   \t"),  # trailing blanks of a segment
        message(PID_A).replace(b"|20240301101500||", b"|20240301101731+0100||"),  # MSH-7
    ],
)
def test_a_retransmission_has_the_same_digest(resent: bytes) -> None:
    assert content_digest(resent) == content_digest(message(PID_A))


@pytest.mark.parametrize(
    "other",
    [
        message(PID_B),  # another patient
        message(PID_A).replace(b"ADT^A01^ADT_A01", b"ADT^A08^ADT_A01"),  # another event
        message(PID_A).replace(b"FAC^1.2.3^ISO", b"FAC^9.9.9^ISO"),  # another facility
        message(PID_A).replace(b"EVN|A01|20240301101500", b"EVN|A01|20240301101501"),
        message(PID_A, b"PV1|1|I"),  # one more segment
        message(PID_A.replace(b"ALPHA", b"ALPHA ")),  # a blank inside a field
    ],
)
def test_another_message_has_another_digest(other: bytes) -> None:
    assert content_digest(other) != content_digest(message(PID_A))


def test_only_hl7v2_is_normalised() -> None:
    document = b"<ClinicalDocument>\r\n</ClinicalDocument>"
    assert content_digest(document, "cda") != content_digest(document.replace(b"\r\n", b"\n"))
    assert content_digest(document, "cda") != content_digest(
        document.replace(b"\r\n", b"\n"), "cda"
    )


# -- the queue --------------------------------------------------------------------------
def test_same_control_id_with_other_content_is_stored_as_a_new_message(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(message(PID_A)))
        assert (first.duplicate, first.control_id_reused) == (False, False)
        other = await queue.put(envelope(message(PID_B)))
        assert not other.duplicate and other.seq != first.seq
        assert other.control_id_reused  # the caller warns
        # Each one's retransmission is still recognised, whatever its line breaks.
        again = await queue.put(envelope(message(PID_A, end=b"\r\n")))
        assert again.duplicate and again.seq == first.seq
        assert await queue.put(envelope(message(PID_B))) == type(first)(other.seq, True)
        assert await queue.depth() == 2

    run(tmp_path, body)
    stored = rows(tmp_path / "queue.db")
    assert [r["payload"] for r in stored] == [message(PID_A), message(PID_B)]
    assert {r["sender_id"] for r in stored} == {"mllp/APP|FAC^1.2.3^ISO"}


def test_delivered_and_dead_messages_keep_their_digest(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a = await queue.put(envelope(message(PID_A), key="a"))
        b = await queue.put(envelope(message(PID_B), control_id="CTL-2", key="b"))
        await queue.claim(10)
        await queue.complete(a.seq)
        await queue.dead_letter(b.seq, {"kind": "rejected"})
        # No payload is left on the delivered row: its digest alone still decides.
        assert (await queue.put(envelope(message(PID_A)))).duplicate
        assert (await queue.put(envelope(message(PID_B), control_id="CTL-2"))).duplicate
        reused = await queue.put(envelope(message(PID_B)))
        assert not reused.duplicate and reused.control_id_reused
        reused_dead = await queue.put(envelope(message(PID_A), control_id="CTL-2"))
        assert not reused_dead.duplicate and reused_dead.control_id_reused

    run(tmp_path, body)
    (done,) = rows(tmp_path / "queue.db", "state = 'done'")
    assert done["payload"] is None and done["digest"] == content_digest(message(PID_A))


def test_the_full_sender_identity_tells_facilities_apart(tmp_path: Path) -> None:
    """Same HD.1 (``sender``), different universal id: two senders, neither a duplicate
    nor a reuse of the other's control id."""

    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(message(PID_A)))
        other = await queue.put(envelope(message(PID_A), sender_id="mllp/APP|FAC^9.9.9^ISO"))
        assert not other.duplicate and not other.control_id_reused
        assert other.seq != first.seq

    run(tmp_path, body)


def test_without_a_sender_id_the_sender_is_the_identity(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(message(PID_A), sender_id=None))
        assert (await queue.put(envelope(message(PID_A), sender_id=None))).duplicate
        other = await queue.put(envelope(message(PID_A), sender="mllp/APP^OTHER", sender_id=None))
        assert not other.duplicate and other.seq != first.seq

    run(tmp_path, body)
    assert [r["sender_id"] for r in rows(tmp_path / "queue.db")] == [
        "mllp/APP^FAC",
        "mllp/APP^OTHER",
    ]


def test_a_reuse_after_the_window_is_not_reported(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        await queue.put(envelope(message(PID_A)))
        clock.advance(WINDOW_HOURS * 3600 + 1)
        later = await queue.put(envelope(message(PID_B)))
        assert not later.duplicate and not later.control_id_reused

    run(tmp_path, body, clock=clock)


def test_different_messages_with_one_control_id_in_one_batch(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        results = await asyncio.gather(
            *(queue.put(envelope(message(pid))) for pid in (PID_A, PID_B, PID_A, PID_B))
        )
        assert len({r.seq for r in results}) == 2
        assert [r.duplicate for r in results] == [False, False, True, True]
        assert [r.control_id_reused for r in results] == [False, True, False, False]

    run(tmp_path, body, interval_ms=20.0)


def test_put_dead_letter_also_keys_on_content(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        await queue.put_dead_letter(envelope(message(PID_A)), {"kind": "unsupported"})
        other = await queue.put_dead_letter(envelope(message(PID_B)), {"kind": "unsupported"})
        assert not other.duplicate and other.control_id_reused
        assert queue.count_dead_letters() == 2

    run(tmp_path, body)


# -- schema version 3 -------------------------------------------------------------------
def _version_2_file(path: Path) -> None:
    """A queue file as version 2 wrote it: one delivered row (no payload, kept for
    duplicate detection) and one pending row."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {_sqlite_schema.APPLICATION_ID}")
    for migration in _sqlite_schema.MIGRATIONS[:2]:
        migration(conn)
    columns = (
        "payload, sender, listener, received_at, ordering_key, control_id, message_type,"
        " input_type, route, state, head, attempts, next_attempt_at, stored_at, updated_at"
    )
    now = 1_700_000_000.0
    conn.execute(
        f"INSERT INTO messages ({columns}) VALUES (NULL, 'mllp/APP^FAC', 'mllp', ?, 'k1',"
        " 'OLD-DONE', 'ADT^A01', 'hl7v2', 'default', 'done', 0, 1, 0, ?, ?)",
        (now, now, now),
    )
    conn.execute(
        f"INSERT INTO messages ({columns}) VALUES (?, 'mllp/APP^FAC', 'mllp', ?, 'k2',"
        " 'OLD-PENDING', 'ADT^A01', 'hl7v2', 'default', 'pending', 1, 0, 0, ?, ?)",
        (message(PID_A), now, now, now),
    )
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def test_a_version_2_queue_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    _version_2_file(path)

    async def body(queue: SqliteQueue) -> None:
        (job,) = await queue.claim(10)  # the pending message survives the migration
        assert job.envelope.control_id == "OLD-PENDING"
        assert job.envelope.payload == message(PID_A)
        # A row from before version 3 has no digest: it matches nothing. A retransmission
        # of it is stored and delivered again (idempotent bundles) rather than risk
        # dropping a different message that reused the control id.
        old = await queue.put(envelope(message(PID_A), control_id="OLD-DONE", sender_id=None))
        assert not old.duplicate and not old.control_id_reused
        # New rows are keyed on content at once.
        assert (
            await queue.put(envelope(message(PID_A), control_id="OLD-DONE", sender_id=None))
        ).duplicate

    run(tmp_path, body, clock=Clock(1_700_000_100.0))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "messages_duplicate" in indexes
    assert "messages_control_id" not in indexes  # replaced, not kept alongside


def test_migration_is_atomic_with_the_version(tmp_path: Path) -> None:
    """Opening the same version-2 file twice migrates it once (columns added once)."""
    path = tmp_path / "queue.db"
    _version_2_file(path)
    for _ in range(2):
        _sqlite_schema.connect(path).close()
    conn = sqlite3.connect(path)
    try:
        names = [row[1] for row in conn.execute("PRAGMA table_info(messages)")]
    finally:
        conn.close()
    assert names.count("digest") == 1 and names.count("sender_id") == 1
