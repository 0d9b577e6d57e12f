"""Orders and billing, session 22: the order requests of a message carrying insurance list its
Coverages (ServiceRequest / MedicationRequest.insurance), and a BAR account ranks its
coverages by IN1-22 (Account.coverage.priority); samples of samples/hl7v2 converted by the
real converter and checked by the R4 validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import (
    by_reference,
    convert_one,
    insert_after,
    lines,
    message,
    refs,
    resources,
    set_field,
)
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
BAR = (SAMPLES / "BAR_P01_add-account.hl7").read_bytes()
#: The BAR sample's two policies: CPAM (compulsory) and a mutual insurer (complementary).
IN1S = [line for line in lines(BAR) if line.startswith("IN1|")]
#: An IN1 without insurance company name: no payor, so no Coverage (Coverage.j2).
NO_PAYOR = "IN1|3|AMC^Assurance Maladie Complémentaire^L"

ORDER_SAMPLES = {
    "ORM_O01_radiology-order": "ServiceRequest",
    "ORM_O01_medication-order": "MedicationRequest",
    "OML_O21_lab-order": "ServiceRequest",
    "OMG_O19_radiology-order": "ServiceRequest",
    "RDE_O11_pharmacy-encoded-orders": "MedicationRequest",
    "OMP_O09_pharmacy-order": "MedicationRequest",
}


def _with_insurance(name: str) -> bytes:
    """The order sample with the BAR's two IN1, the first one again (one policy sent twice)
    and one IN1 naming no insurer, after its PV1 (PATIENT.INSURANCE)."""
    data = (SAMPLES / f"{name}.hl7").read_bytes()
    return insert_after(data, "PV1|", *IN1S, IN1S[0], NO_PAYOR)


@pytest.mark.parametrize("name", sorted(ORDER_SAMPLES))
def test_order_requests_list_the_message_coverages(
    converter: Converter, r4validator: R4Validator, name: str
) -> None:
    """Each request of an order message carrying IN1 lists its Coverages in `insurance`
    (R4: "insurance plans… that may be needed for delivering the requested service"), each
    once; the IN1 without payor, which makes no Coverage, adds nothing. The IG makes the
    Coverages (ORM_O01 row 3.5.1, OML_O21 row 5.9.1) but linked them to nothing: a
    warehouse could not tell which insurance an order is billed to."""
    bundle, _ = convert_one(converter, _with_insurance(name))
    [patient] = resources(bundle, "Patient")
    cpam_and_mutual = [
        c["id"]
        for c in resources(bundle, "Coverage")
        if c["beneficiary"]["reference"] == f"Patient/{patient['id']}"
        and by_reference(bundle, c["payor"][0]["reference"])["name"]
        in ("CPAM de Loire-Atlantique", "Mutuelle des Pays de la Loire")
    ]
    assert len(cpam_and_mutual) == 2
    coverages = sorted(f"Coverage/{c['id']}" for c in resources(bundle, "Coverage"))
    requests = resources(bundle, ORDER_SAMPLES[name])
    assert requests
    for request in requests:
        listed = refs(request, "insurance")
        assert sorted(listed) == coverages
        assert len(set(listed)) == len(listed)
    assert r4validator.validate_all(bundle) == []


def test_an_order_message_without_insurance_lists_none(converter: Converter) -> None:
    """No IN1, no `insurance` (nor an empty list in the JSON)."""
    bundle, _ = convert_one(converter, (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes())
    assert all("insurance" not in r for r in resources(bundle, "ServiceRequest"))


def test_account_coverages_carry_the_coordination_of_benefits_priority(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IN1-22 (1 primary, 2 secondary…) → Account.coverage.priority, as it is Coverage.order:
    the account alone says which insurer is billed first (here the mutual insurer, sent
    second). It was not written."""
    data = set_field(set_field(BAR, "IN1", 22, "2", 1), "IN1", 22, "1", 2)
    bundle, _ = convert_one(converter, data)
    [account] = resources(bundle, "Account")
    ranked = {
        by_reference(
            bundle, by_reference(bundle, c["coverage"]["reference"])["payor"][0]["reference"]
        )["name"]: c.get("priority")
        for c in account["coverage"]
    }
    assert ranked == {"CPAM de Loire-Atlantique": 2, "Mutuelle des Pays de la Loire": 1}
    assert r4validator.validate_all(bundle) == []


