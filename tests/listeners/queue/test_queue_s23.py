"""Session 23 review of the SQLite queue: a writer thread that dies, and a wall clock
stepped forward under the running queue (``listeners.queue``, ``/health``, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners.config import HttpConfig
from listeners.errors import QueueError
from listeners.http import api as api_module
from listeners.http.api import create_probe_app
from listeners.metrics import Metrics
from listeners.queue._sqlite_schema import connect
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import adt, make_config, queue_writer_held, running

from .test_sqlite_queue import Clock, envelope

DAY = 86400.0
#: A patient's name in the stored message and in the text of the injected faults: it
#: must reach no error text, log line, /health nor /ready answer.
PATIENT = "QUILLEBEUF^ANNE"


def _envelope(n: int, *, key: str = "patient-1") -> Envelope:
    base = envelope(n, key=key)
    return dataclasses.replace(base, payload=base.payload + f"PID|1||{n}||{PATIENT}|\r".encode())


def _fail_once(queue: SqliteQueue, step: str, exc: BaseException) -> None:
    """The writer thread's next ``step`` (one of its own methods) raises ``exc``: a fault
    nothing real injects on demand (a MemoryError, a bug in its bookkeeping)."""
    writer = queue._writer
    original = getattr(writer, step)

    def failing(*args: Any) -> Any:
        setattr(writer, step, original)
        raise exc

    setattr(writer, step, failing)


async def _started(path: Path, **kwargs: Any) -> SqliteQueue:
    queue = SqliteQueue(path, commit_interval_ms=0.0, **kwargs)
    await queue.start()
    return queue


# -- the writer thread ends on an unexpected error -------------------------------------------
@pytest.mark.parametrize(
    ("step", "fault"),
    [
        ("_gather", MemoryError()),  # operations taken from the inbox, not yet run
        ("_settle", RuntimeError(f"bookkeeping bug at {PATIENT}")),  # run, not resolved
    ],
)
def test_a_dead_writer_fails_the_batch_in_hand_and_every_later_write(
    tmp_path: Path, step: str, fault: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the operations the thread had in hand when it ended were never resolved:
    the MLLP sender waited for an ACK (and the connection stayed held) until the service
    stopped, an AMQP consumer's commit forever. Now they fail with the queue's error —
    the MLLP listener closes without ACK, the sender sends again — and so does every
    later write, at once."""
    caplog.set_level(logging.DEBUG, logger="passerelle.queue")

    async def main() -> None:
        queue = await _started(tmp_path / "queue.db")
        try:
            _fail_once(queue, step, fault)
            with pytest.raises(QueueError) as refused:
                await asyncio.wait_for(queue.put(_envelope(1)), 10)
            for later in (queue.put(_envelope(2)), queue.claim(5), queue.depth()):
                with pytest.raises(QueueError) as again:
                    await asyncio.wait_for(later, 1)
                assert str(again.value) == str(refused.value)
            failure = queue.failure()
            assert failure == str(refused.value)
            assert failure.startswith(f"queue storage failed while writing: {type(fault).__name__}")
            assert "until the service is restarted" in failure
            assert PATIENT not in failure
            assert await queue.store_problem() == failure  # /ready says why
        finally:
            await asyncio.wait_for(queue.close(), 10)

    asyncio.run(main())
    stopped = [r for r in caplog.records if getattr(r, "event", None) == "queue_writer_stopped"]
    assert [r.levelno for r in stopped] == [logging.ERROR]
    assert all(r.levelno < logging.ERROR for r in caplog.records if r not in stopped)
    for record in caplog.records:
        assert PATIENT not in record.getMessage()
        assert record.exc_info is None  # a traceback would carry the exception's text


def test_a_message_committed_before_the_writer_died_is_a_duplicate_after_the_restart(
    tmp_path: Path,
) -> None:
    """The thread ended after the COMMIT, before telling the caller: the sender got no
    ACK although the message is stored. It sends again once the service is restarted, and
    the queue recognises the retransmission: stored once, ACKed once."""
    path = tmp_path / "queue.db"

    async def main() -> None:
        queue = await _started(path)
        try:
            _fail_once(queue, "_settle", RuntimeError("bug"))
            with pytest.raises(QueueError):
                await asyncio.wait_for(queue.put(_envelope(1)), 10)
        finally:
            await queue.close()
        queue = await _started(path)  # the restart
        try:
            again = await queue.put(_envelope(1))
            assert again.duplicate
            assert await queue.depth() == 1
            assert queue.failure() is None
        finally:
            await queue.close()

    asyncio.run(main())


