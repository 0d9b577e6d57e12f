#!/usr/bin/env python3
"""Throughput and latency of the SQLite queue (``listeners.queue.sqlite``).

    .venv/bin/python scripts/bench_queue.py [--seconds 3] [--backlog 100000] [--dir DIR]

* ``put``: puts/s and put latency p50/p99 with 1, 16 and 64 concurrent producers (each
  producer awaits its put before the next one, like an MLLP connection awaiting its AA),
  plus rows per commit (group commit at work), at the default 2 ms commit interval and
  without waiting (0 ms).
* ``claim``: cost of ``claim`` / ``complete`` / ``depth`` with a large backlog (100,000
  pending messages, as while the FHIR server is down): on distinct keys, on a few keys,
  and with every key's head waiting for a retry.

The files go to a temporary directory on the same disk as ``--dir`` (default: the system
temporary directory): fsync costs depend on it. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from listeners.queue._sqlite_operations import CLAIM_SQL
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

PAYLOAD = (
    b"MSH|^~\\&|LAB|HOSP|PASSERELLE|HOSP|20240101120000||ORU^R01|CTRL|P|2.5\r"
    + b"OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|12-16|N|||F\r" * 20
)


def envelope(n: int, key: str) -> Envelope:
    return Envelope(
        payload=PAYLOAD,
        sender="LAB^HOSP",
        listener="mllp",
        received_at=time.time(),
        ordering_key=key,
        control_id=f"C{n:09d}",
        message_type="ORU^R01",
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def commit_cost(path: Path, runs: int = 200) -> float:
    """Median seconds of a one-row INSERT + COMMIT with the queue's settings."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (x)")
    samples = []
    for n in range(runs):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - started)
    conn.close()
    return statistics.median(samples)


async def bench_put(path: Path, producers: int, seconds: float, interval_ms: float) -> str:
    queue = SqliteQueue(path, commit_interval_ms=interval_ms)
    await queue.start()
    latencies: list[float] = []
    counter = iter(range(10**12))
    deadline = time.perf_counter() + seconds

    async def producer(index: int) -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            started = time.perf_counter()
            await queue.put(envelope(n, f"patient-{n % 1000}"))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(producer(i) for i in range(producers)))
    elapsed = time.perf_counter() - started
    commits, rows = queue.commits, queue.rows_committed
    await queue.close()
    return (
        f"  {producers:3d} producers, {interval_ms:3.1f} ms: {len(latencies) / elapsed:9,.0f}"
        f" puts/s   p50 {percentile(latencies, 0.5) * 1000:6.2f} ms"
        f"   p99 {percentile(latencies, 0.99) * 1000:6.2f} ms"
        f"   {rows / max(commits, 1):6.1f} rows/commit"
    )


async def fill(queue: SqliteQueue, count: int, keys: int) -> float:
    """Put ``count`` messages over ``keys`` keys with 64 producers; returns puts/s."""
    counter = iter(range(count))

    async def producer() -> None:
        for n in counter:
            await queue.put(envelope(n, f"patient-{n % keys}"))

    started = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(64)))
    return count / (time.perf_counter() - started)


async def timed(label: str, runs: int, make: object) -> str:
    assert callable(make)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - started)
    return (
        f"    {label:44s} mean {statistics.fmean(samples) * 1000:7.3f} ms"
        f"   p99 {percentile(samples, 0.99) * 1000:7.3f} ms"
    )


def statement_cost(path: Path, limit: int = 16, runs: int = 200) -> float:
    """Mean seconds of the claim statements alone (query + marking), rolled back: the
    part of a claim that could grow with the backlog, without the commit's fsync."""
    conn = sqlite3.connect(path, isolation_level=None)
    samples = []
    for _ in range(runs):
        conn.execute("BEGIN IMMEDIATE")
        started = time.perf_counter()
        rows = conn.execute(CLAIM_SQL, (time.time() + 10**6, limit)).fetchall()
        conn.executemany(
            "UPDATE messages SET state = 'inflight', attempts = attempts + 1 WHERE seq = ?",
            [(row[0],) for row in rows],
        )
        samples.append(time.perf_counter() - started)
        conn.execute("ROLLBACK")
    conn.close()
    return statistics.fmean(samples)


async def bench_backlog(path: Path, backlog: int, keys: int, waiting: bool) -> list[str]:
    # No commit-interval wait here: the figures are the storage cost of each call.
    queue = SqliteQueue(path, commit_interval_ms=0.0)
    await queue.start()
    rate = await fill(queue, backlog, keys)
    lines = [
        f"  {backlog:,} pending on {keys:,} keys (filled at {rate:,.0f} puts/s)"
        + (", every head waiting for a retry" if waiting else "")
    ]
    if waiting:
        while jobs := await queue.claim(512):
            await asyncio.gather(*(queue.retry_later(j.seq, 3600, {"kind": "down"}) for j in jobs))
        lines.append(await timed("claim(16) -> nothing due", 200, lambda: queue.claim(16)))
        fresh = iter(range(10**9))

        async def put_and_claim() -> None:
            n = next(fresh)
            await queue.put(envelope(10**8 + n, f"new-{n}"))
            jobs = await queue.claim(16)
            assert len(jobs) == 1
            await queue.complete(jobs[0].seq)

        lines.append(await timed("put + claim(16) + complete (new key)", 200, put_and_claim))
    else:
        lines.append(
            f"    {'claim statements alone (no commit)':44s} mean"
            f" {statement_cost(path) * 1000:7.3f} ms"
        )

        async def claim_complete() -> None:
            jobs = await queue.claim(16)
            assert jobs
            await asyncio.gather(*(queue.complete(j.seq) for j in jobs))

        lines.append(
            await timed("claim(16) + 16 x retry_later(0)", 200, lambda: _claim_release(queue))
        )
        runs = min(200, backlog // 32)
        lines.append(await timed("claim(16) + 16 x complete", runs, claim_complete))
    lines.append(await timed("depth()", 50, queue.depth))
    await queue.close()
    return lines


async def _claim_release(queue: SqliteQueue) -> None:
    jobs = await queue.claim(16)
    assert jobs
    # Give them back (due now) so that the next claim finds a similar backlog.
    await asyncio.gather(*(queue.retry_later(j.seq, 0, {}) for j in jobs))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--skip-backlog", action="store_true", help="put figures only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        print(
            f"baseline: one-row fsync'd commit (WAL, synchronous=FULL) "
            f"{commit_cost(base / 'baseline.db') * 1000:.3f} ms"
        )
        print("put (each producer awaits its put; payload", len(PAYLOAD), "bytes)")
        runs = 0
        for interval in (2.0, 0.0):
            for producers in (1, 16, 64):
                runs += 1
                print(
                    await bench_put(base / f"put{runs}.db", producers, args.seconds, interval),
                    flush=True,
                )
        if args.skip_backlog:
            return
        print(
            "claim with a backlog (commit interval 0 ms; one-row commit now"
            f" {commit_cost(base / 'baseline2.db') * 1000:.3f} ms)"
        )
        cases = [
            ("small", 1_000, 1_000, False),
            ("distinct", args.backlog, args.backlog, False),
            ("few", args.backlog, 100, False),
            ("waiting", args.backlog, args.backlog, True),
        ]
        for name, backlog, keys, waiting in cases:
            for line in await bench_backlog(base / f"{name}.db", backlog, keys, waiting):
                print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
