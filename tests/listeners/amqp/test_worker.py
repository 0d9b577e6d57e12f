"""The partition worker on the test's loop: retries in place keep a patient's order, the
attempts cap and poison go to the dead-letter exchange, the share follows the workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from listeners.amqp import AmqpWorker
from listeners.amqp.envelope import ERROR_HEADERS, H_ATTEMPTS
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    captured_logs,
    envelope,
    eventually,
    history_families,
    log_entries,
    make_config,
    patients,
    store,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


def samples(worker: AmqpWorker, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    return sum(
        sample.value
        for metric in worker.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name
    )


async def test_a_transient_failure_is_retried_in_place_and_later_messages_wait(
    fhir: FhirServer, configure: Configure
) -> None:
    config = configure(
        backend="amqp",
        amqp={"partitions": 1},
    )
    fhir.fail(503, count=2, retry_after=0.2)
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        await store(
            config, [envelope("IP-1", "MRN-IP", "IP-v1"), envelope("IP-2", "MRN-IP", "IP-v2")]
        )
        await eventually(lambda: worker.processed == 2, what="both messages")
    finally:
        await worker.stop(5)
    [patient] = patients(fhir, "MRN-IP")
    assert history_families(fhir, patient["id"]) == ["IP-v1", "IP-v2"]
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 503, 200, 200]
    assert worker.metrics.retried.labels("default", "503")._value.get() == 2
    # Converted once per message: the retries deliver the same bundles again.
    assert samples(worker, "passerelle_messages_converted_total") == 2
    assert samples(worker, "passerelle_conversion_seconds_count") == 2
    assert samples(worker, "passerelle_bundles_delivered_total") == 2


async def test_poison_and_exhausted_attempts_go_to_the_dead_letter_exchange(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        backend="amqp",
        amqp={"partitions": 1},
        delivery={"max_attempts": 2},
    )
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        await eventually(lambda: worker.owned == [0], what="the partition claimed")
        async with AmqpClient(broker.url) as client:
            # Not an envelope (published by something else than Passerelle).
            await client.publish(names.partitions, "partition.0", b"SECRET", message_id="raw")
            await store(
                config,
                [
                    envelope(
                        "PW-1",
                        "MRN-PW-1",
                        "PW",
                        payload=adt("PW-1", mrn="MRN-PW-1", birth_date="20241341"),
                    )
                ],
            )
            fhir.fail(503, count=5)
            await store(config, [envelope("PW-2", "MRN-PW-2", "PW")])
            letters = await client.take(names.dead_letters, 3)
    finally:
        await worker.stop(5)
    by_stage = {(letter.headers or {})[ERROR_HEADERS["stage"]]: letter for letter in letters}
    assert set(by_stage) == {"envelope", "conversion", "delivery"}
    assert by_stage["envelope"].body == b"SECRET"
    conversion = by_stage["conversion"].headers or {}
    assert conversion[ERROR_HEADERS["kind"]] == "MappingError"
    assert str(conversion[ERROR_HEADERS["location"]]).startswith("PID-7")
    assert conversion["x-passerelle-control-id"] == "PW-1"  # the envelope stays with it
    delivery = by_stage["delivery"].headers or {}
    assert delivery[H_ATTEMPTS] == 2 and delivery[ERROR_HEADERS["status"]] == 503
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 503]


async def test_partitions_are_shared_fairly_and_taken_over_when_a_worker_stops(
    tmp_path: Path, broker: RabbitMq, names: Names
) -> None:
    config = make_config(
        tmp_path, amqp_url=broker.url, names=names, backend="amqp", amqp={"partitions": 5}
    )
    first, second, third = (AmqpWorker(config, use_threads=True) for _ in range(3))
    await first.start()
    try:
        await eventually(lambda: len(first.owned) == 5, what="all five partitions")
        await second.start()
        await third.start()
        # ceil(5 / 3) = 2 each at most: 2 + 2 + 1.
        await eventually(
            lambda: sorted(len(w.owned) for w in (first, second, third)) == [1, 2, 2],
            what="a fair share",
        )
        owned = [set(w.owned) for w in (first, second, third)]
        assert set.union(*owned) == set(range(5)) and sum(map(len, owned)) == 5
        await second.stop(5)
        await eventually(
            lambda: sorted(len(w.owned) for w in (first, third)) == [2, 3],
            what="the partitions of the stopped worker taken over",
        )
        async with AmqpClient(broker.url) as client:
            for n in range(5):
                assert (await client.counts(names.partition(n)))[1] == 1  # one consumer each
    finally:
        for worker in (first, third):
            await worker.stop(5)


async def test_a_worker_serves_health_readiness_and_metrics(
    configure: Configure,
) -> None:
    config = configure(
        backend="amqp",
        amqp={"partitions": 2},
    )
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        base = f"http://127.0.0.1:{worker.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            ready = await client.get("/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"amqp": "ok", "destination:default": "ok"}
            await eventually(lambda: len(worker.owned) == 2, what="both partitions")
            await store(config, [envelope("HM-1", "MRN-HM", "HM")])
            await eventually(lambda: worker.processed == 1, what="the message delivered")
            metrics = (await client.get("/metrics")).text
            # The worker serves probes, not conversions.
            assert (await client.post("/convert", content=b"MSH|")).status_code == 404
    finally:
        await worker.stop(5)
    assert "passerelle_worker_partitions 2.0" in metrics
    assert re.search(
        r'passerelle_bundles_delivered_total\{destination="default"[^}]*\} 1\.0', metrics
    )
    with pytest.raises(httpx.ConnectError):  # stopped with the worker
        httpx.get(f"{base}/health", timeout=5)


async def test_a_worker_is_not_ready_while_its_destination_is_unreachable(
    tmp_path: Path, broker: RabbitMq, names: Names
) -> None:
    config = make_config(
        tmp_path,
        amqp_url=broker.url,
        names=names,
        fhir_url="http://127.0.0.1:9/fhir/R4",  # discard port: nothing listens
        backend="amqp",
    )
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            ready = await client.get(f"http://127.0.0.1:{worker.http_port}/ready")
    finally:
        await worker.stop(5)
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["amqp"] == "ok"
    assert checks["destination:default"] != "ok"


async def test_a_converter_bug_dead_letters_the_message_and_the_partition_goes_on(
    broker: RabbitMq,
    fhir: FhirServer,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A planted bug (conversions run in threads here): a KeyError for one message. Retried,
    # it would hold back the partition's later messages for good.
    from converter import Converter

    original = Converter.convert

    def convert(self: Converter, data: bytes, **kwargs: object) -> object:
        if b"|BUG-1|" in data:
            raise KeyError("Quillebeuf")
        return original(self, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Converter, "convert", convert)
    config = configure(backend="amqp", amqp={"partitions": 1})
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        await eventually(lambda: worker.owned == [0], what="the partition claimed")
        await store(config, [envelope("BUG-1", "MRN-BUG", "v1"), envelope("OK-2", "MRN-BUG", "v2")])
        async with AmqpClient(broker.url) as client:
            [letter] = await client.take(names.dead_letters, 1)
        [patient] = await eventually(lambda: patients(fhir, "MRN-BUG"), what="OK-2 delivered")
    finally:
        await worker.stop(5)
    headers = letter.headers or {}
    assert headers["x-passerelle-control-id"] == "BUG-1"
    assert headers[ERROR_HEADERS["kind"]] == "InternalError"
    assert str(headers[ERROR_HEADERS["location"]]).startswith("test_worker.py:")
    assert patient["name"][0]["family"] == "v2"


async def test_retries_say_why_cap_retry_after_and_dead_letters_hold_no_diagnostics(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    """A Retry-After of ~3 years is capped at backoff_max (0.5 s here) and said so; the
    retry line names the failure; the server's diagnostics (patient values) stay out of
    the dead letter's headers and the log."""
    diagnostic = "Patient GIRARD Thomas born 1990-05-17 invalid"
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostic}],
    }
    fhir.control(
        faults=[
            {"status": 503, "count": 1, "retryAfter": "99999999"},
            {"status": 422, "count": 1, "outcome": outcome},
        ]
    )
    config = configure(backend="amqp", amqp={"partitions": 1})
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            await eventually(lambda: worker.owned == [0], what="the partition claimed")
            await store(config, [envelope("RA-1", "MRN-RA", "RA")])
            async with AmqpClient(broker.url) as client:
                [letter] = await client.take(names.dead_letters, 1, timeout=15)
        finally:
            await worker.stop(5)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["status"]] == 422
    assert headers[ERROR_HEADERS["reason"]] == "destination default: HTTP 422 Unprocessable Entity"
    entries = log_entries(logs)
    [retry] = [e for e in entries if e["message"].startswith("delivery failed; will retry")]
    assert retry["message"] == (
        "delivery failed; will retry in place (HTTP 503 Service Unavailable; "
        "Retry-After 99999999s capped at delivery.backoff_max 0.5s)"
    )
    assert retry["error_kind"] == "TransientDeliveryError" and retry["delay_s"] == 0.5
    assert diagnostic not in json.dumps(entries)
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 422]
