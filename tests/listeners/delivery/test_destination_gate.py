"""The per-destination gate's state machine (``listeners.delivery.gate``), on a fake clock:
open → paused (one WARNING) → one probe at a time, backoff between probes → open again
(one INFO); outcomes from before a pause do not count; the gauge and /ready follow."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from listeners.config import DeliveryConfig
from listeners.delivery import (
    DestinationGate,
    DestinationWaitInterrupted,
    GatedSink,
    Pass,
)
from listeners.delivery.base import BundleInput, DeliveryReceipt
from listeners.errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from listeners.metrics import Metrics
from listeners.queue.base import Envelope
from tests.listeners.delivery.helpers import make_envelope
from tests.support.log_records import log_records

DIAGNOSTIC = "Patient GIRARD Thomas born 1961-02-30 is invalid"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Top:
    """Jitter at the top of its interval: each pause is exactly the step's cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Bottom:
    def uniform(self, a: float, b: float) -> float:
        return a


def down(status: int | None = 503, retry_after: float | None = None) -> TransientDeliveryError:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": DIAGNOSTIC}]}
    return TransientDeliveryError(
        "destination fhir: HTTP 503 Service Unavailable",
        status=status,
        outcome=outcome,
        retry_after=retry_after,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def gate(clock: Clock, metrics: Metrics) -> DestinationGate:
    return DestinationGate(
        {"fhir": "https://user:***@fhir.example.org/fhir", "clinic": "folder out"},
        initial=1.0,
        maximum=8.0,
        metrics=metrics,
        clock=clock,
        rng=Top(),
    )


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the gate logs, at every level."""
    with log_records("passerelle.delivery") as records:
        yield records


def available(metrics: Metrics, destination: str) -> float | None:
    value: float | None = metrics.registry.get_sample_value(
        "passerelle_destination_available", {"destination": destination}
    )
    return value


def probe_after_pause(gate: DestinationGate, clock: Clock, pause: float) -> Pass:
    """Check the pause lasts exactly ``pause`` seconds, then take the probe."""
    assert gate.retry_in("fhir") == pytest.approx(pause)
    clock.now += pause - 0.001
    assert gate.try_pass("fhir") is None
    clock.now += 0.001
    probe = gate.try_pass("fhir")
    assert probe is not None and probe.probe
    return probe


def test_open_destinations_let_every_delivery_through(gate: DestinationGate) -> None:
    passes = [gate.try_pass("fhir") for _ in range(5)]
    assert all(p is not None and not p.probe for p in passes)
    assert gate.retry_in("fhir") is None
    assert gate.readiness() == {}


def test_a_failure_pauses_until_one_probe_succeeds_with_backoff_between_probes(
    gate: DestinationGate, clock: Clock, metrics: Metrics
) -> None:
    assert available(metrics, "fhir") == 1 and available(metrics, "clinic") == 1
    first = gate.try_pass("fhir")
    in_flight = [gate.try_pass("fhir") for _ in range(3)]
    assert first is not None
    gate.failed(first, down())
    assert available(metrics, "fhir") == 0
    assert gate.try_pass("fhir") is None
    # The requests in flight when it went down fail too: the same outage, no longer pause.
    for other in in_flight:
        assert other is not None
        gate.failed(other, down())
    # Another destination is not concerned.
    assert gate.try_pass("clinic") is not None and available(metrics, "clinic") == 1
    probe = probe_after_pause(gate, clock, 1.0)
    # One probe at a time.
    assert gate.try_pass("fhir") is None and gate.retry_in("fhir") == 0.0
    for pause in (2.0, 4.0, 8.0, 8.0):  # doubling, up to backoff_max
        gate.failed(probe, down())
        assert available(metrics, "fhir") == 0
        probe = probe_after_pause(gate, clock, pause)
    gate.succeeded(probe)
    assert available(metrics, "fhir") == 1
    assert gate.retry_in("fhir") is None
    assert all(gate.try_pass("fhir") is not None for _ in range(5))
    # A new outage starts again from backoff_initial.
    again = gate.try_pass("fhir")
    assert again is not None
    gate.failed(again, down())
    assert gate.retry_in("fhir") == pytest.approx(1.0)


def test_the_gate_for_a_delivery_configuration_pauses_like_its_retries(
    metrics: Metrics, records: list[logging.LogRecord]
) -> None:
    # The one builder of the SQLite workers and ``passerelle worker``.
    gate = DestinationGate.for_delivery(
        {"fhir": "https://fhir.example.org/fhir", "clinic": "folder out"},
        DeliveryConfig(backoff_initial=2.0, backoff_max=8.0),
        metrics=metrics,
        rng=Top(),
    )
    assert available(metrics, "fhir") == 1 and available(metrics, "clinic") == 1
    fhir, clinic = gate.try_pass("fhir"), gate.try_pass("clinic")
    assert fhir is not None and clinic is not None
    gate.failed(fhir, down())
    gate.failed(clinic, down(retry_after=100.0))
    # backoff_initial for a first pause; a Retry-After honoured up to backoff_max.
    assert gate.retry_in("fhir") == pytest.approx(2.0, abs=0.2)
    assert gate.retry_in("clinic") == pytest.approx(8.0, abs=0.2)
    assert available(metrics, "fhir") == 0 and available(metrics, "clinic") == 0
    went = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert went[0].startswith("destination fhir (https://fhir.example.org/fhir) unavailable")


def test_jitter_keeps_a_pause_within_half_a_step_and_a_step(clock: Clock) -> None:
    gate = DestinationGate({"fhir": ""}, initial=1.0, maximum=8.0, clock=clock, rng=Bottom())
    granted = gate.try_pass("fhir")
    assert granted is not None
    gate.failed(granted, down())
    assert gate.retry_in("fhir") == pytest.approx(0.5)
    clock.now += 0.5
    probe = gate.try_pass("fhir")
    assert probe is not None
    gate.failed(probe, down())
    assert gate.retry_in("fhir") == pytest.approx(1.0)


def test_retry_after_is_honoured_up_to_backoff_max(gate: DestinationGate, clock: Clock) -> None:
    granted = gate.try_pass("fhir")
    assert granted is not None
    gate.failed(granted, down(429, retry_after=5.0))
    probe = probe_after_pause(gate, clock, 5.0)
    gate.failed(probe, down(503, retry_after=99_999_999.0))  # a proxy asking for years
    probe = probe_after_pause(gate, clock, 8.0)
    gate.failed(probe, down(503, retry_after=0.1))  # a floor, not a ceiling
    probe_after_pause(gate, clock, 4.0)


def test_outcomes_of_deliveries_let_through_before_a_pause_do_not_count(
    gate: DestinationGate, clock: Clock
) -> None:
    first, second, third = (gate.try_pass("fhir") for _ in range(3))
    assert first is not None and second is not None and third is not None
    gate.failed(first, down())
    gate.succeeded(second)  # answered before the outage: says nothing about now
    assert gate.try_pass("fhir") is None
    probe = probe_after_pause(gate, clock, 1.0)
    gate.succeeded(probe)
    gate.failed(third, down())  # an old failure: the destination is back
    assert gate.retry_in("fhir") is None
    # Reporting the same probe twice changes nothing either.
    gate.failed(probe, down())
    assert gate.retry_in("fhir") is None


def test_a_probe_without_verdict_passes_the_probe_on_at_once(
    gate: DestinationGate, clock: Clock
) -> None:
    granted = gate.try_pass("fhir")
    assert granted is not None
    gate.failed(granted, down())
    probe = probe_after_pause(gate, clock, 1.0)
    gate.abandoned(probe)  # e.g. the message did not convert
    following = gate.try_pass("fhir")
    assert following is not None and following.probe
    gate.abandoned(granted)  # not the probe: nothing happens
    assert gate.try_pass("fhir") is None
    gate.failed(following, down())
    assert gate.retry_in("fhir") == pytest.approx(2.0)


def test_one_warning_when_it_goes_one_info_when_it_is_back_nothing_per_message(
    gate: DestinationGate, clock: Clock, records: list[logging.LogRecord]
) -> None:
    granted = [gate.try_pass("fhir") for _ in range(10)]
    for each in granted:
        assert each is not None
        gate.failed(each, down())
    for pause in (1.0, 2.0, 4.0):
        probe = probe_after_pause(gate, clock, pause)
        if pause < 4.0:
            gate.failed(probe, down())
    clock.now += 0.5
    gate.succeeded(probe)
    loud = [r for r in records if r.levelno >= logging.INFO]
    assert [r.levelname for r in loud] == ["WARNING", "INFO"], [r.getMessage() for r in loud]
    warning, info = (r.getMessage() for r in loud)
    assert warning == (
        "destination fhir (https://user:***@fhir.example.org/fhir) unavailable "
        "(HTTP 503 Service Unavailable); deliveries to it paused, next attempt in 1.0s"
    )
    assert info == (
        "destination fhir (https://user:***@fhir.example.org/fhir) available again "
        "after 7.5s; deliveries resume"
    )
    assert loud[0].__dict__["destination"] == "fhir" and loud[0].__dict__["status"] == 503
    assert loud[1].__dict__["duration_ms"] == 7500
    assert not any(DIAGNOSTIC in r.getMessage() for r in records)


def test_ready_reports_a_destination_paused_after_an_http_answer_while_the_pause_holds(
    gate: DestinationGate, clock: Clock
) -> None:
    granted = gate.try_pass("fhir")
    assert granted is not None
    gate.failed(granted, down(503))  # /metadata may answer 200 all along
    clock.now += 0.4
    assert list(gate.readiness()) == ["destination:fhir"]
    reason = gate.readiness()["destination:fhir"]
    assert reason == (
        "destination fhir (https://user:***@fhir.example.org/fhir): deliveries paused for 0s"
        " after HTTP 503 Service Unavailable; next attempt in 0.6s"
    )
    clock.now += 0.6
    # Over, nobody probing: not reported (no traffic would ever clear it).
    assert gate.readiness() == {}
    probe = gate.try_pass("fhir")
    assert probe is not None
    assert "a delivery is probing it" in gate.readiness()["destination:fhir"]
    gate.failed(probe, TransientDeliveryError("destination fhir: cannot reach …"))
    # A transport failure is for the /metadata probe to report: it sees the server back.
    assert gate.retry_in("fhir") is not None and gate.readiness() == {}
    clock.now += 2.0
    probe = gate.try_pass("fhir")
    assert probe is not None
    gate.succeeded(probe)
    assert gate.readiness() == {}


def test_waiting_deliveries_go_at_once_when_the_probe_succeeds() -> None:
    gate = DestinationGate({"fhir": ""}, initial=0.2, maximum=0.2, rng=Top())

    async def scenario() -> None:
        granted = gate.try_pass("fhir")
        assert granted is not None
        gate.failed(granted, down())
        paused_at = time.monotonic()
        waiters = [asyncio.ensure_future(gate.wait_for_pass("fhir")) for _ in range(5)]
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        # After the pause, one of them — only one — probes.
        assert time.monotonic() - paused_at >= 0.19
        (probe,) = [task.result() for task in done]
        assert probe.probe
        await asyncio.sleep(0.3)
        assert all(not task.done() for task in pending)
        gate.succeeded(probe)
        passes = await asyncio.wait_for(asyncio.gather(*pending), timeout=0.1)
        assert all(not p.probe for p in passes)

    asyncio.run(scenario())


def test_waiting_deliveries_probe_in_turn() -> None:
    # One message per partition: a failed probe's message must not probe again before the
    # others (with a small max_attempts it would be dead-lettered, the others untried).
    gate = DestinationGate({"fhir": ""}, initial=0.05, maximum=0.05, rng=Top())

    async def scenario() -> list[str]:
        granted = gate.try_pass("fhir")
        assert granted is not None
        gate.failed(granted, down())
        probers: list[str] = []

        async def partition(name: str) -> None:
            while True:
                granted = await gate.wait_for_pass("fhir")
                probers.append(name)
                if len(probers) == 6:
                    gate.succeeded(granted)
                    return
                if not granted.probe:
                    return
                gate.failed(granted, down())
                await asyncio.sleep(0)  # straight back in line, as fast as it can

        await asyncio.wait_for(asyncio.gather(*(partition(n) for n in "abc")), timeout=5)
        return probers

    probers = asyncio.run(scenario())
    assert probers[:6] == ["a", "b", "c", "a", "b", "c"]
    assert sorted(probers[6:]) == ["a", "b"]  # let through at once by the success


def test_a_wait_can_be_interrupted_but_an_open_destination_is_not_waited_for() -> None:
    gate = DestinationGate({"fhir": ""}, initial=30.0, maximum=30.0)

    async def scenario() -> None:
        released = asyncio.Event()
        assert await gate.wait_for_pass("fhir", interrupt=released) is not None
        granted = gate.try_pass("fhir")
        assert granted is not None
        gate.failed(granted, down())
        waiter = asyncio.ensure_future(gate.wait_for_pass("fhir", interrupt=released))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        released.set()
        with pytest.raises(DestinationWaitInterrupted):
            await asyncio.wait_for(waiter, timeout=1.0)

    asyncio.run(scenario())


class ScriptedSink:
    """A sink answering from a script: an exception to raise, or None for success."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script
        self.calls = 0

    @property
    def name(self) -> str:
        return "fhir"

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        self.calls += 1
        outcome = self.script.pop(0)
        if outcome is not None:
            raise outcome
        return DeliveryReceipt(destination="fhir", status=200)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_a_gated_sink_reports_outcomes_and_a_rejection_proves_the_server_is_up() -> None:
    gate = DestinationGate({"fhir": ""}, initial=0.05, maximum=0.05, rng=Top())
    rejected = RejectedDeliveryError("destination fhir: HTTP 422", status=422)
    sink = ScriptedSink([down(), down(), rejected, None, DeliveryError("odd"), None])
    gated = GatedSink(sink, gate)

    async def scenario() -> None:
        envelope = make_envelope()
        with pytest.raises(TransientDeliveryError):
            await gated.deliver({}, envelope)
        assert gate.retry_in("fhir") is not None
        with pytest.raises(TransientDeliveryError):
            await gated.deliver({}, envelope)  # waits for the pause, probes, fails
        with pytest.raises(RejectedDeliveryError):
            await gated.deliver({}, envelope)
        assert gate.retry_in("fhir") is None  # a 422 answer: the destination is up
        await gated.deliver({}, envelope)
        with pytest.raises(DeliveryError):
            await gated.deliver({}, envelope)  # retried like a transient one: pauses
        assert gate.retry_in("fhir") is not None
        await gated.deliver({}, envelope)
        assert gate.retry_in("fhir") is None

    asyncio.run(scenario())
    assert sink.calls == 6
