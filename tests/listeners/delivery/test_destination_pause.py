"""A destination down pauses its deliveries (``listeners.delivery.gate``), for real: the
service (SQLite queue, delivery workers, conversion) in front of the test FHIR server,
which answers 503 or is stopped (connection refused) for a while, then recovers.

- the outage costs about one request per backoff step, not one per queued message;
- afterwards every message is delivered, each patient's in order, soon after the recovery;
- another destination keeps receiving meanwhile;
- waiting for a paused destination is no attempt (``max_attempts`` small, nothing
  dead-lettered), also when the workers give jobs back to the queue past their limit or
  at their stop: the attempt a claim counted is taken back on disk, so a restart does
  not count it either;
- ``passerelle_destination_available`` and ``/ready`` follow; one WARNING, one INFO.

And when the queue itself refuses writes (its database locked by another connection: a
real SQLite failure of every write, as a full disk): the outcome a delivery reached
(delivered, to retry, dead letter) is written once the queue takes writes again, the
message kept meanwhile, and the patient's next message goes without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners.config import DeliveryConfig, DestinationConfig
from listeners.conversion import ConversionPool
from listeners.delivery import FhirServerSink, destination_location
from listeners.metrics import Metrics
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from listeners.worker import DeliveryWorkers
from tests.listeners.service.support import (
    MetricsSnapshot,
    adt,
    bundle_posts,
    make_config,
    patients,
    running,
    wait_until,
)
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records

INITIAL = 0.05
MAXIMUM = 0.4
#: A pause (15-30 s) longer than a test: nothing probes the destination meanwhile.
LONG_PAUSE = 30.0
WORKERS = 4
EVENTS = ("A01", "A08", "A03")
AVAILABLE = "passerelle_destination_available"
CLINIC = """
[destinations.clinic]
folder = "clinic-out"

[[routes]]
name = "clinic"
sending_facility = "FAC-CLINIC"
destination = "clinic"
"""


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    """The service's log records, every level."""
    with log_records("passerelle") as records:
        yield records


def settings(**delivery: Any) -> dict[str, dict[str, Any]]:
    return {
        "delivery": {
            "workers": WORKERS,
            "backoff_initial": INITIAL,
            "backoff_max": MAXIMUM,
            **delivery,
        }
    }


def most_requests(outage: float) -> int:
    """The most POSTs an outage of ``outage`` seconds may cost: those in flight when it
    began (one per worker), then one probe per pause, a pause lasting at least half its
    backoff step (``INITIAL`` doubling up to ``MAXIMUM``)."""
    probes, elapsed, step = 0, 0.0, INITIAL
    while elapsed <= outage:
        elapsed += step / 2
        probes += 1
        step = min(MAXIMUM, step * 2)
    return WORKERS + probes


def history_families(fhir: FhirServer, patient_id: str) -> list[str]:
    """The Patient's family name in each version, oldest first."""
    bundle: dict[str, Any] = fhir._json("GET", f"{fhir.base_url}/Patient/{patient_id}/_history")
    versions = sorted(
        (entry["resource"] for entry in bundle.get("entry", [])),
        key=lambda resource: resource["meta"]["lastUpdated"],
    )
    return [resource["name"][0]["family"] for resource in versions]


def patient_messages(mrns: list[str]) -> list[bytes]:
    """A01, A08, A03 for each patient, interleaved; each version renames the patient."""
    return [
        adt(f"{mrn}-{i}", event=event, mrn=mrn, family=f"{mrn}-v{i}")
        for i, event in enumerate(EVENTS, start=1)
        for mrn in mrns
    ]


def assert_in_order(fhir: FhirServer, mrns: list[str]) -> None:
    for mrn in mrns:
        (patient,) = patients(fhir, mrn)
        assert history_families(fhir, patient["id"]) == [f"{mrn}-v{i}" for i in (1, 2, 3)]


def messages_of(records: list[logging.LogRecord], level: int, text: str) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == level and text in r.getMessage()]


