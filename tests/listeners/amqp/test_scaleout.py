"""``queue.backend = "amqp"``: the MLLP listener commits to RabbitMQ before its ACK,
``passerelle worker`` processes share the partitions, and nothing confirmed is lost when
the broker restarts or a worker dies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from listeners.amqp import AmqpWorker, decode_envelope, partition_of
from listeners.amqp.envelope import ordering_token
from listeners.config import load_config
from listeners.mllp import ConnectionClosedError, MllpClient, parse_ack
from tests.listeners.amqp.support import (
    AmqpClient,
    ConfigFile,
    Configure,
    Names,
    WorkerProcess,
    adt,
    bundle_posts,
    envelope,
    eventually,
    history_families,
    make_config,
    ordering_key,
    patients,
    running_service,
    store,
    wait_until,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

HL7 = "x-application/hl7-v2+er7"


@pytest.mark.anyio
async def test_mllp_acks_only_once_rabbitmq_confirmed_the_message(
    tmp_path: Path, broker: RabbitMq, names: Names
) -> None:
    config = make_config(tmp_path, amqp_url=broker.url, names=names, backend="amqp")
    first = adt("SC-1", mrn="MRN-SC-1")
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        assert service.mllp is not None
        port = service.mllp.addresses["mllp"][1]
        async with MllpClient("127.0.0.1", port, timeout=10) as mllp:
            ack = parse_ack(await mllp.send(first))
        assert ack.code == "AA"
        assert await service.queue.depth() == 1
        # Stored in its partition, every field of the envelope carried along.
        partition = partition_of(ordering_key("MRN-SC-1"), 4)
        counts = [await client.counts(names.partition(n)) for n in range(4)]
        assert [c[0] for c in counts] == [int(n == partition) for n in range(4)]
        [message] = await client.take(names.partition(partition), 1)
        stored = decode_envelope(message)
        assert stored.payload == first
        assert (
            stored.sender,
            stored.listener,
            stored.control_id,
            stored.message_type,
            stored.input_type,
            stored.route,
        ) == ("mllp/APP-A^FAC-A", "mllp", "SC-1", "ADT^A08^ADT_A01", "hl7v2", "default")
        assert stored.ordering_key == ordering_token(ordering_key("MRN-SC-1"))
        assert "MRN-SC-1" not in str(message.headers)  # the patient travels in the body only
        assert abs(stored.received_at - time.time()) < 30
        assert message.correlation_id == "SC-1" and message.message_id
        assert (message.headers or {})["x-passerelle-partition"] == partition

        # The broker goes away: no ACK at all (the connection is closed), never a false AA.
        await asyncio.to_thread(broker.stop_app)
        try:
            ready = await service.readiness()
            assert ready["queue"] is not None
            started = time.monotonic()
            async with MllpClient("127.0.0.1", port, timeout=20) as mllp:
                with pytest.raises(ConnectionClosedError):
                    await mllp.send(adt("SC-2", mrn="MRN-SC-2"))
            assert time.monotonic() - started < 15  # at worst confirm_timeout, not a hang
        finally:
            await asyncio.to_thread(broker.start_app)

        # The sender sends again, as MLLP senders do without an ACK: AA once reconnected.
        async def resend() -> str:
            async with MllpClient("127.0.0.1", port, timeout=15) as mllp:
                try:
                    return parse_ack(await mllp.send(adt("SC-2", mrn="MRN-SC-2"))).code
                except ConnectionClosedError:
                    await asyncio.sleep(0.3)
                    return ""

        deadline = time.monotonic() + 30
        while await resend() != "AA":
            assert time.monotonic() < deadline, "no AA after the broker came back"
    async with AmqpClient(broker.url) as client:  # the first one lost its connection
        totals = [(await client.counts(names.partition(n)))[0] for n in range(4)]
    assert sum(totals) == 1  # SC-2, stored once: the unacknowledged attempt was not


def test_two_worker_processes_share_the_partitions_deliver_once_in_order_and_survive_a_crash(
    fhir: FhirServer, config_file: ConfigFile
) -> None:
    path = config_file(backend="amqp", amqp={"partitions": 8}, log_format="json")
    config = load_config(path, env={})
    first = WorkerProcess(path, "first")
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: len(first.owned()) == 8, what="the first worker to hold everything")
        second = WorkerProcess(path, "second")
        wait_until(
            lambda: len(first.owned()) == 4 and len(second.owned()) == 4,
            what="a fair share (4 + 4)",
        )
        assert not first.owned() & second.owned()

        # 12 patients, 4 messages each, interleaved; each version renames the patient so the
        # server's history tells the order in which the updates were applied.
        mrns = [f"SH-{n}" for n in range(12)]
        envelopes = [
            envelope(f"{mrn}-{v}", mrn, f"{mrn}-v{v}") for v in range(1, 5) for mrn in mrns
        ]
        asyncio.run(store(config, envelopes))
        wait_until(lambda: len(bundle_posts(fhir)) >= 48, timeout=60, what="48 deliveries")
        time.sleep(0.5)
        posts = bundle_posts(fhir)
        assert len(posts) == 48 and {p["status"] for p in posts} == {200}  # once each
        for mrn in mrns:
            [patient] = patients(fhir, mrn)
            assert history_families(fhir, patient["id"]) == [f"{mrn}-v{v}" for v in range(1, 5)]
        done_first, done_second = first.delivered(), second.delivered()
        assert done_first and done_second, "both workers did a share"
        delivered_ids = sorted(e["control_id"] for e in done_first + done_second)
        assert delivered_ids == sorted(e.control_id or "" for e in envelopes)

        # The second worker dies in the middle of a delivery: its unacked message goes back
        # to the head of its partition, and the first worker, taking the partition over,
        # delivers it before the patient's later messages.
        held = {int(name.rsplit(".", 1)[1]) for name in second.owned()}
        mrn = next(
            f"CR-{n}" for n in range(1000) if partition_of(ordering_key(f"CR-{n}"), 8) in held
        )
        fhir.clear_requests()
        fhir.control(faults=[{"delayMs": 3000, "drop": True, "count": 1}])
        asyncio.run(store(config, [envelope(f"{mrn}-{v}", mrn, f"{mrn}-v{v}") for v in (1, 2, 3)]))
        wait_until(lambda: bundle_posts(fhir), what="the delivery in flight")
        second.kill()
        wait_until(lambda: len(first.owned()) == 8, what="the survivor to take over")
        wait_until(lambda: len(bundle_posts(fhir)) >= 4, what="the redelivery")
        [patient] = wait_until(lambda: patients(fhir, mrn), what="the patient")
        wait_until(
            lambda: history_families(fhir, patient["id"])[-1:] == [f"{mrn}-v3"],
            what="the last update",
        )
        assert history_families(fhir, patient["id"]) == [f"{mrn}-v{v}" for v in (1, 2, 3)]
        redelivered = [e for e in first.delivered() if e["control_id"] == f"{mrn}-1"]
        assert len(redelivered) == 1
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.terminate()
    assert "Traceback" not in first.text()


@pytest.mark.anyio
async def test_nothing_confirmed_is_lost_when_the_broker_restarts_mid_stream(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    # Ingress queue → (consumer, mode "commit") → partitions → worker → FHIR server.
    config = configure(
        backend="amqp",
        consumer={"mode": "commit"},
    )
    total, restart_after = 40, 12
    confirmed: list[str] = []
    failed_attempts = 0
    # A slow server: when the broker goes down, messages wait in the ingress and partition
    # queues (and one is unacked in the worker): they must all survive the restart.
    fhir.control(faults=[{"delayMs": 200, "count": 20}])

    async def publish(control_id: str) -> None:
        """Publish until the broker confirms (a publisher re-sends what was not confirmed)."""
        while True:
            try:
                async with AmqpClient(broker.url) as client:
                    await client.publish(
                        names.ingress,
                        "adt",
                        adt(control_id, mrn=f"MRN-{control_id}"),
                        content_type=HL7,
                        message_id=control_id,
                    )
                confirmed.append(control_id)
                return
            except Exception:
                nonlocal failed_attempts
                failed_attempts += 1
                await asyncio.sleep(0.3)

    worker = AmqpWorker(config, use_threads=True)
    async with running_service(config):
        await worker.start()
        try:
            restart: asyncio.Future[None] | None = None
            for n in range(total):
                if n == restart_after:
                    restart = asyncio.ensure_future(asyncio.to_thread(broker.restart))
                    await asyncio.sleep(0.5)
                await publish(f"BR-{n}")
                await asyncio.sleep(0.05)
            assert restart is not None
            await restart
            await eventually(
                lambda: fhir.count("Patient") == total, timeout=90, what=f"{total} patients"
            )
        finally:
            await worker.stop(10)
    assert len(confirmed) == total
    assert failed_attempts > 0, "the publisher never saw the broker down"
    assert all(patients(fhir, f"MRN-{control_id}") for control_id in confirmed)
