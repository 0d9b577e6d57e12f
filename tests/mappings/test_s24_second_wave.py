"""Session 24, second wave: identity and status items of HL7 v2 and CDA.

- A result withdrawn by its sender is written entered-in-error but listed nowhere: an
  OBX-11 D (deleted) or W (posted as wrong) is left out of DiagnosticReport.result (ORU,
  OUL), of an order's supportingInfo (OML…), of Immunization.reaction and of the facts an
  Immunization reads from its OBX (VXU); a CDA statement nullified is left out of its
  Result Organizer's DiagnosticReport.result and of a panel's hasMember. Before, whoever
  read the report's results read the deleted one (as a deleted DG1-21 D stayed the visit's
  diagnosis, fixed earlier this session). Likewise a DG1-21 D is no reason of an order or
  a referral (reasonReference) nor a charge's supportingInformation (DFT^P11).
- An ANS IdNat_Struct `1` + FINESS (a CI-SIS document's organization id) is the
  Organization the bare FINESS names under the same authority (HL7 v2 XON, IHE PAM
  France): identity and first identifier the FINESS, then the IdNat_Struct (type IDNST).
  They were two Organizations of one establishment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import insert_after, resources, set_field

ROOT = Path(__file__).resolve().parents[2] / "samples"
ORU = (ROOT / "hl7v2" / "ORU_R01_lab-results.hl7").read_bytes()
OUL = (ROOT / "hl7v2" / "OUL_R22_lab-results.hl7").read_bytes()
VXU = (ROOT / "hl7v2" / "VXU_V04_immunization.hl7").read_bytes()
CCD = (ROOT / "cda" / "CCD_lefevre-camille.xml").read_text(encoding="utf-8")


def _by_ref(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each resource of the bundle by the `Type/id` a reference to it holds."""
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
        if e.get("resource") and "id" in e["resource"]
    }


def _listed(bundle: dict[str, Any], holder: dict[str, Any], element: str) -> list[str]:
    """The codes (first coding) of the Observations `holder.element` lists."""
    found = _by_ref(bundle)
    return [found[ref["reference"]]["code"]["coding"][0]["code"] for ref in holder.get(element, [])]


def _status_of(bundle: dict[str, Any], code: str) -> str:
    [status] = [
        str(o["status"])
        for o in resources(bundle, "Observation")
        if o["code"].get("coding", [{}])[0].get("code") == code
    ]
    return status


# --- HL7 v2: OBX-11 D / W ------------------------------------------------------------------


def test_a_deleted_or_wrong_result_is_not_one_of_the_reports_results(
    converter: Converter,
) -> None:
    # The report re-sent whole with creatinine posted as wrong and potassium deleted.
    data = set_field(set_field(ORU, "OBX", 11, "W", occurrence=2), "OBX", 11, "D", occurrence=3)
    bundle = converter.convert_message(data).bundle
    report = resources(bundle, "DiagnosticReport")[0]
    listed = _listed(bundle, report, "result")
    assert "14682-9" not in listed and "2823-3" not in listed
    assert listed == ["2345-7", "ASPSER", "8665-2", "DERNREPAS", "COMBIO"]
    # Both are still written, entered-in-error, so the stored Observations are marked.
    assert _status_of(bundle, "14682-9") == "entered-in-error"
    assert _status_of(bundle, "2823-3") == "entered-in-error"


def test_a_deleted_result_of_an_oul_is_not_one_of_the_reports_results(
    converter: Converter,
) -> None:
    # OBX #3 of the sample is the potassium of the electrolytes panel (#1 is a specimen's).
    data = set_field(OUL, "OBX", 11, "d", occurrence=3)
    bundle = converter.convert_message(data).bundle
    [electrolytes] = [
        r
        for r in resources(bundle, "DiagnosticReport")
        if r["code"]["coding"][0]["code"] == "24326-1"
    ]
    assert _listed(bundle, electrolytes, "result") == ["2951-2"]
    assert _status_of(bundle, "2823-3") == "entered-in-error"


def _rds_with_an_obx() -> bytes:
    """The RDS sample with an OBX (the patient's weight) in its order's OBSERVATION group."""
    data = (ROOT / "hl7v2" / "RDS_O13_pharmacy-dispense.hl7").read_bytes()
    return insert_after(
        data, "RXR|", "OBX|1|NM|29463-7^Weight^LN||72|kg^kg^UCUM||||||F", occurrence=3
    )