def test_an_error_escaping_an_operation_is_told_by_kind_and_place_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no operation expects (not an SQLite error) ended the thread and its
    text became the queue's error: logged, shown by ``/ready`` (open to anyone) — and a
    bug's text may quote the message being stored."""

    def broken(*args: Any) -> Any:
        raise SystemExit(f"unexpected {PATIENT}")

    async def main() -> None:
        queue = await _started(tmp_path / "queue.db")
        try:
            monkeypatch.setattr(queue, "_put", broken)
            with pytest.raises(QueueError) as refused:
                await asyncio.wait_for(queue.put(_envelope(1)), 10)
            assert str(refused.value).startswith(
                "queue storage failed while committing: SystemExit at test_queue_s23.py:"
            )
            await asyncio.to_thread(queue._writer._thread.join, 10)  # type: ignore[union-attr]
            for text in (str(refused.value), queue.failure(), await queue.store_problem()):
                assert text is not None and PATIENT not in text
        finally:
            await queue.close()

    asyncio.run(main())


def test_writes_refused_for_hours_hold_no_growing_traceback(tmp_path: Path) -> None:
    """Every write refused after the thread ended raised the one same exception: each
    raise added its frames to that exception's traceback — the workers' claims every
    second, the outcomes retried in place — memory growing without end, and the frames'
    locals (stored messages among them) kept alive until the restart."""

    async def main() -> None:
        queue = await _started(tmp_path / "queue.db")
        try:
            _fail_once(queue, "_gather", MemoryError())
            with pytest.raises(QueueError):
                await asyncio.wait_for(queue.put(_envelope(1)), 10)
            depths = []
            for _ in range(50):
                try:
                    await queue.claim(5)
                except QueueError as exc:
                    depths.append(len(traceback.extract_tb(exc.__traceback__)))
            assert len(depths) == 50 and len(set(depths)) == 1, depths
        finally:
            await queue.close()

    asyncio.run(main())


class _Backend:
    """What the service gives the probe routes: its metrics, and readiness asking the
    queue as ``Service.readiness`` does."""

    def __init__(self, queue: SqliteQueue) -> None:
        self.metrics = Metrics()
        self.metrics.watch_vital("queue", queue.failure)
        self._queue = queue

    async def readiness(self) -> dict[str, str | None]:
        try:
            await self._queue.depth()
            return {"queue": await self._queue.store_problem()}
        except QueueError as exc:
            return {"queue": f"queue unavailable: {type(exc).__name__}"}


def test_health_and_ready_are_red_and_a_metric_says_so_once_the_writer_died(
    tmp_path: Path,
) -> None:
    """/health answered 200 while no message could be stored any more: Kubernetes never
    restarted the pod, whose MLLP senders were refused for ever. /health (liveness) is
    red now, /ready names the cause, and ``passerelle_component_up{component="queue"}``
    falls to 0."""

    async def main() -> None:
        queue = await _started(tmp_path / "queue.db")
        backend = _Backend(queue)
        app = create_probe_app(backend, HttpConfig())
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://probe") as http:
                assert (await http.get("/health")).status_code == 200
                assert (await http.get("/ready")).status_code == 200
                assert (
                    'passerelle_component_up{component="queue"} 1.0'
                    in (await http.get("/metrics")).text
                )
                _fail_once(queue, "_gather", MemoryError())
                with pytest.raises(QueueError):
                    await asyncio.wait_for(queue.put(_envelope(1)), 10)
                health = await http.get("/health")
                assert health.status_code == 503
                assert health.json()["status"] == "stopped"
                assert health.json()["stopped"]["queue"] == queue.failure()
                ready = await http.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["queue"] == queue.failure()
                assert (
                    'passerelle_component_up{component="queue"} 0.0'
                    in (await http.get("/metrics")).text
                )
        finally:
            await queue.close()

    asyncio.run(main())


