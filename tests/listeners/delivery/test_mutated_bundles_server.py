"""What converts, a real FHIR server takes: mutated samples that convert are delivered to
the test server (Medplum's engine, which validates every resource against R4) in the
default PUT mode, as transactions, or as batches where Medplum caps transactions.

The R4 validator test (tests/test_mutated_bundles_r4.py) checks each resource; this one
checks what only a server sees: the bundle's requests, ids and references together."""

from __future__ import annotations

import pytest

from listeners.delivery import FhirServerSink
from listeners.errors import DeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer
from tests.support.mutations import mutated_conversions

pytestmark = pytest.mark.anyio

MUTATIONS = 300
#: Medplum refuses a transaction with more than 50 updates.
MEDPLUM_MAX_UPDATES = 50


async def test_every_mutated_input_that_converts_is_taken_by_the_server(
    server: FhirServer,
) -> None:
    delivered = 0
    refused: list[str] = []
    async with (
        FhirServerSink(destination(server, timeout=30)) as transactions,
        FhirServerSink(destination(server, timeout=30, bundle_type="batch")) as batches,
    ):
        for n, conversion in mutated_conversions(MUTATIONS, seed=1129):
            large = len(conversion.bundle["entry"]) > MEDPLUM_MAX_UPDATES
            sink = batches if large else transactions
            try:
                await sink.deliver(conversion.bundle, make_envelope(f"MUT-{n}"))
                delivered += 1
            except DeliveryError as exc:
                refused.append(f"{conversion.message_type} #{n}: {exc}"[:300])
    assert delivered > MUTATIONS // 5, f"only {delivered} bundles delivered"
    assert not refused, refused[:5]
