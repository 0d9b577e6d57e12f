"""FhirServerSink against the real test FHIR server (Medplum fhir-router, in memory)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from converter import json_dumps
from listeners.config import DestinationConfig
from listeners.delivery import FhirServerSink, build_sink, outcome_summary
from listeners.errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import (
    PATIENT_SYSTEM,
    PATIENT_VALUE,
    destination,
    make_envelope,
)
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[3]

OUTCOME_422 = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "business-rule",
            "diagnostics": "Patient.birthDate is after the admission date",
            "expression": ["Bundle.entry[3].resource.birthDate"],
        }
    ],
}


def _transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
            for i, resource in enumerate(resources)
        ],
    }


# -- accepted -------------------------------------------------------------------------------------


async def test_transaction_accepted_and_patient_found(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(server)) as sink:
        receipt = await sink.deliver(adt_bundle, make_envelope())
    assert receipt.status == 200
    assert receipt.destination == "test"
    assert len(receipt.entries) == len(adt_bundle["entry"])
    assert all(entry.status is not None and 200 <= entry.status < 300 for entry in receipt.entries)
    patient_entry = next(
        e for e in adt_bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient_id = patient_entry["resource"]["id"]
    assert f"Patient/{patient_id}" in {entry.location for entry in receipt.entries}
    summary = receipt.summary()
    assert summary["entries"] == len(adt_bundle["entry"])
    assert "resource" not in json.dumps(summary)  # statuses and locations only

    found = server.search_by_identifier("Patient", PATIENT_SYSTEM, PATIENT_VALUE)
    assert [patient["id"] for patient in found] == [patient_id]
    # References between entries were kept (stable ids, urn:uuid: rewritten).
    encounter = next(
        e["resource"] for e in adt_bundle["entry"] if e["resource"]["resourceType"] == "Encounter"
    )
    stored = server.read("Encounter", encounter["id"])
    assert stored is not None
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"

    (request,) = server.requests("/fhir/R4")
    assert request["method"] == "POST"
    assert request["headers"]["content-type"] == "application/fhir+json"
    assert request["headers"]["accept"] == "application/fhir+json"


async def test_bundle_as_bytes(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    data = json_dumps(adt_bundle).encode()  # FHIR decimals need the converter's encoder
    async with FhirServerSink(destination(server)) as sink:
        receipt = await sink.deliver(data, make_envelope())
    assert receipt.status == 200
    assert server.requests("/fhir/R4")[0]["bodyBytes"] == len(data)
    assert server.count("Patient") == 1


async def test_redelivery_does_not_duplicate(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(server)) as sink:
        await sink.deliver(adt_bundle, make_envelope())
        counts = {kind: server.count(kind) for kind in ("Patient", "Encounter", "Practitioner")}
        await sink.deliver(adt_bundle, make_envelope())
    assert counts["Patient"] == 1
    assert {kind: server.count(kind) for kind in counts} == counts
    assert len(server.search_by_identifier("Patient", PATIENT_SYSTEM, PATIENT_VALUE)) == 1


async def test_concurrent_deliveries_share_the_pool(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(server)) as sink:
        receipts = await asyncio.gather(
            *(sink.deliver(adt_bundle, make_envelope(f"M{i}")) for i in range(8))
        )
    assert {receipt.status for receipt in receipts} == {200}
    assert server.count("Patient") == 1


# -- conditional create ---------------------------------------------------------------------------


async def test_conditional_create_refused_by_medplum_transactions(
    server: FhirServer, adt_conditional_bundle: dict[str, Any]
) -> None:
    """Observed: Medplum runs conditional entries in "serializable" transactions of at most
    8 entries; the 20-entry ADT bundle is refused with 400 (a rejection, as it would be on a
    real Medplum server with the transaction-bundles feature)."""
    assert len(adt_conditional_bundle["entry"]) > 8
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(adt_conditional_bundle, make_envelope())
    assert caught.value.status == 400
    assert caught.value.outcome is not None
    assert "strict isolation" in outcome_summary(caught.value.outcome)
    assert server.count("Patient") == 0


async def test_conditional_create_does_not_duplicate(
    batch_server: FhirServer, adt_conditional_bundle: dict[str, Any]
) -> None:
    """With transactions processed as batches (Medplum without the transaction-bundles
    feature), If-None-Exist is honoured: the second delivery matches and creates nothing."""
    async with FhirServerSink(destination(batch_server)) as sink:
        first = await sink.deliver(adt_conditional_bundle, make_envelope())
        counts = {
            kind: batch_server.count(kind)
            for kind in ("Patient", "Organization", "Practitioner", "Encounter")
        }
        second = await sink.deliver(adt_conditional_bundle, make_envelope())
    assert counts["Patient"] == 1
    assert {kind: batch_server.count(kind) for kind in counts} == counts
    created = {
        entry.status
        for entry, source in zip(first.entries, adt_conditional_bundle["entry"], strict=True)
        if source["request"]["method"] == "POST"
    }
    assert created == {201}
    assert {entry.status for entry in second.entries} == {200}
    # urn:uuid: references were rewritten to the server-assigned ids.
    (patient,) = batch_server.search_by_identifier("Patient", PATIENT_SYSTEM, PATIENT_VALUE)
    (encounter,) = (e["resource"] for e in batch_server.search("Encounter")["entry"])
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"


async def test_conditional_create_keeps_identifiers_with_search_separators_apart(
    batch_server: FhirServer,
) -> None:
    """An identifier "123,456" searched unescaped matches patients 123 and 456 (412), and
    "C\\D" matches patient "CD": the second's data would land on another patient."""
    from converter.assembly.bundle import build_bundle

    values = ["123", "456", "123,456", "CD", "C\\D"]
    async with FhirServerSink(destination(batch_server)) as sink:
        for attempt in range(2):  # the second round matches each patient, creates none
            for n, value in enumerate(values):
                patient = {
                    "resourceType": "Patient",
                    "id": f"sep-{n}",
                    "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": value}],
                }
                bundle = build_bundle(f"b-{n}", [patient], mode="conditional-create")
                receipt = await sink.deliver(bundle, make_envelope(f"SEP-{attempt}-{n}"))
                assert [entry.status for entry in receipt.entries] == [201 if attempt == 0 else 200]
    assert batch_server.count("Patient") == len(values)


