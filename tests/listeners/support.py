"""Failures the poison and out-of-memory tests inject, the dead letters they read, and
their configuration for a loaded host (:func:`prepared_config`, :data:`PATIENCE`).

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from listeners import conversion
from listeners.config import ServiceConfig
from listeners.conversion_deaths import DEATHS_TO_DEAD_LETTER
from listeners.delivery import bundle_bytes
from listeners.delivery.base import BundleInput, request_body
from listeners.queue.base import DeadLetter
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import RunningService, adt, compile_templates, make_config

#: How long these tests wait for what involves a first conversion in a new conversion
#: process (each death replaces the pool): the FHIR models loaded and the templates read
#: from the cache, under a second of CPU, but tens of seconds on a loaded 2-core host,
#: where the conversion processes run at nice 10.
PATIENCE = 180.0
#: Their ``delivery.conversion_timeout``, beyond any of their waits: the default (60 s)
#: stopped a slow first conversion of a loaded run, which then failed for that, not for
#: what it tests (none of them is about the deadline).
CONVERSION_DEADLINE = 600.0

#: Family name of the patient whose bundles run out of memory when delivered.
MARKER = "Outofmemory"
#: The real ``request_body``: the tests replace the name :mod:`listeners.delivery.fhir` calls.
real_request_body = request_body


def with_deadline(settings: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``settings`` with ``delivery.conversion_timeout`` = :data:`CONVERSION_DEADLINE`
    (unless they set one)."""
    tables = {name: dict(table) for name, table in (settings or {}).items()}
    tables.setdefault("delivery", {}).setdefault("conversion_timeout", CONVERSION_DEADLINE)
    return tables


def prepared_config(
    directory: Path,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    fhir_url: str | None = None,
) -> ServiceConfig:
    """:func:`~tests.listeners.service.support.make_config` with :func:`with_deadline`,
    its ADT templates compiled into the service's template cache (every new conversion
    process loads them instead of compiling them: seconds of CPU fewer at nice 10)."""
    config = make_config(directory, with_deadline(settings), fhir_url=fhir_url)
    compile_templates(config, [adt("COMPILE-0"), adt("COMPILE-1", event="A08")])
    return config


# -- run in the conversion processes ---------------------------------------------------------
def die_on_poison(route: str, payload: bytes, *args: object) -> object:
    """A message holding POISON kills its conversion process; others convert."""
    if b"POISON" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


#: How long a SLOW or a POISON of :func:`slow_innocent_and_poison` looks for the other one
#: converting at the same time (a retry's new process may start seconds after the other's).
MEETING = 5.0
#: How long a SLOW that met a POISON then waits (killed with the pool well before).
SLOW_HOLD = 120.0


def marker_dir(path: Path) -> str:
    """The family name that tells :func:`slow_innocent_and_poison` its message's marker
    directory ``path`` (not an environment variable: the fork server keeps its own)."""
    return f"DIR={path};"


def _live(mark: Path) -> bool:
    """Whether the process of a ``<kind>-<pid>`` mark is alive (a killed one leaves it)."""
    try:
        state = Path(f"/proc/{mark.name.split('-')[1]}/stat").read_text().rsplit(")", 1)[1]
    except OSError:
        return False  # gone
    return state.split()[0] not in ("Z", "X")  # killed, not reaped yet


def _meet(directory: Path, mine: str, other: str, *, over: Callable[[], bool]) -> bool:
    """Mark this process converting a ``mine`` message; whether an ``other`` one converts
    in another process within :data:`MEETING` seconds (False at once once ``over()``)."""
    (directory / f"{mine}-{os.getpid()}").touch()
    deadline = time.monotonic() + MEETING
    while time.monotonic() < deadline and not over():
        if any(_live(mark) for mark in directory.glob(f"{other}-*")):
            return True
        time.sleep(0.01)
    return False


def slow_innocent_and_poison(route: str, payload: bytes, *args: object) -> object:
    """POISON kills its process, SLOW converts; but when both convert at the same time,
    POISON kills its process only once SLOW converts, and SLOW then waits for the end of its
    process: the pool's death fails SLOW too, whatever the host's load (a fixed 0.3 s death
    against a 2 s SLOW was a race on a loaded host). Each looks for the other
    :data:`MEETING` seconds, less once that cannot be: SLOW converted (``slow-done``), or
    POISON died its :data:`DEATHS_TO_DEAD_LETTER` deaths. A message names its marker
    directory (:func:`marker_dir`)."""
    if b"POISON" not in payload and b"SLOW" not in payload:
        return conversion._convert(route, payload, *args)  # type: ignore[arg-type]
    directory = Path(payload.split(b"DIR=", 1)[1].split(b";", 1)[0].decode())
    if b"POISON" in payload:
        _meet(directory, "poison", "slow", over=(directory / "slow-done").exists)
        os.kill(os.getpid(), signal.SIGKILL)

    def poison_settled() -> bool:
        marks = list(directory.glob("poison-*"))
        return len(marks) >= DEATHS_TO_DEAD_LETTER and not any(map(_live, marks))

    mark = directory / f"slow-{os.getpid()}"
    try:
        if _meet(directory, "slow", "poison", over=poison_settled):
            time.sleep(SLOW_HOLD)
        converted = conversion._convert(route, payload, *args)  # type: ignore[arg-type]
    finally:
        mark.unlink(missing_ok=True)
    (directory / "slow-done").touch()
    return converted


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
