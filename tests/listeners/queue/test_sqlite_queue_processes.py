"""The SQLite queue across real processes: SIGKILL while putting or delivering, and the
dead-letter commands run from another process while the service has the queue open."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

CHILD = Path(__file__).with_name("sqlite_queue_child.py")
REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def child(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def admin(path: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(CHILD), "admin", str(path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def envelope(n: int, key: str) -> Envelope:
    return Envelope(
        payload=f"MSH|{n}".encode(),
        sender="APP^FAC",
        listener="mllp",
        received_at=float(n),
        ordering_key=key,
        control_id=f"C{n}",
    )


def wait_for_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the child process ended early"
    return line.strip()


@pytest.mark.parametrize("run", range(5))
def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, run: int) -> None:
    path = tmp_path / "queue.db"
    process = child("put", str(path), "8")
    try:
        assert wait_for_line(process) == "ready"
        time.sleep(random.uniform(0.02, 0.4))
    finally:
        process.send_signal(signal.SIGKILL)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    # Only complete lines: the kill may cut the last one.
    acknowledged = dict(line.split() for line in out.split("\n")[:-1] if line)
    assert acknowledged, "nothing was acknowledged before the kill"

    conn = sqlite3.connect(path)  # recovers from the WAL like the service would
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(conn.execute("SELECT seq, control_id FROM messages"))
    conn.close()
    missing = {seq: cid for seq, cid in acknowledged.items() if stored.get(int(seq)) != cid}
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged puts lost"

    async def reopen() -> int:
        async with SqliteQueue(path) as queue:  # the dead service's lock is gone
            return await queue.depth()

    assert asyncio.run(reopen()) == len(stored)


def test_messages_in_flight_in_a_killed_service_are_delivered_again(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"

    async def fill() -> list[int]:
        async with SqliteQueue(path) as queue:
            puts = [await queue.put(envelope(n, f"k{n % 3}")) for n in range(6)]
            return [r.seq for r in puts[:3]]

    heads = asyncio.run(fill())
    process = child("claim", str(path))
    try:
        claimed = wait_for_line(process).split()
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert claimed[0] == "claimed" and [int(s) for s in claimed[1:]] == heads

    async def restart() -> list[tuple[int, int]]:
        async with SqliteQueue(path) as queue:
            return [(job.seq, job.attempts) for job in await queue.claim(10)]

    assert asyncio.run(restart()) == [(seq, 2) for seq in heads]


def test_dead_letters_are_managed_from_another_process_while_the_service_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.db"

    async def service() -> None:
        async with SqliteQueue(path, commit_interval_ms=1.0) as queue:
            for n in range(4):
                await queue.put(envelope(n, "a" if n < 2 else f"k{n}"))
            jobs = await queue.claim(10)
            assert len(jobs) == 3  # a0, k2, k3
            for job in jobs:
                await queue.dead_letter(job.seq, {"kind": "rejected", "status": 422})
            dead = [job.seq for job in jobs]
            (a1,) = await queue.claim(10)

            listed = await asyncio.to_thread(admin, path, "list")
            assert [d["id"] for d in listed] == dead
            assert all(d["payload"] == "" for d in listed)
            assert listed[0]["error"] == {"kind": "rejected", "status": 422}
            assert await asyncio.to_thread(admin, path, "show", str(dead[1])) == "MSH|2"

            # Retry from the CLI: the running service sees the new work.
            assert await asyncio.to_thread(admin, path, "retry", str(dead[1])) is True
            (retried,) = await queue.claim(10)
            assert retried.envelope.control_id == "C2" and retried.seq > a1.seq

            # A retried message of a busy key waits behind the key's message in flight.
            assert await asyncio.to_thread(admin, path, "retry", str(dead[0])) is True
            assert await queue.claim(10) == []
            await queue.complete(a1.seq)
            (again,) = await queue.claim(10)
            assert again.envelope.control_id == "C0"

            # The CLI and the service write at the same time: both succeed.
            async def keep_putting() -> int:
                stored = 0
                for n in range(100, 200):
                    stored += not (await queue.put(envelope(n, f"p{n}"))).duplicate
                return stored

            purged, stored = await asyncio.gather(
                asyncio.to_thread(admin, path, "purge"), keep_putting()
            )
            assert (purged, stored) == (1, 100)
            assert await asyncio.to_thread(admin, path, "list") == []

    asyncio.run(service())
