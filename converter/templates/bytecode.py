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
and routes that differ do not overwrite each other's entries. Entries of an older
configuration stay until the directory is emptied (safe at any time).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import sys
from importlib import metadata
from pathlib import Path

from jinja2.bccache import Bucket, FileSystemBytecodeCache

from ..errors import ConfigurationError

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
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    try:
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)
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


class TemplateBytecodeCache(FileSystemBytecodeCache):
    """Jinja's file system bytecode cache in a private directory, its entries keyed by
    ``conditions`` (what else the compiled code depends on) as well as the template."""

    def __init__(self, directory: Path, conditions: str) -> None:
        super().__init__(str(_private_directory(directory)), "%s.jinja")
        self.conditions = hashlib.sha256(
            f"{code_version()}\n{conditions}".encode("utf-8", "surrogatepass")
        ).hexdigest()

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        key = hashlib.sha256(f"{self.conditions}\0{name}\0{filename}".encode("utf-8", "replace"))
        return key.hexdigest()

    def get_source_checksum(self, source: str) -> str:
        text = f"{self.conditions}\0{source}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(text).hexdigest()

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
