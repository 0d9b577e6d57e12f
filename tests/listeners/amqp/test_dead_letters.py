"""``passerelle dead-letters`` on RabbitMQ's dead-letter queue: a real worker makes the dead
letters, the real command lists, shows, retries and purges them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from listeners.amqp import AmqpWorker
from listeners.amqp.envelope import (
    ERROR_HEADERS,
    H_FAILED_AT,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
)
from listeners.config import load_config
from tests.listeners.amqp.support import (
    AmqpClient,
    ConfigFile,
    Names,
    adt,
    envelope,
    eventually,
    patients,
    store,
    write_config,
)
from tests.listeners.service.support import passerelle
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


async def command(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(passerelle, "dead-letters", *args)


def letter_ids(listing: str) -> dict[str, str]:
    """Control id (or ``raw`` for a non-envelope) → dead letter id, from ``list``."""
    ids = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        control = next((f.split("=", 1)[1] for f in fields if f.startswith("control-id=")), "raw")
        ids[control] = fields[0]
    return ids


async def test_rabbitmq_dead_letters_are_listed_shown_retried_and_purged(
    broker: RabbitMq, fhir: FhirServer, names: Names, config_file: ConfigFile
) -> None:
    path = config_file(backend="amqp", amqp={"partitions": 2}, delivery={"max_attempts": 1})
    config = load_config(path, env={})
    cfg = ("--config", str(path))
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        await eventually(lambda: len(worker.owned) == 2, what="both partitions")
        fhir.fail(503, count=1)
        await store(config, [envelope("DL-1", "MRN-DL-1", "Quillebeuf")])
        await eventually(lambda: worker.processed == 1, what="DL-1 dead-lettered")
        bad_date = adt("DL-2", mrn="MRN-DL-2", birth_date="20241341")
        await store(config, [envelope("DL-2", "MRN-DL-2", "Other", payload=bad_date)])
        async with AmqpClient(broker.url) as client:
            await client.publish(names.partitions, "partition.0", b"SECRET", message_id="raw-1")
        await eventually(lambda: worker.processed == 3, what="three dead letters")

        listing = await command("list", *cfg)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.startswith("3 dead letter(s)")
        assert "Quillebeuf" not in listing.stdout and "SECRET" not in listing.stdout
        ids = letter_ids(listing.stdout)
        assert set(ids) == {"DL-1", "DL-2", "raw"} and ids["raw"] == "raw-1"
        assert "(not a Passerelle envelope)" in listing.stdout
        # Reading gives everything back, in the same order.
        assert (await command("list", *cfg)).stdout == listing.stdout
        paged = await command("list", "--offset", "1", "--limit", "1", *cfg)
        assert paged.stdout.splitlines()[1] == listing.stdout.splitlines()[2]

        shown = await command("show", ids["DL-1"], *cfg)
        info = json.loads(shown.stdout)
        assert info["control_id"] == "DL-1" and info["attempts"] == 1
        assert info["error"]["stage"] == "delivery" and info["error"]["status"] == 503
        assert info["retry_to"]["exchange"] == names.partitions
        assert "Quillebeuf" not in shown.stdout
        assert "Quillebeuf" in (await command("show", ids["DL-1"], "--payload", *cfg)).stdout
        conversion = json.loads((await command("show", ids["DL-2"], *cfg)).stdout)
        assert conversion["error"]["kind"] == "MappingError"
        assert conversion["error"]["location"].startswith("PID-7")
        assert (await command("show", "no-such-id", *cfg)).returncode == 1

        retried = await command("retry", ids["DL-1"], *cfg)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == "1 dead letter(s) sent again"
        [patient] = await eventually(lambda: patients(fhir, "MRN-DL-1"), what="DL-1 delivered")
        assert patient["name"][0]["family"] == "Quillebeuf"
        refused = await command("retry", "raw-1", *cfg)
        assert refused.returncode == 1 and "not a Passerelle envelope" in refused.stderr
        assert (await command("list", *cfg)).stdout.startswith("2 dead letter(s)")

        both = await command("retry", ids["DL-2"], "--all", *cfg)  # an id or all, not both
        assert both.returncode == 2 and "not both" in both.stderr
        kept = await command("purge", "--older-than-days", "1", *cfg)
        assert kept.stdout.strip() == "0 dead letter(s) purged"
        unselected = await command("purge", *cfg)  # used to delete them all, unasked
        assert unselected.returncode == 2 and "--all" in unselected.stderr
        assert (await command("list", *cfg)).stdout.startswith("2 dead letter(s)")
        purged = await command("purge", "--older-than-days", "0", *cfg)
        assert purged.stdout.strip() == "2 dead letter(s) purged"
        assert (await command("list", *cfg)).stdout.startswith("0 dead letter(s)")
    finally:
        await worker.stop(5)


async def test_a_consumer_dead_letter_is_sent_back_to_where_it_was_consumed_from(
    tmp_path: Path, broker: RabbitMq, names: Names
) -> None:
    path = write_config(tmp_path, amqp_url=broker.url, names=names)
    cfg = ("--config", str(path), "--amqp")  # the SQLite backend: --amqp picks RabbitMQ
    origin = f"{names.prefix}.origin"
    # Nothing has declared the dead-letter queue yet: empty, not an error.
    assert (await command("list", *cfg)).stdout.startswith("0 dead letter(s)")
    async with AmqpClient(broker.url) as client:
        channel = await client.channel()
        await channel.declare_queue(origin, durable=True)
        dead_letters = await channel.declare_exchange(names.dead_letters, "topic", durable=True)
        queue = await channel.declare_queue(names.dead_letters, durable=True)
        await queue.bind(dead_letters, "#")
        await client.publish(
            names.dead_letters,
            "conversion",
            b"MSH|^~\\&|...",
            message_id="from-consumer",
            headers={
                H_ORIGINAL_EXCHANGE: "",  # the default exchange: straight to `origin`
                H_ORIGINAL_ROUTING_KEY: origin,
                ERROR_HEADERS["kind"]: "ParseError",
                H_FAILED_AT: "1700049600.0",  # 2023-11-15 12:00 UTC
                "x-custom": "kept",
            },
        )
        listing = await command("list", *cfg)
        assert listing.stdout.startswith("1 dead letter(s)"), listing.stderr
        assert "2023-11-15" in listing.stdout  # failed-at, not the time of listing
        retried = await command("retry", "--all", *cfg)
        assert retried.stdout.strip() == "1 dead letter(s) sent again", retried.stderr
        [back] = await client.take(origin, 1)
    assert back.message_id == "from-consumer" and back.body == b"MSH|^~\\&|..."
    headers = back.headers or {}
    assert headers.get("x-custom") == "kept"
    assert not {ERROR_HEADERS["kind"], H_FAILED_AT, H_ORIGINAL_EXCHANGE} & set(headers)
    assert (await command("list", *cfg)).stdout.startswith("0 dead letter(s)")
