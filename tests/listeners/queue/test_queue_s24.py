"""Session 24 review of the SQLite queue: a transaction SQLite rolls back by itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from listeners.errors import QueueError
from listeners.queue._sqlite_backlog import probe_write
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

from .test_sqlite_queue import Clock, envelope


def _large(n: int) -> Envelope:
    base = envelope(n, key=f"large-{n}")
    return dataclasses.replace(base, payload=base.payload + b"PID|1||X||" + b"X" * 200_000)


def _limit_pages(extra: int) -> Callable[[sqlite3.Connection], tuple[None, int]]:
    """A writer operation: the file may grow by ``extra`` pages only (a full volume)."""

    def limit(conn: sqlite3.Connection) -> tuple[None, int]:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + extra}")
        return None, 0

    return limit


@contextlib.asynccontextmanager
async def _one_batch(queue: SqliteQueue) -> AsyncIterator[None]:
    """What the block submits forms one batch, in order: the writer is held meanwhile."""
    held, release = threading.Event(), threading.Event()

    def stuck(conn: sqlite3.Connection) -> tuple[None, int]:
        held.set()
        release.wait(30)
        return None, 0

    blocker = asyncio.ensure_future(queue._submit(stuck))
    await asyncio.to_thread(held.wait, 10)
    try:
        yield
        await asyncio.sleep(0.1)  # every coroutine of the block has submitted its operation
    finally:
        release.set()
        await blocker


#: What a full disk refuses: a large message (SQLite undoes its statement only) and the
#: ``/ready`` probe of a refusal (SQLite undoes the whole transaction: the CI failure).
REFUSED: dict[str, Callable[[SqliteQueue], Awaitable[Any]]] = {
    "large message": lambda queue: queue.put(_large(3)),
    "ready probe": lambda queue: queue._submit(probe_write),
}


@pytest.mark.parametrize("refused", list(REFUSED), ids=list(REFUSED))
def test_a_write_the_full_disk_refuses_takes_none_of_its_batch_with_it(
    tmp_path: Path, refused: str
) -> None:
    """On "database or disk is full" SQLite may roll the whole transaction back itself.
    Before, the writer then failed every operation of the batch with "no such savepoint:
    op": the other senders' messages of that commit got no ACK, a delivery claim failed
    (``/ready`` red once room was back: CI of stop 22). Now only the refused write fails;
    the others run again in a new transaction and commit."""

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "queue.db", commit_interval_ms=0.0)
        await queue.start()
        try:
            await queue.put(envelope(1, key="warm-up"))
            await queue._submit(_limit_pages(2))
            async with _one_batch(queue):
                before = asyncio.ensure_future(queue.put(envelope(2, key="before")))
                failing = asyncio.ensure_future(REFUSED[refused](queue))
                after = asyncio.ensure_future(queue.put(envelope(4, key="after")))
                claim = asyncio.ensure_future(queue.claim(10))
            assert not (await before).duplicate
            with pytest.raises(QueueError, match="database or disk is full"):
                await failing
            assert not (await after).duplicate
            claimed = await claim
            assert {job.envelope.ordering_key for job in claimed} == {"warm-up", "before", "after"}
            assert await queue.depth() == 3
        finally:
            await queue.close()

    asyncio.run(main())


def test_a_clock_step_noticed_in_a_transaction_sqlite_undid_is_noticed_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A claim runs again when SQLite undid its transaction: the clock step back it had
    noticed (and the due times it had moved, undone with it) must be noticed again, or a
    waiting retry is held for the whole step."""
    clock = Clock()

    async def main() -> None:
        queue = SqliteQueue(tmp_path / "queue.db", commit_interval_ms=0.0, clock=clock)
        await queue.start()
        try:
            stored = await queue.put(envelope(1))
            (job,) = await queue.claim(5)
            await queue.retry_later(job.seq, 2.0, {"kind": "TransientDeliveryError"})
            await queue._submit(_limit_pages(2))
            clock.advance(-3600.0)  # the clock is stepped back an hour
            async with _one_batch(queue):
                claim = asyncio.ensure_future(queue.claim(5))
                probe = asyncio.ensure_future(queue._submit(probe_write))
            assert await claim == []
            with pytest.raises(QueueError, match="database or disk is full"):
                await probe
            clock.advance(2.5)
            assert [job.seq for job in await queue.claim(5)] == [stored.seq]
        finally:
            await queue.close()

    with caplog.at_level("WARNING", logger="passerelle.queue"):
        asyncio.run(main())
    steps = [r for r in caplog.records if getattr(r, "event", "") == "clock_stepped_back"]
    assert len(steps) == 2  # noticed, undone by SQLite, noticed again
