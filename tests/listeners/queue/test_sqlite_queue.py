"""The SQLite queue in one process: durability, group commit, duplicates, ordering,
retries, recovery, dead letters, schema and errors (``listeners.queue.sqlite``)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from listeners.errors import QueueError
from listeners.queue import _sqlite_schema
from listeners.queue._sqlite_heads import KEY_BUSY_SQL, PROMOTE_SQL
from listeners.queue.base import Envelope, Job
from listeners.queue.sqlite import (
    _CLAIM_SQL,
    _DUPLICATE_SQL,
    _REUSED_SQL,
    SqliteQueue,
)

T = TypeVar("T")
WINDOW_HOURS = 1.0


class Clock:
    """An injectable clock that only moves when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def envelope(
    n: int = 0,
    *,
    key: str = "patient-1",
    sender: str = "APP^FAC",
    control_id: str | None = "auto",
) -> Envelope:
    return Envelope(
        payload=f"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|{n}|P|2.5\r".encode(),
        sender=sender,
        listener="mllp",
        received_at=1_600_000_000.0 + n,
        ordering_key=key,
        control_id=f"C{n}" if control_id == "auto" else control_id,
        message_type="ADT^A01",
    )


def run(
    tmp_path: Path,
    body: Callable[[SqliteQueue], Awaitable[T]],
    *,
    clock: Clock | None = None,
    interval_ms: float = 0.0,
    name: str = "queue.db",
) -> T:
    """Run ``body`` against a started queue in ``tmp_path``, then close it."""

    async def main() -> T:
        queue = SqliteQueue(
            tmp_path / name,
            commit_interval_ms=interval_ms,
            duplicate_window_hours=WINDOW_HOURS,
            clock=clock or Clock(),
        )
        async with queue:
            return await body(queue)

    return asyncio.run(main())


