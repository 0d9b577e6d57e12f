"""Session 22, delivery to the real test FHIR server: a transaction the server committed
after the client gave up (timeout) is sent again by the retry; the resend must leave the
server as one delivery would (Passerelle's bundles are idempotent: PUT with stable ids,
or conditional writes), whatever resource types the bundle holds."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from listeners.delivery.fhir import FhirServerSink
from listeners.errors import TransientDeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.anyio


def resource_types(bundle: dict[str, Any]) -> list[str]:
    return sorted({entry["resource"]["resourceType"] for entry in bundle["entry"]})


def counts(server: FhirServer, types: list[str]) -> Counter[str]:
    return Counter({name: server.count(name) for name in types})


async def resend_after_a_timeout(server: FhirServer, bundle: dict[str, Any]) -> None:
    types = resource_types(bundle)
    server.delay(1500)  # the server commits after the client gave up
    async with FhirServerSink(destination(server, timeout=0.5)) as impatient:
        with pytest.raises(TransientDeliveryError, match="timed out"):
            await impatient.deliver(bundle, make_envelope())
    deadline = time.monotonic() + 10
    while not server.count("Patient") and time.monotonic() < deadline:
        time.sleep(0.1)
    committed = counts(server, types)
    assert committed["Patient"] == 1  # the answer was lost, not the transaction
    async with FhirServerSink(destination(server, timeout=10)) as sink:
        assert (await sink.deliver(bundle, make_envelope())).status == 200  # the retry
    assert counts(server, types) == committed


async def test_a_put_transaction_committed_after_a_timeout_is_resent_harmlessly(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    await resend_after_a_timeout(server, adt_bundle)


async def test_a_conditional_create_bundle_committed_after_a_timeout_is_resent_harmlessly(
    batch_server: FhirServer, adt_conditional_bundle: dict[str, Any]
) -> None:
    await resend_after_a_timeout(batch_server, adt_conditional_bundle)
