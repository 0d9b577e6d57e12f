"""Failures the poison and out-of-memory tests inject, and the dead letters they read.

Shared by the SQLite service's tests (``tests/listeners/test_poison_s24.py``,
``test_memory_errors_s25.py``) and the AMQP ones (``tests/listeners/amqp/``): the same
failures, made where they happen for real — in the conversion processes (the functions
below replace :func:`listeners.conversion._convert`, pickled by reference: module-level) or
where a delivery's request body is made (:func:`out_of_memory_for_marker`).
"""

from __future__ import annotations

import os
import signal
import time

from listeners import conversion
from listeners.delivery import bundle_bytes
from listeners.delivery.base import BundleInput, request_body
from listeners.queue.base import DeadLetter
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import RunningService

#: Family name of the patient whose bundles run out of memory when delivered.
MARKER = "Outofmemory"
#: The real ``request_body``: the tests replace the name :mod:`listeners.delivery.fhir` calls.
real_request_body = request_body


# -- run in the conversion processes ---------------------------------------------------------
def die_on_poison(route: str, payload: bytes, *args: object) -> object:
    """A message holding POISON kills its conversion process; others convert."""
    if b"POISON" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


def slow_innocent_and_poison(route: str, payload: bytes, *args: object) -> object:
    """POISON kills its process 0.3 s into each conversion; SLOW's conversions take 2 s
    (in progress in the other process when POISON's dies)."""
    if b"POISON" in payload:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    if b"SLOW" in payload:
        time.sleep(2.0)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


def memory_error_on_huge(route: str, payload: bytes, *args: object) -> object:
    """HUGE runs out of memory (a MemoryError: the process survives) at each conversion."""
    if b"HUGE" in payload:
        raise MemoryError
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


# -- run where a delivery's request is made ----------------------------------------------------
async def out_of_memory_for_marker(bundle: BundleInput, *, batch: bool) -> bytes:
    """``request_body``, raising ``MemoryError`` for a bundle of :data:`MARKER`'s."""
    if MARKER.encode() in bundle_bytes(bundle):
        raise MemoryError
    return await real_request_body(bundle, batch=batch)


# -- what became of the messages ---------------------------------------------------------------
def dead_letters(service: RunningService) -> list[DeadLetter]:
    """The dead letters of a service running with the SQLite queue."""
    queue = service.service.queue
    assert isinstance(queue, SqliteQueue)
    return queue.list_dead_letters()
