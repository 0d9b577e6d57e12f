"""General clinical orders OMG^O19 (root OMG_O19.j2, mapped as the IG maps OML_O21) and
patient referrals REF^I12/I13/I14/I15 (root REF_I12.j2, Passerelle's own RF1/PRD mapping).

Samples: samples/hl7v2/OMG_O19_radiology-order.hl7 (a chest CT and an echocardiography,
patient LEFEBVRE Juliette) and samples/hl7v2/REF_I12_referral.hl7 (her referral to a
cardiologist, with the CT's results). The golden tests pin the whole bundles; these check
the rules one by one, the events, the identities shared with ORM/ORU, the corpus messages,
and the behaviour on a real FHIR server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.conftest import SHARED_DIR
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import by_reference, refs
from tests.support.hl7_edit import convert_one as _convert
from tests.support.hl7_edit import insert_after as _insert_after
from tests.support.hl7_edit import lines as _lines
from tests.support.hl7_edit import message as _message
from tests.support.hl7_edit import resources as _of_type
from tests.support.hl7_edit import set_field as _set
from tests.support.r4validator import R4Validator

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "hl7v2"
OMG = (SAMPLES / "OMG_O19_radiology-order.hl7").read_bytes()
REF = (SAMPLES / "REF_I12_referral.hl7").read_bytes()
ORM = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()
ORU = (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes()
CORPUS_INPUT = SHARED_DIR / "corpus" / "hl7v2" / "ms-fhir-converter" / "input"

RAD = "RAD-2024-0520-03^DPI-ERABLE^1.2.250.1.999.2.20^ISO"
PATIENT_ID = "PE00470123^^^HOP-PARIS-EST&1.2.250.1.999.2.1&ISO^MR"
V2 = "http://terminology.hl7.org/CodeSystem/v2-"


def _drop(data: bytes, *prefixes: str) -> bytes:
    return _message([line for line in _lines(data) if not line.startswith(prefixes)])


def _code(concept: dict[str, Any]) -> str:
    return str(concept["coding"][0]["code"])


def _placer(request: dict[str, Any]) -> str:
    return next(
        str(i["value"])
        for i in request.get("identifier", [])
        if i.get("type", {}).get("coding", [{}])[0].get("code") == "PLAC"
    )


# ----------------------------------------------------------------------------------------
# OMG^O19


def test_omg_each_order_is_a_service_request_field_by_field(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = _convert(converter, OMG)
    assert warnings == []
    assert r4validator.validate(bundle) == []
    ct, echo = _of_type(bundle, "ServiceRequest")
    [patient] = _of_type(bundle, "Patient")
    [encounter] = _of_type(bundle, "Encounter")

    # ORC-2 / OBR-2 placer number (scoped by its universal id), ORC-4 placer group.
    assert ct["identifier"] == [
        {
            "type": {"coding": [{"system": V2 + "0203", "code": "PLAC"}]},
            "system": "urn:oid:1.2.250.1.999.2.20",
            "value": "RAD-2024-0520-03",
        }
    ]
    assert ct["requisition"]["value"] == "GRP-2024-0520-01"
    assert ct["status"] == "active"  # ORC-1 NW, ORC-5 empty (OrderControlCode map)
    assert ct["intent"] == "order"
    assert ct["priority"] == "routine"  # TQ1-9 R
    assert ct["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "24627-2",
        "display": "CT Chest",
    }
    assert ct["occurrenceTiming"]["repeat"]["boundsPeriod"] == {
        "start": "2024-05-24T09:00:00+02:00"
    }
    assert ct["authoredOn"] == "2024-05-20T14:05:00+02:00"  # ORC-9 of an NW
    assert ct["subject"]["reference"] == f"Patient/{patient['id']}"
    assert ct["encounter"]["reference"] == f"Encounter/{encounter['id']}"
    requester = by_reference(bundle, ct["requester"]["reference"])
    assert requester["name"][0]["family"] == "LAMBERT"
    assert ct["reasonCode"][0]["coding"][0]["code"] == "EP"  # OBR-31
    [reason] = refs(ct, "reasonReference")
    assert _code(by_reference(bundle, reason)["code"]) == "R06.0"  # DG1-3
    weight, gfr = (by_reference(bundle, ref) for ref in refs(ct, "supportingInfo"))
    assert weight["valueQuantity"]["value"] == 64
    assert gfr["valueQuantity"]["value"] == 78
    assert [n["text"] for n in gfr["note"]] == [
        "Créatininémie du 17/05/2024, laboratoire de ville."
    ]
    assert [n["text"] for n in ct["note"]] == [
        "Allergie aux produits de contraste iodés : prémédication selon protocole du service."
    ]
    callback = ct["extension"][1]
    assert callback["valueContactPoint"]["value"] == "+33 1 99006060"  # ORC-14

    assert _placer(echo) == "CAR-2024-0520-04"
    assert echo["priority"] == "asap"  # TQ1-9 A
    assert _code(echo["code"]) == "34552-0"
    assert [n["text"] for n in echo["note"]] == ["Rechercher une dysfonction ventriculaire droite."]
    assert "reasonReference" not in echo and "supportingInfo" not in echo


def test_omg_patient_group_gives_allergy_contact_and_coverage(converter: Converter) -> None:
    bundle, _ = _convert(converter, OMG)
    [allergy] = _of_type(bundle, "AllergyIntolerance")
    assert _code(allergy["code"]) == "IODE"
    assert allergy["criticality"] == "high"
    [contact] = _of_type(bundle, "RelatedPerson")
    assert contact["name"][0]["family"] == "LEFEBVRE"
    assert contact["name"][0]["given"] == ["Marc"]
    [coverage] = _of_type(bundle, "Coverage")
    assert by_reference(bundle, coverage["payor"][0]["reference"])["name"] == "CPAM de Paris"


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
def test_omg_orders_are_the_same_in_every_version(converter: Converter, version: str) -> None:
    """2.4 has no TIMING group (its TQ1 is read all the same); 2.3.1 defines no OMG_O19."""
    bundle, _ = _convert(converter, _set(OMG, "MSH", 12, version))
    requests = _of_type(bundle, "ServiceRequest")
    assert [_placer(r) for r in requests] == ["RAD-2024-0520-03", "CAR-2024-0520-04"]
    assert [r["priority"] for r in requests] == ["routine", "asap"]
    assert [len(refs(r, "supportingInfo")) for r in requests] == [2, 0]


def test_omg_and_orm_with_one_placer_number_are_one_service_request(
    converter: Converter,
) -> None:
    orm = _set(_set(ORM, "ORC", 2, RAD), "OBR", 2, RAD)
    [orm_request] = _of_type(_convert(converter, orm)[0], "ServiceRequest")
    omg_request = _of_type(_convert(converter, OMG)[0], "ServiceRequest")[0]
    assert omg_request["id"] == orm_request["id"]


def _oru_reporting_the_ct() -> bytes:
    """The lab ORU sample turned into the report of the OMG's chest CT: same patient, its
    first order carrying the OMG's placer number and code, filled by the RIS."""
    oru = _set(ORU, "PID", 3, PATIENT_ID)
    oru = _set(oru, "ORC", 2, RAD)
    oru = _set(oru, "OBR", 2, RAD)
    oru = _set(oru, "OBR", 4, "24627-2^CT Chest^LN")
    return oru


