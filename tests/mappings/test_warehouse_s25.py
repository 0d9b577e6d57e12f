"""HL7 v2 bundles loaded into a FHIR warehouse (session 25, a data engineer's probe).

The facility a PL names in PL.4 (PV1-3, PV1-6, OBR/ORC locations, AIL-3…) is one Location
with the facility an ADT's EVN-7 names (same identity, physicalType ``si``). The EVN-7 copy
carried the HD's universal id as its identifier (IG HD[Location] row 2), the PL copy did not
(IG PL[Location] row 4 maps PL.4 to that Location's identifier too): every result, order,
appointment or document naming the facility in a PL only rewrote it without its
identifier, so a warehouse searching the facility by its OID found it after an admission
and lost it at the next lab result. The location master file's record of the facility
(MFN^M05, LOC-1 with PL.4 only) dropped it likewise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, resources, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
RFC3986 = "urn:ietf:rfc:3986"
CHU_LYON = "urn:oid:1.2.250.1.999.1.1"
SI = "si"


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def _facilities(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's Locations of physical type site (a facility)."""
    return [
        r
        for r in resources(bundle, "Location")
        if r.get("physicalType", {}).get("coding", [{}])[0].get("code") == SI
    ]


def _facility(converter: Converter, data: bytes) -> dict[str, Any]:
    bundle, _ = convert_one(converter, data)
    [facility] = _facilities(bundle)
    return facility


# --- the facility level of a PL carries PL.4's universal id ------------------------------


@pytest.mark.parametrize(
    "sample",
    [
        "ORU_R01_lab-results.hl7",  # PV1-3 only, no EVN
        "OML_O21_lab-order.hl7",
        "SIU_S12_new-appointment.hl7",
        "MDM_T01_dictated-operative-report.hl7",
        "ADT_A04_fr-ins-test.hl7",  # an ADT whose EVN-7 is empty
    ],
)
def test_facility_of_a_pl_has_the_identifier_evn7_gives_it(
    converter: Converter, sample: str
) -> None:
    adt = _facility(converter, _sample("ADT_A01_admission-full.hl7"))  # EVN-7 CHU-LYON
    other = _facility(converter, _sample(sample))
    assert other["id"] == adt["id"]  # one resource (ids unchanged)
    assert adt["identifier"] == [{"system": RFC3986, "value": CHU_LYON}]
    assert other["identifier"] == adt["identifier"]
    assert other["name"] == "CHU-LYON"


def test_location_master_file_facility_record_keeps_the_identifier(
    converter: Converter,
) -> None:
    adt = _facility(converter, _sample("ADT_A01_admission-full.hl7"))
    bundle, _ = convert_one(converter, _sample("MFN_M05_locations.hl7"))
    [record] = [r for r in resources(bundle, "Location") if r["id"] == adt["id"]]
    assert record["name"] == "Hôpital Édouard-Herriot"  # LOC-2, the master file's own
    assert record["identifier"] == [{"system": RFC3986, "value": CHU_LYON}]


@pytest.mark.parametrize(
    "facility",
    [
        "CHU-LYON",  # a namespace alone: nothing to identify it by (as EVN-7's HD)
        "CHU-LYON&1.2.250.1.999.1.1&L",  # a local universal id type: not an OID (IG: ISO, UUID)
    ],
)
def test_facility_without_iso_universal_id_has_no_identifier(
    converter: Converter, facility: str
) -> None:
    data = set_field(
        _sample("ORU_R01_lab-results.hl7"),
        "PV1",
        3,
        f"CONS-GYN^BOX2^^{facility}^^C^BAT-F^0^Consultations gynécologie",
    )
    found = _facility(converter, data)
    assert found["name"] == "CHU-LYON"
    assert "identifier" not in found


# --- on the FHIR server: an admission, then a result, then the admission re-sent ---------


def _by_oid(server: FhirServer) -> list[str]:
    return [r["id"] for r in server.search_by_identifier("Location", RFC3986, CHU_LYON)]


def test_facility_stays_findable_by_its_oid_across_messages(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    journey = [
        "ADT_A01_admission-full.hl7",
        "ORU_R01_lab-results.hl7",
        "SIU_S12_new-appointment.hl7",
        "MFN_M05_locations.hl7",
        "OML_O21_lab-order.hl7",
        "ADT_A01_admission-full.hl7",  # re-sent
        "ORU_R01_lab-results.hl7",  # re-sent
    ]
    adt_id = _facility(converter, _sample(journey[0]))["id"]
    sites_after_first = 0
    for n, name in enumerate(journey):
        bundle, _ = convert_one(converter, _sample(name))
        fhir_server.transact(bundle)
        # The facility is found by its OID after every message, and is one resource.
        assert _by_oid(fhir_server) == [adt_id], f"after {name}"
        sites = len(
            [
                e
                for e in fhir_server.search("Location", _count="1000").get("entry", [])
                if e["resource"].get("physicalType", {}).get("coding", [{}])[0].get("code") == SI
            ]
        )
        if n == 0:
            sites_after_first = sites
        assert sites == sites_after_first, f"a second facility Location after {name}"
    stored = fhir_server.read("Location", adt_id)
    assert stored is not None
    assert stored["identifier"] == [{"system": RFC3986, "value": CHU_LYON}]


def test_evn7_facility_no_pl_names_keeps_no_identifier_without_iso(converter: Converter) -> None:
    """IG HD[Location] row 2 still holds for the EVN-7 facility alone: HD.3 ``L`` is not an
    OID, so no identifier (the admission's PV1-3.4 names another facility)."""
    data = set_field(
        _sample("ADT_A01_admission-full.hl7"), "EVN", 7, "CHU-LYON-SAU^1.2.250.1.999.1.7^L"
    )
    bundle, _ = convert_one(converter, data)
    [site] = [r for r in _facilities(bundle) if r["name"] == "CHU-LYON-SAU"]
    assert "identifier" not in site
