"""What the service writes holds patient data: only its user may read it, whatever the umask.

Before, under the usual umask 022, the queue (``queue.db``, ``-wal``, ``-shm``: messages
and dead letters), its lock file, the data and output directories and every bundle file
were readable by any local user.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from listeners.delivery.folder import write_atomically
from listeners.file_modes import restrict_file
from listeners.queue._sqlite_schema import connect
from tests.listeners.service.support import RunningService, adt, make_config


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_service_creates_its_directories_0700_and_its_files_0600(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"": {"data_dir": "var/lib/passerelle"}})
    data = tmp_path / "var" / "lib" / "passerelle"
    with RunningService(config) as service:
        [ack] = service.send([adt("PERM-1")])
        assert ack.code == "AA"
        service.drained()
        # While the service runs: the WAL and shared-memory files exist.
        queue_files = sorted(data.glob("queue.db*"))
        names = {path.name for path in queue_files}
        assert {"queue.db", "queue.db-wal", "queue.db-shm", "queue.db.lock"} <= names
        bundles = list((data / "out").rglob("*.json"))
        assert len(bundles) == 1
        files = {str(p.relative_to(tmp_path)): mode(p) for p in [*queue_files, *bundles]}
        directories = {
            str(p.relative_to(tmp_path)): mode(p)
            for p in (tmp_path / "var", tmp_path / "var" / "lib", data, data / "out")
        }
        directories[str(bundles[0].parent.relative_to(tmp_path))] = mode(bundles[0].parent)
    assert files == dict.fromkeys(files, 0o600), files
    assert directories == dict.fromkeys(directories, 0o700), directories


def test_bundle_files_and_their_new_directories_are_private(tmp_path: Path) -> None:
    target = tmp_path / "out" / "2024-03-14" / "MSG-1-abc.json"
    write_atomically(target, b"{}")
    assert mode(target) == 0o600
    assert mode(target.parent) == mode(target.parent.parent) == 0o700
    # Written again (a re-delivery): still private.
    write_atomically(target, b'{"a": 1}')
    assert mode(target) == 0o600 and target.read_bytes() == b'{"a": 1}'
    # A folder the operator created is left as it is.
    mine = tmp_path / "shared"
    mine.mkdir(mode=0o750)
    os.chmod(mine, 0o750)
    write_atomically(mine / "x.json", b"{}")
    assert mode(mine) == 0o750 and mode(mine / "x.json") == 0o600


def test_a_queue_created_readable_by_an_earlier_version_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    old = connect(path)  # left open: its -wal and -shm stay
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):
        os.chmod(tmp_path / name, 0o644)
    try:
        with caplog.at_level(logging.WARNING, logger="passerelle.files"):
            conn = connect(path)
        conn.close()
    finally:
        old.close()
    assert mode(path) == 0o600
    for name in ("queue.db-wal", "queue.db-shm"):
        if (tmp_path / name).exists():
            assert mode(tmp_path / name) == 0o600, name
    assert "readable by other users (mode 0644): now 0600" in caplog.text


def test_restrict_file_leaves_anything_but_a_regular_file_alone(tmp_path: Path) -> None:
    """A directory given where a file was meant (``queue.path = "/tmp"``) once lost its
    group and other permissions: the machine's /tmp went from 1777 to 1700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    restrict_file(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    readable = tmp_path / "queue.db"
    readable.write_bytes(b"")
    readable.chmod(0o644)
    restrict_file(readable)
    assert stat.S_IMODE(readable.stat().st_mode) == 0o600