def test_omg_then_oru_meet_on_one_service_request(converter: Converter) -> None:
    omg_bundle, _ = _convert(converter, OMG)
    oru_bundle, _ = _convert(converter, _oru_reporting_the_ct())
    ordered = _of_type(omg_bundle, "ServiceRequest")[0]
    reported = _of_type(oru_bundle, "ServiceRequest")[0]
    assert reported["id"] == ordered["id"]
    report = _of_type(oru_bundle, "DiagnosticReport")[0]
    assert refs(report, "basedOn") == [f"ServiceRequest/{ordered['id']}"]


def test_on_a_fhir_server_omg_then_oru_update_one_service_request(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    omg_bundle, _ = _convert(converter, OMG)
    fhir_server.transact(omg_bundle)
    [ordered] = fhir_server.search_by_identifier(
        "ServiceRequest", "urn:oid:1.2.250.1.999.2.20", "RAD-2024-0520-03"
    )
    assert ordered["status"] == "active"
    fhir_server.transact(_convert(converter, _oru_reporting_the_ct())[0])
    [reported] = fhir_server.search_by_identifier(
        "ServiceRequest", "urn:oid:1.2.250.1.999.2.20", "RAD-2024-0520-03"
    )
    assert reported["id"] == ordered["id"]
    assert reported["status"] == "completed"  # the ORU's ORC-5 CM
    # The OMG's two orders and the ORU's second one: nothing duplicated.
    assert fhir_server.count("ServiceRequest") == 3
    reports = fhir_server.search(
        "DiagnosticReport", **{"based-on": f"ServiceRequest/{ordered['id']}"}
    )
    assert len(reports.get("entry", [])) == 1


def test_omg_prior_results_are_not_orders_even_two_in_a_row(converter: Converter) -> None:
    """After a prior result's OBX, a PV1 opens another PRIOR_RESULT: the ORC after it is
    that prior result's ORDER_PRIOR, not a new order (the grammar allows nothing else)."""
    prior = [
        "PV1|1|O",
        "ORC|SC|PRIOR-1^DPI-ERABLE",
        "OBR|1|PRIOR-1^DPI-ERABLE||24627-2^CT Chest^LN",
        "OBX|1|ST|18782-3^Radiology Study observation^LN||RAS||||||F",
        "PV1|1|O",
        "ORC|SC|PRIOR-2^DPI-ERABLE",
        "OBR|1|PRIOR-2^DPI-ERABLE||24627-2^CT Chest^LN",
        "OBX|1|ST|18782-3^Radiology Study observation^LN||RAS||||||F",
    ]
    data = _insert_after(OMG, "NTE|1|L|Créatininémie", *prior)
    bundle, warnings = _convert(converter, data)
    assert [_placer(r) for r in _of_type(bundle, "ServiceRequest")] == [
        "RAD-2024-0520-03",
        "CAR-2024-0520-04",
    ]
    assert warnings == [
        "OMG^O19 order 1: a prior result (PRIOR_RESULT, from its PV1) is not converted"
    ]
    # The prior results' OBX are not the order's supporting information.
    assert len(_of_type(bundle, "Observation")) == 2


def test_omg_without_pid_makes_no_order(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _drop(OMG, "PID", "NK1", "PV1", "IN1", "AL1"))
    assert _of_type(bundle, "ServiceRequest") == []
    assert "OMG^O19 order 1: no PID, so no ServiceRequest (its subject is required)" in warnings


# ----------------------------------------------------------------------------------------
# REF^I12 / I13 / I14 / I15


def test_ref_referral_is_a_service_request_field_by_field(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = _convert(converter, REF)
    assert warnings == []
    assert r4validator.validate(bundle) == []
    [referral] = _of_type(bundle, "ServiceRequest")
    [patient] = _of_type(bundle, "Patient")
    [encounter] = _of_type(bundle, "Encounter")
    # RF1-6 originating and RF1-11 external referral identifiers.
    assert referral["identifier"] == [
        {"system": "urn:oid:1.2.250.1.999.2.20", "value": "ADR-2024-0527-001"},
        {"system": "urn:oid:1.2.250.1.999.3.20", "value": "CEDRE-2024-778"},
    ]
    assert referral["status"] == "active"  # RF1-1 P pending
    assert referral["intent"] == "order"
    assert referral["priority"] == "asap"  # RF1-2 A (table 0280)
    assert [c["coding"][0] for c in referral["category"]] == [
        {"system": V2 + "0281", "code": "Med", "display": "Médical"},  # RF1-3
        {"system": V2 + "0284", "code": "O", "display": "Ambulatoire"},  # RF1-5
    ]
    assert referral["code"]["coding"] == [
        {"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}
    ]
    assert [_code(c) for c in referral["orderDetail"]] == ["WR", "RP"]  # RF1-4 (table 0282)
    assert referral["occurrencePeriod"] == {"start": "2024-05-27", "end": "2024-08-27"}
    assert referral["authoredOn"] == "2024-05-27T10:10:00+02:00"  # RF1-9 process date
    assert [c["coding"][0]["system"] + "|" + _code(c) for c in referral["reasonCode"]] == [
        V2 + "0336|O"  # RF1-10
    ]
    assert referral["subject"]["reference"] == f"Patient/{patient['id']}"
    assert referral["encounter"]["reference"] == f"Encounter/{encounter['id']}"

    # PRD RP → requester, PRD RT → performer (PRD-2 name, PRD-3, PRD-5, PRD-7).
    requester = by_reference(bundle, referral["requester"]["reference"])
    assert requester["resourceType"] == "Practitioner"
    assert requester["name"] == [
        {"use": "official", "family": "LAMBERT", "given": ["Sophie"], "prefix": ["Dr"]}
    ]
    # PRD-7 10101234567^RPPS: the national directory's number (AssigningAuthorityOid).
    assert requester["identifier"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                        "code": "RPPS",
                        "display": "N° RPPS",
                    }
                ]
            },
            "system": "urn:oid:1.2.250.1.71.4.2.1",
            "value": "10101234567",
        }
    ]
    assert [t["value"] for t in requester["telecom"]] == [
        "+33 1 99006060",
        "sophie.lambert@hop-paris-est.example.org",
    ]
    assert requester["address"][0]["city"] == "Paris"
    [performer_ref] = refs(referral, "performer")
    performer = by_reference(bundle, performer_ref)
    assert performer["name"][0]["family"] == "FAURE"
    assert performer["address"][0]["postalCode"] == "93260"

    # DG1 → reasonReference; IN1 → insurance; AL1, PR1, OBX → supportingInfo.
    [reason] = refs(referral, "reasonReference")
    assert _code(by_reference(bundle, reason)["code"]) == "I50.9"
    [coverage] = refs(referral, "insurance")
    assert coverage.startswith("Coverage/")
    allergy, procedure, conclusion, gfr = (
        by_reference(bundle, ref) for ref in refs(referral, "supportingInfo")
    )
    assert _code(allergy["code"]) == "IODE"
    assert _code(procedure["code"]) == "DEQP003"
    assert conclusion["valueString"] == (
        "Pas d'embolie pulmonaire.\nÉpanchement pleural bilatéral de faible abondance."
    )
    assert [n["text"] for n in conclusion["note"]] == ["Compte rendu validé par le Dr Girard."]
    assert conclusion["effectiveDateTime"] == "2024-05-24T09:15:00+02:00"
    assert gfr["valueQuantity"]["value"] == 78 and "note" not in gfr
    # The message's NTE is the referral's note; the OBR's own NTE is nobody's.
    assert [n["text"] for n in referral["note"]] == [
        "Merci de recevoir Mme Lefebvre pour avis sur une insuffisance cardiaque à fraction "
        "d'éjection préservée."
    ]
    [spouse] = _of_type(bundle, "RelatedPerson")  # NK1
    assert spouse["name"][0]["given"] == ["Marc"]
    assert spouse["patient"]["reference"] == f"Patient/{patient['id']}"


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.5", "2.6", "2.7", "2.8"])
def test_ref_is_the_same_in_every_version(converter: Converter, version: str) -> None:
    bundle, warnings = _convert(converter, _set(REF, "MSH", 12, version))
    assert warnings == []
    [referral] = _of_type(bundle, "ServiceRequest")
    assert [r.split("/")[0] for r in refs(referral, "supportingInfo")] == [
        "AllergyIntolerance",
        "Procedure",
        "Observation",
        "Observation",
    ]
    assert len(referral["note"]) == 1 and len(referral["performer"]) == 1
    assert referral["requester"]["reference"].startswith("Practitioner/")


