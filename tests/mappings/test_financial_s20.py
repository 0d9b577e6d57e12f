"""Session 20 review of the patient accounting roots (BAR, DFT): the procedure code
modifiers (PR1-16, FT1-26) written by one macro (codes.PostCoordinated) and carried by an
FT1-7 that is FT1-25's code; the identities of charges (FT1-2 system), coverages (no
member id) and payors (IN1-3, with the IN1-5 address); a DFT without patient refused; and
the coding updates (P10, P12, a P05 without IN1 and GT1) that no longer rewrite the
Account without its coverages and guarantors."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, MappingError
from tests.mappings.test_financial import BAR, CORPUS, DFT, LITHO, bar, dft, one, pid, pv1, valid
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import (
    by_reference,
    convert_one,
    lines,
    message,
    resources,
    segment,
    set_field,
)
from tests.support.r4validator import R4Validator

CPT = "http://www.ama-assn.org/go/cpt"
XRAY = "71045^Xray exam chest 1 view^C4"
NOT_CONVERTED = (
    "FT1 1: the procedure code modifiers (FT1-26) are not converted: FT1-25, the code they "
    "modify, is empty or written nowhere (the charge's code is FT1-7, another code, and its "
    "service a PR1)"
)


def codes(concept: dict[str, Any]) -> list[str]:
    return [c["code"] for c in concept["coding"]]


def dft_with_pr1(ft1: dict[int, str], pr1: dict[int, str]) -> bytes:
    """The sample DFT's head, one FINANCIAL group: the FT1 and its FINANCIAL_PROCEDURE."""
    head = [line for line in lines(DFT) if line[:3] in ("MSH", "EVN", "PID", "PV1")]
    return message([*head, segment("FT1", ft1), segment("PR1", pr1)])


# --- one macro for PR1-16 and FT1-26 ------------------------------------------------------