def test_an_outage_costs_a_request_per_step_and_other_destinations_keep_receiving(
    tmp_path: Path, server: FhirServer, logs: list[logging.LogRecord]
) -> None:
    config = make_config(tmp_path, settings(), CLINIC, fhir_url=server.base_url)
    mrns = [f"OUT-{n}" for n in range(8)]
    server.fail(503, count=1_000_000)
    with running(config) as service:
        acks = service.send(patient_messages(mrns))
        assert {a.code for a in acks} == {"AA"}
        wait_until(lambda: bundle_posts(server), what="the first failure")
        began = time.monotonic()
        # Another destination is not paused: the clinic's messages arrive meanwhile.
        clinic = [
            adt(f"CLI-{n}", mrn=f"CLI-{n}", application="EHR", facility="FAC-CLINIC")
            for n in range(4)
        ]
        assert {a.code for a in service.send(clinic)} == {"AA"}
        wait_until(
            lambda: len(list((tmp_path / "clinic-out").rglob("*.json"))) == 4,
            what="the clinic's bundles",
        )
        during = service.metrics()
        # Paused or probed (a pause that ran out unprobed is not reported: poll).
        ready = wait_until(
            lambda: (
                (r := httpx.get(f"{service.http_url}/ready", timeout=30)).status_code == 503
                and "deliveries paused" in r.json()["checks"]["destination:default"]
                and r
            ),
            what="/ready to report the pause",
        )
        time.sleep(max(0.0, began + 2.0 - time.monotonic()))
        posts = bundle_posts(server)
        outage = time.monotonic() - began
        server.control(clearFaults=True)
        recovered = time.monotonic()
        service.drained(timeout=20)
        drained = time.monotonic() - recovered
        after = service.metrics()
        assert service.service.queue.count_dead_letters() == 0

    # About one request per backoff step, not one per message (24 of them queued).
    assert {p["status"] for p in posts} == {503}
    assert 3 <= len(posts) <= most_requests(outage), len(posts)
    # The waiting messages went as soon as a probe found the server back.
    assert drained < MAXIMUM + 3.0, drained
    assert_in_order(server, mrns)
    assert len(bundle_posts(server)) == len(posts) + len(mrns) * len(EVENTS)
    # The gauge, per destination.
    assert during.value(AVAILABLE, destination="default") == 0
    assert during.value(AVAILABLE, destination="clinic") == 1
    assert after.value(AVAILABLE, destination="default") == 1
    # /ready says why (the /metadata probe fails too: both reasons).
    assert ready.json()["checks"]["destination:clinic"] == "ok"
    # One WARNING when it went, one INFO when it came back; one line per failed POST.
    went = messages_of(logs, logging.WARNING, "unavailable")
    back = messages_of(logs, logging.INFO, "available again")
    assert len(went) == 1 and len(back) == 1, (went, back)
    assert went[0].startswith(f"destination default ({server.base_url}) unavailable (HTTP 503")
    assert "deliveries to it paused" in went[0]
    assert "deliveries resume" in back[0]
    assert len(messages_of(logs, logging.WARNING, "will retry")) == len(posts)


def test_a_refused_connection_pauses_the_destination_until_it_is_back(
    tmp_path: Path, server: FhirServer, logs: list[logging.LogRecord]
) -> None:
    config = make_config(tmp_path, settings(), fhir_url=server.base_url)
    server.stop()  # connection refused
    mrns = [f"REF-{n}" for n in range(5)]
    with running(config) as service:

        def failures() -> float:
            return service.metrics().value("passerelle_deliveries_retried_total")

        assert {a.code for a in service.send(patient_messages(mrns))} == {"AA"}
        wait_until(failures, what="the first failure")
        began = time.monotonic()
        time.sleep(2.0)
        failed = failures()
        outage = time.monotonic() - began
        assert service.metrics().value(AVAILABLE, destination="default") == 0
        server.restart()  # same port
        service.drained(timeout=20)
        assert service.metrics().value(AVAILABLE, destination="default") == 1
    assert 2 <= failed <= most_requests(outage), failed
    assert_in_order(server, mrns)
    (went,) = messages_of(logs, logging.WARNING, "unavailable")
    assert "(connection refused); deliveries to it paused" in went


def test_waiting_for_a_paused_destination_is_no_attempt(tmp_path: Path, server: FhirServer) -> None:
    # Two attempts each, 30 messages, an outage of many backoff steps: were a skipped
    # delivery an attempt, or were every message retried on its own, they would be dead.
    config = make_config(tmp_path, settings(max_attempts=2), fhir_url=server.base_url)
    mrns = [f"ATT-{n}" for n in range(30)]
    server.fail(503, count=1_000_000)
    with running(config) as service:
        messages = [adt(f"{mrn}-1", mrn=mrn, family=mrn) for mrn in mrns]
        assert {a.code for a in service.send(messages)} == {"AA"}
        wait_until(lambda: bundle_posts(server), what="the first failure")
        time.sleep(1.5)
        failed = len(bundle_posts(server))
        server.control(clearFaults=True)
        service.drained(timeout=20)
        assert service.service.queue.count_dead_letters() == 0
    assert failed >= WORKERS + 3  # several probes failed, each a real attempt
    assert all(patients(server, mrn) for mrn in mrns)


