"""``passerelle dead-letters`` beside a service of another version: list and show open the
queue file read-only (no migration, no write), retry and purge write only a file of
their own schema version, and only the service migrates."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listeners.errors import QueueError
from listeners.queue import _sqlite_schema
from listeners.queue._sqlite_schema import SCHEMA_VERSION, connect_read_only
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

ENVELOPE = Envelope(
    payload=b"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|C1|P|2.5\rPID|1||1^^^X||DUPONT",
    sender="APP^FAC",
    listener="mllp",
    received_at=1_600_000_000.0,
    ordering_key="patient-1",
    control_id="C1",
    message_type="ADT^A01",
)


def _queue_file(path: Path) -> int:
    """A queue file made by the queue, holding one dead letter; returns its id."""

    async def main() -> int:
        async with SqliteQueue(path) as queue:
            return (await queue.put_dead_letter(ENVELOPE, {"kind": "x", "reason": "r"})).seq

    return asyncio.run(main())


def _version_2_file(path: Path) -> None:
    """A queue file as Passerelle's schema version 2 wrote it, with one dead letter."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA application_id = {_sqlite_schema.APPLICATION_ID}")
    for migration in _sqlite_schema.MIGRATIONS[:2]:
        migration(conn)
    conn.execute(
        "INSERT INTO messages (payload, sender, listener, received_at, ordering_key,"
        " control_id, message_type, input_type, route, state, head, attempts,"
        " next_attempt_at, stored_at, updated_at, last_error)"
        " VALUES (x'4d5348', 's', 'mllp', 1, 'k', 'OLD-1', 'ADT^A01', 'hl7v2', 'default',"
        " 'dead', 0, 1, 0, ?, ?, '{\"kind\": \"x\"}')",
        (time.time(), time.time()),  # failed now: within any retention
    )
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def _with_version(source: Path, target: Path, version: int) -> Path:
    shutil.copy(source, target)
    conn = sqlite3.connect(target)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return target


def _state(path: Path) -> tuple[str, int]:
    """The file's bytes (digest) and its schema version, read from the bytes themselves
    (the header's user_version at offset 60) so that reading changes nothing."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), int.from_bytes(data[60:64], "big")


def test_list_and_show_read_an_older_or_newer_file_without_changing_it(tmp_path: Path) -> None:
    current = tmp_path / "queue.db"
    letter = _queue_file(current)
    older = tmp_path / "v2.db"
    _version_2_file(older)
    newer = _with_version(current, tmp_path / "newer.db", SCHEMA_VERSION + 1)
    copied_older = _with_version(current, tmp_path / "older.db", SCHEMA_VERSION - 1)
    for path, word in ((older, "older"), (copied_older, "older"), (newer, "newer")):
        before = _state(path)
        queue = SqliteQueue(path)
        for read in (
            queue.list_dead_letters,
            queue.count_dead_letters,
            lambda queue=queue: queue.get_dead_letter(1),
        ):
            with pytest.raises(QueueError, match=f"schema version .*{word} than"):
                read()
        assert _state(path) == before, path.name  # not migrated, not written
    # The file of this version reads as ever, and is not written either.
    before = _state(current)
    queue = SqliteQueue(current)
    assert [d.id for d in queue.list_dead_letters()] == [letter]
    shown = queue.get_dead_letter(letter)
    assert shown is not None and shown.envelope.payload == ENVELOPE.payload
    assert _state(current) == before


def test_retry_and_purge_refuse_a_file_of_another_version(tmp_path: Path) -> None:
    """A newer CLI's retry used to migrate the running older service's file: that
    service then refused to start again (a schema newer than it supports)."""
    older = tmp_path / "v2.db"
    _version_2_file(older)
    current = tmp_path / "queue.db"
    _queue_file(current)
    newer = _with_version(current, tmp_path / "newer.db", SCHEMA_VERSION + 1)
    for path, word in ((older, "older"), (newer, "newer")):
        before = _state(path)
        queue = SqliteQueue(path)
        for write in (
            lambda queue=queue: queue.retry_dead_letter(1),
            queue.retry_all_dead_letters,
            queue.purge_dead_letters,
        ):
            with pytest.raises(QueueError, match=f"{word} than"):
                write()
        assert _state(path)[1] == before[1]
    # The service of this version migrates the older file; the commands then work on it.
    asyncio.run(_start_and_stop(older))
    assert SqliteQueue(older).retry_all_dead_letters() == 1


async def _start_and_stop(path: Path) -> None:
    async with SqliteQueue(path):
        pass


def test_commands_never_create_a_queue_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    queue = SqliteQueue(missing)
    for command in (queue.list_dead_letters, queue.purge_dead_letters):
        with pytest.raises(QueueError, match="no queue file"):
            command()
    assert list(tmp_path.iterdir()) == []


def test_the_read_only_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    _queue_file(path)
    conn = connect_read_only(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("DELETE FROM messages")
    finally:
        conn.close()


def test_list_reads_what_a_running_service_committed(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"

    async def main() -> list[int]:
        async with SqliteQueue(path) as queue:
            seq = (await queue.put_dead_letter(ENVELOPE, {"kind": "x"})).seq
            listed = await asyncio.to_thread(SqliteQueue(path).list_dead_letters)
            assert [d.id for d in listed] == [seq]
            # and the service goes on writing after the read-only reader
            await queue.put_dead_letter(
                Envelope(
                    payload=b"MSH|2",
                    sender="APP^FAC",
                    listener="mllp",
                    received_at=1.0,
                    ordering_key="patient-2",
                    control_id="C2",
                ),
                {"kind": "x"},
            )
            return [seq]

    asyncio.run(main())
    assert len(SqliteQueue(path).list_dead_letters()) == 2


def test_the_cli_reports_an_older_file_in_one_line_and_leaves_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    queue = tmp_path / "data" / "queue.db"
    _version_2_file(queue)
    config = tmp_path / "passerelle.toml"
    config.write_text('data_dir = "data"\n')
    before = _state(queue)
    for args in (["list"], ["show", "1"], ["retry", "1"], ["purge", "--all"]):
        done = subprocess.run(
            [sys.executable, "-m", "listeners.cli", "dead-letters", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert "schema version 2, older than" in line and "Traceback" not in done.stderr
        assert _state(queue)[1] == before[1] == 2
    assert _state(queue) == before