def test_ready_answers_while_the_writer_does_not_and_probes_do_not_pile_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer stuck in one commit (a disk that stops answering an fsync): /ready
    never answered. Each probe timed out and went, its request stayed running, and once
    ``http.max_connections`` of them were, every request got a 503 — conversions, which
    need no queue, included. /ready now answers 503 within its bound."""
    monkeypatch.setattr(api_module, "READY_TIMEOUT", 0.5, raising=False)
    config = make_config(tmp_path, {"http": {"max_connections": 3}})
    with running(config) as service, queue_writer_held(service):
        for _ in range(4):  # probes giving up after 0.2 s, as Kubernetes' do
            with contextlib.suppress(httpx.TimeoutException):
                httpx.get(f"{service.http_url}/ready", timeout=0.2)
        time.sleep(0.7)  # their requests have ended by now (0.5 s each)
        ready = httpx.get(f"{service.http_url}/ready", timeout=10)
        assert ready.status_code == 503
        assert "did not answer within 0.5s" in ready.json()["checks"]["readiness"]
        converted = httpx.post(
            f"{service.http_url}/convert", content=adt("S23-READY-1"), timeout=30
        )
        assert converted.status_code == 200, converted.text


# -- the wall clock stepped forward under the running queue ----------------------------------
class _Clocks:
    """A wall clock and a monotonic one: time passing moves both, a step the wall clock
    only."""

    def __init__(self) -> None:
        self.wall = Clock()
        self.elapsed = Clock(1000.0)

    def passes(self, seconds: float) -> None:
        self.wall.advance(seconds)
        self.elapsed.advance(seconds)

    def stepped(self, seconds: float) -> None:
        self.wall.advance(seconds)


def _expire_now(queue: SqliteQueue, path: Path) -> None:
    """One maintenance step of the running queue, as its writer runs every minute."""
    conn = connect(path)
    try:
        queue._maintain(conn)
    finally:
        conn.close()


def test_dead_letters_outlive_a_clock_stepped_forward_under_the_running_queue(
    tmp_path: Path,
) -> None:
    """NTP stepping forward a clock that ran a month behind made every dead letter look
    a month older: the next maintenance deleted them all — the only copy of messages
    never delivered — although they had failed seconds before."""
    clocks = _Clocks()
    path = tmp_path / "queue.db"

    async def main() -> None:
        queue = await _started(
            path, clock=clocks.wall, elapsed=clocks.elapsed, dead_letter_retention=30 * DAY
        )
        try:
            await queue.put_dead_letter(_envelope(1), {"kind": "x"})
            clocks.passes(60.0)
            clocks.stepped(31 * DAY)
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 1
            assert queue.dead_letters_expired == 0
            clocks.passes(30 * DAY - 120.0)  # still a minute short of 30 days
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 1
            clocks.passes(120.0)  # 30 days and a minute since it failed
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 0
        finally:
            await queue.close()

    asyncio.run(main())


def test_a_clock_stepped_back_then_forward_shortens_no_retention(tmp_path: Path) -> None:
    """A dead letter stored while the clock was a day behind carries a time a day early;
    the step forward that corrects the clock must not make it expire a day early."""
    clocks = _Clocks()
    path = tmp_path / "queue.db"

    async def main() -> None:
        queue = await _started(
            path, clock=clocks.wall, elapsed=clocks.elapsed, dead_letter_retention=2 * DAY
        )
        try:
            clocks.stepped(-DAY)
            await queue.put_dead_letter(_envelope(1), {"kind": "x"})
            clocks.stepped(DAY)  # corrected
            clocks.passes(DAY + 3600.0)  # a day and an hour since it failed
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 1
            clocks.passes(DAY)
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 0
        finally:
            await queue.close()

    asyncio.run(main())


def test_the_duplicate_window_outlives_a_clock_stepped_forward(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same step emptied the duplicate window: a retransmission seconds after its
    original was delivered came through as a new message (a second admission)."""
    clocks = _Clocks()
    caplog.set_level(logging.WARNING, logger="passerelle.queue")

    async def main() -> None:
        queue = await _started(
            tmp_path / "queue.db",
            clock=clocks.wall,
            elapsed=clocks.elapsed,
            duplicate_window_hours=24.0,
        )
        try:
            first = await queue.put(_envelope(1))
            (job,) = await queue.claim(5)
            await queue.complete(job.seq)
            clocks.passes(5.0)
            clocks.stepped(8 * DAY)
            assert await queue.prune() == 0
            again = await queue.put(_envelope(1))
            assert again.duplicate and again.seq == first.seq
            clocks.passes(DAY)  # the window has really passed
            assert await queue.prune() == 1
            assert not (await queue.put(_envelope(1))).duplicate
        finally:
            await queue.close()

    asyncio.run(main())
    steps = [r for r in caplog.records if getattr(r, "event", None) == "clock_stepped_forward"]
    assert len(steps) == 1, steps
    assert steps[0].getMessage().startswith("the clock went 691200 s forward")


def test_without_a_step_the_retention_is_unchanged(tmp_path: Path) -> None:
    """The guard only ever delays a purge by a step seen: with the clocks in step, a dead
    letter goes once its retention has passed, not later."""
    clocks = _Clocks()
    path = tmp_path / "queue.db"

    async def main() -> None:
        queue = await _started(
            path, clock=clocks.wall, elapsed=clocks.elapsed, dead_letter_retention=DAY
        )
        try:
            await queue.put_dead_letter(_envelope(1), {"kind": "x"})
            clocks.passes(DAY - 1.0)
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 1
            clocks.passes(2.0)
            _expire_now(queue, path)
            assert queue.count_dead_letters() == 0
        finally:
            await queue.close()

    asyncio.run(main())


def test_the_service_asks_to_be_restarted_once_its_queue_writer_died(tmp_path: Path) -> None:
    """The real service: its MLLP sender gets no ACK, /health turns 503 naming the queue
    and the component gauge drops to 0 (before, /health stayed 200: never restarted)."""
    from listeners.mllp import ConnectionClosedError

    with running(make_config(tmp_path)) as service:
        store = service.service.queue
        assert isinstance(store, SqliteQueue)
        _fail_once(store, "_gather", MemoryError())
        with pytest.raises(ConnectionClosedError):
            service.send([adt("S23-DEAD-1")], timeout=10)
        health = httpx.get(f"{service.http_url}/health", timeout=10)
        assert health.status_code == 503, health.text
        assert "MemoryError" in health.json()["stopped"]["queue"]
        assert service.metrics().value("passerelle_component_up", component="queue") == 0