def _event(trigger: str, data: bytes = REF) -> bytes:
    return _set(data, "MSH", 9, f"REF^{trigger}^REF_I12")


@pytest.mark.parametrize(
    ("trigger", "rf1_1", "status"),
    [
        ("I12", "A^Acceptée^HL70283", "active"),
        ("I12", "R^Refusée^HL70283", "revoked"),
        ("I12", "E^Expirée^HL70283", "revoked"),
        ("I12", "", "active"),
        ("I13", "A^Acceptée^HL70283", "active"),
        ("I14", "A^Acceptée^HL70283", "revoked"),  # cancel: whatever RF1-1 says
        ("I14", "", "revoked"),
    ],
)
def test_ref_status_comes_from_the_event_then_rf1_1(
    converter: Converter, r4validator: R4Validator, trigger: str, rf1_1: str, status: str
) -> None:
    original = _of_type(_convert(converter, REF)[0], "ServiceRequest")[0]
    bundle, warnings = _convert(converter, _set(_event(trigger), "RF1", 1, rf1_1))
    [referral] = _of_type(bundle, "ServiceRequest")
    assert referral["status"] == status
    assert referral["id"] == original["id"]  # I13/I14 update the I12's referral
    assert warnings == []
    assert r4validator.validate(bundle) == []


