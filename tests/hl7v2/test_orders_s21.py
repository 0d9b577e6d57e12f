"""Orders and billing, session 21: the ordering facility beside the ordering provider (a
requester PractitionerRole, IG ORC[ServiceRequest] rows 12, 21, 22) and IN1-22 coordination
of benefits priority (Coverage.order), on the samples of samples/hl7v2 converted by the real
converter and checked by the R4 validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import (
    by_reference,
    convert_one,
    insert_after,
    lines,
    resources,
    set_field,
)
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ORU = (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes()
ORM_MEDICATION = (SAMPLES / "ORM_O01_medication-order.hl7").read_bytes()
BAR = (SAMPLES / "BAR_P01_add-account.hl7").read_bytes()

#: ORC-21 of the ORU sample (beside its ORC-12, Dr GUÉRIN, RPPS 10105678907).
LAB_FACILITY = "CHU de Lyon - Laboratoire de biochimie"
CLINIC = "Clinique du Parc^^^^^CHU-LYON&1.2.250.1.999.1.1&ISO^FI^^^CDP-01"
CLINIC_ADDRESS = "12 rue du Parc^^Lyon^^69003^FRA^B"


def _requester(bundle: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    return by_reference(bundle, request["requester"]["reference"])


def _first_order(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return resources(bundle, rtype)[0]


def test_ordering_facility_beside_the_provider_is_a_practitioner_role(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG ORC[ServiceRequest]: ORC-12 → requester(PractitionerRole.practitioner), ORC-21 →
    requester(PractitionerRole.organization). The facility was dropped with a warning."""
    bundle, warnings = convert_one(converter, ORU)
    request = _first_order(bundle, "ServiceRequest")
    role = _requester(bundle, request)
    assert role["resourceType"] == "PractitionerRole"
    doctor = by_reference(bundle, role["practitioner"]["reference"])
    assert [i["value"] for i in doctor["identifier"]] == ["10105678907"]
    facility = by_reference(bundle, role["organization"]["reference"])
    assert facility["name"] == LAB_FACILITY
    assert not any(w.startswith("ORC-21") for w in warnings)
    assert r4validator.validate_all(bundle) == []


def test_requester_role_is_one_resource_across_resent_messages(converter: Converter) -> None:
    """The role's id derives from the practitioner's and the organization's: a re-sent
    result (another MSH-10 and MSH-7) names the same PractitionerRole, another facility of
    the same doctor another one."""
    first, _ = convert_one(converter, ORU)
    resent = set_field(
        set_field(ORU, "MSH", 10, "LAB-ORU-RESENT-1"), "MSH", 7, "20240315080000+0100"
    )
    again, _ = convert_one(converter, resent)
    role = _first_order(first, "ServiceRequest")["requester"]["reference"]
    assert _first_order(again, "ServiceRequest")["requester"]["reference"] == role
    assert [r["id"] for r in resources(again, "PractitionerRole")] == [role.split("/")[1]]

    elsewhere, _ = convert_one(converter, set_field(ORU, "ORC", 21, CLINIC, 1))
    other = _requester(elsewhere, _first_order(elsewhere, "ServiceRequest"))
    assert f"PractitionerRole/{other['id']}" != role
    assert other["practitioner"] == by_reference(first, role)["practitioner"]