@pytest.mark.parametrize(
    ("name", "rtype", "element"),
    [
        ("OML_O21_lab-order", "ServiceRequest", "supportingInfo"),
        ("OMG_O19_radiology-order", "ServiceRequest", "supportingInfo"),
        ("REF_I12_referral", "ServiceRequest", "supportingInfo"),
        ("ORM_O01_medication-order", "MedicationRequest", "supportingInformation"),
        ("RDE_O11_pharmacy-encoded-orders", "MedicationRequest", "supportingInformation"),
        ("RDS_O13_pharmacy-dispense", "MedicationDispense", "supportingInformation"),
    ],
)
def test_an_order_observation_posted_as_wrong_is_no_supporting_info(
    converter: Converter, name: str, rtype: str, element: str
) -> None:
    if name.startswith("RDS"):
        data = _rds_with_an_obx()
    else:
        data = (ROOT / "hl7v2" / f"{name}.hl7").read_bytes()

    def listed(status: str) -> list[str]:
        bundle = converter.convert_message(set_field(data, "OBX", 11, status, occurrence=0)).bundle
        return [
            ref["reference"]
            for resource in resources(bundle, rtype)
            for ref in resource.get(element, [])
            if ref["reference"].startswith("Observation/")
        ]

    assert listed("F")  # sent final, the order lists them
    assert listed("W") == []
    assert listed("D") == []


def test_a_withdrawn_reaction_or_eligibility_is_not_the_immunizations(
    converter: Converter,
) -> None:
    reaction = "OBX|3|CE|31044-1^Reaction^LN|3|39579001^Anaphylaxis^SCT||||||{}|||20240315"
    sent = insert_after(VXU, "OBX|2|", reaction.format("F"))
    immunization = resources(converter.convert_message(sent).bundle, "Immunization")[0]
    assert len(immunization["reaction"]) == 1 and immunization["programEligibility"]

    withdrawn = set_field(insert_after(VXU, "OBX|2|", reaction.format("W")), "OBX", 11, "D")
    bundle = converter.convert_message(withdrawn).bundle
    immunization = resources(bundle, "Immunization")[0]
    assert "reaction" not in immunization and "programEligibility" not in immunization
    assert _status_of(bundle, "31044-1") == "entered-in-error"
    assert _status_of(bundle, "64994-7") == "entered-in-error"


DFT = (ROOT / "hl7v2" / "DFT_P03_charges.hl7").read_bytes()


def _reason_statuses(bundle: dict[str, Any], rtype: str, element: str) -> list[str]:
    """The verificationStatus of each Condition `element` of the `rtype` resources lists."""
    found = _by_ref(bundle)
    return [
        str(
            found[ref["reference"]].get("verificationStatus", {"coding": [{"code": ""}]})["coding"][
                0
            ]["code"]
        )
        for resource in resources(bundle, rtype)
        for ref in resource.get(element, [])
        if ref["reference"].startswith("Condition/")
    ]


@pytest.mark.parametrize(
    "name",
    ["OMG_O19_radiology-order", "OML_O21_lab-order", "ORM_O01_radiology-order", "REF_I12_referral"],
)
def test_a_deleted_diagnosis_is_no_reason_of_an_order_or_a_referral(
    converter: Converter, name: str
) -> None:
    data = (ROOT / "hl7v2" / f"{name}.hl7").read_bytes()
    sent = converter.convert_message(data).bundle
    assert _reason_statuses(sent, "ServiceRequest", "reasonReference")
    deleted = converter.convert_message(set_field(data, "DG1", 21, "D")).bundle
    assert _reason_statuses(deleted, "ServiceRequest", "reasonReference") == []
    [condition] = resources(deleted, "Condition")
    assert condition["verificationStatus"]["coding"][0]["code"] == "entered-in-error"


def test_a_deleted_diagnosis_is_not_a_charges_supporting_information(
    converter: Converter,
) -> None:
    # DFT^P11: the DG1 of a FINANCIAL group is its charge's supportingInformation.
    p11 = set_field(DFT, "MSH", 9, "DFT^P11^DFT_P11")
    sent = converter.convert_message(p11).bundle
    assert _reason_statuses(sent, "ChargeItem", "supportingInformation")
    deleted = converter.convert_message(set_field(p11, "DG1", 21, "D")).bundle
    assert _reason_statuses(deleted, "ChargeItem", "supportingInformation") == []


# --- CDA: statusCode nullified -------------------------------------------------------------


def _nullify(xml: str, observation_id: str) -> str:
    """The document with the statusCode of the observation `observation_id` nullified."""
    head, tail = xml.split(f'<id root="{observation_id}"/>', 1)
    tail = tail.replace('<statusCode code="completed"/>', '<statusCode code="nullified"/>', 1)
    return head + f'<id root="{observation_id}"/>' + tail


CHOLESTEROL = "8f0e2fcd-a72b-5909-9823-7f849862789a"  # first result of the lipid panel
HEART_RATE = "b1153eba-a3a4-50ea-8022-519345548582"  # a vital sign of the organizer