def test_ref_i15_status_request_writes_no_referral(
    converter: Converter, r4validator: R4Validator
) -> None:
    """REF^I15 (HL7 v2.5 §11.3.4) asks the referral's holder for its status: it states no
    referral. Written as one, its bare RF1 replaced the I12's ServiceRequest (content
    erased) and, status defaulting to active, reactivated a referral an I14 revoked."""
    status_request = _message(
        [
            "MSH|^~\\&|DPI-CEDRE^1.2.250.1.999.3.20^ISO|CLINIQUE-DES-LILAS^1.2.250.1.999.3.1^ISO|"
            "DPI-ERABLE|HOP-PARIS-EST|20240601101500+0200||REF^I15^REF_I12|CDL-1|P|2.5",
            "RF1||||||ADR-2024-0527-001^DPI-ERABLE^1.2.250.1.999.2.20^ISO",
            f"PID|1||{PATIENT_ID}||LEFEBVRE^Juliette",
        ]
    )
    for data in (status_request, _event("I15")):
        bundle, warnings = _convert(converter, data)
        assert _of_type(bundle, "ServiceRequest") == []
        written = [e["resource"]["resourceType"] for e in bundle["entry"]]
        # The header's sender and receiver may be Organizations; nothing of the referral.
        assert sorted(set(written) - {"Organization"}) == [
            "MessageHeader",
            "Patient",
            "Provenance",
        ]
        assert warnings == ["REF^I15 asks for the referral's status; nothing is written"]
        assert r4validator.validate(bundle) == []


