"""Directories only the process's user may enter.

Compiled templates (code the converter runs) and, in the service, the queue and the
bundles (patient data) live in directories the service creates ``0700`` whatever the
umask: ``Path.mkdir(parents=True)`` would give the parents the umask's default mode
(``0755`` under a ``022`` one). The converter's template cache and the service's
directories (``listeners.file_modes``) share this one implementation; the converter
imports nothing of the service.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRIVATE_DIR", "make_private_dirs"]

#: Owner only.
PRIVATE_DIR = 0o700


def make_private_dirs(directory: Path) -> list[Path]:
    """``mkdir -p`` where every directory created is ``0700``; returns them, outermost
    first. Directories that already exist are left as they are (the operator chose them:
    a bind mount, ``/var/lib/…``)."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    for path in reversed(missing):
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return list(reversed(missing))
