"""Log records of a logger, captured in a list, at every level."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["log_records"]


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)


@contextlib.contextmanager
def log_records(name: str = "passerelle") -> Iterator[list[logging.LogRecord]]:
    """The records ``name`` (and its children) log meanwhile, DEBUG and up, whatever the
    logging configuration left behind; the logger's level is restored after."""
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