def test_ref_without_referral_identifier_warns(converter: Converter) -> None:
    """Without RF1-6 and RF1-11 the ServiceRequest's id derives from the message: no I13
    or I14 can reach it, which the sender should know."""
    bundle, warnings = _convert(converter, _set(_set(REF, "RF1", 6, ""), "RF1", 11, ""))
    assert len(_of_type(bundle, "ServiceRequest")) == 1
    assert warnings == [
        "RF1 has no originating (RF1-6) nor external (RF1-11) referral identifier: the "
        "ServiceRequest's id derives from this message, so no I13 or I14 can update it"
    ]
    assert _convert(converter, _set(REF, "RF1", 6, ""))[1] == []  # RF1-11 suffices


def test_ref_unknown_referral_status_is_unknown_with_a_warning(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _set(REF, "RF1", 1, "C^Cancelled^Local"))
    assert _of_type(bundle, "ServiceRequest")[0]["status"] == "unknown"
    assert warnings == [
        "code not in code map ReferralStatus-ServiceRequest.status-Passerelle at RF1-1"
    ]


def test_ref_identity_falls_back_on_the_external_referral_identifier(
    converter: Converter,
) -> None:
    without_6 = _set(REF, "RF1", 6, "")
    first = _of_type(_convert(converter, without_6)[0], "ServiceRequest")[0]
    again = _of_type(
        _convert(converter, _set(_event("I14", without_6), "MSH", 10, "OTHER-1"))[0],
        "ServiceRequest",
    )[0]
    assert first["id"] == again["id"]
    assert [i["value"] for i in first["identifier"]] == ["CEDRE-2024-778"]


