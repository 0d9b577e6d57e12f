"""Session 22 review of the durable queue (``listeners.queue.sqlite``) and ingestion."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from listeners.errors import QueueError
from listeners.queue._sqlite_writer import Operation
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.queue.test_sqlite_queue import Clock, envelope, run
from tests.listeners.service.support import adt, make_config, running, wait_until


def _claims_refused(on: bool) -> Operation[None]:
    """A writer operation: from now on (``on``) the queue's connection refuses to mark a
    message in flight — a claim — with SQLite's "database or disk is full", as when the
    disk fills up on a quiet night (received messages and outcomes are refused too then,
    but none come); ``on=False``: room again."""

    def op(conn: sqlite3.Connection) -> tuple[None, int]:
        if on:
            conn.execute(
                "CREATE TEMP TRIGGER refuse_claims BEFORE UPDATE OF state ON messages"
                " WHEN new.state = 'inflight'"
                " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        else:
            conn.execute("DROP TRIGGER temp.refuse_claims")
        return None, 0

    return op


# -- a claim the queue refuses is a problem of the queue (/ready) ---------------------------
def test_claims_refused_by_the_queue_are_its_problem_until_a_claim_commits(
    tmp_path: Path,
) -> None:
    """The delivery workers only log a failed claim and try again a second later: before,
    ``store_problem()`` (the queue's part of ``/ready``) knew only of refused received
    messages, so a due message that could not be claimed — a full disk or a read-only
    volume on a quiet night — left ``/ready`` green while nothing was delivered."""
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        stored = await queue.put(envelope(1))
        await queue._submit(_claims_refused(True))
        for _ in range(2):
            with pytest.raises(QueueError, match="disk is full"):
                await queue.claim(5)
        clock.advance(7)
        problem = await queue.store_problem()
        assert problem is not None
        assert problem.startswith("claiming stored messages for delivery failing for 7s")
        assert "2 claims failed" in problem and "disk is full" in problem
        assert "storing received messages" not in problem  # nothing was refused
        # Room again: the next claim commits, and the problem is over.
        await queue._submit(_claims_refused(False))
        assert await queue.store_problem() is not None  # until a claim commits
        assert [job.seq for job in await queue.claim(5)] == [stored.seq]
        assert await queue.store_problem() is None

    run(tmp_path, body, clock=clock)


def test_ready_is_red_while_stored_messages_cannot_be_claimed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The running service: a message stored and due, its claims refused (disk full), no
    message coming in. /ready says why nothing is delivered; once there is room again the
    message is delivered and /ready is green."""
    caplog.set_level(logging.DEBUG, logger="passerelle.delivery")
    with running(make_config(tmp_path)) as service:
        store = service.service.queue
        assert isinstance(store, SqliteQueue)
        payload = adt("S22-CLAIM-1")
        waiting = Envelope(
            payload=payload,
            sender="mllp/APP^FAC",
            listener="mllp",
            received_at=time.time(),
            ordering_key="mllp/APP^FAC|message:S22-CLAIM-1",
            control_id="S22-CLAIM-1",
            message_type="ADT^A01",
            route="default",
        )

        def stored_then_read_only(conn: sqlite3.Connection) -> tuple[None, int]:
            # In one commit: the workers never get to claim it before the disk is "full".
            store._put(conn, waiting, "pending", None)
            _claims_refused(True)(conn)
            return None, 1

        service.call(store._submit(stored_then_read_only))

        def ready() -> httpx.Response:
            return httpx.get(f"{service.http_url}/ready", timeout=15)

        wait_until(lambda: ready().status_code == 503, timeout=20, what="/ready red")
        check = ready().json()["checks"]["queue"]
        assert "claiming stored messages for delivery failing" in check, check
        assert "S22-CLAIM-1" not in check and "APP^FAC" not in check
        # Counted as the queue's refused writes; one ERROR for the run, not one a second.
        wait_until(
            lambda: (
                service.metrics().value("passerelle_queue_write_failures_total", operation="claim")
                >= 3
            ),
            timeout=20,
            what="three refused claims counted",
        )
        service.call(store._submit(_claims_refused(False)))
        service.drained(timeout=30)
        assert ready().status_code == 200, ready().text
    errors = [
        r
        for r in caplog.records
        if r.getMessage().startswith("claiming work from the queue failed")
    ]
    assert [r.levelno for r in errors][:1] == [logging.ERROR], errors
    assert all(r.levelno == logging.DEBUG for r in errors[1:]), errors
    assert any(r.getMessage() == "claiming work from the queue works again" for r in caplog.records)


# -- a full volume is named as such ----------------------------------------------------------
_START_UNDER_A_FILE_SIZE_LIMIT = """
import asyncio, resource, signal, sys
from pathlib import Path
from listeners.queue.sqlite import SqliteQueue

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

async def start():
    async with SqliteQueue(Path(sys.argv[1])) as queue:
        await queue.depth()

try:
    asyncio.run(start())
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    print("started")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_queue_that_cannot_grow_its_shm_file_names_the_want_of_room(tmp_path: Path) -> None:
    """On a full volume the service did not start with only "disk I/O error" to show: the
    WAL index (-shm, 32 KiB, created at each start) could not be allocated, which SQLite
    reports as an I/O error, and the operator went looking for a failing disk. Played
    with a file size limit of 16 KiB (no root, no mount): a real SQLite error on a real
    file."""
    path = tmp_path / "queue.db"

    async def body(queue: SqliteQueue) -> None:
        for n in range(5):
            await queue.put(envelope(n))

    run(tmp_path, body)
    assert path.stat().st_size > 16384 and not path.with_name("queue.db-shm").exists()
    child = subprocess.run(
        [sys.executable, "-c", _START_UNDER_A_FILE_SIZE_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    line = child.stdout.strip()
    assert line.startswith("QueueError queue storage failed while opening"), child
    assert "disk I/O error (SQLITE_IOERR_SHMSIZE" in line
    assert "is the volume full?" in line


# -- the wall clock stepped back -------------------------------------------------------------
def test_a_clock_stepped_back_does_not_hold_a_retry_for_the_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Due times are wall-clock times: NTP stepping back a clock that ran an hour ahead
    (or a virtual machine resumed) held every waiting retry — and each patient's later
    messages behind it — an hour more, in a running service (a restart caps them)."""
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(1, key="patient-1"))
        later = await queue.put(envelope(2, key="patient-1"))
        (job,) = await queue.claim(5)
        await queue.retry_later(job.seq, 2.0, {"kind": "TransientDeliveryError"})
        clock.advance(-3600.0)  # the clock is stepped back an hour
        assert await queue.claim(5) == []  # still 2 s to wait, not an hour and 2 s
        clock.advance(2.5)
        assert [job.seq for job in await queue.claim(5)] == [first.seq]
        await queue.complete(first.seq)
        assert [job.seq for job in await queue.claim(5)] == [later.seq]

    with caplog.at_level("WARNING", logger="passerelle.queue"):
        run(tmp_path, body, clock=clock)
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "clock_stepped_back"]
    # The retry and the message behind it: stored before the step, it was due "at its
    # storage time", an hour ahead of the new clock, and would have waited that hour too.
    assert (record.count, record.seconds) == (2, 3600.0)  # type: ignore[attr-defined]