def rows(path: Path, where: str = "1") -> list[dict[str, Any]]:
    """The ``messages`` rows as another connection (another reader) sees them."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM messages WHERE {where} ORDER BY seq")]
    finally:
        conn.close()


def seqs(jobs: list[Job]) -> list[int]:
    return [job.seq for job in jobs]


# -- durability and group commit --------------------------------------------------------
def test_a_returned_put_is_committed_for_every_other_connection(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"

    async def body(queue: SqliteQueue) -> None:
        for n in range(3):
            result = await queue.put(envelope(n))
            # The queue is still open: another connection sees the committed row.
            (row,) = rows(path, f"seq = {result.seq}")
            assert row["payload"] == envelope(n).payload
            assert row["state"] == "pending"
            assert row["control_id"] == f"C{n}"

    run(tmp_path, body)


def test_the_file_is_in_wal_mode_with_full_synchronous_commits(tmp_path: Path) -> None:
    conn = _sqlite_schema.connect(tmp_path / "queue.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> tuple[list[int], int, int]:
        results = await asyncio.gather(*(queue.put(envelope(n)) for n in range(200)))
        return [r.seq for r in results], queue.commits, queue.rows_committed

    got, commits, rows_committed = run(tmp_path, body, interval_ms=20.0)
    assert len(set(got)) == 200
    assert rows_committed == 200
    assert commits <= 10, f"200 concurrent puts took {commits} commits"
    assert len(rows(tmp_path / "queue.db")) == 200


def test_concurrent_puts_share_commits_even_without_an_interval(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> int:
        await asyncio.gather(*(queue.put(envelope(n)) for n in range(200)))
        return queue.commits

    assert run(tmp_path, body, interval_ms=0.0) < 100


def test_a_lone_producer_does_not_wait_out_the_interval(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> float:
        started = time.perf_counter()
        for n in range(5):
            await queue.put(envelope(n))
        return time.perf_counter() - started

    # Five sequential puts with a 400 ms interval would take 2 s if each waited it out.
    assert run(tmp_path, body, interval_ms=400.0) < 1.5


# -- duplicates -------------------------------------------------------------------------
def test_a_retransmission_within_the_window_is_not_stored_again(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(1))
        assert not first.duplicate
        clock.advance(WINDOW_HOURS * 3600 - 1)
        again = await queue.put(envelope(1, key="other key"))
        assert again.duplicate and again.seq == first.seq
        # Same control id from another sender: a different message.
        other = await queue.put(envelope(1, sender="OTHER^FAC"))
        assert not other.duplicate and other.seq != first.seq
        assert await queue.depth() == 2

    run(tmp_path, body, clock=clock)
    assert len(rows(tmp_path / "queue.db")) == 2


def test_a_retransmission_after_the_window_is_new(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        first = await queue.put(envelope(1))
        clock.advance(WINDOW_HOURS * 3600 + 1)
        again = await queue.put(envelope(1))
        assert not again.duplicate and again.seq > first.seq

    run(tmp_path, body, clock=clock)


def test_messages_without_control_id_are_never_duplicates(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> list[bool]:
        results = [await queue.put(envelope(1, control_id=None)) for _ in range(3)]
        return [r.duplicate for r in results]

    assert run(tmp_path, body) == [False, False, False]
    assert len(rows(tmp_path / "queue.db")) == 3


def test_duplicates_in_one_batch_are_stored_once(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        results = await asyncio.gather(*(queue.put(envelope(7)) for _ in range(20)))
        assert len({r.seq for r in results}) == 1
        assert sum(not r.duplicate for r in results) == 1

    run(tmp_path, body, interval_ms=20.0)


def test_delivered_and_dead_messages_still_detect_duplicates(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a = await queue.put(envelope(1, key="a"))
        b = await queue.put(envelope(2, key="b"))
        assert seqs(await queue.claim(10)) == [a.seq, b.seq]
        await queue.complete(a.seq)
        await queue.dead_letter(b.seq, {"kind": "rejected"})
        assert await queue.put(envelope(1)) == type(a)(seq=a.seq, duplicate=True)
        assert await queue.put(envelope(2)) == type(b)(seq=b.seq, duplicate=True)

    run(tmp_path, body)
    (done,) = rows(tmp_path / "queue.db", "state = 'done'")
    assert done["payload"] is None  # a delivered message keeps no content


def test_delivered_rows_are_pruned_after_the_window(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        kept = await queue.put(envelope(1, key="a"))
        no_id = await queue.put(envelope(2, key="b", control_id=None))
        await queue.claim(10)
        await queue.complete(kept.seq)
        await queue.complete(no_id.seq)
        # Without a control id too, a delivered row is kept (no payload) for the window:
        # it recognises a broker's redelivery (schema version 4).
        done = rows(tmp_path / "queue.db")
        assert [(r["seq"], r["payload"]) for r in done] == [(kept.seq, None), (no_id.seq, None)]
        assert await queue.prune() == 0
        clock.advance(WINDOW_HOURS * 3600 + 1)
        assert await queue.prune() == 2
        assert not (await queue.put(envelope(1))).duplicate

    run(tmp_path, body, clock=clock)


# -- claiming and ordering --------------------------------------------------------------
def test_claim_takes_the_oldest_message_of_each_key_only(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a1 = await queue.put(envelope(1, key="a"))
        a2 = await queue.put(envelope(2, key="a"))
        b1 = await queue.put(envelope(3, key="b"))
        jobs = await queue.claim(10)
        assert seqs(jobs) == [a1.seq, b1.seq]
        assert [job.attempts for job in jobs] == [1, 1]
        assert jobs[0].envelope == envelope(1, key="a")
        assert await queue.claim(10) == []  # a2 waits behind a1 in flight
        await queue.complete(a1.seq)
        assert seqs(await queue.claim(10)) == [a2.seq]

    run(tmp_path, body)


def test_claimed_rows_are_inflight_on_disk(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        await queue.put(envelope(1))
        assert len(await queue.claim(1)) == 1
        (row,) = rows(tmp_path / "queue.db")
        assert (row["state"], row["attempts"]) == ("inflight", 1)

    run(tmp_path, body)


def test_claim_respects_its_limit_and_serves_the_earliest_due_first(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        puts = [await queue.put(envelope(n, key=f"k{n}")) for n in range(5)]
        assert await queue.claim(0) == []
        first = await queue.claim(2)
        assert seqs(first) == [puts[0].seq, puts[1].seq]
        clock.advance(1)
        await queue.retry_later(first[0].seq, 0, {"kind": "timeout"})
        # k0 is due again (now), but k2..k4 have been due for longer.
        assert seqs(await queue.claim(10)) == [p.seq for p in puts[2:]] + [puts[0].seq]

    run(tmp_path, body, clock=clock)


def test_a_message_waiting_for_its_retry_blocks_its_key_only(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        a1 = await queue.put(envelope(1, key="a"))
        await queue.put(envelope(2, key="a"))
        (job,) = await queue.claim(10)
        await queue.retry_later(job.seq, 30.0, {"kind": "timeout", "status": 503})
        b1 = await queue.put(envelope(3, key="b"))
        assert seqs(await queue.claim(10)) == [b1.seq]  # not a2: an A08 never overtakes
        clock.advance(29.0)
        assert await queue.claim(10) == []
        clock.advance(1.0)
        (again,) = await queue.claim(10)
        assert (again.seq, again.attempts) == (a1.seq, 2)
        assert await queue.depth() == 3

    run(tmp_path, body, clock=clock)
    (row,) = rows(tmp_path / "queue.db", "ordering_key = 'a' AND attempts = 2")
    assert '"status": 503' in row["last_error"]


def test_a_job_given_back_unsent_has_its_attempt_taken_back(tmp_path: Path) -> None:
    clock = Clock()
    paused = {"kind": "DestinationPaused", "destination": "default"}

    async def body(queue: SqliteQueue) -> None:
        a1 = await queue.put(envelope(1, key="a"))
        a2 = await queue.put(envelope(2, key="a"))
        (job,) = await queue.claim(10)
        assert (job.seq, job.attempts) == (a1.seq, 1)
        await queue.give_back(job.seq, 30.0, paused)
        # Pending again, its claim uncounted, on disk: in the same commit as the state.
        (row,) = rows(tmp_path / "queue.db", f"seq = {a1.seq}")
        assert (row["state"], row["attempts"], row["head"]) == ("pending", 0, 1)
        assert '"kind": "DestinationPaused"' in row["last_error"]
        # Still its key's head, due in 30 s: a2 never overtakes it; other keys go.
        b1 = await queue.put(envelope(3, key="b"))
        assert seqs(await queue.claim(10)) == [b1.seq]
        clock.advance(29.0)
        assert await queue.claim(10) == []
        clock.advance(1.0)
        (again,) = await queue.claim(10)
        assert (again.seq, again.attempts) == (a1.seq, 1)
        await queue.complete(again.seq)
        assert [(j.seq, j.attempts) for j in await queue.claim(10)] == [(a2.seq, 1)]

    run(tmp_path, body, clock=clock)


def test_give_back_never_makes_attempts_negative_nor_counts_twice(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        a = await queue.put(envelope(1, key="a"))
        b = await queue.put(envelope(2, key="b"))
        c = await queue.put(envelope(3, key="c"))
        # A real failed attempt stays counted; giving the next claim back keeps it, and
        # keeps its last error when given none.
        (job,) = await queue.claim(1)
        await queue.retry_later(job.seq, 0, {"kind": "timeout", "status": 503})
        jobs = await queue.claim(10)
        assert sorted((j.seq, j.attempts) for j in jobs) == [(a.seq, 2), (b.seq, 1), (c.seq, 1)]
        await queue.give_back(a.seq)
        (row,) = rows(tmp_path / "queue.db", f"seq = {a.seq}")
        assert (row["state"], row["attempts"]) == ("pending", 1)
        assert '"status": 503' in row["last_error"]
        # Twice: the second finds it pending (nothing claimed to take back): a no-op.
        await queue.give_back(b.seq)
        await queue.give_back(b.seq, 60.0, {"kind": "DestinationPaused"})
        # An in-flight row counting no attempt (an older file, a manual fix) stays at 0.
        conn = sqlite3.connect(tmp_path / "queue.db")
        with conn:
            conn.execute("UPDATE messages SET attempts = 0 WHERE seq = ?", (c.seq,))
        conn.close()
        await queue.give_back(c.seq)
        # Unknown and finished messages: no-ops too.
        await queue.give_back(12345)
        by_seq = {row["seq"]: row for row in rows(tmp_path / "queue.db")}
        assert [(by_seq[s]["state"], by_seq[s]["attempts"]) for s in (a.seq, b.seq, c.seq)] == [
            ("pending", 1),
            ("pending", 0),
            ("pending", 0),
        ]
        # The no-op did not delay b nor replace its (absent) last error.
        assert (by_seq[b.seq]["next_attempt_at"], by_seq[b.seq]["last_error"]) == (clock.now, None)
        again = await queue.claim(10)
        assert sorted((j.seq, j.attempts) for j in again) == [(a.seq, 2), (b.seq, 1), (c.seq, 1)]
        await queue.complete(a.seq)
        await queue.give_back(a.seq)
        assert queue.state(a.seq) == "done"

    run(tmp_path, body, clock=clock)
    (row,) = rows(tmp_path / "queue.db", "state = 'done'")
    assert row["attempts"] == 2


def test_a_job_given_back_is_not_counted_again_after_a_restart(tmp_path: Path) -> None:
    async def give_back(queue: SqliteQueue) -> int:
        await queue.put(envelope(1, key="a"))
        for _ in range(3):  # claimed and given back unsent, three times
            (job,) = await queue.claim(1)
            await queue.give_back(job.seq, 0.0, {"kind": "DestinationPaused"})
        return job.seq

    seq = run(tmp_path, give_back)

    async def restart(queue: SqliteQueue) -> list[Job]:
        return await queue.claim(10)

    (job,) = run(tmp_path, restart)
    assert (job.seq, job.attempts) == (seq, 1)


def test_retries_scheduled_too_far_ahead_are_brought_forward(tmp_path: Path) -> None:
    # An earlier version honoured a server's Retry-After whole (99999999 s: three years),
    # holding the patient's later messages back for as long, restarts included.
    clock = Clock()

    async def body(queue: SqliteQueue) -> None:
        far = await queue.put(envelope(1, key="a"))
        near = await queue.put(envelope(2, key="b"))
        jobs = await queue.claim(10)
        delays = {far.seq: 99_999_999.0, near.seq: 10.0}
        for job in jobs:
            await queue.retry_later(job.seq, delays[job.seq], {"kind": "503"})
        assert await queue.bring_forward(300.0) == 1
        clock.advance(10.0)
        assert seqs(await queue.claim(10)) == [near.seq]
        clock.advance(290.0)
        assert seqs(await queue.claim(10)) == [far.seq]

    run(tmp_path, body, clock=clock)


def test_a_dead_letter_does_not_block_its_key(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a1 = await queue.put(envelope(1, key="a"))
        a2 = await queue.put(envelope(2, key="a"))
        (job,) = await queue.claim(10)
        await queue.dead_letter(job.seq, {"kind": "rejected", "status": 422})
        assert seqs(await queue.claim(10)) == [a2.seq]
        assert await queue.depth() == 1
        assert [d.id for d in queue.list_dead_letters()] == [a1.seq]

    run(tmp_path, body)


def test_keys_proceed_concurrently(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        firsts = [await queue.put(envelope(n, key=f"k{n % 50}")) for n in range(150)]
        jobs = await queue.claim(1000)
        assert seqs(jobs) == [r.seq for r in firsts[:50]]
        assert len({job.envelope.ordering_key for job in jobs}) == 50

    run(tmp_path, body)


def test_concurrent_workers_never_hold_two_messages_of_a_key(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        order: dict[str, list[int]] = {}
        for n in range(200):
            result = await queue.put(envelope(n, key=f"k{n % 20}"))
            order.setdefault(f"k{n % 20}", []).append(result.seq)
        inflight: set[str] = set()
        delivered: dict[str, list[int]] = {}

        async def worker() -> None:
            while True:
                jobs = await queue.claim(3)
                if not jobs:
                    if await queue.depth() == 0:
                        return
                    await asyncio.sleep(0.001)
                    continue
                for job in jobs:
                    key = job.envelope.ordering_key
                    assert key not in inflight
                    inflight.add(key)
                await asyncio.sleep(0)
                for job in jobs:
                    inflight.discard(job.envelope.ordering_key)
                    delivered.setdefault(job.envelope.ordering_key, []).append(job.seq)
                    await queue.complete(job.seq)

        await asyncio.gather(*(worker() for _ in range(8)))
        assert delivered == order

    run(tmp_path, body)


def test_complete_of_an_unknown_or_finished_message_is_a_no_op(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a = await queue.put(envelope(1))
        await queue.claim(1)
        await queue.complete(a.seq)
        await queue.complete(a.seq)
        await queue.complete(12345)
        await queue.retry_later(a.seq, 1, {})
        await queue.dead_letter(a.seq, {})
        assert await queue.depth() == 0
        assert queue.list_dead_letters() == []

    run(tmp_path, body)


def test_depth_counts_pending_and_inflight(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        assert await queue.depth() == 0
        for n in range(4):
            await queue.put(envelope(n, key=f"k{n}"))
        await queue.put(envelope(4, key="k4", control_id=None))
        await queue.put(envelope(5, key="k4", control_id=None))
        jobs = await queue.claim(5)
        assert await queue.depth() == 6
        await queue.complete(jobs[0].seq)
        await queue.dead_letter(jobs[1].seq, {})
        await queue.retry_later(jobs[2].seq, 60, {})
        await queue.complete(jobs[4].seq)  # no control id: deleted at once
        assert await queue.depth() == 3
        assert queue.retry_dead_letter(jobs[1].seq)  # from "another process"
        assert await queue.depth() == 4

    run(tmp_path, body)

    # The count is kept by triggers and recounted at start (repairing any drift).
    conn = sqlite3.connect(tmp_path / "queue.db")
    assert conn.execute("SELECT value FROM counters").fetchone()[0] == 4
    conn.execute("UPDATE counters SET value = 1000")
    conn.commit()
    conn.close()
    assert run(tmp_path, lambda queue: queue.depth()) == 4


# -- crash recovery ---------------------------------------------------------------------
def test_messages_left_in_flight_are_claimable_again_after_a_restart(tmp_path: Path) -> None:
    async def crash(queue: SqliteQueue) -> list[int]:
        await queue.put(envelope(1, key="a"))
        await queue.put(envelope(2, key="a"))
        await queue.put(envelope(3, key="b"))
        return seqs(await queue.claim(10))  # then "crash": never completed

    claimed = run(tmp_path, crash)
    assert len(rows(tmp_path / "queue.db", "state = 'inflight'")) == 2

    async def restart(queue: SqliteQueue) -> list[Job]:
        return await queue.claim(10)

    again = run(tmp_path, restart)
    assert seqs(again) == claimed
    assert [job.attempts for job in again] == [2, 2]


# -- dead letters -----------------------------------------------------------------------
def test_dead_letters_list_show_and_purge(tmp_path: Path) -> None:
    clock = Clock()

    async def body(queue: SqliteQueue) -> list[int]:
        dead = []
        for n in range(3):
            await queue.put(envelope(n, key=f"k{n}"))
        for job in await queue.claim(10):
            await queue.dead_letter(job.seq, {"kind": "rejected", "n": job.seq})
            dead.append(job.seq)
            clock.advance(100)
        return dead

    dead = run(tmp_path, body, clock=clock)
    queue = SqliteQueue(tmp_path / "queue.db", clock=clock)
    listed = queue.list_dead_letters()
    assert [d.id for d in listed] == dead
    assert all(d.envelope.payload == b"" for d in listed)
    assert listed[0].envelope.control_id == "C0"
    assert listed[0].error == {"kind": "rejected", "n": dead[0]}
    assert listed[0].attempts == 1
    assert listed[0].failed_at == 1_700_000_000.0
    assert [d.id for d in queue.list_dead_letters(limit=1, offset=1)] == [dead[1]]
    assert queue.count_dead_letters() == 3
    shown = queue.get_dead_letter(dead[1])
    assert shown is not None and shown.envelope == envelope(1, key="k1")
    assert queue.get_dead_letter(999) is None
    # Failed at t0, t0+100, t0+200; now t0+300.
    assert queue.purge_dead_letters(older_than=150) == 2
    assert [d.id for d in queue.list_dead_letters()] == [dead[2]]
    assert queue.purge_dead_letters() == 1
    assert queue.count_dead_letters() == 0


def test_a_retried_dead_letter_is_new_work_at_the_tail_of_its_key(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        a1 = await queue.put(envelope(1, key="a"))
        a2 = await queue.put(envelope(2, key="a"))
        (job,) = await queue.claim(10)
        await queue.dead_letter(job.seq, {"kind": "rejected"})
        assert seqs(await queue.claim(10)) == [a2.seq]  # a2 in flight
        a3 = await queue.put(envelope(3, key="a"))
        assert queue.retry_dead_letter(a1.seq) is True
        assert queue.retry_dead_letter(a1.seq) is False
        assert queue.list_dead_letters() == []
        # Neither beside a2 (in flight) nor in front of a3 (queued before the retry).
        assert await queue.claim(10) == []
        await queue.complete(a2.seq)
        assert seqs(await queue.claim(10)) == [a3.seq]
        await queue.complete(a3.seq)
        (retried,) = await queue.claim(10)
        assert retried.seq > a3.seq
        assert retried.envelope == envelope(1, key="a")
        assert retried.attempts == 1
        # It is still the same message for duplicate detection.
        assert await queue.put(envelope(1)) == type(a1)(seq=retried.seq, duplicate=True)

    run(tmp_path, body)
    (row,) = rows(tmp_path / "queue.db", "requeued_from IS NOT NULL")
    assert row["requeued_from"] == 1


def test_retry_all_dead_letters_keeps_their_order(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        for n in range(4):
            await queue.put(envelope(n, key="a"))
        for _ in range(4):
            (job,) = await queue.claim(10)
            await queue.dead_letter(job.seq, {"kind": "rejected"})
        assert queue.retry_all_dead_letters() == 4
        assert queue.retry_all_dead_letters() == 0
        got = []
        while jobs := await queue.claim(10):
            got.append(jobs[0].envelope.control_id)
            await queue.complete(jobs[0].seq)
        assert got == ["C0", "C1", "C2", "C3"]

    run(tmp_path, body)


def test_put_dead_letter_stores_without_delivering(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        result = await queue.put_dead_letter(envelope(1), {"kind": "unsupported"})
        assert await queue.claim(10) == []
        assert await queue.depth() == 0
        (letter,) = queue.list_dead_letters()
        assert (letter.id, letter.error, letter.attempts) == (
            result.seq,
            {"kind": "unsupported"},
            0,
        )
        assert (await queue.put(envelope(1))).duplicate

    run(tmp_path, body)


# -- schema -----------------------------------------------------------------------------
def test_the_schema_is_versioned_and_migrations_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.db"
    run(tmp_path, lambda queue: queue.put(envelope(1)))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == _sqlite_schema.APPLICATION_ID
    conn.close()

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")

    migrations = (*_sqlite_schema.MIGRATIONS, add_column)
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", len(migrations))
    # Only the service migrates: the dead-letter commands refuse the older file.
    with pytest.raises(QueueError, match="older than"):
        SqliteQueue(path).list_dead_letters()
    run(tmp_path, lambda queue: queue.depth())
    assert [d.id for d in SqliteQueue(path).list_dead_letters()] == []
    (row,) = rows(path)
    assert row["priority"] == 0 and row["control_id"] == "C1"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (_CLAIM_SQL, (1e12, 16), "messages_ready"),
        (KEY_BUSY_SQL, ("k",), "messages_key_active"),
        (PROMOTE_SQL, ("k",), "messages_key_active"),
        (_DUPLICATE_SQL, ("s", "c", b"d", 0.0), "messages_duplicate"),
        (_REUSED_SQL, ("s", "c", 0.0), "messages_duplicate"),
    ],
)
def test_per_message_queries_use_their_index(
    tmp_path: Path, sql: str, params: tuple[Any, ...], index: str
) -> None:
    conn = _sqlite_schema.connect(tmp_path / "queue.db")
    plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    conn.close()
    assert index in plan, plan
    assert "SCAN" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # ORDER BY served by the index, no sort


# -- errors -----------------------------------------------------------------------------
def _start(path: Path) -> None:
    async def main() -> None:
        queue = SqliteQueue(path)
        await queue.start()
        await queue.close()

    asyncio.run(main())


def test_an_unusable_path_raises_queue_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for path in (blocker / "queue.db", tmp_path):
        with pytest.raises(QueueError):
            _start(path)
        with pytest.raises(QueueError):
            SqliteQueue(path).list_dead_letters()


def test_a_file_that_is_not_a_database_raises_queue_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is not an SQLite file\n" * 500)
    with pytest.raises(QueueError, match="queue storage failed"):
        _start(path)
    with pytest.raises(QueueError):
        SqliteQueue(path).list_dead_letters()


def test_a_corrupted_queue_raises_queue_error_not_sqlite_errors(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"

    async def fill(queue: SqliteQueue) -> None:
        await asyncio.gather(*(queue.put(envelope(n, key=f"k{n}")) for n in range(300)))

    run(tmp_path, fill)
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[2 * 4096 :] = b"\xa5" * (len(data) - 2 * 4096)  # keep the header and schema page
    path.write_bytes(bytes(data))

    async def use() -> None:
        queue = SqliteQueue(path)
        await queue.start()
        try:
            await queue.claim(100)
            await queue.put(envelope(1000, key="k1"))
        finally:
            await queue.close()

    with pytest.raises(QueueError):
        asyncio.run(use())


def test_a_foreign_or_newer_database_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE patients (id)")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="not a Passerelle queue"):
        _start(foreign)

    newer = tmp_path / "newer.db"
    _start(newer)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {_sqlite_schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(QueueError, match="newer"):
        _start(newer)


def test_one_service_per_queue_file(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        second = SqliteQueue(tmp_path / "queue.db")
        with pytest.raises(QueueError, match="already used"):
            await second.start()
        # The dead-letter commands are not services: they may run alongside.
        assert second.list_dead_letters() == []

    run(tmp_path, body)
    _start(tmp_path / "queue.db")  # released on close


def test_storage_failures_surface_as_queue_error(tmp_path: Path) -> None:
    async def body(queue: SqliteQueue) -> None:
        await queue.put(envelope(1))
        conn = sqlite3.connect(tmp_path / "queue.db")
        conn.execute("DROP TABLE messages")
        conn.commit()
        conn.close()
        with pytest.raises(QueueError) as caught:
            await queue.put(envelope(2))
        assert not isinstance(caught.value, sqlite3.Error)
        with pytest.raises(QueueError):
            await queue.claim(1)

    run(tmp_path, body)


def test_a_queue_can_be_closed_unstarted_and_started_again(tmp_path: Path) -> None:
    async def main() -> list[int]:
        queue = SqliteQueue(tmp_path / "queue.db")
        await queue.close()
        got = []
        for n in range(2):
            await queue.start()
            with pytest.raises(QueueError):
                await queue.start()
            with pytest.raises(QueueError, match="already used"):
                await SqliteQueue(tmp_path / "queue.db").start()  # still locked
            got.append((await queue.put(envelope(n))).seq)
            await queue.close()
        return got

    assert asyncio.run(main()) == [1, 2]


def test_using_a_closed_or_unstarted_queue_raises_queue_error(tmp_path: Path) -> None:
    async def main() -> None:
        queue = SqliteQueue(tmp_path / "queue.db")
        with pytest.raises(QueueError):
            await queue.put(envelope(1))
        await queue.start()
        await queue.close()
        with pytest.raises(QueueError):
            await queue.put(envelope(1))

    asyncio.run(main())


def test_a_version_1_queue_file_is_migrated_and_keeps_its_messages(tmp_path: Path) -> None:
    """A queue written before message/correlation ids existed opens, keeps its pending
    message, and stores ids for new ones."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {_sqlite_schema.APPLICATION_ID}")
    _sqlite_schema.MIGRATIONS[0](conn)  # the version-1 schema
    conn.execute(
        "INSERT INTO messages (payload, sender, listener, received_at, ordering_key,"
        " control_id, message_type, input_type, route, state, head, attempts,"
        " next_attempt_at, stored_at, updated_at)"
        " VALUES (x'4d5348', 's', 'mllp', 1, 'k', 'OLD-1', 'ADT^A01', 'hl7v2', 'default',"
        " 'pending', 1, 0, 0, 1, 1)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    async def scenario() -> None:
        queue = SqliteQueue(path)
        await queue.start()
        try:
            [job] = await queue.claim(10)
            assert job.envelope.control_id == "OLD-1" and job.envelope.message_id is None
            await queue.complete(job.seq)
            new = Envelope(
                payload=b"MSH",
                sender="s",
                listener="amqp",
                received_at=2.0,
                ordering_key="k2",
                control_id="NEW-1",
                message_id="m-1",
                correlation_id="c-1",
            )
            await queue.put(new)
            [stored] = await queue.claim(10)
            assert (stored.envelope.message_id, stored.envelope.correlation_id) == ("m-1", "c-1")
        finally:
            await queue.close()

    asyncio.run(scenario())
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == _sqlite_schema.SCHEMA_VERSION
