"""Session 25, a ``MemoryError`` while *delivering* a message's bundles (``passerelle serve``).

Before: the worker took it for a conversion's ``MemoryError``, whose count the next
conversion (which succeeded) reset: the message was retried for ever (``max_attempts =
0``, the default), its patient's later messages waiting behind it for good. Now the
delivery's own count dead-letters it at the third, kind ``DeliveryOutOfMemory`` at stage
``delivery``, with an ERROR; a transient failure of the destination is still a retry.

A real service (MLLP, SQLite queue, conversion processes), the real test FHIR server; the
``MemoryError`` is raised where the request's body is made
(:func:`listeners.delivery.base.request_body`, as :mod:`listeners.delivery.fhir` calls it),
for the bundles of the patient named :data:`~tests.listeners.support.MARKER` only
(:func:`~tests.listeners.support.out_of_memory_for_marker`). The AMQP paths are tested in
``tests/listeners/amqp/test_amqp_memory_errors_s25.py``. Templates compiled first, waits of
minutes: :func:`tests.listeners.support.prepared_config` (a loaded host).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from listeners import conversion
from listeners.conversion_deaths import (
    CONVERSION_OUT_OF_MEMORY,
    DEATHS_TO_DEAD_LETTER,
    DELIVERY_OUT_OF_MEMORY,
)
from listeners.delivery import bundle_bytes
from listeners.delivery import fhir as fhir_delivery
from listeners.delivery.base import BundleInput
from tests.listeners.service.support import (
    adt,
    bundle_posts,
    fresh,
    patients,
    running,
    wait_until,
)
from tests.listeners.support import (
    MARKER,
    PATIENCE,
    dead_letters,
    memory_error_on_huge,
    out_of_memory_for_marker,
    prepared_config,
    real_request_body,
)
from tests.support.fhirserver import FhirServer, require_fhirserver
from tests.support.log_records import log_records


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    require_fhirserver()
    with FhirServer.start() as server:
        yield server


@pytest.fixture
def fhir(fhir_server: FhirServer) -> FhirServer:
    return fresh(fhir_server)


def test_a_delivery_running_out_of_memory_each_time_is_dead_lettered_at_the_third(
    tmp_path: Path, fhir: FhirServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = prepared_config(tmp_path, fhir_url=fhir.base_url)
    assert config.delivery.max_attempts == 0  # the default: retried for ever before
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    with log_records("passerelle") as records, running(config) as service:
        acks = service.send(
            [
                adt("OOM-1", mrn="MRN-OOM", family=MARKER),
                adt("NEXT-2", mrn="MRN-OOM", family="Next"),
                adt("OTHER-3", mrn="MRN-OTHER", family="Other"),
            ]
        )
        assert [a.code for a in acks] == ["AA", "AA", "AA"]
        # NEXT-2, behind OOM-1 (same patient), goes once OOM-1 is settled.
        wait_until(
            lambda: patients(fhir, "MRN-OOM"), timeout=PATIENCE, what="the patient's next message"
        )
        service.drained(PATIENCE)
        [letter] = dead_letters(service)
        dead = service.metrics().value(
            "passerelle_messages_dead_lettered_total", reason="out-of-memory"
        )
        pool = service.service.pool
        assert pool is not None and pool.restarts == 0  # the conversion was never at fault
    assert letter.envelope.control_id == "OOM-1"
    assert letter.error["kind"] == DELIVERY_OUT_OF_MEMORY
    assert letter.error["stage"] == "delivery"
    assert letter.error["destination"] == "default"
    assert "ran out of memory 3 times" in str(letter.error["reason"])
    assert dead == 1
    assert [p["name"][0]["family"] for p in patients(fhir, "MRN-OOM")] == ["Next"]
    assert patients(fhir, "MRN-OTHER")
    # Nothing of OOM-1's ever reached the server: three tries, none sent.
    assert len(bundle_posts(fhir)) == 2
    mine = [r for r in records if getattr(r, "control_id", None) == "OOM-1"]
    retries = [r.getMessage() for r in mine if "will retry" in r.getMessage()]
    assert retries == ["delivery failed; will retry (delivery ran out of memory)"] * (
        DEATHS_TO_DEAD_LETTER - 1
    )
    settled = [r for r in mine if "dead-lettered" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in settled] == [
        (logging.ERROR, "delivery ran out of memory; message dead-lettered")
    ]
    # Not a crash (no traceback), nor a conversion's death.
    assert not [r for r in mine if r.exc_info or "conversion" in r.getMessage()]


def test_max_attempts_do_not_turn_a_memory_error_into_attempts_exhausted(
    tmp_path: Path, fhir: FhirServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_attempts below the out-of-memory limit: before, the second MemoryError was a dead
    # letter "attempts exhausted" of kind TransientDeliveryError, the cause hidden. The
    # out-of-memory limit decides, with its kind (a conversion's death likewise).
    config = prepared_config(tmp_path, {"delivery": {"max_attempts": 2}}, fhir_url=fhir.base_url)
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    with running(config) as service:
        [ack] = service.send([adt("OOM-4", mrn="MRN-OOM4", family=MARKER)])
        assert ack.code == "AA"
        service.drained(timeout=PATIENCE)
        [letter] = dead_letters(service)
        exhausted = service.metrics().value(
            "passerelle_messages_dead_lettered_total", reason="attempts-exhausted"
        )
    assert letter.error["kind"] == DELIVERY_OUT_OF_MEMORY
    assert exhausted == 0


def test_max_attempts_do_not_turn_a_conversion_memory_error_into_attempts_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same for a conversion's MemoryError (a folder destination: no delivery made).
    config = prepared_config(tmp_path, {"delivery": {"max_attempts": 2}})
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    with running(config) as service:
        [ack] = service.send([adt("HUGE-5", mrn="MRN-HUGE5")])
        assert ack.code == "AA"
        service.drained(timeout=PATIENCE)
        [letter] = dead_letters(service)
    assert letter.error["kind"] == CONVERSION_OUT_OF_MEMORY


def test_the_count_starts_again_once_the_message_is_delivered(
    tmp_path: Path, fhir: FhirServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two MemoryErrors, then the memory is back: delivered. A later message of the same
    # patient that runs out of memory twice is delivered too (its own count, from zero).
    config = prepared_config(tmp_path, fhir_url=fhir.base_url)
    left = {"Twicefirst": 2, "Twicesecond": 2}

    async def two_memory_errors(bundle: BundleInput, *, batch: bool) -> bytes:
        text = bundle_bytes(bundle)
        for family, count in left.items():
            if family.encode() in text and count:
                left[family] = count - 1
                raise MemoryError
        return await real_request_body(bundle, batch=batch)

    monkeypatch.setattr(fhir_delivery, "request_body", two_memory_errors)
    with running(config) as service:
        acks = service.send(
            [
                adt("FIRST-1", mrn="MRN-TWICE", family="Twicefirst"),
                adt("SECOND-2", mrn="MRN-TWICE", family="Twicesecond", event="A08"),
            ]
        )
        assert [a.code for a in acks] == ["AA", "AA"]
        service.drained(timeout=PATIENCE)
        assert dead_letters(service) == []
    assert left == {"Twicefirst": 0, "Twicesecond": 0}
    assert len(bundle_posts(fhir)) == 2


def test_a_transient_failure_of_the_destination_is_still_retried(
    tmp_path: Path, fhir: FhirServer
) -> None:
    # More transient failures than the out-of-memory limit: never a dead letter.
    fhir.fail(503, count=DEATHS_TO_DEAD_LETTER + 2)
    config = prepared_config(tmp_path, fhir_url=fhir.base_url)
    with running(config) as service:
        [ack] = service.send([adt("BUSY-1", mrn="MRN-BUSY")])
        assert ack.code == "AA"
        wait_until(lambda: patients(fhir, "MRN-BUSY"), timeout=PATIENCE, what="BUSY-1 delivered")
        service.drained(PATIENCE)
        assert dead_letters(service) == []