def test_jobs_given_back_past_the_limit_do_not_lose_attempts(
    tmp_path: Path, server: FhirServer, logs: list[logging.LogRecord]
) -> None:
    """The workers hold at most ``max_waiting`` jobs for paused destinations; the next
    ones go back to the queue until the next probe, and the attempt counted by their
    claim is given back to them: each message's attempts number its real sends."""
    mrns = [f"SET-{n}" for n in range(12)]
    server.fail(503, count=1_000_000)
    database = tmp_path / "queue.db"

    async def scenario() -> None:
        async with delivery_workers(tmp_path, server, database, max_waiting=3) as (
            queue,
            workers,
        ):
            # All queued first: four go and fail, three wait in memory, five go back.
            for mrn in mrns:
                await queue.put(envelope_of(adt(f"{mrn}-1", mrn=mrn, family=mrn), mrn))
            workers.start()
            await asyncio.sleep(2.5)
            server.control(clearFaults=True)
            while await queue.depth():
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert all(patients(server, mrn) for mrn in mrns)
    # Attempt n is the message's n-th POST, however often it was given back unsent...
    attempts: dict[str, list[int]] = {}
    for record in logs:
        if record.getMessage().startswith(("delivery failed; will retry", "delivered")):
            attempts.setdefault(record.__dict__["control_id"], []).append(
                record.__dict__["attempt"]
            )
    assert sorted(attempts) == sorted(f"{mrn}-1" for mrn in mrns)
    for control_id, numbers in attempts.items():
        assert numbers == list(range(1, len(numbers) + 1)), (control_id, numbers)
    posts = len(bundle_posts(server))
    assert posts == sum(len(numbers) for numbers in attempts.values())
    # ... and so is the queue's count on disk: the claims given back unsent are not in it.
    assert {control_id: attempts for control_id, (_, attempts, _) in on_disk(database).items()} == {
        control_id: len(numbers) for control_id, numbers in attempts.items()
    }


def test_a_job_given_back_past_the_limit_is_not_counted_after_a_restart(
    tmp_path: Path, server: FhirServer
) -> None:
    """One worker, ``max_waiting`` 1, a destination paused for longer than the test: A is
    sent and fails, B waits in memory, C is given back to the queue unsent. Its claim is
    taken back on disk at once, so a restart (a new queue on the file) does not count it."""
    server.fail(503, count=1_000_000)
    database = tmp_path / "queue.db"
    a, b, c = (f"LIM-{name}" for name in "ABC")

    async def scenario() -> dict[str, tuple[str, int, str]]:
        async with delivery_workers(
            tmp_path, server, database, workers=1, pause=LONG_PAUSE, max_waiting=1
        ) as (queue, workers):
            for mrn in (a, b, c):
                await queue.put(envelope_of(adt(f"{mrn}-1", mrn=mrn, family=mrn), mrn))
            workers.start()
            await until(
                lambda: on_disk(database)[f"{c}-1"][2] == "DestinationPaused",
                what="C given back",
            )
            return on_disk(database)

    given_back = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(bundle_posts(server)) == 1  # A's; B and C were never sent
    assert given_back[f"{c}-1"] == ("pending", 0, "DestinationPaused")
    # The restart: everything due (the pause is long), each claim counting one more.
    claimed = asyncio.run(claim_after_restart(database, later=3600.0))
    assert claimed[f"{c}-1"] == 1, claimed  # its only claim so far: this one
    assert claimed == {f"{a}-1": 2, f"{b}-1": 1, f"{c}-1": 1}