def test_ref_provider_organization_and_other_roles(
    converter: Converter, r4validator: R4Validator
) -> None:
    """v2.8: PRD-10 provider organization (with PRD-11 address, PRD-13 telecom) beside the
    person; a PRD naming only an organization; a PP provider is neither requester nor
    performer (warned, not converted)."""
    data = _set(REF, "MSH", 12, "2.8")
    data = _set(data, "PRD", 10, "Clinique des Lilas^^^^^^^^^CDL-93", occurrence=2)
    data = _set(data, "PRD", 11, "12 avenue des Lilas^^Les Lilas^^93260^FRA^O", occurrence=2)
    data = _set(data, "PRD", 13, "+33 1 99 00 70 00^WPN^PH^^33^1^99007000", occurrence=2)
    data = _insert_after(
        data,
        "PRD|RT",
        "PRD|RT^Destinataire^HL70286||Rue des Centres^^Montreuil^^93100^FRA^O||"
        "^WPN^PH^^33^1^99007171|||||Centre de réadaptation cardiaque",
        "PRD|PP^Médecin traitant^HL70286|ROUX^Claire^^^Dr",
    )
    bundle, warnings = _convert(converter, data)
    assert r4validator.validate(bundle) == []
    assert warnings == [
        "PRD 4: provider role (PRD-1) PP is neither the referring (RP) nor the referred-to "
        "(RT) provider: not converted"
    ]
    [referral] = _of_type(bundle, "ServiceRequest")
    performers = [by_reference(bundle, ref) for ref in refs(referral, "performer")]
    assert [p["resourceType"] for p in performers] == [
        "Practitioner",
        "Organization",
        "Organization",
    ]
    faure, clinic, centre = performers
    assert faure["name"][0]["family"] == "FAURE"
    assert clinic["name"] == "Clinique des Lilas"
    assert clinic["identifier"][0]["value"] == "CDL-93"
    assert clinic["address"][0]["city"] == "Les Lilas"
    assert clinic["telecom"][0]["value"] == "+33 1 99007000"
    # No PRD-2: PRD-3 and PRD-5 are the organization's own.
    assert centre["name"] == "Centre de réadaptation cardiaque"
    assert centre["address"][0]["city"] == "Montreuil"
    assert centre["telecom"][0]["value"] == "+33 1 99007171"
    assert all(p["name"][0]["family"] != "ROUX" for p in _of_type(bundle, "Practitioner"))


def test_ref_results_meet_the_oru_observations_of_the_same_order(converter: Converter) -> None:
    """The OBX of an OBSERVATION group take the identity ORU_R01 gives them (the OBR's filler
    number, code, sub-id): a result already received is not duplicated."""
    filler = "LAB24031400123^SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
    ref = _set(REF, "OBR", 3, filler)
    ref = _set(
        ref,
        "OBX",
        3,
        "2345-7^Glucose [Mass/volume] in Serum or Plasma^LN^GLY^Glycémie^L",
        occurrence=1,
    )
    ref_ids = {o["id"] for o in _of_type(_convert(converter, ref)[0], "Observation")}
    oru_ids = {o["id"] for o in _of_type(_convert(converter, ORU)[0], "Observation")}
    assert len(ref_ids & oru_ids) == 1


def test_ref_without_pid_converts_nothing_but_the_header(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _drop(REF, "PID"))
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {
        "MessageHeader",
        "Provenance",
        "Organization",
    }
    assert warnings == ["REF^I12 without PID (required in REF_I12): no referral converted"]