def test_post_coordinated_code_keeps_the_cne_versions(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG CNE[CodeableConcept]: CNE.7 and CNE.8 are the versions of the codings. The
    post-coordinated code (two copies, in Procedure.j2 and ChargeItem.j2) dropped them,
    though the same CNE without modifier kept them."""
    cne = "71045^Xray exam chest 1 view^C4^RXCHEST^Radio thorax^L^2024^v1"
    expected = [
        {"system": CPT, "version": "2024", "code": "71045:26", "display": "Xray exam chest 1 view"},
        {"version": "v1", "code": "RXCHEST", "display": "Radio thorax"},
    ]
    pr1 = bar("P12", pid(), pv1(), segment("PR1", {1: "1", 3: cne, 5: "20240913", 16: "26"}))
    procedure = one(valid(converter, r4validator, pr1, "BAR").bundle, "Procedure")
    assert procedure["code"]["coding"] == expected
    ft1 = dft({**LITHO, 7: "", 25: cne, 26: "26", 4: "20240913"})
    bundle = valid(converter, r4validator, ft1, "DFT").bundle
    assert one(bundle, "ChargeItem")["code"]["coding"] == expected
    # The PR1 of a BAR^P12 and the FT1-25 of a DFT for the same act: one Procedure.
    assert one(bundle, "Procedure")["id"] == procedure["id"]
    assert one(bundle, "Procedure")["code"] == procedure["code"]


# --- FT1-26 with FT1-7 ----------------------------------------------------------------------


def test_ft1_26_modifiers_post_coordinate_ft1_7_when_it_is_ft1_25s_code(
    converter: Converter, r4validator: R4Validator
) -> None:
    """Corpus DFT-P03-01 / P11-01: FT1-7 and FT1-25 both 71045 (CPT), FT1-26 26, a PR1 the
    service. The modifiers were dropped with a warning: the professional component was
    charged as the whole X-ray."""
    data = dft_with_pr1({**LITHO, 7: XRAY, 25: XRAY, 26: "26~LT"}, {1: "1", 3: XRAY, 5: "20240913"})
    conversion = valid(converter, r4validator, data, "DFT")
    assert conversion.warnings == ()
    item = one(conversion.bundle, "ChargeItem")
    assert item["code"]["coding"] == [
        {"system": CPT, "code": "71045:26:LT", "display": "Xray exam chest 1 view"}
    ]
    # The PR1 stays as sent (its own PR1-16 is empty).
    assert codes(one(conversion.bundle, "Procedure")["code"]) == ["71045"]
    # CPT written "CPT" and "C4": one coding system, the same procedure.
    other_name = dft_with_pr1(
        {**LITHO, 7: "71045^Xray^CPT", 25: XRAY, 26: "26"}, {1: "1", 3: XRAY, 5: "20240913"}
    )
    bundle, warnings = convert_one(converter, other_name)
    assert codes(one(bundle, "ChargeItem")["code"]) == ["71045:26"] and warnings == []


def test_ft1_7_of_its_own_is_left_as_sent(converter: Converter) -> None:
    """A chargemaster code (another code, or the same digits in another system) is not the
    procedure the modifiers modify: as sent, and with a PR1 service the warning stays."""
    pr1 = {1: "1", 3: XRAY, 5: "20240913"}
    for ft1_7 in ("JANM001^Lithotritie^CCAM", "71045^Forfait radio^L"):
        data = dft_with_pr1({**LITHO, 7: ft1_7, 25: XRAY, 26: "26"}, pr1)
        bundle, warnings = convert_one(converter, data)
        assert codes(one(bundle, "ChargeItem")["code"]) == [ft1_7.split("^")[0]]
        assert warnings == [NOT_CONVERTED]


def test_corpus_dft_charges_the_professional_component(
    converter: Converter, r4validator: R4Validator
) -> None:
    for name in ("DFT-P03-01.hl7", "DFT-P11-01.hl7"):
        (raw,) = converter.split((CORPUS / name).read_bytes())
        conversion = valid(converter, r4validator, raw.data, "DFT")
        first = resources(conversion.bundle, "ChargeItem")[0]
        assert codes(first["code"]) == ["71045:26"]
        assert not [w for w in conversion.warnings if "FT1-26" in w]


# --- identities: FT1-2, Coverage, payor -----------------------------------------------------


def test_ft1_2_without_authority_has_the_sending_application_as_system(
    converter: Converter, r4validator: R4Validator
) -> None:
    """FT1-2 is numbered by the sending application (v2.5 6.5.1.2; the identity already
    said so): its MSH-3 universal id is the system. The identifier had none, so an
    identifier search could not tell two applications' transaction 12345 apart."""
    bundle = valid(converter, r4validator, DFT, "DFT").bundle
    (item, *_) = resources(bundle, "ChargeItem")
    assert item["identifier"][0] == {
        "system": "urn:oid:1.2.250.1.999.2.20",
        "value": "ACT-2024-118734",
    }
    local = set_field(DFT, "MSH", 3, "PASTEL")
    (item, *_) = resources(convert_one(converter, local)[0], "ChargeItem")
    assert item["identifier"][0] == {"value": "ACT-2024-118734", "assigner": {"display": "PASTEL"}}
    # A v2.6+ CX with its own authority keeps it.
    v26 = set_field(
        set_field(DFT, "MSH", 12, "2.6"), "FT1", 2, "ACT-1^^^COMPTA&1.2.250.1.999.2.30&ISO"
    )
    (item, *_) = resources(convert_one(converter, v26)[0], "ChargeItem")
    assert item["identifier"][0] == {"system": "urn:oid:1.2.250.1.999.2.30", "value": "ACT-1"}


def test_a_coverage_keeps_its_id_when_a_later_message_adds_the_insured_id(
    converter: Converter,
) -> None:
    """The identity held IN1-49, else IN1-36: a pre-admission without the card, then the
    admission with it, were two Coverages of one policy (the first left active beside the
    second in the warehouse)."""

    def coverage_ids(data: bytes) -> list[str]:
        return [c["id"] for c in resources(convert_one(converter, data)[0], "Coverage")]

    with_card = coverage_ids(BAR)
    no_card = set_field(set_field(BAR, "IN1", 49, ""), "IN1", 49, "", occurrence=2)
    assert coverage_ids(no_card) == with_card
    policy_number = set_field(no_card, "IN1", 36, "POL-77")
    assert coverage_ids(policy_number) == with_card
    # IN1-17 empty and SEL are both the patient's own policy.
    assert coverage_ids(set_field(BAR, "IN1", 17, "")) == with_card


def test_a_child_on_each_parent_s_policy_has_two_coverages(converter: Converter) -> None:
    """A dependant's policy is told apart by the insured's relationship (IN1-17): a child
    covered by the father's and by the mother's policy of one plan has two Coverages."""
    (own,) = [line for line in lines(BAR) if line.startswith("IN1|1|")]
    father = set_field(message([own]), "IN1", 17, "FTH^Père^HL70063")
    mother = set_field(set_field(message([own]), "IN1", 17, "MTH^Mère^HL70063"), "IN1", 1, "2")
    data = bar("P05", pid(), pv1(), *lines(father), *lines(mother))
    bundle, warnings = convert_one(converter, data)
    assert len({c["id"] for c in resources(bundle, "Coverage")}) == 2
    assert not [w for w in warnings if "twice" in w]


def test_the_payor_is_identified_by_in1_3(converter: Converter, r4validator: R4Validator) -> None:
    """IN1-3 (insurance company ID, required) was written nowhere: the payor was known by
    its name alone, one Organization per spelling of the name."""
    bundle = valid(converter, r4validator, BAR, "BAR").bundle
    coverage = resources(bundle, "Coverage")[0]
    payor = by_reference(bundle, coverage["payor"][0]["reference"])
    assert payor["identifier"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "NII",
                        "display": "National Insurance Organization Identifier",
                    }
                ]
            },
            "value": "441",
            "assigner": {"display": "REGIME-GENERAL"},
        }
    ]
    respelled = set_field(BAR, "IN1", 4, "CPAM Loire-Atlantique")
    coverage = resources(convert_one(converter, respelled)[0], "Coverage")[0]
    assert coverage["payor"][0]["reference"] == f"Organization/{payor['id']}"
    # An XON with its own identifier keeps it (XON.10 before IN1-3).
    own_id = set_field(BAR, "IN1", 4, "CPAM de Loire-Atlantique^^^^^CNAM^^^^441000")
    bundle = convert_one(converter, own_id)[0]
    coverage = resources(bundle, "Coverage")[0]
    payor = by_reference(bundle, coverage["payor"][0]["reference"])
    assert [i["value"] for i in payor["identifier"]] == ["441000"]


