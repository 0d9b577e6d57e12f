"""Patient data in the SQLite queue does not outlive its use: dead letters expire after
``queue.dead_letter_retention`` (deleted by the running service, in chunks that leave
the writer free for messages), purges go in chunks too, and what is deleted is
overwritten in the file, not left readable in free pages (GDPR)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from listeners.metrics import Metrics
from listeners.queue import _sqlite_dead_letters
from listeners.queue import sqlite as sqlite_module
from listeners.queue._sqlite_schema import connect
from listeners.queue.base import DEFAULT_DEAD_LETTER_RETENTION, Envelope
from listeners.queue.sqlite import SqliteQueue

from .test_sqlite_queue import Clock, envelope

DAY = 86400.0
#: A patient's name in each stored message, looked for in the file's bytes.
PATIENT = "QUILLEBEUF^ANNE-"


def _envelope(n: int, *, size: int = 100, control_id: str | None = "auto") -> Envelope:
    """test_sqlite_queue's envelope ``n``, its message naming a patient, padded to ``size``."""
    payload = f"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|{n}|P|2.5\rPID|1||{n}^^^X||{PATIENT}{n:05d}|"
    return dataclasses.replace(
        envelope(n, key=f"patient-{n}", control_id=control_id),
        payload=(payload + "Z" * max(0, size - len(payload))).encode(),
    )


def _store_dead(path: Path, clock: Clock, failed_at: list[float], size: int = 100) -> list[int]:
    """Dead letters failed at those times (the clock moved to each); returns their ids."""

    async def main() -> list[int]:
        ids = []
        async with SqliteQueue(path, clock=clock, dead_letter_retention=None) as queue:
            for n, when in enumerate(failed_at):
                clock.now = when
                stored = await queue.put_dead_letter(_envelope(n, size=size), {"kind": "x"})
                ids.append(stored.seq)
        return ids

    return asyncio.run(main())


def _dead_ids(path: Path) -> list[int]:
    return [letter.id for letter in SqliteQueue(path).list_dead_letters(limit=10_000)]


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- retention by the running service ----------------------------------------------------------
def test_the_running_service_deletes_dead_letters_past_their_retention(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    t0 = 1_700_000_000.0
    clock = Clock(t0)
    old, recent = _store_dead(path, clock, [t0, t0 + 20 * DAY])
    metrics = Metrics()
    clock.now = t0 + 31 * DAY  # the first failed 31 days ago, the second 11 days ago

    async def main() -> None:
        queue = SqliteQueue(
            path,
            clock=clock,
            dead_letter_retention=30 * DAY,
            on_expired=metrics.dead_letters_expired.inc,
        )
        async with queue:
            # The writer's maintenance runs at start, then every minute.
            await asyncio.to_thread(_wait_for, lambda: queue.dead_letters_expired == 1)
            assert _dead_ids(path) == [recent]
            # Messages still go in meanwhile.
            assert not (await queue.put(_envelope(7))).duplicate

    with caplog.at_level(logging.INFO, logger="passerelle.queue"):
        asyncio.run(main())
    assert _dead_ids(path) == [recent] and old != recent
    assert metrics.registry.get_sample_value("passerelle_dead_letters_expired_total") == 1.0
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "dead_letters_expired"]
    assert (record.count, record.retention_days) == (1, 30.0)  # type: ignore[attr-defined]
    # No patient data, no sender value, no control id in the log line.
    logged = record.getMessage() + repr(record.__dict__)
    assert PATIENT not in logged and "C0" not in logged and "APP^FAC" not in logged