def test_a_stop_gives_the_jobs_waiting_for_a_paused_destination_back(
    tmp_path: Path, server: FhirServer, logs: list[logging.LogRecord]
) -> None:
    """Two workers, six patients, a destination paused for longer than the test: A and B
    are sent and fail, C-F are claimed and wait in memory. The stop gives them back at
    once, due now, with the attempt their claim counted taken back: after the restart
    they are claimed at their first attempt, as if never claimed before."""
    server.fail(503, count=1_000_000)
    database = tmp_path / "queue.db"
    mrns = [f"STOP-{name}" for name in "ABCDEF"]
    sent, waiting = [f"{mrn}-1" for mrn in mrns[:2]], [f"{mrn}-1" for mrn in mrns[2:]]

    async def scenario() -> tuple[dict[str, tuple[str, int, str]], float]:
        async with delivery_workers(tmp_path, server, database, workers=2, pause=LONG_PAUSE) as (
            queue,
            workers,
        ):
            for mrn in mrns:
                await queue.put(envelope_of(adt(f"{mrn}-1", mrn=mrn, family=mrn), mrn))
            workers.start()

            def claimed() -> bool:
                rows = on_disk(database)
                return all(rows[c][0] == "inflight" for c in waiting) and all(
                    rows[c][0] == "pending" for c in sent
                )

            await until(claimed, what="A and B failed, C-F waiting")
            before = on_disk(database)
            assert all(before[c][1] == 1 for c in waiting)  # claimed: one attempt counted
            began = time.monotonic()
            await workers.stop(30)
            return on_disk(database), time.monotonic() - began

    after, took = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert took < 5.0, took  # neither the pause nor the grace
    assert len(bundle_posts(server)) == 2  # waiting is not sending
    assert {c: after[c][:2] for c in sent} == dict.fromkeys(sent, ("pending", 1))
    assert {c: after[c][:2] for c in waiting} == dict.fromkeys(waiting, ("pending", 0))
    given = [r for r in logs if r.getMessage() == "jobs not started given back to the queue"]
    assert [r.__dict__["count"] for r in given] == [len(waiting)]
    # The restart: C-F are due at once (A and B only after the pause), at attempt 1.
    assert asyncio.run(claim_after_restart(database)) == dict.fromkeys(waiting, 1)


@contextlib.asynccontextmanager
async def delivery_workers(
    tmp_path: Path,
    server: FhirServer,
    database: Path,
    *,
    workers: int = WORKERS,
    pause: float | None = None,
    max_waiting: int | None = None,
    busy_timeout_ms: int = 10_000,
) -> AsyncIterator[tuple[SqliteQueue, DeliveryWorkers]]:
    """Delivery workers (not started) on a queue file, delivering to ``server``; backoff
    ``INITIAL`` to ``MAXIMUM``, or exactly ``pause`` (jittered within its upper half).
    Stopped, and the queue closed, on the way out."""
    queue = SqliteQueue(database, commit_interval_ms=1, busy_timeout_ms=busy_timeout_ms)
    await queue.start()
    target = DestinationConfig(name="default", url=server.base_url, timeout=10)
    sink = FhirServerSink(target)
    pool = ConversionPool(
        {"default": make_config(tmp_path).converter.converter_config()},
        processes=1,
        use_threads=True,
    )
    options: dict[str, Any] = {} if max_waiting is None else {"max_waiting": max_waiting}
    delivery = DeliveryWorkers(
        queue,
        pool,
        {"default": sink},
        lambda route: "default",
        DeliveryConfig(
            workers=workers,
            backoff_initial=pause or INITIAL,
            backoff_max=pause or MAXIMUM,
        ),
        Metrics(),
        rng=random.Random(7),
        locations={"default": destination_location(target)},
        **options,
    )
    try:
        yield queue, delivery
    finally:
        await delivery.stop(5)
        await sink.close()
        pool.close()
        await queue.close()


def on_disk(database: Path) -> dict[str, tuple[str, int, str]]:
    """control id → state, attempts and last error kind of its row, read as another
    process would."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "SELECT control_id, state, attempts, json_extract(last_error, '$.kind') FROM messages"
        ).fetchall()
    return {control_id: (state, attempts, kind) for control_id, state, attempts, kind in rows}


async def claim_after_restart(database: Path, *, later: float = 0.0) -> dict[str, int]:
    """A new queue on the file, as a restart opens it (``later`` seconds from now): what
    it claims, control id → attempts."""
    queue = SqliteQueue(database, clock=lambda: time.time() + later)
    async with queue:
        return {str(job.envelope.control_id): job.attempts for job in await queue.claim(100)}


async def until(predicate: Callable[[], bool], *, what: str, timeout: float = 20.0) -> None:
    """Wait, without blocking the event loop, until ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def envelope_of(payload: bytes, mrn: str, control_id: str | None = None) -> Envelope:
    return Envelope(
        payload=payload,
        sender="APP-A^FAC-A",
        listener="mllp",
        received_at=time.time(),
        ordering_key=f"APP-A^FAC-A|{mrn}",
        control_id=control_id or f"{mrn}-1",
        message_type="ADT^A01",
    )


