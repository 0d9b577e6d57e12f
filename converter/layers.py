"""Layered TOML tables: the built-in mappings completed by override directories."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["layered_tables"]


def layered_tables(
    directories: Sequence[Path], relative: str
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, table)`` of ``<dir>/<relative>`` for each directory that has it, the
    LAST directory first: applying them in this order lets earlier directories (the
    user's overrides, searched first) win entry by entry."""
    for directory in reversed(directories):
        path = directory / relative
        if not path.is_file():
            continue
        try:
            yield path, tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
