"""Session 24, listeners robustness: a conversion process dying under the HTTP API and the
deliveries, and the SQLite queue's service lock after a close that did not finish.

Real conversion processes, killed with SIGKILL as the OOM killer would, a real service
(HTTP, MLLP, SQLite, a folder destination) and real queue files. After a death the
request or delivery is converted by a new process: its first conversion loads the FHIR
models and the templates, tens of seconds on a loaded host (the processes run at nice 10).
So the templates are compiled first, into the cache the processes load them from, the
conversion deadline is far beyond the waits, and the waits are minutes
(:func:`tests.listeners.support.prepared_config`, :data:`~tests.listeners.support.PATIENCE`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from listeners import conversion
from listeners.conversion import ConversionPool
from listeners.errors import QueueError
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import adt, running, wait_until
from tests.listeners.service.test_conversion_timeout import delivered_control_ids
from tests.listeners.support import PATIENCE, prepared_config

T = TypeVar("T")


# -- run in the conversion processes (pickled by reference: module-level) ----------------------
def die_converting(*args: object) -> None:
    """Every conversion kills its own process, as the OOM killer would mid-conversion."""
    del args
    os.kill(os.getpid(), signal.SIGKILL)


def die_once_then_convert(marker: str, *args: object) -> object:
    """The first conversion (in any process) kills its process; the next ones convert."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return conversion._convert(*args)  # type: ignore[arg-type]
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _kill_idle_process(pool: ConversionPool) -> None:
    """SIGKILL the pool's (only) conversion process while it converts nothing, and wait
    until the pool knows it is broken."""
    executor = pool._executor
    pid = executor.submit(os.getpid).result(timeout=PATIENCE)
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: getattr(executor, "_broken", False), timeout=PATIENCE, what="the pool to be broken"
    )


# -- 1. the HTTP API when a conversion process dies ---------------------------------------------
def test_a_conversion_process_dying_mid_request_is_a_503_with_retry_after_then_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: 500 "internal error; see the service log", as for a bug: a client does not
    # retry a 500 (nor should it), although the service had already mended itself.
    config = prepared_config(tmp_path)
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", die_converting)
        answer = httpx.post(f"{service.http_url}/convert", content=adt("K9-1"), timeout=PATIENCE)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert answer.headers["content-type"] == "application/fhir+json"
        issue = answer.json()["issue"][0]
        assert issue["code"] == "transient"
        assert "conversion process died" in issue["diagnostics"]
        monkeypatch.undo()
        # The next request is converted by the new processes.
        answer = httpx.post(f"{service.http_url}/convert", content=adt("K9-2"), timeout=PATIENCE)
        assert answer.status_code == 200, answer.text
        assert answer.json()["identifier"]["value"] == "K9-2"
        pool = service.service.pool
        assert pool is not None and pool.restarts == 1


def test_convert_data_gets_the_same_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = prepared_config(tmp_path)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputData", "valueString": adt("K9-3").decode()},
            {"name": "inputDataType", "valueString": "Hl7v2"},
        ],
    }
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", die_converting)
        answer = httpx.post(f"{service.http_url}/$convert-data", json=parameters, timeout=PATIENCE)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "2"
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_a_request_after_a_process_died_idle_is_converted_at_once(tmp_path: Path) -> None:
    # Before: the pool, broken while idle, refused the next request (500), though its
    # message had not even reached a process.
    config = prepared_config(tmp_path)
    with running(config) as service:
        pool = service.service.pool
        assert pool is not None
        _kill_idle_process(pool)
        answer = httpx.post(f"{service.http_url}/convert", content=adt("K9-4"), timeout=PATIENCE)
        assert answer.status_code == 200, answer.text
        assert answer.json()["identifier"]["value"] == "K9-4"
        assert pool.restarts == 1


