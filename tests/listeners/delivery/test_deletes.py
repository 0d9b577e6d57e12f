"""A re-sent deletion is delivered, not dead-lettered (listeners/delivery/deletes.py).

The test FHIR server (Medplum engine) answers ``DELETE Patient/<id>`` of a Patient it does not
hold with 404 and fails the whole transaction (as a batch: that entry 404). FHIR R4 allows
200, 204 or 404 there. A29 sent twice (a lost ACK, a retry after a timeout that had in fact
committed) or an A29 whose A28 never reached the server was a dead letter; the sink now checks
that the DELETE targets are absent and delivers the rest of the bundle again, once, with a
WARNING (the server cannot tell "deleted before" from "never held"). A 404 about anything
else stays a rejection; a 404 that is not the FHIR server's own answer (no OperationOutcome:
an ingress or a proxy in front of it) never makes a target "absent" either (and when the
base's ``/metadata`` is no FHIR server's, it is the destination's problem, retried).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from converter import Converter, ConverterConfig, json_dumps
from converter.assembly.bundle import RequestMode
from listeners.amqp.publisher import CompositeSink
from listeners.conversion import ConversionResult
from listeners.delivery import (
    BundleInput,
    DeliveryReceipt,
    EntryResult,
    FhirServerSink,
    deliver_results,
)
from listeners.delivery.endpoint import EndpointNotFoundError
from listeners.delivery.failures import UnexpectedAnswerError
from listeners.errors import RejectedDeliveryError, TransientDeliveryError
from listeners.metrics import MAX_RESOURCE_TYPES, Metrics
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.listeners.service.support import make_config, running
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import lines, message, resources, set_field

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7v2"
A28 = (SAMPLES / "ADT_A28_add-person.hl7").read_bytes()
A29 = (SAMPLES / "ADT_A29_delete-person.hl7").read_bytes()
BASE = "/fhir/R4"
PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.1.1"
IPP = "0012391234"
#: The read of ``[base]/metadata`` that tells a 404 of the server from a wrong base path
#: (listeners/delivery/endpoint.py), answered by the server.
METADATA = ("GET", "metadata", 200)
METADATA_REQUEST = ("GET", f"{BASE}/metadata", 200)
#: The A29 sample's person with a stay (PV1-19 visit number), for A01 / A23.
PV1 = (
    "PV1|1|I|CARDIO^204^1^CHU-LYON&1.2.250.1.999.1.1&ISO||||||||||||||||"
    "CHU2024022101^^^CHU-LYON&1.2.250.1.999.1.1&ISO^VN"
)


#: The WARNING of a delivery whose Patient to delete is not on the server.
NOT_ON_THE_SERVER = (
    "destination test: control id {control_id}: the Patient this message deletes is not on "
    "the server (already deleted, or never written there: if unexpected, check the "
    "identifiers the sender uses); the rest of the bundle is delivered"
)
#: What an ingress (nginx, Kubernetes' default backend) answers while the FHIR pod restarts.
INGRESS_404 = {
    "status": 404,
    "outcome": False,
    "body": "default backend - 404",
    "contentType": "text/plain",
}


def convert(data: bytes, mode: RequestMode = "put") -> dict[str, Any]:
    config = ConverterConfig(default_timezone="Europe/Paris", request_mode=mode)
    bundle: dict[str, Any] = Converter(config).convert(data)[0].bundle
    return bundle


def resent(data: bytes, control_id: str) -> bytes:
    """``data`` sent again under another MSH-10 (an engine re-sending with a new id)."""
    return set_field(data, "MSH", 10, control_id)


def visit(event: str, structure: str, control_id: str) -> bytes:
    data = set_field(A29, "MSH", 9, f"ADT^{event}^{structure}")
    data = set_field(set_field(data, "MSH", 10, control_id), "EVN", 1, event)
    return message([PV1 if line.startswith("PV1|") else line for line in lines(data)])


def deleted(bundle: dict[str, Any]) -> list[tuple[int, str]]:
    return [
        (i, e["request"]["url"])
        for i, e in enumerate(bundle["entry"])
        if e["request"]["method"] == "DELETE"
    ]


def patient_id(bundle: dict[str, Any]) -> str:
    """The id of the Patient a bundle writes, or deletes by id."""
    written = resources(bundle, "Patient")
    if written:
        return str(written[0]["id"])
    [(_, url)] = deleted(bundle)
    return url.removeprefix("Patient/")


async def deliver(
    server: FhirServer, *bundles: dict[str, Any], **options: Any
) -> list[DeliveryReceipt]:
    async with FhirServerSink(destination(server, **options)) as sink:
        return [await sink.deliver(bundle, make_envelope()) for bundle in bundles]


def trail(server: FhirServer) -> list[tuple[str, str, int]]:
    """Method, path (below the FHIR base) and status of the requests the server received."""
    return [
        (r["method"], r["path"].removeprefix(BASE).lstrip("/"), r["status"])
        for r in server.requests()
    ]


def test_resources_skips_delete_entries() -> None:
    bundle = convert(A29)
    assert [e["request"]["method"] for e in bundle["entry"]].count("DELETE") == 1
    assert resources(bundle, "Patient") == []  # a KeyError before: a DELETE has no resource
    assert [r["resourceType"] for r in resources(bundle, "MessageHeader")] == ["MessageHeader"]


# --- (a) the same A29 twice, after its A28 --------------------------------------------------


@pytest.mark.anyio
async def test_the_same_a29_twice_is_delivered_twice_and_the_patient_stays_gone(
    server: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    added, removal = convert(A28), convert(A29)
    pid = patient_id(added)
    assert patient_id(removal) == pid
    [(index, url)] = deleted(removal)
    first = await deliver(server, added, removal)
    assert server.read("Patient", pid) is None
    [header], [provenance] = resources(removal, "MessageHeader"), resources(removal, "Provenance")
    versions = {
        rtype: resource["meta"]["versionId"]
        for rtype, resource in (
            ("MessageHeader", server.read("MessageHeader", header["id"])),
            ("Provenance", server.read("Provenance", provenance["id"])),
        )
        if resource is not None
    }
    assert len(versions) == 2
    assert [r.absent_deletes for r in first] == [(), ()]  # the Patient was there
    server.clear_requests()

    caplog.set_level(logging.DEBUG)
    [receipt] = await deliver(server, removal)  # a RejectedDeliveryError (404) before

    assert trail(server) == [
        ("POST", "", 404),
        METADATA,
        ("GET", url, 404),
        ("POST", "", 200),
    ]
    assert server.read("Patient", pid) is None
    assert server.count("Patient") == 0
    # The message's own records were written again (new versions).
    for rtype, resource in (("MessageHeader", header), ("Provenance", provenance)):
        stored = server.read(rtype, resource["id"])
        assert stored is not None and stored["meta"]["versionId"] != versions[rtype]
    # The receipt has one result per entry of the bundle, the DELETE's saying "not found".
    assert receipt.status == 200
    assert len(receipt.entries) == len(removal["entry"])
    assert receipt.entries[index].status == 404 and receipt.entries[index].location is None
    others = [e.status for i, e in enumerate(receipt.entries) if i != index]
    assert others and all(s is not None and 200 <= s < 300 for s in others)
    # ... and names the resource type of the DELETE left out (for the metrics).
    assert receipt.absent_deletes == ("Patient",)
    assert receipt.summary()["absent_deletes"] == 1
    # One WARNING says what happened, with the resource type and never the id.
    said = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "listeners.delivery.deletes"
    ]
    assert said == [("WARNING", NOT_ON_THE_SERVER.format(control_id="MSG00001"))]
    # (httpx's own INFO lines name the URL: the service sets that logger to WARNING.)
    ours = [r for r in caplog.records if r.name.startswith("listeners")]
    assert ours and not [r for r in ours if pid in r.getMessage()]


@pytest.mark.anyio
async def test_a_resent_a29_writes_its_own_message_header_and_provenance(
    server: FhirServer,
) -> None:
    removal, again = convert(A29), convert(resent(A29, "CHU-ADT-20240221-002901-R"))
    await deliver(server, convert(A28), removal, again)
    [header] = resources(again, "MessageHeader")
    [provenance] = resources(again, "Provenance")
    assert header["id"] != resources(removal, "MessageHeader")[0]["id"]
    assert server.read("MessageHeader", header["id"]) is not None
    assert server.read("Provenance", provenance["id"]) is not None
    assert server.count("Provenance") == 3  # A28, A29, A29 again
    assert server.count("Patient") == 0


# --- (b) an A29 for a patient the server never had ------------------------------------------


@pytest.mark.anyio
async def test_an_a29_for_a_patient_never_held_is_delivered(
    server: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    removal = convert(A29)
    [(_, url)] = deleted(removal)
    caplog.set_level(logging.DEBUG)
    [receipt] = await deliver(server, removal)
    assert trail(server) == [
        ("POST", "", 404),
        METADATA,
        ("GET", url, 404),
        ("POST", "", 200),
    ]
    assert receipt.status == 200
    assert server.count("Patient") == 0
    [header] = resources(removal, "MessageHeader")
    assert server.read("MessageHeader", header["id"]) is not None
    assert server.count("Organization") == 2  # the rest of the bundle is written
    [said] = [r for r in caplog.records if r.name == "listeners.delivery.deletes"]
    assert said.levelno == logging.WARNING
    assert said.getMessage() == NOT_ON_THE_SERVER.format(control_id="MSG00001")


@pytest.mark.anyio
async def test_an_a29_whose_identifiers_changed_since_the_a28_is_delivered_with_a_warning(
    server: FhirServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The sender changed the person's identifier between the A28 and the A29: the A29
    # deletes a Patient id the server never held. Nothing is deleted; the operator is told
    # (WARNING, not INFO), with neither the id nor the identifier in the text.
    added = convert(A28)
    other = "0099999999^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR"
    removal = convert(set_field(A29, "PID", 3, other))
    assert patient_id(removal) != patient_id(added)
    await deliver(server, added)
    server.clear_requests()
    caplog.set_level(logging.DEBUG)
    [receipt] = await deliver(server, removal)
    assert receipt.status == 200
    assert [(m, s) for m, _, s in trail(server)] == [
        ("POST", 404),
        ("GET", 200),
        ("GET", 404),
        ("POST", 200),
    ]
    assert server.read("Patient", patient_id(added)) is not None  # still there
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage()) for r in warnings] == [
        ("listeners.delivery.deletes", NOT_ON_THE_SERVER.format(control_id="MSG00001"))
    ]
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("listeners"))
    for secret in (patient_id(removal), patient_id(added), "0099999999", IPP):
        assert secret not in ours


@pytest.mark.anyio
async def test_as_a_batch_the_failed_delete_entry_is_checked_the_same_way(
    batch_server: FhirServer,
) -> None:
    # A server applying the bundle entry by entry answers 200 with the DELETE entry 404.
    removal = convert(A29)
    [(index, url)] = deleted(removal)
    [receipt] = await deliver(batch_server, removal, bundle_type="batch")
    assert trail(batch_server) == [("POST", "", 200), ("GET", url, 404), ("POST", "", 200)]
    assert receipt.entries[index].status == 404
    assert len(receipt.entries) == len(removal["entry"])
    assert receipt.absent_deletes == ("Patient",)


@pytest.mark.anyio
async def test_an_a23_sent_twice_is_delivered(server: FhirServer) -> None:
    admission, removal = (
        convert(visit("A01", "ADT_A01", "V-A01")),
        convert(visit("A23", "ADT_A21", "V-A23")),
    )
    [(_, url)] = deleted(removal)
    assert url.startswith("Encounter/")
    receipts = await deliver(server, admission, removal, removal)
    assert [r.absent_deletes for r in receipts] == [(), (), ("Encounter",)]
    assert server.count("Encounter") == 0
    assert server.count("Patient") == 1  # an A23 deletes the visit, not the person


# --- (c) a 404 about something else stays a rejection ---------------------------------------


def with_entry(bundle: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    return {**bundle, "entry": [*bundle["entry"], entry]}


@pytest.mark.anyio
async def test_a_404_about_another_entry_stays_a_rejection(server: FhirServer) -> None:
    # The server answers 404 to a PUT on a version-specific url; the Patient to delete is
    # there, so the 404 was not about it: no second POST, the rejection stands.
    added = convert(A28)
    pid = patient_id(added)
    await deliver(server, added)
    [organization] = resources(added, "Organization")[:1]
    bad = {
        "fullUrl": "urn:uuid:5b0e1c9e-0000-4000-8000-000000000001",
        "resource": organization,
        "request": {"method": "PUT", "url": f"Organization/{organization['id']}/_history/1"},
    }
    server.clear_requests()
    with pytest.raises(RejectedDeliveryError) as caught:
        await deliver(server, with_entry(convert(A29), bad))
    assert caught.value.status == 404
    assert str(caught.value) == "destination test: HTTP 404 Not Found"
    assert trail(server) == [("POST", "", 404), METADATA, ("GET", f"Patient/{pid}", 200)]
    assert server.read("Patient", pid) is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault",
    [
        INGRESS_404,
        # An API gateway's JSON, which is no FHIR resource.
        {
            "status": 404,
            "outcome": {"message": "no Route matched with those values"},
        },
        {
            **INGRESS_404,
            "status": 410,
            "body": "<html><h1>410 Gone</h1></html>",
            "contentType": "text/html",
        },
    ],
    ids=["ingress-text", "gateway-json", "proxy-html-410"],
)
async def test_a_404_that_is_not_the_fhir_servers_is_never_taken_as_absent(
    server: FhirServer, fault: dict[str, Any]
) -> None:
    # An ingress answers the POST itself (the FHIR pod restarting), and would answer the
    # check too: its 404 says nothing of the Patient, which the server still holds. Before,
    # the DELETE was dropped and the rest delivered on the server's return: acknowledged,
    # the Patient never deleted. A 404 whose ``[base]/metadata`` is no FHIR server's either
    # is the destination's problem (retried, see test_wrong_base_path.py); a 410 stays a
    # rejection. Either way no target is checked and nothing is sent again.
    added = convert(A28)
    pid = patient_id(added)
    await deliver(server, added)
    server.clear_requests()
    server.control(faults=[{**fault, "count": 2}])
    expected = EndpointNotFoundError if fault["status"] == 404 else RejectedDeliveryError
    with pytest.raises(expected) as caught:
        await deliver(server, convert(A29))
    assert caught.value.status == fault["status"]
    metadata = [("GET", 404)] if fault["status"] == 404 else []
    assert [(m, s) for m, _, s in trail(server)] == [("POST", fault["status"]), *metadata]
    assert server.read("Patient", pid) is not None


@pytest.mark.anyio
async def test_a_check_answered_404_by_something_else_than_the_server_keeps_the_rejection(
    server: FhirServer,
) -> None:
    # The POST gets the server's own 404 (an OperationOutcome), the GET that follows an
    # ingress's plain-text 404: that says nothing of the Patient, the rejection stands and
    # the bundle is not sent again.
    added = convert(A28)
    pid = patient_id(added)
    await deliver(server, added)
    server.clear_requests()
    # The metadata read in between (the base answers: see test_wrong_base_path.py) passes.
    server.control(faults=[{"status": 404, "count": 1}, {"count": 1}, {**INGRESS_404, "count": 1}])
    with pytest.raises(RejectedDeliveryError) as caught:
        await deliver(server, convert(A29))
    assert caught.value.status == 404
    assert trail(server) == [("POST", "", 404), METADATA, ("GET", f"Patient/{pid}", 404)]
    assert server.read("Patient", pid) is not None


@pytest.mark.anyio
async def test_a_2xx_answer_that_is_no_bundle_is_not_checked(server: FhirServer) -> None:
    # Entries "404" in a 2xx body that is no transaction-response Bundle (a gateway's JSON of
    # its own) say nothing of the DELETE: no check, no second POST; and no delivery either
    # (no FHIR server's verdict: retried, see test_delivery_answers.py).
    removal = convert(A29)
    entries = [
        {"response": {"status": "404" if e["request"]["method"] == "DELETE" else "200"}}
        for e in removal["entry"]
    ]
    server.fail(200, outcome={"type": "transaction-response", "entry": entries})
    with pytest.raises(UnexpectedAnswerError):
        await deliver(server, removal)
    assert [m for m, _, _ in trail(server)] == ["POST"]


@pytest.mark.anyio
async def test_the_bundle_goes_again_only_once(server: FhirServer) -> None:
    # A PUT with If-Match on a resource the server lacks is answered 404; this server applies
    # the entries before it (the DELETE) all the same, so the Patient is gone when checked:
    # the rest goes again, is refused again, and that is the delivery's answer.
    added = convert(A28)
    pid = patient_id(added)
    await deliver(server, added)
    bad = {
        "fullUrl": "urn:uuid:5b0e1c9e-0000-4000-8000-000000000002",
        "resource": {"resourceType": "Basic", "id": "never-stored", "code": {"text": "x"}},
        "request": {"method": "PUT", "url": "Basic/never-stored", "ifMatch": 'W/"1"'},
    }
    server.clear_requests()
    with pytest.raises(RejectedDeliveryError) as caught:
        await deliver(server, with_entry(convert(A29), bad))
    assert caught.value.status == 404
    assert trail(server) == [
        ("POST", "", 404),
        METADATA,
        ("GET", f"Patient/{pid}", 404),
        ("POST", "", 404),
    ]


@pytest.mark.anyio
async def test_a_batch_failing_on_another_entry_is_not_checked(batch_server: FhirServer) -> None:
    [organization] = resources(convert(A28), "Organization")[:1]
    bad = {
        "fullUrl": "urn:uuid:5b0e1c9e-0000-4000-8000-000000000003",
        "resource": organization,
        "request": {"method": "PUT", "url": f"Organization/{organization['id']}/_history/1"},
    }
    with pytest.raises(RejectedDeliveryError) as caught:
        await deliver(batch_server, with_entry(convert(A29), bad), bundle_type="batch")
    assert caught.value.status == 404
    assert [m for m, _, _ in trail(batch_server)] == ["POST"]  # no check, no second POST


# --- (d) conditional mode -------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_conditional_a29_twice_is_delivered(server: FhirServer) -> None:
    added, removal = convert(A28, "conditional-update"), convert(A29, "conditional-update")
    [(_, url)] = deleted(removal)
    assert url == f"Patient?identifier={PATIENT_SYSTEM}|{IPP}"
    receipts = await deliver(server, added, removal, removal)
    assert [r.status for r in receipts] == [200, 200, 200]
    # This server deletes "nothing" with a 200: no entry is left out, nothing to count.
    assert [r.absent_deletes for r in receipts] == [(), (), ()]
    assert server.search_by_identifier("Patient", PATIENT_SYSTEM, IPP) == []
    assert server.count("Provenance") == 2  # A28 and A29 (the same id twice)


@pytest.mark.anyio
async def test_a_conditional_delete_refused_404_is_checked_with_a_count(
    server: FhirServer,
) -> None:
    # This server answers a conditional DELETE matching nothing with 200; one that answers
    # 404 (injected here) gets the search, with _summary=count, then the rest of the bundle.
    removal = convert(A29, "conditional-update")
    server.fail(404)
    [receipt] = await deliver(server, removal)
    assert receipt.status == 200
    assert receipt.absent_deletes == ("Patient",)
    [post, metadata, check, again] = server.requests()
    assert (metadata["method"], metadata["path"], metadata["status"]) == METADATA_REQUEST
    assert (post["method"], post["status"], again["method"], again["status"]) == (
        "POST",
        404,
        "POST",
        200,
    )
    assert (check["method"], check["path"], check["status"]) == ("GET", f"{BASE}/Patient", 200)
    assert "_summary=count" in check["query"] and "identifier=" in check["query"]


@pytest.mark.anyio
async def test_a_conditional_delete_with_a_match_keeps_the_rejection(server: FhirServer) -> None:
    await deliver(server, convert(A28, "conditional-update"))
    server.clear_requests()
    server.fail(404)
    with pytest.raises(RejectedDeliveryError):
        await deliver(server, convert(A29, "conditional-update"))
    assert [r["method"] for r in server.requests()] == ["POST", "GET", "GET"]
    assert len(server.search_by_identifier("Patient", PATIENT_SYSTEM, IPP)) == 1


# --- the checks fail ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_check_answered_503_is_a_transient_error(server: FhirServer) -> None:
    # The POST is served (404), then the metadata read; the GET of the target gets the 503.
    server.control(faults=[{"count": 2}, {"status": 503, "retryAfter": "7"}])
    with pytest.raises(TransientDeliveryError) as caught:
        await deliver(server, convert(A29))
    assert caught.value.status == 503 and caught.value.retry_after == 7
    assert [r["method"] for r in server.requests()] == ["POST", "GET", "GET"]


@pytest.mark.anyio
async def test_a_check_without_answer_is_transient_and_names_no_id(server: FhirServer) -> None:
    removal = convert(A29)
    server.control(faults=[{"count": 2}, {"drop": True}])
    with pytest.raises(TransientDeliveryError) as caught:
        await deliver(server, removal)
    text = str(caught.value)
    assert patient_id(removal) not in text
    assert text.startswith("destination test: checking whether a DELETE target is absent failed")


# --- (e) 410 Gone, which the test server never answers by itself ----------------------------


@pytest.mark.anyio
async def test_a_delete_entry_answered_410_on_a_deleted_resource_is_done(
    server: FhirServer,
) -> None:
    # A server that keeps deleted resources' history (HAPI) answers 410 Gone: here in a
    # 2xx transaction-response (a non-atomic server), then to the GET of the target. The
    # destination url carries an API key in its query: the GET keeps it after the path.
    removal = convert(A29)
    [(index, url)] = deleted(removal)
    seen: list[tuple[str, str, str, list[str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        methods = [e["request"]["method"] for e in body.get("entry", [])]
        seen.append((request.method, request.url.path, request.url.query.decode(), methods))
        if request.method == "GET":
            return httpx.Response(410, json={"resourceType": "OperationOutcome", "issue": []})
        statuses = ["410 Gone" if m == "DELETE" else "200 OK" for m in methods]
        entries = [{"response": {"status": s}} for s in statuses]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        )

    sink = FhirServerSink(replace(destination(server), url=f"{server.base_url}?apikey=k1"))
    await sink._client.aclose()
    sink._client = httpx.AsyncClient(transport=httpx.MockTransport(answer))  # the server's part
    async with sink:
        receipt = await sink.deliver(json_dumps(removal).encode(), make_envelope())
    kept = [e["request"]["method"] for e in removal["entry"] if e["request"]["method"] != "DELETE"]
    assert seen == [
        ("POST", BASE, "apikey=k1", [e["request"]["method"] for e in removal["entry"]]),
        ("GET", f"{BASE}/{url}", "apikey=k1", []),
        ("POST", BASE, "apikey=k1", kept),
    ]
    assert receipt.entries[index].status == 410
    assert receipt.absent_deletes == ("Patient",)
    assert [e.status for i, e in enumerate(receipt.entries) if i != index] == [200] * len(kept)


# --- the whole service ----------------------------------------------------------------------


def test_over_mllp_an_a29_sent_again_gets_aa_and_no_dead_letter(
    tmp_path: Path, server: FhirServer
) -> None:
    # ack_after = "delivery" in original mode (MSH-15/16 empty): the ACK says what the FHIR
    # server made of the bundle (an AE and a dead letter for the second A29 before). The
    # engine re-sends under a new MSH-10 (the same one would be dropped as a retransmission,
    # see tests/listeners/service/test_duplicates.py).
    def original_mode(data: bytes) -> bytes:
        return set_field(set_field(data, "MSH", 15, ""), "MSH", 16, "")

    config = make_config(tmp_path, {"mllp": {"ack_after": "delivery"}}, fhir_url=server.base_url)
    messages = [A28, A29, resent(A29, "CHU-ADT-20240221-002901-R")]
    counter = "passerelle_deletes_not_found_total"
    with running(config) as service:
        acks = service.send([original_mode(m) for m in messages[:2]])
        service.drained()
        assert service.metrics().value(counter) == 0  # the A28's Patient was there
        acks += service.send([original_mode(messages[2])])
        assert [a.code for a in acks] == ["AA", "AA", "AA"], [a.texts for a in acks]
        service.drained()
        queue = service.service.queue
        assert isinstance(queue, SqliteQueue) and queue.count_dead_letters() == 0
        # The A29 sent again counts once, by destination and resource type.
        metrics = service.metrics()
        assert metrics.value(counter) == 1
        assert metrics.value(counter, destination="default", resource_type="Patient") == 1
        assert metrics.value("passerelle_bundles_delivered_total", type="ADT^A29") == 2
    assert server.count("Patient") == 0
    assert server.count("MessageHeader") == 3


# --- the receipt's absent_deletes, counted --------------------------------------------------


class _Answers:
    """A sink answering each delivery with the next receipt of ``receipts``."""

    def __init__(self, name: str, *receipts: DeliveryReceipt) -> None:
        self.name = name
        self._receipts = list(receipts)

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        return self._receipts.pop(0)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["destination"], sample.labels["resource_type"]): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "passerelle_deletes_not_found_total"
    }


@pytest.mark.anyio
async def test_the_composite_sink_keeps_the_fhir_servers_absent_deletes() -> None:
    # FHIR server + AMQP publisher: the composite's own receipt must not lose the field.
    fhir = DeliveryReceipt(
        "fhir", 200, entries=(EntryResult(404), EntryResult(200)), absent_deletes=("Patient",)
    )
    sink = CompositeSink(
        "default", [_Answers("fhir", fhir), _Answers("amqp", DeliveryReceipt("amqp", None))]
    )
    receipt = await sink.deliver(b"{}", make_envelope())
    assert (receipt.destination, receipt.entries) == ("default", fhir.entries)
    assert receipt.absent_deletes == ("Patient",)


@pytest.mark.anyio
async def test_deliver_results_counts_the_absent_deletes_of_each_receipt() -> None:
    # What the SQLite-queue workers (listeners/worker.py) and the AMQP ones
    # (listeners/amqp/handling.py, consumer.py) all call after converting a message.
    metrics = Metrics()
    receipts = [
        DeliveryReceipt("default", 200),
        DeliveryReceipt("default", 200, absent_deletes=("Patient",)),
        DeliveryReceipt("default", 200, absent_deletes=("Encounter", "Patient")),
        DeliveryReceipt("default", 200, absent_deletes=("patient/../x",)),  # no resource type
    ]
    results = [
        ConversionResult(bundle=b"{}", message_type="ADT^A29", control_id=None, entries=1)
        for _ in receipts
    ]
    await deliver_results(
        _Answers("default", *receipts), results, make_envelope(), "default", metrics
    )
    assert _counted(metrics) == {
        ("default", "Patient"): 2,
        ("default", "Encounter"): 1,
        ("default", "other"): 1,
    }


def test_the_resource_type_label_is_bounded() -> None:
    metrics = Metrics()
    kinds = [f"Type{chr(65 + n // 26)}{chr(65 + n % 26)}" for n in range(MAX_RESOURCE_TYPES + 5)]
    metrics.count_deletes_not_found("default", kinds)
    counted = _counted(metrics)
    assert len(counted) == MAX_RESOURCE_TYPES + 1
    assert counted[("default", "other")] == 5
