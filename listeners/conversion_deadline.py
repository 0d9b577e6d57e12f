"""The deadline of a conversion, in its conversion process (``delivery.conversion_timeout``:
:mod:`listeners.conversion`, out of which it moved)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["DeadlineExceeded", "deadline"]


class DeadlineExceeded(BaseException):
    """Raised by the deadline timer into the conversion. A BaseException: no ``except
    Exception`` of the converter or of Jinja may turn it into a mapping error."""


def _deadline_exceeded(signum: int, frame: FrameType | None) -> None:
    raise DeadlineExceeded


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the body after ``seconds`` (real time), in the main thread only."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _deadline_exceeded)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