@contextlib.contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (an open write transaction):
    every write of the queue fails in SQLite, after its busy timeout, with SQLITE_BUSY
    ("database is locked") — like a full disk, a refusal of every write, and one that
    needs no root to produce. Reads go on (WAL)."""
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("answer", "operation"), [(None, "complete"), (503, "retry_later"), (422, "dead_letter")]
)
def test_an_outcome_the_queue_refuses_is_written_once_it_can_be_and_the_patient_goes_on(
    tmp_path: Path,
    server: FhirServer,
    logs: list[logging.LogRecord],
    answer: int | None,
    operation: str,
) -> None:
    """The queue refuses every write from just after the claim of a patient's first
    message until after its delivery's answer (200, 503 or 422). The write of the outcome
    (``complete``, ``retry_later``, ``dead_letter``) is retried in place: once the queue
    takes writes again it is written, and the patient's second message is delivered after
    it, without a restart. Before, the write's exception escaped the worker's task, the
    first message stayed in flight with nobody to settle it, and the second was never
    delivered until a restart (which also delivered the first again)."""
    database = tmp_path / "queue.db"
    first, second = "LCK-1", "LCK-2"
    unhandled: list[dict[str, Any]] = []

    async def scenario() -> tuple[dict[str, tuple[str, int, str]], MetricsSnapshot, float]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: unhandled.append(context)
        )
        async with delivery_workers(tmp_path, server, database, busy_timeout_ms=50) as (
            queue,
            workers,
        ):
            for n, event in ((1, "A01"), (2, "A08")):
                message = adt(f"LCK-{n}", event=event, mrn="LCK", family=f"LCK-v{n}")
                await queue.put(envelope_of(message, "LCK", f"LCK-{n}"))
            if answer is None:
                server.delay(1000)
            else:
                server.fail(answer, delay_ms=1000)
            workers.start()
            await until(lambda: on_disk(database)[first][0] == "inflight", what="the claim")
            with write_locked(database):
                await until(
                    lambda: [p["status"] is not None for p in bundle_posts(server)] == [True],
                    what="the answer",
                )
                await asyncio.sleep(1.0)  # several refused writes
                held = on_disk(database)
                during = MetricsSnapshot.parse(workers._metrics.render().decode())
            released = time.monotonic()
            await until(lambda: on_disk(database)[second][0] == "done", what="the next message")
            return held, during, time.monotonic() - released

    held, during, took = asyncio.run(asyncio.wait_for(scenario(), 60))
    gc.collect()  # an exception never retrieved is reported when its task is collected
    assert unhandled == []
    # Held in flight meanwhile (its key's head), the next message behind it.
    assert held[first][0] == "inflight" and held[second][0] == "pending"
    # Then written: the message delivered once (not again), dead-lettered, or retried.
    rows = on_disk(database)
    assert rows[first][0] == {"dead_letter": "dead"}.get(operation, "done")
    assert rows[second][0] == "done"
    assert took < 10.0, took
    posts = bundle_posts(server)
    assert [p["status"] for p in posts] == {
        "complete": [200, 200],
        "retry_later": [503, 200, 200],
        "dead_letter": [422, 200],
    }[operation]
    [patient] = patients(server, "LCK")
    families = history_families(server, patient["id"])
    assert families == (["LCK-v2"] if operation == "dead_letter" else ["LCK-v1", "LCK-v2"])
    # Visible meanwhile: the write failures and the message held; one ERROR, one INFO.
    assert during.value("passerelle_queue_write_failures_total", operation=operation) >= 3
    assert during.value("passerelle_outcomes_unrecorded") == 1
    errors = [r for r in logs if r.getMessage().startswith("writing the outcome to the queue")]
    assert [(r.levelno, r.__dict__["control_id"]) for r in errors] == [(logging.ERROR, first)]
    assert f"({operation}: queue storage failed" in errors[0].getMessage()
    assert "database is locked" in errors[0].getMessage()
    written = [r for r in logs if r.getMessage().startswith("outcome written to the queue after")]
    assert [r.__dict__["control_id"] for r in written] == [first]
