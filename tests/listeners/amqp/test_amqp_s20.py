"""``[amqp.consumer]`` and ``passerelle worker`` against a real RabbitMQ node: the content
type's charset, compressed bodies (and zip bombs), a dead-letter exchange nothing is bound
to, the broker-connected gauge, and partition queues the operator declared (quorum) or
that vanish under a running worker."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
import zlib

import pytest

from listeners.amqp import AmqpQueue, AmqpSink, AmqpWorker
from listeners.amqp.body import ContentEncodingError, DecodedTooLarge, decode_content
from listeners.amqp.envelope import ERROR_HEADERS
from listeners.errors import QueueError
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    captured_logs,
    envelope,
    eventually,
    history_families,
    log_entries,
    patients,
    running_service,
    store,
)
from tests.listeners.service.support import MetricsSnapshot, latin_name_adt
from tests.support.fhirserver import FhirServer
from tests.support.loop_stall import longest_stall
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"


def _family(fhir: FhirServer, mrn: str) -> str:
    [patient] = patients(fhir, mrn)
    return str(patient["name"][0]["family"])


# -- item 1: the content type's charset ------------------------------------------------------
@pytest.mark.parametrize("mode", ["delivery", "commit"])
async def test_content_type_charset_reads_a_latin1_message_without_msh18(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure, mode: str
) -> None:
    config = configure(consumer={"mode": mode})
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt",
            latin_name_adt("CS-1", "MRN-CS-1", encoding="latin-1"),
            content_type="text/plain; charset=iso-8859-1",
            message_id="cs-1",
        )
        # MSH-18 wins over the content type: UTF-8 bytes declared UTF-8 in MSH-18.
        await client.publish(
            names.ingress,
            "adt",
            latin_name_adt("CS-2", "MRN-CS-2", charset="UNICODE UTF-8", encoding="utf-8"),
            content_type='text/plain; charset="ISO-8859-1"',
            message_id="cs-2",
        )
        await eventually(
            lambda: patients(fhir, "MRN-CS-1") and patients(fhir, "MRN-CS-2"),
            what="both patients",
        )
        assert await client.get(names.dead_letters) is None
    assert _family(fhir, "MRN-CS-1") == "Lefèvre"
    assert _family(fhir, "MRN-CS-2") == "Lefèvre"


async def test_content_type_charset_unknown_or_wrong_is_a_dead_letter_naming_it(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"})
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt",
            latin_name_adt("CS-3", "MRN-CS-3", encoding="latin-1"),
            content_type="text/plain; charset=klingon-8",
            message_id="cs-3",
        )
        [letter] = await client.take(names.dead_letters, 1)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == "CharsetError"
    assert "content type charset" in str(headers[ERROR_HEADERS["reason"]])
    assert headers[ERROR_HEADERS["location"]] == "content_type"
    assert not patients(fhir, "MRN-CS-3")


# -- item 2: content encodings ---------------------------------------------------------------
async def test_gzip_and_deflate_bodies_are_decoded_before_conversion(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"})
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt",
            gzip.compress(adt("CE-1", mrn="MRN-CE-1")),
            content_type=HL7,
            content_encoding="gzip",
        )
        await client.publish(
            names.ingress,
            "adt",
            zlib.compress(adt("CE-2", mrn="MRN-CE-2")),
            content_type=HL7,
            content_encoding="deflate",
        )
        # Compressed and Latin-1: both properties apply.
        await client.publish(
            names.ingress,
            "adt",
            gzip.compress(latin_name_adt("CE-3", "MRN-CE-3", encoding="latin-1")),
            content_type="text/plain; charset=iso-8859-1",
            content_encoding="gzip",
        )
        await eventually(
            lambda: all(patients(fhir, f"MRN-CE-{n}") for n in (1, 2, 3)),
            what="three patients",
        )
        assert await client.get(names.dead_letters) is None
    assert _family(fhir, "MRN-CE-3") == "Lefèvre"


async def test_zip_bomb_unknown_and_corrupt_encodings_are_dead_letters(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    limit = 64 * 1024
    config = configure(consumer={"mode": "delivery"}, amqp={"max_message_bytes": limit})
    message = adt("CE-4", mrn="MRN-CE-4")
    # 50 MB of spaces after the message: about 50 KB of gzip, under the limit.
    bomb = gzip.compress(message + b" " * 50_000_000, compresslevel=9)
    assert len(bomb) < limit
    bodies = {
        "bomb": (bomb, "gzip"),
        "brotli": (message, "br"),
        "corrupt": (gzip.compress(message)[:-12], "gzip"),
        "not-gzip": (message, "gzip"),
    }
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        for key, (body, encoding) in bodies.items():
            await client.publish(
                names.ingress,
                "adt",
                body,
                content_type=HL7,
                content_encoding=encoding,
                message_id=key,
            )
        letters = await client.take(names.dead_letters, len(bodies))
        assert await client.counts(names.ingress) == (0, 1)
        oversized = service.metrics.dead_lettered.labels("oversized", "unknown")
        assert oversized._value.get() == 1
    by_id = {str(letter.message_id): letter.headers or {} for letter in letters}
    kind, reason = ERROR_HEADERS["kind"], ERROR_HEADERS["reason"]
    assert by_id["bomb"][kind] == "MessageTooLarge"
    assert f"maximum of {limit} bytes once gzip-decoded" in str(by_id["bomb"][reason])
    assert by_id["brotli"][kind] == "ContentEncodingError"
    assert "'br' is not supported" in str(by_id["brotli"][reason])
    assert by_id["corrupt"][kind] == "ContentEncodingError"
    assert by_id["not-gzip"][kind] == "ContentEncodingError"
    # The dead letter keeps the body and its encoding as they came, for a replay.
    assert {letter.content_encoding for letter in letters} == {"gzip", "br"}
    assert not patients(fhir, "MRN-CE-4")


# -- item 3: a dead-letter exchange with no queue bound --------------------------------------
async def _bind_dead_letter_queue(client: AmqpClient, names: Names) -> None:
    channel = await client.channel()
    queue = await channel.declare_queue(names.dead_letters, durable=True)
    await queue.bind(names.dead_letters, "#")


async def test_consumer_holds_a_dead_letter_no_queue_receives_instead_of_looping(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"}, amqp={"dead_letter_queue": ""})
    with captured_logs() as logs:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            await client.publish(
                names.ingress, "x", b"SECRET not HL7\r", content_type=HL7, message_id="dl-1"
            )
            metrics = service.metrics
            await eventually(
                lambda: metrics.dead_letters_held.labels("consumer")._value.get() == 1,
                what="the message held",
            )
            await asyncio.sleep(3.5)  # the old code returned it to the queue every second
            consumer = service.consumer
            assert consumer is not None
            with pytest.raises(QueueError, match="routes to no queue"):
                await consumer.check()
            # Held, unacknowledged: neither dropped nor back in the queue.
            assert await client.counts(names.ingress) == (0, 1)
            await _bind_dead_letter_queue(client, names)
            [letter] = await client.take(names.dead_letters, 1, timeout=30)
            assert letter.message_id == "dl-1"
            await eventually(
                lambda: metrics.dead_letters_held.labels("consumer")._value.get() == 0,
                what="nothing held",
            )
            await consumer.check()
            assert metrics.dead_letters_unroutable.labels("consumer")._value.get() == 1
            assert metrics.dead_lettered.labels("unsupported", "unknown")._value.get() == 1
            assert await client.counts(names.ingress) == (0, 1)
    entries = log_entries(logs)
    unroutable = [e for e in entries if e.get("event") == "dead_letter_unroutable"]
    assert [e["level"] for e in unroutable] == ["error"]
    assert not [e for e in entries if "returning the message to the queue" in e["message"]]
    assert not any("SECRET" in json.dumps(e) for e in entries)


async def test_consumer_stop_returns_a_held_message_to_the_queue(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"}, amqp={"dead_letter_queue": ""})
    async with AmqpClient(broker.url) as client:
        async with running_service(config) as service:
            await client.publish(names.ingress, "x", b"not HL7\r", content_type=HL7)
            await eventually(
                lambda: service.metrics.dead_letters_held.labels("consumer")._value.get() == 1,
                what="the message held",
            )
            started = time.monotonic()
        assert time.monotonic() - started < 5, "the held message does not hold up the stop"
        assert await client.counts(names.ingress) == (1, 0)


async def test_worker_holds_a_dead_letter_no_queue_receives_and_keeps_its_partition(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(backend="amqp", amqp={"partitions": 1, "dead_letter_queue": ""})
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            async with AmqpClient(broker.url) as client:
                await eventually(lambda: worker.owned == [0], what="the partition claimed")
                # A conversion error (month 13): a dead letter.
                await store(config, [envelope("WD-1", "MRN-WD", "WD", payload=_bad_date())])
                await eventually(
                    lambda: worker._handler is not None and worker._handler.holds.count
                )
                await asyncio.sleep(3.5)
                checks = await worker.readiness()
                assert "routes to no queue" in str(checks.get("dead-letters"))
                assert worker.metrics.dead_letters_held.labels("worker")._value.get() == 1
                await _bind_dead_letter_queue(client, names)
                [letter] = await client.take(names.dead_letters, 1, timeout=30)
                assert (letter.headers or {})[ERROR_HEADERS["stage"]] == "conversion"
                await eventually(lambda: worker.processed == 1, what="the message settled")
                assert "dead-letters" not in await worker.readiness()
                assert await client.counts(names.partition(0)) == (0, 1)
        finally:
            await worker.stop(5)
    entries = log_entries(logs)
    claims = [e for e in entries if e.get("event") == "partition-claimed"]
    assert len(claims) == 1, "the partition was released and claimed again"
    unroutable = [e for e in entries if e.get("event") == "dead_letter_unroutable"]
    assert [e["level"] for e in unroutable] == ["error"]
    assert worker.metrics.dead_letters_unroutable.labels("worker")._value.get() == 1


def _bad_date() -> bytes:
    return adt("WD-1", mrn="MRN-WD", birth_date="20241341")


# -- item 4: the broker-connected gauge ------------------------------------------------------
async def test_amqp_connected_gauge_follows_the_consumer_connection(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "commit"})
    async with running_service(config) as service:
        snapshot = lambda: MetricsSnapshot.parse(service.metrics.render().decode())  # noqa: E731
        assert snapshot().value("passerelle_amqp_connected", connection="consumer") == 1
        try:
            await asyncio.to_thread(broker.stop_app)
            await eventually(
                lambda: snapshot().value("passerelle_amqp_connected", connection="consumer") == 0,
                what="the gauge at 0",
            )
            consumer = service.consumer
            assert consumer is not None
            with pytest.raises(QueueError, match="not connected"):
                await consumer.check()
        finally:
            await asyncio.to_thread(broker.start_app)
        await eventually(
            lambda: snapshot().value("passerelle_amqp_connected", connection="consumer") == 1,
            timeout=30,
            what="the gauge back at 1",
        )


async def test_amqp_connected_gauge_covers_the_services_amqp_queue(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    # queue.backend = "amqp": the MLLP side's partition queues; the gauge was the consumer's
    # and the worker's only, so a service storing into RabbitMQ showed nothing.
    config = configure(backend="amqp")
    async with running_service(config) as service:
        snapshot = lambda: MetricsSnapshot.parse(service.metrics.render().decode())  # noqa: E731
        await eventually(
            lambda: snapshot().value("passerelle_amqp_connected", connection="queue") == 1,
            what="the queue's gauge at 1",
        )


# -- item 5: partition queues the operator declared, or that vanish --------------------------
async def test_quorum_partition_queues_declared_beforehand_are_used_as_they_are(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(backend="amqp", amqp={"partitions": 2})
    async with AmqpClient(broker.url) as client:
        channel = await client.channel()
        for number in range(2):
            await channel.declare_queue(
                names.partition(number), durable=True, arguments={"x-queue-type": "quorum"}
            )
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            await eventually(lambda: worker.owned == [0, 1], what="both partitions claimed")
            # The MLLP side (AmqpQueue) declares them too, then stores into them.
            await store(config, [envelope(f"QQ-{n}", f"MRN-QQ-{n}", "Quorum") for n in range(4)])
            await eventually(
                lambda: all(patients(fhir, f"MRN-QQ-{n}") for n in range(4)), what="deliveries"
            )
        finally:
            await worker.stop(5)
    entries = log_entries(logs)
    assert not [e for e in entries if e["message"] == "RabbitMQ session ended"]
    assert [e for e in entries if e.get("event") == "partition_queue_arguments"]


async def test_a_partition_queue_gone_does_not_end_the_worker_session(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(backend="amqp", amqp={"partitions": 2})
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            await eventually(lambda: worker.owned == [0, 1], what="both partitions claimed")
            async with AmqpClient(broker.url) as client:
                channel = await client.channel()
                await channel.queue_delete(names.partition(1))
            # Declared again by the worker itself, claimed again; partition 0 untouched.
            await eventually(
                lambda: sum(e.get("event") == "partition-claimed" for e in log_entries(logs)) == 3,
                what="partition 1 claimed again",
            )
            await store(config, [envelope(f"GO-{n}", f"MRN-GO-{n}", "Gone") for n in range(4)])
            await eventually(
                lambda: all(patients(fhir, f"MRN-GO-{n}") for n in range(4)), what="deliveries"
            )
            assert worker.owned == [0, 1]
        finally:
            await worker.stop(5)
    entries = log_entries(logs)
    assert not [e for e in entries if e["message"] == "RabbitMQ session ended"]
    released = [e for e in entries if e.get("event") == "partition-released"]
    assert len(released) == 3, "partition 1 once at its deletion, both at the stop"


async def test_a_claim_of_a_queue_that_went_away_does_not_end_the_session(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    # The race between the look (no consumer) and the claim, made certain: partition 3
    # of a worker configured with 2 has no queue at all.
    config = configure(backend="amqp", amqp={"partitions": 2, "rebalance_interval": 60})
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            await eventually(lambda: worker.owned == [0, 1], what="both partitions claimed")
            assert await worker._share.claim(3) is None
            await asyncio.sleep(0.5)
            assert worker.owned == [0, 1]
            await store(config, [envelope("RC-1", "MRN-RC-1", "Race")])
            await eventually(lambda: patients(fhir, "MRN-RC-1"), what="the delivery")
        finally:
            await worker.stop(5)
    entries = log_entries(logs)
    assert not [e for e in entries if e["message"] == "RabbitMQ session ended"]


def test_decode_content_reads_gzip_members_and_bounds_each_byte() -> None:
    # No broker needed: the body rules alone (the consumer tests above go through it).
    first, second = b"MSH|^~\\&|A\r", b"PID|1||X\r"
    assert decode_content(gzip.compress(first) + gzip.compress(second), "gzip", 100) == (
        first + second
    )
    assert decode_content(zlib.compress(first)[2:-4], "deflate", 100) == first  # raw
    with pytest.raises(DecodedTooLarge):
        decode_content(gzip.compress(first) + gzip.compress(second), "gzip", len(first) + 1)
    with pytest.raises(ContentEncodingError):
        decode_content(gzip.compress(first) + b"junk", "GZIP", 100)
    assert decode_content(first, " Identity ", 1) == first  # identity: no limit of its own


async def test_the_queue_and_the_bundle_sink_tell_whether_they_are_connected(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    # For passerelle_amqp_connected{connection="queue"|"destination"} (wired by the service).
    config = configure(backend="amqp", bundles=True)
    queue = AmqpQueue(config.amqp)
    assert not queue.connected
    await queue.start()
    try:
        assert queue.connected
    finally:
        await queue.close()
    assert not queue.connected
    publish = config.destinations["default"].amqp
    assert publish is not None
    sink = AmqpSink("default", publish)
    assert not sink.connected
    try:
        await sink.check()
        assert sink.connected
    finally:
        await sink.close()
    assert not sink.connected


# -- session 21: compressed bodies read off the event loop, in delivery order ---------------
_EMPTY_MEMBER = gzip.compress(b"")


def _decoding_time(body: bytes, limit: int) -> float:
    """The fastest of two decodings of ``body``: what the loop would stand still."""
    took = []
    for _ in range(2):
        began = time.perf_counter()
        decode_content(body, "gzip", limit)
        took.append(time.perf_counter() - began)
    return min(took)


def _gzip_sized_for_this_machine(message: bytes, seconds: float, limit: int) -> tuple[bytes, float]:
    """``message`` gzipped, then as many empty gzip members (RFC 1952 allows any number)
    as take ``seconds`` to decompress here, or as fit in ``limit`` bytes (the raw body's
    limit): a fast machine gets a longer body."""
    first = gzip.compress(message)
    largest = (limit - len(first)) // len(_EMPTY_MEMBER)
    count = min(20_000, largest)
    while True:
        body = first + _EMPTY_MEMBER * count
        took = _decoding_time(body, limit)
        if took >= seconds or count >= largest:
            return body, took
        count = min(math.ceil(count * 1.5 * seconds / took), largest)


async def test_a_compressed_body_is_decompressed_without_stalling_the_event_loop(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    # decode_content ran on the event loop: for as long as a body took to inflate, no
    # MLLP ACK, /ready answer or delivery.
    config = configure(consumer={"mode": "delivery"})
    body, decoding = _gzip_sized_for_this_machine(
        adt("GZ-1", mrn="MRN-GZ-1"), 0.4, config.amqp.max_message_bytes
    )
    async with running_service(config), AmqpClient(broker.url) as client:
        # A first message, so that what the first conversion loads (templates compiled in
        # the conversion thread, holding the GIL) is not counted.
        await client.publish(names.ingress, "adt", adt("GZ-0", mrn="MRN-GZ-0"), content_type=HL7)
        await eventually(lambda: patients(fhir, "MRN-GZ-0"), timeout=60, what="the first patient")
        done = asyncio.get_running_loop().create_future()
        stall = asyncio.ensure_future(longest_stall(done))
        await client.publish(names.ingress, "adt", body, content_type=HL7, content_encoding="gzip")
        await eventually(lambda: patients(fhir, "MRN-GZ-1"), timeout=60, what="the patient")
        done.set_result(None)
        longest = await stall
        assert await client.get(names.dead_letters) is None
    assert longest < decoding / 3, (longest, decoding, len(body))


@pytest.mark.parametrize("mode", ["delivery", "commit"])
async def test_a_message_read_at_once_waits_for_the_compressed_one_delivered_before_it(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure, mode: str
) -> None:
    # The compressed A01 is read in a thread; the A08 behind it (same patient, plain) is
    # read at once. Taking its place in the patient's chain first, it was delivered first
    # and the A01 then overwrote it: the patient kept the older name.
    config = configure(consumer={"mode": mode})
    first, _ = _gzip_sized_for_this_machine(
        adt("ORD-1", mrn="MRN-ORD", family="Older", event="A01"),
        0.3,
        config.amqp.max_message_bytes,
    )
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "adt", first, content_type=HL7, content_encoding="gzip")
        await client.publish(
            names.ingress, "adt", adt("ORD-2", mrn="MRN-ORD", family="Newer"), content_type=HL7
        )
        [patient] = await eventually(lambda: patients(fhir, "MRN-ORD"), timeout=60)
        await eventually(
            lambda: len(history_families(fhir, patient["id"])) == 2, timeout=60, what="2 versions"
        )
        assert await client.get(names.dead_letters) is None
    assert history_families(fhir, patient["id"]) == ["Older", "Newer"]
