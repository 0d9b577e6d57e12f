"""The partition worker's stop is bounded, as the service's is: a conversion running when
the grace is up is ended (its message, not acknowledged, is redelivered), and a
destination whose close raises is logged and does not stop the rest of the stop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from listeners.amqp import AmqpWorker
from tests.listeners.amqp.support import Configure, envelope, store
from tests.listeners.service.test_conversion_timeout import oru

pytestmark = pytest.mark.anyio


async def test_a_conversion_running_at_the_stop_is_ended_within_the_grace(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the pool waited for the conversion in progress (up to
    delivery.conversion_timeout): the worker's stop outlasted its grace, past the
    container runtime's SIGKILL."""
    config = configure(backend="amqp", amqp={"partitions": 1}, delivery={"conversion_timeout": 120})
    worker = AmqpWorker(config)  # real conversion processes
    await worker.start()
    try:
        slow = oru("S23-WSLOW-1", 20000, mrn="MRN-WSLOW")  # about half a minute
        await store(
            config,
            [envelope("S23-WSLOW-1", "MRN-WSLOW", "-", payload=slow, message_type="ORU^R01")],
        )
        await asyncio.sleep(3.0)  # consumed, and converting (~1.5 ms an observation)
    finally:
        started = time.monotonic()
        await worker.stop(2.0)
        took = time.monotonic() - started
    assert took < 15, f"the stop took {took:.1f} s"
    ended = [r for r in caplog.records if getattr(r, "event", None) == "conversions_ended_at_stop"]
    assert len(ended) == 1 and ended[0].levelno == logging.WARNING


async def test_a_destination_whose_close_raises_is_logged_and_the_stop_goes_on(
    configure: Configure, caplog: pytest.LogCaptureFixture
) -> None:
    config = configure(backend="amqp", amqp={"partitions": 1})
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Testpatient^Alice")  # a library's text may quote a message

    worker.sinks["default"].close = broken  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="passerelle")
    await worker.stop(2.0)
    failed = [r for r in caplog.records if getattr(r, "event", None) == "stop_step_failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert "Testpatient" not in caplog.text
    assert any(r.getMessage() == "worker stopped" for r in caplog.records)