def test_a_clock_that_moves_on_changes_no_due_time(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        await queue.put(envelope(1))
        (job,) = await queue.claim(5)
        await queue.retry_later(job.seq, 30.0, {"kind": "TransientDeliveryError"})
        for _ in range(3):
            clock.advance(9.0)
            assert await queue.claim(5) == []
        clock.advance(0.5)  # within the tolerance: not a step
        clock.now -= 0.5
        assert await queue.claim(5) == []
        clock.advance(3.0)
        assert len(await queue.claim(5)) == 1

    run(tmp_path, body, clock=clock)


# -- one service per queue file, whatever it is called ----------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="the service lock is POSIX")
def test_a_second_service_reaching_the_queue_by_a_symlink_is_refused(tmp_path: Path) -> None:
    """The lock sat beside the name given: a service configured with a symlink to another
    one's queue file took a lock of its own and ran on the same file — at its start it put
    the first one's messages in flight back to pending, and both delivered them."""
    real = tmp_path / "data" / "queue.db"
    link = tmp_path / "elsewhere" / "queue.db"
    link.parent.mkdir()

    async def main() -> None:
        async with SqliteQueue(real) as first:
            await first.put(envelope(1))
            (job,) = await first.claim(1)
            link.symlink_to(real)
            second = SqliteQueue(link)
            with pytest.raises(QueueError, match="already used by a running Passerelle"):
                await second.start()
            assert first.state(job.seq) == "inflight"  # left alone
        # Once the first is stopped, the symlink's service starts (and recovers the row).
        async with SqliteQueue(link) as second:
            assert [j.seq for j in await second.claim(1)] == [job.seq]

    asyncio.run(main())


def test_a_clock_step_noticed_by_a_claim_that_failed_is_noticed_again(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        retried = await queue.put(envelope(1, key="patient-1"))
        (job,) = await queue.claim(5)
        await queue.retry_later(job.seq, 2.0, {"kind": "TransientDeliveryError"})
        clock.advance(-3600.0)
        other = await queue.put(envelope(2, key="patient-2"))  # due now
        await queue._submit(_claims_refused(True))
        with pytest.raises(QueueError):  # the shift it made is rolled back with it
            await queue.claim(5)
        await queue._submit(_claims_refused(False))
        assert [job.seq for job in await queue.claim(5)] == [other.seq]
        clock.advance(2.5)
        assert [job.seq for job in await queue.claim(5)] == [retried.seq]

    run(tmp_path, body, clock=clock)
