"""Compiled templates kept on disk between processes (Jinja's bytecode cache).

Compiling a message type's templates costs its first message about 2 s in every new
process (a service runs several, and restarts); loading their bytecode costs a few
milliseconds. The caller names the directory: the converter reads no environment.

Bytecode is code the process executes, so the directory must be the service's alone:
it is created ``0700``, and one that other users may enter or that belongs to another
user is refused (a ConfigurationError) rather than trusted.

What a template compiles to depends on more than its source, and the cache must never
give back code compiled under other conditions:

* its source: Jinja keeps a checksum with the bytecode and compiles again when the
  source changed;
* the code that compiles and runs it: this package (the code generator, the filters
  that Jinja may call while compiling), Jinja and MarkupSafe, Python (Jinja's own
  header);
* the filters' configuration (code maps, time zone, strictness): Jinja computes a
  filter with constant arguments once, when it compiles (``{{ "F" | map_code(...) }}``
  is compiled to its answer).

Those are part of each entry's key and checksum: a new version, a changed code map or
another route's configuration never load an entry compiled under other conditions,
and routes that differ do not overwrite each other's entries.

Each configuration's entries are named ``<code>-<conditions>-<key>.jinja``, beside a
``<code>-<conditions>.lock`` on which every process using them holds a shared ``flock``.
Opening a cache deletes, each under its lock taken exclusively (never while a process
uses or writes them), the entries this code will not load again: another code
version's (an upgrade), and those the previous start did not use (a changed code map;
see :func:`_prune`). A failure to delete is a WARNING, never a failed start. The directory
may still be emptied at any time.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import stat
import sys
import time
import weakref
from importlib import metadata
from pathlib import Path

from jinja2.bccache import Bucket, FileSystemBytecodeCache

from ..errors import ConfigurationError
from ..private_dirs import make_private_dirs

try:  # POSIX; without it (Windows) the cache works, and nothing is deleted.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["TemplateBytecodeCache", "code_version"]

_CONVERTER_PACKAGE = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """A checksum of the code templates compile and run with: this package's Python
    sources, and the versions of Jinja, MarkupSafe and Python."""
    digest = hashlib.sha256()
    for name in ("jinja2", "markupsafe"):
        digest.update(f"{name} {metadata.version(name)}\n".encode())
    digest.update(f"{sys.implementation.cache_tag}\n".encode())
    for path in sorted(_CONVERTER_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_CONVERTER_PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _private_directory(directory: Path) -> Path:
    """``directory``, created ``0700`` (with its missing parents) if absent; a
    ConfigurationError if it is not a directory of this user that only they can use."""
    try:
        make_private_dirs(directory)
        status = directory.stat()
    except OSError as exc:
        raise ConfigurationError(f"template cache {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigurationError(f"template cache {directory} is not a directory")
    if hasattr(os, "getuid") and status.st_uid != os.getuid():
        raise ConfigurationError(
            f"template cache {directory} belongs to another user: compiled templates are "
            "code the converter runs"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"template cache {directory} is open to other users (mode {mode:04o}): "
            "compiled templates are code the converter runs; chmod 700 it"
        )
    return directory


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class TemplateBytecodeCache(FileSystemBytecodeCache):
    """Jinja's file system bytecode cache in a private directory, its entries keyed by
    ``conditions`` (what else the compiled code depends on) as well as the template."""

    def __init__(self, directory: Path, conditions: str) -> None:
        directory = _private_directory(directory)
        code = code_version()
        self.conditions = _digest(f"{code}\n{conditions}")
        #: What names this configuration's entries and lock: the code version, then the
        #: rest, so that another version's entries are known without being read.
        self.prefix = f"{code[:16]}-{_digest(conditions)[:32]}"
        super().__init__(str(directory), f"{self.prefix}-%s.jinja")
        lock = open_configuration(directory, self.prefix)
        if lock is not None:
            # Held while this cache lives (the process, in practice): the lock is what
            # tells other processes these entries are in use.
            weakref.finalize(self, os.close, lock)

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        key = hashlib.sha256(f"{self.conditions}\0{name}\0{filename}".encode("utf-8", "replace"))
        return key.hexdigest()

    def get_source_checksum(self, source: str) -> str:
        return _digest(f"{self.conditions}\0{source}")

    def load_bytecode(self, bucket: Bucket) -> None:
        """An entry that cannot be read (an I/O error, a damaged file: Jinja checks only
        that its bytecode unmarshals) is compiled again, never a failed conversion."""
        try:
            super().load_bytecode(bucket)
        except Exception:
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Keeping the compiled template is best effort: a full disk, an I/O error or
        a quota must not fail the message whose template it is (the process keeps the
        template compiled in memory; the next process compiles it again)."""
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


# -- one lock per configuration, and the pruning of what no process uses -----------------

#: ``<code>-<conditions>``: what names a configuration's entries and its lock.
_PREFIX = r"(?P<prefix>(?P<code>[0-9a-f]{16})-[0-9a-f]{32})"
_LOCK_NAME = re.compile(_PREFIX + r"\.lock")
#: An entry, or the temporary file Jinja writes it to (``<entry><random>.tmp``).
_ENTRY_NAME = re.compile(_PREFIX + r"-[0-9a-f]{64}\.jinja(?P<tmp>.+\.tmp)?")
#: The entries of versions before the configurations had their own names and locks.
_OLD_ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.jinja(?P<tmp>.+\.tmp)?")
#: A temporary file this old was left by a process that died writing it (writing an
#: entry takes milliseconds).
_ABANDONED = 3600.0
#: Configurations used within this time of each other were used by the same start (a
#: service builds every route's converter in each process, one after the other): one
#: used this long before another's previous use was left behind by a change.
_SAME_START = 3600.0
#: How long opening a cache waits for a process deleting that configuration's entries.
_LOCK_WAIT = 5.0