async def test_a_bundle_over_medplums_transaction_cap_goes_through_as_a_batch(
    server: FhirServer,
) -> None:
    """Observed: Medplum refuses a transaction with more than 50 updates; the sample CCD
    gives 60 PUT entries. ``bundle_type = "batch"`` sends the same entries as a batch."""
    from converter import Converter, ConverterConfig

    ccd = (REPO / "samples" / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    bundle = Converter(ConverterConfig()).convert_document(ccd).bundle
    assert len(bundle["entry"]) > 50
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(bundle, make_envelope())
    assert caught.value.outcome is not None
    assert "more update operations than allowed" in outcome_summary(caught.value.outcome)
    async with FhirServerSink(destination(server, bundle_type="batch")) as sink:
        receipt = await sink.deliver(bundle, make_envelope())
    assert len(receipt.entries) == len(bundle["entry"])
    assert {entry.status for entry in receipt.entries} <= {200, 201}
    assert server.count("Composition") == 1
    assert bundle["type"] == "transaction"  # the converter's bundle itself is unchanged


# -- transient failures ---------------------------------------------------------------------------


async def test_503_with_retry_after_seconds(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server.fail(503, retry_after=7)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
        assert caught.value.status == 503
        assert caught.value.retry_after == 7
        assert caught.value.outcome is not None
        # The fault is consumed: the next delivery goes through.
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200


async def test_429_with_retry_after_http_date(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    server.fail(429, retry_after=formatdate(time.time() + 30, usegmt=True))
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 429
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 504, 408])
async def test_server_errors_are_transient(
    server: FhirServer, adt_bundle: dict[str, Any], status: int
) -> None:
    server.fail(status)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == status
    assert caught.value.retry_after is None
    # The server's diagnostics stay in the outcome; the message names the status.
    assert caught.value.outcome is not None
    assert f"Injected failure {status}" in outcome_summary(caught.value.outcome)
    assert f"Injected failure {status}" not in str(caught.value)
    assert f"HTTP {status} " in str(caught.value)


async def test_non_fhir_error_body(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server.control(
        faults=[
            {
                "status": 502,
                "outcome": False,
                "body": "<html>Bad gateway</html>",
                "contentType": "text/html",
            }
        ]
    )
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.outcome is None
    assert "<html>" not in str(caught.value)


async def test_timeout_is_transient(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server.delay(3000)
    async with FhirServerSink(destination(server, timeout=0.5)) as sink:
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert time.monotonic() - started < 2.5
    assert "timed out" in str(caught.value)
    assert caught.value.status is None


async def test_dropped_connection_is_transient(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    server.drop()
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError):
            await sink.deliver(adt_bundle, make_envelope())
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200


async def test_connection_refused_then_server_back(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(server, timeout=5)) as sink:
        await sink.check()
        await sink.deliver(adt_bundle, make_envelope())
        port = server.port
        server.stop()
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
        assert "cannot reach" in str(caught.value)
        assert caught.value.status is None
        with pytest.raises(DeliveryError):
            await sink.check()
        server.restart()  # same port, data lost (in memory only)
        assert server.port == port
        assert server.count("Patient") == 0
        await sink.check()
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
    assert server.count("Patient") == 1


# -- rejections -----------------------------------------------------------------------------------


async def test_invalid_resource_rejected_with_diagnostics(server: FhirServer) -> None:
    """Medplum validates resources: a bad birthDate gives 400 and an OperationOutcome. Its
    transactions are not atomic: the valid entry processed before stays written."""
    bundle = _transaction(
        {"resourceType": "Patient", "id": "valid", "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "id": "invalid", "birthDate": "not-a-date"},
    )
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(bundle, make_envelope())
    error = caught.value
    assert error.status == 400
    assert error.outcome is not None
    assert error.outcome["resourceType"] == "OperationOutcome"
    assert "birthDate" in outcome_summary(error.outcome)
    assert server.read("Patient", "invalid") is None
    assert server.read("Patient", "valid") is not None  # non-atomic


async def test_422_outcome_rejected(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server.fail(422, outcome=OUTCOME_422)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 422
    assert caught.value.outcome == OUTCOME_422
    summary = outcome_summary(caught.value.outcome)
    assert "error business-rule: Patient.birthDate is after the admission date" in summary
    assert "@ Bundle.entry[3].resource.birthDate" in summary
    # Not in the message, which dead-letter listings and logs show (patient values).
    assert str(caught.value) == "destination test: HTTP 422 Unprocessable Entity"


async def test_not_a_transaction_rejected(server: FhirServer) -> None:
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(
                {"resourceType": "Bundle", "type": "collection", "entry": []}, make_envelope()
            )
    assert caught.value.status == 400


async def test_partial_transaction_response_is_a_failure(batch_server: FhirServer) -> None:
    """A 200 transaction-response with a failed entry (non-atomic server) is not success."""
    bundle = _transaction(
        {"resourceType": "Patient", "id": "valid", "birthDate": "1970-01-01"},
        {"resourceType": "Patient", "id": "invalid", "birthDate": "not-a-date"},
    )
    async with FhirServerSink(destination(batch_server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(bundle, make_envelope())
    assert batch_server.requests("/fhir/R4")[0]["status"] == 200
    assert caught.value.status == 400
    assert caught.value.outcome is not None
    assert "1 of 2 entries failed" in str(caught.value)
    assert batch_server.read("Patient", "valid") is not None


async def test_partial_failure_with_server_error_entry_is_transient(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    """An entry failing with 5xx makes the whole delivery transient (resending is safe)."""
    sent = len(adt_bundle["entry"])
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": "Patient/p1/_history/1"}},
            *({"response": {"status": "200 OK"}} for _ in range(sent - 2)),
            {
                "response": {
                    "status": "503 Service Unavailable",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "error",
                                "code": "transient",
                                "diagnostics": "database busy",
                            }
                        ],
                    },
                }
            },
        ],
    }
    server.control(faults=[{"status": 200, "outcome": response}])
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 503
    assert f"1 of {sent} entries failed" in str(caught.value)
    assert caught.value.outcome is not None
    assert "database busy" in outcome_summary(caught.value.outcome)
    assert "database busy" not in str(caught.value)


# -- headers, readiness ---------------------------------------------------------------------------


async def test_extra_headers_reach_server(server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    config = destination(server, headers={"X-Tenant": "north", "X-Api-Key": "k-123"})
    async with FhirServerSink(config) as sink:
        await sink.deliver(adt_bundle, make_envelope())
    (request,) = server.requests("/fhir/R4")
    assert request["headers"]["x-tenant"] == "north"
    assert request["headers"]["x-api-key"] == "k-123"
    assert "authorization" not in request["headers"]


async def test_check_up_and_down(server: FhirServer) -> None:
    async with FhirServerSink(destination(server)) as sink:
        await sink.check()
    assert server.requests("/fhir/R4/metadata")[0]["method"] == "GET"
    server.fail(503)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(DeliveryError):
            await sink.check()


async def test_check_unreachable(unused_port: int) -> None:
    config = DestinationConfig(name="nowhere", url=f"http://127.0.0.1:{unused_port}/fhir/R4")
    async with FhirServerSink(config) as sink:
        with pytest.raises(DeliveryError, match="cannot reach"):
            await sink.check()


async def test_build_sink_picks_fhir_server(server: FhirServer) -> None:
    sink = build_sink(destination(server))
    try:
        assert isinstance(sink, FhirServerSink)
        await sink.check()
    finally:
        await sink.close()


@pytest.fixture
def unused_port() -> Iterator[int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    yield port
