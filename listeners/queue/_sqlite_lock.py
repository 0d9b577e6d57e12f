"""The SQLite queue's service lock: one running service per queue file.

An exclusive, non-blocking ``flock`` on ``<file>.lock`` (private mode; beside the file a
symlink names, if it is one), held from ``SqliteQueue.start()`` to ``close()``. The
dead-letter CLI does not take it: it works beside a running service through its own
short transactions. Without ``fcntl`` (Windows) the file is still created but nothing is
locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import QueueError
from ..file_modes import PRIVATE_FILE, make_private_dirs, restrict_file
from ._sqlite_schema import storage_error

__all__ = ["ServiceLock"]

try:  # POSIX: one service per queue file.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ServiceLock:
    """The lock of the queue file ``path`` (held on ``<path>.lock``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; :class:`QueueError` if another service holds it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            make_private_dirs(self.path.parent)
            # Beside the file itself, symlinks resolved: two services given two names of
            # one queue file (a symlink to it) took one lock each and ran on it together,
            # each putting the other's messages in flight back to pending at its start.
            target = self.path.resolve()
            lock_path = target.with_name(target.name + ".lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
            restrict_file(lock_path)
        except OSError as exc:
            raise storage_error(exc, f"opening {lock_path}") from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise QueueError(
                f"{self.path} is already used by a running Passerelle service"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Release the lock if held (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
