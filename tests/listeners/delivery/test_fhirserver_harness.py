"""The test FHIR server itself (tests/fhirserver/server.mjs) and its Python driver."""

from __future__ import annotations

import httpx

from tests.support.fhirserver import FhirServer, fhirserver_unavailable_reason

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_unavailable_reason_is_none_or_actionable() -> None:
    reason = fhirserver_unavailable_reason()
    assert reason is None or "node" in reason or "npm ci --prefix tests/fhirserver" in reason


def test_ready_line_and_metadata(server: FhirServer) -> None:
    assert server.ready["ready"] is True
    assert server.base_url == f"http://127.0.0.1:{server.port}/fhir/R4"
    response = httpx.get(f"{server.base_url}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"


def test_put_get_search_and_unknown_type(server: FhirServer) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "42"}],
    }
    put = httpx.put(f"{server.base_url}/Patient/p1", json=patient, headers=FHIR_JSON)
    assert put.status_code in (200, 201)
    got = httpx.get(f"{server.base_url}/Patient/p1")
    assert got.json()["identifier"] == patient["identifier"]
    assert got.headers["etag"].startswith('W/"')
    assert [p["id"] for p in server.search_by_identifier("Patient", "urn:oid:1.2.3", "42")] == [
        "p1"
    ]
    assert server.search_by_identifier("Patient", "urn:oid:1.2.3", "43") == []
    assert server.count("Patient") == 1
    assert httpx.get(f"{server.base_url}/NotAType/1").status_code == 404
    assert server.read("Patient", "absent") is None


def test_faults_are_consumed_in_order(server: FhirServer) -> None:
    server.control(faults=[{"status": 503, "retryAfter": 3}, {"status": 500, "count": 2}])
    statuses = [httpx.get(f"{server.base_url}/metadata").status_code for _ in range(4)]
    assert statuses == [503, 500, 500, 200]
    # The helper's own calls neither consume faults nor show in the request log.
    server.fail(503)
    assert server.count("Patient") == 0
    assert [r["status"] for r in server.requests()] == [503, 500, 500, 200]
    assert httpx.get(f"{server.base_url}/metadata").status_code == 503