log = logging.getLogger("passerelle.template_cache")


def open_configuration(directory: Path, prefix: str) -> int | None:
    """Hold a shared lock on the configuration ``prefix`` (its entries are in use), then
    delete what no process uses and no configuration of this code will load again.

    Returns the lock's file descriptor (closing it releases the lock), or None when it
    could not be taken: the cache then works without pruning (a WARNING), since a
    cache is an optimisation and never a reason for a failed start."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd, previous = _share(directory / f"{prefix}.lock")
    except OSError as exc:
        log.warning(
            "the template cache %s cannot be locked (%s): old entries are not deleted",
            directory,
            exc.strerror or exc,
            extra={"event": "template_cache_not_pruned"},
        )
        return None
    try:
        _prune(directory, prefix, previous)
    except Exception as exc:  # whatever it is, the templates still load and compile
        log.warning(
            "old entries of the template cache %s could not all be deleted (%s)",
            directory,
            getattr(exc, "strerror", None) or type(exc).__name__,
            extra={"event": "template_cache_not_pruned"},
        )
    return fd


def _share(path: Path) -> tuple[int, float | None]:
    """The shared lock on ``path`` (created ``0600``) and when a process that has ended
    last took it (None: never, or a process holds it now). Retried when a pruning
    process deleted the file while we waited."""
    deadline = time.monotonic() + _LOCK_WAIT
    while time.monotonic() <= deadline:
        created = False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted since: create it
        try:
            # Its time says when it was last used only if no process uses it now: one
            # that opened it in this start (another conversion process) touched it.
            alone = _locked(fd, fcntl.LOCK_EX, 0.0)
            if _locked(fd, fcntl.LOCK_SH, deadline) and _still_named(fd, path):
                previous = os.fstat(fd).st_mtime if alone and not created else None
                os.utime(fd)  # "last used": what later starts compare
                return fd, previous
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(errno.EWOULDBLOCK, "held by a process deleting old entries")


def _locked(fd: int, kind: int, deadline: float) -> bool:
    """Take (or convert to) the flock ``kind`` on ``fd``, waiting until ``deadline``
    (a ``time.monotonic()``) at most."""
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file ``fd`` locked (a pruning process deletes the
    lock file last, before releasing it: a lock taken then protects nothing)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _prune(directory: Path, own: str, previous: float | None) -> None:
    """Delete the entries of configurations no process holds: all of another code
    version's; this version's last used well before this configuration's previous use
    (``previous``, by a process that has ended: the previous start), a start that opened
    every configuration it needed one after the other (:data:`_SAME_START`); old-style
    entries; temporary files a dead process left.

    Only this configuration's own time counts: another service sharing the directory,
    started later and stopped since, must not make this one's routes that a process
    has yet to open look old."""
    now = time.time()
    entries: dict[str, list[str]] = {}
    for name in os.listdir(directory):
        found = _LOCK_NAME.fullmatch(name) or _ENTRY_NAME.fullmatch(name)
        if found is not None:
            prefix = found["prefix"]
            if prefix == own:
                if found.groupdict().get("tmp"):
                    _remove_abandoned(directory / name, now)
            else:
                entries.setdefault(prefix, []).append(name)
            continue
        old = _OLD_ENTRY_NAME.fullmatch(name)
        if old is not None:
            # No process of this version loads them; one of the previous version that
            # still runs keeps what it opened (an unlinked file stays readable).
            if old["tmp"]:
                _remove_abandoned(directory / name, now)
            else:
                _unlink(directory / name)
    code = _code(own)
    unused: dict[str, tuple[int, float]] = {}
    try:
        for prefix, names in entries.items():
            if _code(prefix) != code or previous is not None:
                taken = _take_unused(directory, prefix, names)
                if taken is not None:
                    unused[prefix] = taken
        for prefix, (_, used) in unused.items():
            if _code(prefix) != code or (previous is not None and used < previous - _SAME_START):
                _delete_configuration(directory, prefix)
    finally:
        for fd, _ in unused.values():
            os.close(fd)


def _take_unused(directory: Path, prefix: str, names: list[str]) -> tuple[int, float] | None:
    """The exclusive lock of configuration ``prefix`` and when it was last used, or None
    if a process holds it (or made or deleted its lock file since ``names`` were listed:
    it is at work on it)."""
    path = directory / f"{prefix}.lock"
    listed = path.name in names
    try:
        if listed:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except (FileNotFoundError, FileExistsError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _still_named(fd, path):
            os.close(fd)
            return None
        if listed:
            return fd, os.fstat(fd).st_mtime
        # Entries without a lock file: their own times say when they were last used
        # (and the new lock file keeps that time, for the next processes to compare).
        used = max(_mtime(directory / name) for name in names)
        os.utime(fd, (used, used))
        return fd, used
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise


def _code(prefix: str) -> str:
    return prefix.split("-", 1)[0]


def _delete_configuration(directory: Path, prefix: str) -> None:
    """Delete the configuration's entries, its lock file last (held exclusively: no
    process uses them, and one about to waits and then makes a new lock file)."""
    start = f"{prefix}-"
    for name in os.listdir(directory):
        if name.startswith(start):
            _unlink(directory / name)
    _unlink(directory / f"{prefix}.lock")


def _remove_abandoned(path: Path, now: float) -> None:
    if _mtime(path) < now - _ABANDONED:
        _unlink(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