def test_resent_result_leaves_one_requester_role_on_the_server(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """On a FHIR server: the result sent twice (another MSH-10) and a conditional-update
    route alike leave one PractitionerRole, the ServiceRequest's requester."""
    fhir_server.reset()
    resent = set_field(ORU, "MSH", 10, "LAB-ORU-RESENT-2")
    for data in (ORU, resent):
        fhir_server.transact(convert_one(converter, data)[0])
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    fhir_server.transact(convert_one(conditional, resent)[0])
    assert fhir_server.count("PractitionerRole") == 1
    [role] = [e["resource"] for e in fhir_server.search("PractitionerRole")["entry"]]
    requested = fhir_server.search("ServiceRequest", requester=f"PractitionerRole/{role['id']}")
    assert len(requested["entry"]) == 1


def test_medication_order_facility_and_its_address(
    converter: Converter, r4validator: R4Validator
) -> None:
    """The same for a MedicationRequest (ORM RXO order), ORC-22 being the facility's
    address and ORC-23 its phone (IG ORC-22/23 →
    requester(PractitionerRole.organization(Organization.address / .telecom))), ORC-24 the
    ordering provider's address (→ PractitionerRole.practitioner(Practitioner.address))."""
    data = set_field(ORM_MEDICATION, "ORC", 21, CLINIC, 1)
    data = set_field(data, "ORC", 22, CLINIC_ADDRESS, 1)
    data = set_field(data, "ORC", 23, "^WPN^PH^^33^4^78000000", 1)
    data = set_field(data, "ORC", 24, "3 place Bellecour^^Lyon^^69002^FRA^O", 1)
    bundle, warnings = convert_one(converter, data)
    [first, second] = resources(bundle, "MedicationRequest")
    role = _requester(bundle, first)
    assert role["resourceType"] == "PractitionerRole"
    clinic = by_reference(bundle, role["organization"]["reference"])
    assert clinic["name"] == "Clinique du Parc"
    assert [(a["line"], a["city"]) for a in clinic["address"]] == [(["12 rue du Parc"], "Lyon")]
    assert clinic["telecom"] == [{"system": "phone", "value": "+33 4 78000000", "use": "work"}]
    doctor = by_reference(bundle, role["practitioner"]["reference"])
    assert [(a["line"], a["city"]) for a in doctor["address"]] == [(["3 place Bellecour"], "Lyon")]
    # The second order names no facility: its requester is the doctor, as before.
    assert second["requester"]["reference"] == role["practitioner"]["reference"]
    assert not any(w.startswith("ORC-2") for w in warnings)
    assert r4validator.validate_all(bundle) == []


def test_facility_phone_without_the_facility_is_a_warning(converter: Converter) -> None:
    """ORC-23 without ORC-21 names no Organization to hold it: not converted, said."""
    data = set_field(ORM_MEDICATION, "ORC", 23, "^WPN^PH^^33^4^78000000", 1)
    bundle, warnings = convert_one(converter, data)
    assert resources(bundle, "Organization") == [] or all(
        "telecom" not in o for o in resources(bundle, "Organization")
    )
    assert any(w.startswith("ORC-22/ORC-23: the ordering facility") for w in warnings)


def test_provider_address_without_the_provider_is_a_warning(converter: Converter) -> None:
    """ORC-24 without an ordering provider names no Practitioner to hold it: said."""
    data = set_field(ORM_MEDICATION, "ORC", 12, "", 1)
    data = set_field(data, "ORC", 24, "3 place Bellecour^^Lyon^^69002^FRA^O", 1)
    _, warnings = convert_one(converter, data)
    assert any(w.startswith("ORC-24: the ordering provider's address") for w in warnings)


def test_ordering_facility_alone_stays_the_requester(converter: Converter) -> None:
    """Without an ordering provider the facility is the requester itself (no role without a
    practitioner)."""
    data = set_field(set_field(ORM_MEDICATION, "ORC", 12, "", 1), "ORC", 21, CLINIC, 1)
    bundle, _ = convert_one(converter, data)
    assert _requester(bundle, _first_order(bundle, "MedicationRequest"))["name"] == (
        "Clinique du Parc"
    )
    assert resources(bundle, "PractitionerRole") == []


def test_coordination_of_benefits_priority_is_the_coverage_order(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IN1-22 (1 primary, 2 secondary…) → Coverage.order: the warehouse can tell which
    insurer pays first. The IG's row 22 is empty; R4's element says exactly this."""
    data = set_field(set_field(BAR, "IN1", 22, "1", 1), "IN1", 22, "2", 2)
    bundle, warnings = convert_one(converter, data)
    orders = {c["payor"][0]["reference"]: c.get("order") for c in resources(bundle, "Coverage")}
    payors = {by_reference(bundle, ref)["name"]: order for ref, order in orders.items()}
    assert payors == {"CPAM de Loire-Atlantique": 1, "Mutuelle des Pays de la Loire": 2}
    assert not any("IN1-22" in w for w in warnings)
    assert r4validator.validate_all(bundle) == []


@pytest.mark.parametrize("priority", ["P", "0", "1.5"])
def test_a_priority_that_is_no_positive_integer_is_not_converted(
    converter: Converter, priority: str
) -> None:
    """R4 Coverage.order is a positiveInt: another value is left out, with a warning naming
    the field (never the value)."""
    bundle, warnings = convert_one(converter, set_field(BAR, "IN1", 22, priority, 1))
    assert [c.get("order") for c in resources(bundle, "Coverage")] == [None, None]
    [warning] = [w for w in warnings if w.startswith("IN1-22")]
    assert priority not in warning.split(":", 1)[1]


ORDER_SAMPLES = {
    "ORM_O01_radiology-order": "ServiceRequest",
    "ORM_O01_medication-order": "MedicationRequest",
    "OML_O21_lab-order": "ServiceRequest",
    "RDE_O11_pharmacy-encoded-orders": "MedicationRequest",
}
SPOUSE = (
    "NK1|1|LEFEBVRE^Marc^^^M.^^L|SPO^Conjoint^HL70063|12 rue de la Roquette^^Paris^^75011^FRA^H"
)


def _bar_in1() -> str:
    return next(line for line in lines(BAR) if line.startswith("IN1|"))


@pytest.mark.parametrize("name", sorted(ORDER_SAMPLES))
def test_an_order_message_insurance_is_a_coverage(
    converter: Converter, r4validator: R4Validator, name: str
) -> None:
    """IG ORM_O01 row 3.5.1 and OML_O21 row 5.9.1: PATIENT.INSURANCE.IN1 → Coverage (the
    RDE_O11 root reads its same group alike). It was dropped without a word."""
    data = insert_after((SAMPLES / f"{name}.hl7").read_bytes(), "PV1|", _bar_in1())
    bundle, _ = convert_one(converter, data)
    [coverage] = resources(bundle, "Coverage")
    [patient] = resources(bundle, "Patient")
    assert coverage["beneficiary"]["reference"] == f"Patient/{patient['id']}"
    assert by_reference(bundle, coverage["payor"][0]["reference"])["name"] == (
        "CPAM de Loire-Atlantique"
    )
    assert resources(bundle, ORDER_SAMPLES[name])
    assert r4validator.validate_all(bundle) == []


def test_a_lab_order_next_of_kin_is_a_related_person(converter: Converter) -> None:
    """IG OML_O21 row 5.6: PATIENT.NK1 → RelatedPerson, as the OMG_O19 root does."""
    data = insert_after((SAMPLES / "OML_O21_lab-order.hl7").read_bytes(), "PID|", SPOUSE)
    bundle, _ = convert_one(converter, data)
    [spouse] = resources(bundle, "RelatedPerson")
    assert spouse["name"][0]["family"] == "LEFEBVRE"