# -- 1b. the deliveries (MLLP intake stores first) -----------------------------------------------
def test_a_delivery_whose_conversion_process_dies_is_retried_and_delivered_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a defect found: the guard of what item 1 checked (stored, retried, nothing lost
    # nor delivered twice, no dead letter).
    marker = tmp_path / "killed-once"
    config = prepared_config(tmp_path)
    out = config.destinations["default"].folder
    assert out is not None
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", partial(die_once_then_convert, str(marker)))
        [ack] = service.send([adt("K9-5")])
        assert ack.code == "AA"
        wait_until(
            lambda: delivered_control_ids(out) == {"K9-5"}, timeout=PATIENCE, what="delivery"
        )
        service.drained()
        assert marker.exists()
        assert len(list(out.rglob("*.json"))) == 1
        queue = service.service.queue
        assert isinstance(queue, SqliteQueue) and queue.count_dead_letters() == 0


def test_a_delivery_after_a_process_died_idle_spends_no_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the first delivery after the death failed on the broken pool and was retried
    # (one of delivery.max_attempts spent on nothing).
    config = prepared_config(tmp_path)
    out = config.destinations["default"].folder
    assert out is not None
    caplog.set_level("INFO", logger="passerelle")
    with running(config) as service:
        pool = service.service.pool
        assert pool is not None
        _kill_idle_process(pool)
        [ack] = service.send([adt("K9-6")])
        assert ack.code == "AA"
        wait_until(
            lambda: delivered_control_ids(out) == {"K9-6"}, timeout=PATIENCE, what="delivery"
        )
    delivered = [r for r in caplog.records if r.getMessage() == "delivered"]
    assert [getattr(r, "attempt", None) for r in delivered] == [1]
    assert not [r for r in caplog.records if "will retry" in r.getMessage()]


# -- 2. the queue's service lock when its close does not finish ----------------------------------
def _envelope(control_id: str) -> Envelope:
    return Envelope(
        payload=adt(control_id),
        sender="s24",
        listener="mllp",
        received_at=1_700_000_000.0,
        ordering_key="s24|MRN-0001",
        control_id=control_id,
        message_type="ADT^A01",
    )


def _run_without_waiting_for_threads(scenario: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` but for its end, which waits for the default executor's threads:
    a writer thread that never ends (the defect) would hang the test instead of failing it."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(scenario)
    finally:
        loop.close()


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "queue-writer:queue.db"]


async def _cancelled_close(path: Path) -> tuple[SqliteQueue, Callable[[], Awaitable[None]]]:
    """A started queue (one message stored) whose close was cancelled while its writer was
    held in an operation (a disk slow to answer), and the coroutine function that lets the
    writer go and waits for its thread to end."""
    held, release = threading.Event(), threading.Event()

    def slow(conn: object) -> tuple[None, int]:
        held.set()
        release.wait(30)
        return None, 0

    queue = SqliteQueue(path, commit_interval_ms=1)
    await queue.start()
    await queue.put(_envelope("L-1"))
    pending = asyncio.ensure_future(queue._submit(slow))
    await asyncio.to_thread(held.wait, 10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.close(), 0.3)

    async def finish() -> None:
        release.set()
        await pending
        for thread in _writers():
            await asyncio.to_thread(thread.join, 10)

    return queue, finish


def test_a_queue_whose_close_was_cancelled_releases_its_lock(tmp_path: Path) -> None:
    # Before: a close cancelled while the writer finished its work (a stop's bound, a
    # disk slow to answer) kept the lock file locked for the life of the process: a
    # restart in the same process failed "already used by a running Passerelle service".
    path = tmp_path / "queue.db"

    async def scenario() -> int:
        _, finish = await _cancelled_close(path)
        await finish()
        again = SqliteQueue(path, commit_interval_ms=1)
        await again.start()  # QueueError before the fix
        try:
            return await again.depth()
        finally:
            await again.close()

    assert _run_without_waiting_for_threads(scenario()) == 1


def test_a_second_queue_on_a_running_one_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"

    async def scenario() -> None:
        async with SqliteQueue(path):
            with pytest.raises(QueueError, match="already used"):
                await SqliteQueue(path).start()

    asyncio.run(scenario())


def test_a_queue_whose_close_was_cancelled_runs_one_writer_thread_at_most(
    tmp_path: Path,
) -> None:
    # Once the lock was released, a start of the same queue ran a second writer thread
    # beside the one still finishing (reading the same inbox, on a connection of its own).
    async def scenario() -> int:
        queue, finish = await _cancelled_close(tmp_path / "queue.db")
        try:
            with pytest.raises(QueueError, match="already started"):
                await asyncio.wait_for(queue.start(), 5)
            assert len(_writers()) == 1
        finally:
            await finish()
        await queue.start()  # the old thread has ended: the queue starts again
        try:
            await queue.put(_envelope("L-2"))
            assert len(_writers()) == 1
            return await queue.depth()
        finally:
            await queue.close()

    assert _run_without_waiting_for_threads(scenario()) == 2


def run_out_of_memory(*args: object) -> None:
    """A conversion whose process runs out of memory (and survives it)."""
    del args
    raise MemoryError


def test_a_conversion_out_of_memory_is_a_503_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: 500 "internal error", although the converter lets MemoryError through on
    # purpose (memory may come back: the deliveries retry it).
    config = prepared_config(tmp_path)
    caplog.set_level("WARNING", logger="passerelle")
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", run_out_of_memory)
        answer = httpx.post(f"{service.http_url}/convert", content=adt("K9-7"), timeout=PATIENCE)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert "out of memory" in answer.json()["issue"][0]["diagnostics"]
        events = [getattr(r, "event", None) for r in caplog.records]
        assert "api_conversion_out_of_memory" in events
        monkeypatch.undo()
        answer = httpx.post(f"{service.http_url}/convert", content=adt("K9-8"), timeout=PATIENCE)
        assert answer.status_code == 200, answer.text
        pool = service.service.pool
        assert pool is not None and pool.restarts == 0