@pytest.mark.parametrize("priority", ["", "P", "0", "1.5"])
def test_an_account_coverage_without_a_positive_priority_has_none(
    converter: Converter, priority: str
) -> None:
    """R4 priority is a positiveInt: an empty or other IN1-22 leaves it out (Coverage.j2
    warns about such a value once)."""
    bundle, _ = convert_one(converter, set_field(BAR, "IN1", 22, priority, 1))
    [account] = resources(bundle, "Account")
    assert [c.get("priority") for c in account["coverage"]] == [None, None]


def test_one_policy_sent_twice_is_listed_once_by_the_account(converter: Converter) -> None:
    """Two IN1 of one policy are one Coverage (Coverage.j2's identity): the Account listed it
    twice. It keeps the first IN1's priority."""
    again = lines(set_field(message([IN1S[0]]), "IN1", 22, "3"))
    data = insert_after(set_field(BAR, "IN1", 22, "1", 1), "IN1|2|", *again)
    assert len([line for line in lines(data) if line.startswith("IN1|")]) == 3
    bundle, _ = convert_one(converter, data)
    [account] = resources(bundle, "Account")
    listed = [c["coverage"]["reference"] for c in account["coverage"]]
    assert len(listed) == len(set(listed)) == 2
    assert [c.get("priority") for c in account["coverage"]] == [1, None]


def test_an_order_billed_to_its_coverages_on_the_server(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """On a FHIR server: the order with its insurance is accepted, sent twice it leaves one
    request and the two Coverages, and the stored request lists both (R4 defines no
    ServiceRequest search by insurance)."""
    fhir_server.reset()
    data = _with_insurance("ORM_O01_radiology-order")
    resent = set_field(data, "MSH", 10, "ORM-RESENT-1")
    for sent in (data, resent):
        fhir_server.transact(convert_one(converter, sent)[0])
    assert fhir_server.count("ServiceRequest") == 1
    assert fhir_server.count("Coverage") == 2
    [request] = [e["resource"] for e in fhir_server.search("ServiceRequest")["entry"]]
    stored = sorted(
        f"Coverage/{e['resource']['id']}" for e in fhir_server.search("Coverage")["entry"]
    )
    assert sorted(refs(request, "insurance")) == stored


def _orc_only(name: str, control: str) -> bytes:
    """The sample's MSH, PID, PV1 and ORCs alone (ORC-1 ``control``, ORC-5 empty): an
    ORM_O01 whose ORDER groups have no ORDER_DETAIL (HL7 lets it be left out)."""
    data = (SAMPLES / f"{name}.hl7").read_bytes()
    kept = [line for line in lines(data) if line.split("|")[0] in ("MSH", "PID", "PV1", "ORC")]
    return set_field(set_field(message(kept), "ORC", 1, control, 0), "ORC", 5, "", 0)


@pytest.mark.parametrize("name", ["ORM_O01_radiology-order", "ORM_O01_medication-order"])
def test_an_order_control_without_order_detail_is_said(converter: Converter, name: str) -> None:
    """An ORC alone (here a cancel, OC) is written as the IG's ORC[ServiceRequest]: whole,
    without code (it replaces the NW's on the server), and for a pharmacy order beside its
    MedicationRequest, which stays as it was. That happened without a word; each such
    order is now named in a warning (positions only, no value)."""
    bundle, warnings = convert_one(converter, _orc_only(name, "OC"))
    requests = resources(bundle, "ServiceRequest")
    assert requests and all(r["status"] == "revoked" and "code" not in r for r in requests)
    said = [w for w in warnings if "ORC without order detail" in w]
    assert [w.split(":")[0] for w in said] == [f"ORDER {n + 1}" for n in range(len(requests))]
    assert all("RAD-" not in w and "PHA-" not in w for w in said)


def test_an_order_with_its_detail_is_not_warned_about(converter: Converter) -> None:
    """The usual ORC + OBR (and ORC + RXO) orders carry no such warning."""
    for name in ("ORM_O01_radiology-order", "ORM_O01_medication-order"):
        _, warnings = convert_one(converter, (SAMPLES / f"{name}.hl7").read_bytes())
        assert not any("ORC without order detail" in w for w in warnings)