# --- DFT without a patient --------------------------------------------------------------------


def test_a_dft_without_patient_is_refused(converter: Converter) -> None:
    """PID is required in DFT_P03 and ChargeItem.subject in R4: charges of no identified
    patient were accepted (AA) with a warning and written nowhere, so the billing system
    never re-sent them. Refused as PPR_PC1 refuses a problem without patient (AE 101)."""
    data = message([line for line in lines(DFT) if not line.startswith("PID")])
    with pytest.raises(MappingError) as caught:
        converter.convert_message(data)
    assert caught.value.reason == "the patient (PID) is missing"
    assert caught.value.location == "PID"
    assert caught.value.hl7_error_code == "101"


# --- BAR updates that carry no coverage nor guarantor ----------------------------------------


def _p12_coding_update() -> bytes:
    """A BAR^P12 (update diagnosis/procedure): its structure has no IN1 nor GT1."""
    dg1 = segment("DG1", {1: "1", 3: "N20.1^Calcul de l'uretère^CIM10", 6: "F"})
    return bar("P12", pid(), pv1(), dg1)


def test_a_coding_update_does_not_write_the_account(converter: Converter) -> None:
    """P10 / P12 (and a P05 without IN1 and GT1) carry no coverage nor guarantor: the
    whole Account they wrote had none, so a coding update dropped the account's
    insurance. They name the Account by identifier, as a DFT does."""
    bundle, _ = convert_one(converter, _p12_coding_update())
    assert resources(bundle, "Account") == []
    assert one(bundle, "Encounter")["account"] == [
        {
            "type": "Account",
            "identifier": {"system": "urn:oid:1.2.250.1.999.2.1", "value": "CPT-2024-0042"},
        }
    ]
    p05 = bar("P05", pid(), pv1(), segment("DG1", {1: "1", 3: "N20.1^Calcul^CIM10"}))
    assert resources(convert_one(converter, p05)[0], "Account") == []
    # A P05 carrying insurance or guarantors, and a P01, write it.
    p05_in1 = [line for line in lines(BAR) if line[:3] in ("MSH", "EVN", "PID", "PV1", "IN1")]
    p05_in1[0] = p05_in1[0].replace("BAR^P01^BAR_P01", "BAR^P05^BAR_P05")
    assert len(resources(convert_one(converter, message(p05_in1))[0], "Account")) == 1
    assert len(resources(convert_one(converter, BAR)[0], "Account")) == 1


def test_on_a_fhir_server_a_coding_update_keeps_the_account_coverages(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    fhir_server.transact(converter.convert_message(BAR).bundle)
    fhir_server.transact(converter.convert_message(_p12_coding_update()).bundle)
    (account,) = [e["resource"] for e in fhir_server.search("Account")["entry"]]
    assert len(account["coverage"]) == 2 and len(account["guarantor"]) == 1
    assert account["status"] == "active"


def test_in1_5_is_the_payor_address(converter: Converter, r4validator: R4Validator) -> None:
    """IG IN1[Coverage] row 5: IN1-5 → payor(Organization.address). It was dropped: the
    claim's address was nowhere."""
    bundle = valid(converter, r4validator, BAR, "BAR").bundle
    coverage = resources(bundle, "Coverage")[0]
    payor = by_reference(bundle, coverage["payor"][0]["reference"])
    assert payor["address"] == [
        {
            "use": "work",
            "line": ["9 rue Gaëtan Rondeau"],
            "city": "Nantes",
            "postalCode": "44200",
            "country": "FRA",
        }
    ]