def test_a_nullified_cda_result_is_not_one_of_the_reports_results(
    converter: Converter,
) -> None:
    before = converter.convert_document(CCD.encode()).bundle
    [panel] = [
        r
        for r in resources(before, "DiagnosticReport")
        if r["code"]["coding"][0]["code"] == "57698-3"
    ]
    assert "2093-3" in _listed(before, panel, "result")

    bundle = converter.convert_document(_nullify(CCD, CHOLESTEROL).encode()).bundle
    [panel] = [
        r
        for r in resources(bundle, "DiagnosticReport")
        if r["code"]["coding"][0]["code"] == "57698-3"
    ]
    assert _listed(bundle, panel, "result") == ["2085-9", "2571-8"]
    assert _status_of(bundle, "2093-3") == "entered-in-error"


def test_a_nullified_vital_sign_is_no_member_of_the_panel(converter: Converter) -> None:
    bundle = converter.convert_document(_nullify(CCD, HEART_RATE).encode()).bundle
    [panel] = [
        o
        for o in resources(bundle, "Observation")
        if o["code"].get("coding", [{}])[0].get("code") == "85353-1"
    ]
    assert "8867-4" not in _listed(bundle, panel, "hasMember")
    assert "8302-2" in _listed(bundle, panel, "hasMember")
    assert _status_of(bundle, "8867-4") == "entered-in-error"


# --- IdNat_Struct: `1` + FINESS is the FINESS ----------------------------------------------

MFN = (ROOT / "hl7v2" / "MFN_M05_locations.hl7").read_bytes()
ANS_ST = "urn:oid:1.2.250.1.71.4.2.2"


def _organization(bundle: dict[str, Any], value: str) -> tuple[str, dict[str, Any]]:
    """The fullUrl and resource of the Organization holding the identifier `value`."""
    [found] = [
        (e["fullUrl"], e["resource"])
        for e in bundle["entry"]
        if e.get("resource", {}).get("resourceType") == "Organization"
        and any(i.get("value") == value for i in e["resource"].get("identifier", []))
    ]
    return found


def test_an_idnat_struct_document_and_a_finess_feed_name_one_organization(
    converter: Converter,
) -> None:
    # HL7 v2 (IHE PAM France): the bare FINESS under 1.2.250.1.71.4.2.2, typed FINEG.
    v2_url, v2_org = _organization(converter.convert_message(MFN).bundle, "690781810")
    # An ANS CI-SIS document: the IdNat_Struct `1` + that FINESS under the same root.
    xml = CCD.replace(
        'root="1.2.250.1.71.4.2.2" extension="690099950"',
        'root="1.2.250.1.71.4.2.2" extension="1690781810"',
    )
    cda_url, cda_org = _organization(converter.convert_document(xml.encode()).bundle, "1690781810")
    assert cda_url == v2_url
    # The bare FINESS first (the conditional modes match on it), then the IdNat_Struct.
    assert cda_org["identifier"][0] == {"system": ANS_ST, "value": "690781810"}
    assert cda_org["identifier"][1]["value"] == "1690781810"
    assert cda_org["identifier"][1]["type"]["coding"][0]["code"] == "IDNST"
    assert v2_org["identifier"][0]["value"] == "690781810"


def test_an_hl7v2_xon_sending_the_idnat_struct_is_the_finess_organization(
    converter: Converter,
) -> None:
    _, bare = _organization(converter.convert_message(MFN).bundle, "690781810")
    prefixed = MFN.replace(b"FINEG^^^690781810", b"IDNST^^^1690781810")
    url, organization = _organization(converter.convert_message(prefixed).bundle, "1690781810")
    assert url == _organization(converter.convert_message(MFN).bundle, "690781810")[0]
    assert [i["value"] for i in organization["identifier"]] == ["690781810", "1690781810"]
    assert organization["identifier"][1]["system"] == ANS_ST
    assert "type" not in organization["identifier"][0]  # TRE_G07 `1` says not EJ / EG
    assert bare["name"] == organization["name"]


def test_other_values_under_the_structure_authority_are_kept_as_sent(
    converter: Converter,
) -> None:
    # A bare FINESS: no prefix read (a SIRET IdNat_Struct, `3` + 14 digits, is read since
    # session 25: tests/mappings/test_idnat_struct_s25.py).
    for value in ("690099950",):
        xml = CCD.replace('extension="690099950"', f'extension="{value}"')
        _, organization = _organization(converter.convert_document(xml.encode()).bundle, value)
        assert organization["identifier"] == [{"system": ANS_ST, "value": value}]


MOBILITY = "759e1c38-3c3a-5730-8c98-6aef1cc54d01"  # the functional status organizer's member


def test_a_panel_whose_only_member_is_nullified_is_written_without_it(
    converter: Converter,
) -> None:
    def mobility(xml: str) -> dict[str, Any]:
        bundle = converter.convert_document(xml.encode()).bundle
        [panel] = [
            o
            for o in resources(bundle, "Observation")
            if o["code"].get("coding", [{}])[0].get("code") == "d4"
        ]
        return panel

    assert len(mobility(CCD)["hasMember"]) == 1
    # Still written (a stored panel is rewritten), without the withdrawn member.
    assert "hasMember" not in mobility(_nullify(CCD, MOBILITY))
