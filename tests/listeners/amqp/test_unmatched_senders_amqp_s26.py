"""``unmatched_senders = "reject"`` on the AMQP consumer, against a real RabbitMQ node and
the real test FHIR server: a message no route matches is dead-lettered at intake (kind
``UnmatchedSenderError``, HL7 error 103 at MSH-3, as the MLLP listener's AR) and never
stored in the service's queue nor delivered; a known sender's message is delivered."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from listeners.amqp.envelope import ERROR_HEADERS
from listeners.config import load_config
from tests.listeners.amqp.support import (
    AmqpClient,
    ConfigFile,
    Names,
    adt,
    eventually,
    patients,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"

LAB_ROUTE = """
[[routes]]
name = "lab"
sending_application = "LAB"
"""


async def test_an_unknown_sender_is_dead_lettered_unstored_and_a_known_one_delivered(
    broker: RabbitMq, fhir: FhirServer, names: Names, config_file: ConfigFile
) -> None:
    path = config_file(consumer={}, top={"unmatched_senders": "reject"})
    path.write_text(path.read_text(encoding="utf-8") + LAB_ROUTE, encoding="utf-8")
    config = load_config(path, env={})
    unknown = adt("UNK-1", mrn="MRN-SECRET-U", application="LAB-TYPO")
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "x", unknown, message_id="unknown", content_type=HL7)
        await client.publish(
            names.ingress,
            "x",
            adt("KNOWN-1", mrn="MRN-K1", application="LAB"),
            message_id="known",
            content_type=HL7,
        )
        [letter] = await client.take(names.dead_letters, 1)
        await eventually(lambda: patients(fhir, "MRN-K1"), what="the known sender's patient")
        metrics = service.metrics.render().decode()
    headers = letter.headers or {}
    assert letter.message_id == "unknown" and letter.body == unknown
    assert headers[ERROR_HEADERS["kind"]] == "UnmatchedSenderError"
    assert headers[ERROR_HEADERS["hl7_error_code"]] == "103"
    assert headers[ERROR_HEADERS["location"]] == "MSH-3"
    assert headers[ERROR_HEADERS["stage"]] == "intake"
    assert "LAB-TYPO" in str(headers[ERROR_HEADERS["reason"]])
    assert not any("SECRET" in str(value) for value in headers.values()), headers
    assert patients(fhir, "MRN-SECRET-U") == []
    with sqlite3.connect(Path(config.queue.path)) as db:
        stored = [row[0] for row in db.execute("SELECT control_id FROM messages")]
    assert stored == ["KNOWN-1"]
    assert 'passerelle_messages_unmatched_total{listener="amqp",outcome="refused"} 1.0' in (
        metrics
    ), metrics
