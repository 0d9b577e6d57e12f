"""What converts, a real FHIR server takes: mutated samples that convert are delivered to
the test server (Medplum's engine, which validates every resource against R4) in the
default PUT mode, as transactions, or as batches where Medplum caps transactions.

The R4 validator test (tests/test_mutated_bundles_r4.py) checks each resource; this one
checks what only a server sees: the bundle's requests, ids and references together."""

from __future__ import annotations

import random

import pytest

from converter import ConversionError, Converter, ConverterConfig
from listeners.delivery import FhirServerSink
from listeners.errors import DeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer
from tests.support.scripts import load_script

pytestmark = pytest.mark.anyio

MUTATIONS = 300
#: Medplum refuses a transaction with more than 50 updates.
MEDPLUM_MAX_UPDATES = 50


async def test_every_mutated_input_that_converts_is_taken_by_the_server(
    server: FhirServer,
) -> None:
    fuzz = load_script("fuzz_inputs.py")
    inputs = [
        p.read_bytes() for p in sorted(fuzz.SAMPLES.glob("*/*")) if p.suffix in (".hl7", ".xml")
    ]
    converters = [Converter(ConverterConfig()), Converter(ConverterConfig(strict_values=False))]
    rng = random.Random(1129)
    delivered = 0
    refused: list[str] = []
    async with (
        FhirServerSink(destination(server, timeout=30)) as transactions,
        FhirServerSink(destination(server, timeout=30, bundle_type="batch")) as batches,
    ):
        for n in range(MUTATIONS):
            data = fuzz.mutate(rng, rng.choice(inputs))
            try:
                results = rng.choice(converters).convert(data)
            except ConversionError:
                continue
            for result in results:
                large = len(result.bundle["entry"]) > MEDPLUM_MAX_UPDATES
                sink = batches if large else transactions
                try:
                    await sink.deliver(result.bundle, make_envelope(f"MUT-{n}"))
                    delivered += 1
                except DeliveryError as exc:
                    refused.append(f"{result.message_type} #{n}: {exc}"[:300])
    assert delivered > MUTATIONS // 5, f"only {delivered} bundles delivered"
    assert not refused, refused[:5]
