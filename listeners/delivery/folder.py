"""Delivery to a folder, when no FHIR server is configured.

Each bundle becomes ``<folder>/<received-date>/<message>-<bundle id>.json`` where the date is the
UTC day the message was received and ``<message>`` its control id (MSH-10), or a digest of the
received payload when it has none. The file is written atomically (temporary file in the same
directory, fsync, rename, fsync of the directory): a reader never sees half a bundle, and after a
crash the file is either complete or absent. Delivering the same bundle again overwrites the same
file, so re-delivery is harmless. Bundles hold patient data: files are created ``0600`` and the
directories created here ``0700`` (see :mod:`listeners.file_modes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import DeliveryError, TransientDeliveryError
from ..file_modes import PRIVATE_FILE, make_private_dirs
from ..queue.base import Envelope
from .base import BundleInput, DeliveryReceipt, bundle_bytes

__all__ = ["FolderSink", "bundle_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_PART = 80


def _safe(text: str) -> str:
    """A file-name-safe rendering of an id: no separators, no leading dot, bounded length."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "_"
    if len(cleaned) > _MAX_PART:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        cleaned = f"{cleaned[: _MAX_PART - 13]}~{digest}"
    return cleaned


def _bundle_id(bundle: BundleInput, data: bytes) -> str:
    if isinstance(bundle, bytes | bytearray | memoryview):
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = None
    else:
        parsed = bundle
    bundle_id = parsed.get("id") if isinstance(parsed, dict) else None
    if isinstance(bundle_id, str) and bundle_id:
        return _safe(bundle_id)
    return "sha256-" + hashlib.sha256(data).hexdigest()[:16]


def bundle_file_name(bundle: BundleInput, envelope: Envelope, data: bytes | None = None) -> Path:
    """``<received-date>/<control id or payload digest>-<bundle id>.json`` (relative)."""
    data = bundle_bytes(bundle) if data is None else data
    day = datetime.fromtimestamp(envelope.received_at, UTC).date().isoformat()
    if envelope.control_id:
        stem = _safe(envelope.control_id)
    else:
        stem = "msg-" + hashlib.sha256(envelope.payload).hexdigest()[:16]
    return Path(day) / f"{stem}-{_bundle_id(bundle, data)}.json"


def _fsync_directory(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling, fsync and rename."""
    directory = path.parent
    missing = make_private_dirs(directory)  # 0700, like the file's 0600: patient data
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(directory)
    for created in missing:  # make the new directories' entries durable too
        _fsync_directory(created.parent)


class FolderSink:
    """Writes each bundle as a JSON file under ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path, *, name: str = "default") -> None:
        self._folder = Path(folder)
        self._name = name

    def __repr__(self) -> str:
        return f"FolderSink(name={self._name!r}, folder={str(self._folder)!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def folder(self) -> Path:
        return self._folder

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        """Write the bundle; an OSError (disk full, permissions) is transient."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = bundle_bytes(bundle)
        path = self._folder / bundle_file_name(bundle, envelope, data)
        try:
            await asyncio.to_thread(write_atomically, path, data)
        except OSError as exc:
            raise TransientDeliveryError(
                f"destination {self._name}: cannot write {path}: {exc.strerror or exc}"
            ) from None
        return DeliveryReceipt(
            destination=self._name, status=None, location=str(path), elapsed=loop.time() - started
        )

    async def check(self) -> None:
        """The folder exists (it is created if needed) and is writable."""
        try:
            await asyncio.to_thread(make_private_dirs, self._folder)
        except OSError as exc:
            raise DeliveryError(
                f"destination {self._name}: cannot create {self._folder}: {exc.strerror or exc}"
            ) from None
        if not os.access(self._folder, os.W_OK | os.X_OK):
            raise DeliveryError(f"destination {self._name}: {self._folder} is not writable")

    async def close(self) -> None:
        return None