def test_on_a_fhir_server_a_referral_then_its_cancellation_leave_one_revoked_request(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    fhir_server.transact(_convert(converter, REF)[0])
    cancel = _set(_event("I14"), "MSH", 10, "HPE-REF-20240528-000102")
    fhir_server.transact(_convert(converter, cancel)[0])
    [stored] = fhir_server.search_by_identifier(
        "ServiceRequest", "urn:oid:1.2.250.1.999.2.20", "ADR-2024-0527-001"
    )
    assert stored["status"] == "revoked"
    assert fhir_server.count("ServiceRequest") == 1
    assert stored["requester"]["reference"].startswith("Practitioner/")
    # A status request (I15) afterwards neither reactivates nor empties the referral.
    status_request = _set(_event("I15"), "MSH", 10, "HPE-REF-20240601-000001")
    fhir_server.transact(_convert(converter, status_request)[0])
    [after] = fhir_server.search_by_identifier(
        "ServiceRequest", "urn:oid:1.2.250.1.999.2.20", "ADR-2024-0527-001"
    )
    assert after["status"] == "revoked"
    assert after["requester"] == stored["requester"] and after["note"] == stored["note"]


# ----------------------------------------------------------------------------------------
# The corpus messages (HL7 v2.8, a peer converter's test set).

CORPUS_CASES = [
    # (file, ServiceRequest statuses, warnings expected to mention)
    ("OMG-O19-01.hl7", ["on-hold"], "prior result"),
    ("OMG-O19-02.hl7", ["completed", "completed", "completed"], "prior result"),
    ("REF-I12-02.hl7", ["active"], None),
    ("REF-I14-01.hl7", ["revoked"], None),
    ("REF-I14-02.hl7", ["revoked"], None),
]


@pytest.mark.parametrize(
    ("name", "statuses", "warned"), CORPUS_CASES, ids=[c[0] for c in CORPUS_CASES]
)
def test_corpus_omg_and_ref_convert_and_validate(
    converter: Converter,
    r4validator: R4Validator,
    name: str,
    statuses: list[str],
    warned: str | None,
) -> None:
    path = CORPUS_INPUT / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared corpus is not available here")
    bundle, warnings = _convert(converter, path.read_bytes())
    assert r4validator.validate(bundle) == []
    assert [r["status"] for r in _of_type(bundle, "ServiceRequest")] == statuses
    if warned:
        assert any(warned in w for w in warnings), warnings
    if name.startswith("REF"):
        [referral] = _of_type(bundle, "ServiceRequest")
        assert [i["value"] for i in referral["identifier"]] == ["226839", "11001"]
        assert (
            by_reference(bundle, referral["requester"]["reference"])["name"][0]["family"]
            == "POWELL"
        )
        performers = [by_reference(bundle, ref) for ref in refs(referral, "performer")]
        # PRD RT (PRD-2 person, PRD-10 organization), then RF1-19 and RF1-20.
        assert [p["resourceType"] for p in performers] == [
            "Practitioner",
            "Organization",
            "Organization",
            "Practitioner",
        ]
        assert performers[0]["name"][0]["family"] == "McWILLIAMS"
        assert [performers[1]["name"], performers[2]["name"]] == [
            "RADIANT HEALTH HOSPITAL",
            "Radiant Health Hospital",
        ]
        assert performers[1]["address"][0]["line"] == ["555 HEALTHCARE AVENUE"]  # PRD-11


def test_ref_prd_rpps_number_is_the_practitioner_pv1_7_names(
    converter: Converter, r4validator: R4Validator
) -> None:
    """PRD-7 "10101234567^RPPS" (PLN.2 a national register, PLN.3 empty) and PV1-7
    "10101234567^LAMBERT^…^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^…^RPPS" name one doctor:
    one Practitioner. Scoped by the sending facility, the PRD's was a twin of the
    attending doctor's (two Practitioners per referral, and a third when the referred-to
    doctor is met in an ADT of the other hospital)."""
    bundle, warnings = _convert(converter, REF)
    assert r4validator.validate(bundle) == []
    lamberts = [p for p in _of_type(bundle, "Practitioner") if p["name"][0]["family"] == "LAMBERT"]
    assert len(lamberts) == 1, lamberts
    [encounter] = _of_type(bundle, "Encounter")
    [referral] = _of_type(bundle, "ServiceRequest")
    attending = encounter["participant"][0]["individual"]["reference"]
    assert referral["requester"]["reference"] == attending
    assert not [w for w in warnings if "emitted twice" in w]
    # A licence number within its qualifier (PLN.3 not a register) stays the sender's.
    data = _set(REF, "PRD", 7, "PLN5010^SL^MI", occurrence=2)
    bundle, _ = _convert(converter, data)
    assert r4validator.validate(bundle) == []
    [referral] = _of_type(bundle, "ServiceRequest")
    [performer] = refs(referral, "performer")
    assert by_reference(bundle, performer)["identifier"] == [
        {
            "type": {
                "coding": [{"system": V2 + "0338", "code": "SL", "display": "State license number"}]
            },
            "value": "PLN5010",
            "assigner": {"display": "MI"},
        }
    ]


@pytest.mark.parametrize(
    ("trigger", "action", "status"),
    [
        ("I13", "D", "entered-in-error"),  # v2.8 RF1-25 delete: was written active
        ("I14", "D", "entered-in-error"),  # deleted, not only cancelled
        ("I13", "X", "active"),  # no change: RF1-1 P pending
        ("I13", "U", "active"),
        ("I14", "X", "revoked"),
    ],
)
def test_ref_rf1_25_delete_marks_the_referral_entered_in_error(
    converter: Converter, r4validator: R4Validator, trigger: str, action: str, status: str
) -> None:
    original = _of_type(_convert(converter, REF)[0], "ServiceRequest")[0]
    data = _set(_set(_event(trigger), "MSH", 12, "2.8"), "RF1", 25, action)
    bundle, warnings = _convert(converter, data)
    [referral] = _of_type(bundle, "ServiceRequest")
    assert referral["status"] == status
    assert referral["id"] == original["id"]  # the I12's referral, not a new one
    assert warnings == []
    assert r4validator.validate(bundle) == []
