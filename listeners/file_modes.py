"""Modes of what the service writes: the queue (messages, dead letters), its lock file and
the bundles of folder destinations hold patient data, so only the service's user reads them.

Files are created ``0600`` and the directories the service creates ``0700``, whatever the
process's umask (a umask can only remove bits: a ``0077`` one changes nothing, a ``022``
one no longer exposes anything). Directories that already exist are left as they are: the
operator chose them (a bind mount, ``/var/lib/…``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

# One implementation for the converter's template cache and the service's directories.
from converter.private_dirs import PRIVATE_DIR, make_private_dirs

from .errors import ServiceError

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "make_private_dirs",
    "make_setting_dirs",
    "restrict_file",
    "template_cache_dir",
]

#: Read and write for the owner only.
PRIVATE_FILE = 0o600

log = logging.getLogger("passerelle.files")


def make_setting_dirs(path: Path, setting: str, variable: str) -> None:
    """:func:`make_private_dirs` for the folder a setting names, a failure naming the
    setting, its variable and the folder: it was ``[Errno 30] Read-only file system:
    '/data/var'`` (which setting? which volume to fix?)."""
    try:
        make_private_dirs(path)
    except OSError as exc:
        raise ServiceError(
            f"cannot create {path} ({setting}): {exc.strerror or type(exc).__name__}; give "
            f"{setting} ({variable}) a writable folder of a volume with room"
        ) from exc


def template_cache_dir(data_dir: Path) -> Path | None:
    """``data_dir/template-cache``, where the conversion processes keep compiled templates
    (code the converter runs: owner only), or None to run without it.

    A directory of this user whose mode another process widened (Kubernetes' ``fsGroup``
    adds group permissions to a volume's contents at each mount) is made ``0700`` again:
    the converter refuses a cache others may enter, and the service must not fail to
    start over a cache. One of another user, or that cannot be made, is not used (a
    WARNING): templates are then compiled in each process, as without a cache.
    """
    path = data_dir / "template-cache"
    try:
        make_private_dirs(path)
        status = path.stat()
        if not stat.S_ISDIR(status.st_mode):
            raise NotADirectoryError(20, "not a directory")
        if hasattr(os, "getuid") and status.st_uid != os.getuid():
            log.warning(
                "the template cache %s belongs to another user: not used",
                path,
                extra={"event": "template_cache_unused"},
            )
            return None
        if stat.S_IMODE(status.st_mode) & 0o077:
            path.chmod(PRIVATE_DIR)
    except OSError as exc:
        log.warning(
            "the template cache %s cannot be used (%s): templates are compiled in each"
            " conversion process",
            path,
            exc.strerror,
            extra={"event": "template_cache_unused"},
        )
        return None
    return path


def restrict_file(path: Path) -> None:
    """Take group and other permissions off an existing file of the service (created by
    an earlier version, or under another umask), with a warning; a missing file, one the
    process may not change (another owner), and anything but a regular file (a directory
    named by mistake: ``/tmp`` would lose its sticky, shared mode) are left alone."""
    try:
        status = path.stat()
    except OSError:
        return
    mode = stat.S_IMODE(status.st_mode)
    if not stat.S_ISREG(status.st_mode) or not mode & 0o077:
        return
    with contextlib.suppress(OSError):
        os.chmod(path, mode & ~0o077)
        log.warning(
            "%s was readable by other users (mode %04o): now %04o",
            path,
            mode,
            mode & ~0o077,
        )