def test_dead_letters_are_kept_when_the_retention_is_off(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    clock = Clock()
    ids = _store_dead(path, clock, [clock.now])
    clock.advance(10_000 * DAY)

    async def main() -> int:
        queue = SqliteQueue(path, clock=clock, dead_letter_retention=None)
        async with queue:
            await queue.depth()
            conn = connect(path)
            try:
                assert queue._maintain(conn) > 0  # nothing more to do
            finally:
                conn.close()
            return queue.dead_letters_expired

    assert asyncio.run(main()) == 0
    assert _dead_ids(path) == ids


def test_the_default_retention_is_thirty_days(tmp_path: Path) -> None:
    assert DEFAULT_DEAD_LETTER_RETENTION == 30 * DAY
    path = tmp_path / "queue.db"
    t0 = 1_700_000_000.0
    clock = Clock(t0)
    _, kept = _store_dead(path, clock, [t0, t0 + DAY])
    clock.now = t0 + 30 * DAY + 1

    async def main() -> None:
        queue = SqliteQueue(path, clock=clock)  # as the service builds it without a setting
        async with queue:
            await asyncio.to_thread(_wait_for, lambda: queue.dead_letters_expired == 1)

    asyncio.run(main())
    assert _dead_ids(path) == [kept]


def test_expiry_goes_in_chunks_and_leaves_the_writer_to_messages_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One maintenance step deletes at most a chunk (by count and by bytes), in its own
    transaction, and asks to be run again at once: the writer takes the messages waiting
    in between, never waiting behind one long DELETE of thousands of messages."""
    path = tmp_path / "queue.db"
    clock = Clock()
    ids = _store_dead(path, clock, [clock.now] * 7, size=3000)
    clock.advance(2 * DAY)
    monkeypatch.setattr(_sqlite_dead_letters, "DELETE_CHUNK", 3)
    queue = SqliteQueue(path, clock=clock, dead_letter_retention=DAY)
    conn = connect(path)
    try:
        assert queue._maintain(conn) == 0.0  # 3 deleted, more to do
        assert _dead_ids(path) == ids[3:]
        monkeypatch.setattr(_sqlite_dead_letters, "CHUNK_BYTES", 5000)
        assert queue._maintain(conn) == 0.0  # 2 messages of 3000 bytes reach 5000
        assert _dead_ids(path) == ids[5:]
        assert queue._maintain(conn) == 0.0
        assert queue._maintain(conn) > 0.0  # none left: the next one in a minute
        assert _dead_ids(path) == []
        assert queue.dead_letters_expired == 7
    finally:
        conn.close()


# -- purge by hand -----------------------------------------------------------------------------
def _count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The BEGINs of the dead-letter commands' connections, from now on."""
    transactions: list[str] = []

    def tracing_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(
            lambda sql: transactions.append(sql) if sql.startswith("BEGIN") else None
        )
        return conn

    monkeypatch.setattr(_sqlite_dead_letters, "connect", tracing_connect)
    monkeypatch.setattr(_sqlite_dead_letters, "PAUSE", 0.0)
    return transactions


def test_purge_goes_in_chunks_and_keeps_what_is_recent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge of thousands of dead letters was one DELETE holding the write lock: the
    service's messages waited behind it (3 s for 200 MB of dead letters), past its busy
    timeout (10 s) they were refused."""
    path = tmp_path / "queue.db"
    t0 = 1_700_000_000.0
    clock = Clock(t0)
    ids = _store_dead(path, clock, [t0 + n * 10 for n in range(7)])
    monkeypatch.setattr(_sqlite_dead_letters, "DELETE_CHUNK", 2)
    transactions = _count_transactions(monkeypatch)
    clock.now = t0 + 100
    queue = SqliteQueue(path, clock=clock)
    assert queue.purge_dead_letters(older_than=100 - 45) == 5  # failed at t0 … t0 + 40
    assert len(transactions) == 3  # 2 + 2 + 1: each chunk its own transaction
    assert _dead_ids(path) == ids[5:]
    assert queue.purge_dead_letters() == 2
    assert _dead_ids(path) == []


def test_retry_all_goes_in_chunks_of_bounded_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry --all copied up to 500 messages per transaction (5 GB of 10 MiB messages):
    the service's puts waited 4.6 s behind 400 MB of them."""
    path = tmp_path / "queue.db"
    clock = Clock()
    _store_dead(path, clock, [clock.now] * 5, size=3000)
    monkeypatch.setattr(_sqlite_dead_letters, "CHUNK_BYTES", 5000)
    transactions = _count_transactions(monkeypatch)
    assert SqliteQueue(path).retry_all_dead_letters() == 5
    assert len(transactions) == 3  # 2 + 2 + 1 messages of 3000 bytes
    assert _dead_ids(path) == []


# -- nothing left readable in the file ---------------------------------------------------------
@pytest.fixture
def sqlite_without_secure_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite as built without SQLITE_SECURE_DELETE (its upstream default; Debian's build
    turns it on): connections start with ``secure_delete`` off."""
    real = sqlite3.connect

    def connect_insecure(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_insecure)


def _patients_in_files(directory: Path) -> set[str]:
    found = set()
    for file in directory.iterdir():
        data = file.read_bytes()
        for n in range(10):
            if f"{PATIENT}{n:05d}".encode() in data:
                found.add(f"{file.name}:{n}")
    return found


@pytest.mark.usefixtures("sqlite_without_secure_delete")
def test_delivered_and_purged_messages_are_not_left_in_the_file(tmp_path: Path) -> None:
    """A delivered message's payload (set NULL at once, or its row deleted) and a purged
    dead letter were left in free pages until reused: readable with ``strings`` in the
    file and in its backups."""
    path = tmp_path / "queue.db"

    async def main() -> None:
        async with SqliteQueue(path, dead_letter_retention=None) as queue:
            for n in range(4):
                await queue.put(_envelope(n, size=6000, control_id=None if n == 3 else "auto"))
            jobs = {job.envelope.ordering_key: job.seq for job in await queue.claim(10)}
            await queue.complete(jobs["patient-0"])  # kept without payload (control id)
            await queue.complete(jobs["patient-3"])  # deleted (no control id)
            await queue.dead_letter(jobs["patient-1"], {"kind": "x"})
            await queue.dead_letter(jobs["patient-2"], {"kind": "x"})

    asyncio.run(main())
    assert SqliteQueue(path).purge_dead_letters(older_than=None) == 2
    conn = connect(path)  # checkpoint what the purge wrote, as the next start does
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert _patients_in_files(tmp_path) == set()


@pytest.mark.usefixtures("sqlite_without_secure_delete")
def test_every_queue_connection_overwrites_what_it_deletes(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    for conn in (connect(path), connect(path, migrate=False)):
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        conn.close()


def test_a_quiet_service_leaves_no_delivered_message_in_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once everything is delivered, the running service's files hold no message: the
    old pages in the queue file (their zeroed versions waited in the WAL) and the WAL's
    old frames kept delivered messages until enough new traffic overwrote them — on a
    quiet night, until the next morning, and in every backup copy meanwhile."""
    monkeypatch.setattr(sqlite_module, "_MAINTENANCE_INTERVAL", 0.1)
    path = tmp_path / "queue.db"

    def patients() -> int:
        return sum(
            file.read_bytes().count(PATIENT.encode())
            for file in tmp_path.iterdir()
            if file.name.startswith("queue.db")
        )

    async def main() -> None:
        async with SqliteQueue(path, dead_letter_retention=None) as queue:
            for n in range(300):
                await queue.put(_envelope(n, size=3000, control_id=None if n % 2 else "auto"))
            while jobs := await queue.claim(100):
                for job in jobs:
                    await queue.complete(job.seq)
            assert await queue.depth() == 0
            # Both at once: each maintenance step writes (then empties) the WAL again, so
            # a reading between the two conditions proved nothing either way (flaky).
            wal = tmp_path / "queue.db-wal"
            await asyncio.to_thread(_wait_for, lambda: patients() == 0 and wal.stat().st_size == 0)

    asyncio.run(main())
