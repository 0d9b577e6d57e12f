"""The IdNat_PS beyond PV1-7 and the MFN (referrals, CDA documents); HD organizations (s21).

- A referral's PRD-7 (REF / RRI) giving the ANS national identifier of a health
  professional (IdNat_PS: "8" + RPPS, "0" + ADELI under 1.2.250.1.71.4.2.1) is the doctor
  PV1-7 names by the bare number, as Practitioner.j2 reads an XCN: the two forms were two
  Practitioners of one doctor.
- A CDA author / performer (assignedAuthor, assignedEntity…) was identified by its id's
  bare root and extension as written, HL7 v2 by ``urn:oid:<root>`` and the register's
  number: one doctor was three Practitioners (CDA IdNat_PS, CDA RPPS, HL7 v2). Its id is
  now read as HL7 v2 reads an XCN, the IdNat_PS (ANS CI-SIS documents) included.
- The Organization an HD names (MSH-4 sender, PV1-3.4…) was identified by its HD.2 as
  written: ``CH^urn:oid:1.2.250…^ISO`` and ``CH^1.2.250…^ISO``, one facility for the
  identifiers it scopes, were two Organizations holding one identifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import convert_one, resources, set_field

REPO = Path(__file__).resolve().parents[2]
REF = (REPO / "samples" / "hl7v2" / "REF_I12_referral.hl7").read_bytes()
ORM = (REPO / "samples" / "hl7v2" / "ORM_O01_radiology-order.hl7").read_bytes()
#: An ANS CI-SIS document whose author, legal authenticator and performer are Dr Le Goff,
#: named by his IdNat_PS 810100345678 (RPPS 10100345678).
VSM = (REPO / "samples" / "cda" / "VSM_synthese-medicale.xml").read_bytes()
VSM_ID = b'<id root="1.2.250.1.71.4.2.1" extension="810100345678"/>'
ANS_PS = "urn:oid:1.2.250.1.71.4.2.1"
ANS_HD = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
RPPS = "10101234567"


def written(resource: dict[str, Any]) -> list[tuple[str | None, str, str | None]]:
    return [
        (i.get("system"), i["value"], i.get("type", {}).get("coding", [{}])[0].get("code"))
        for i in resource["identifier"]
    ]


def practitioners(converter: Converter, data: bytes) -> list[dict[str, Any]]:
    bundle, _ = convert_one(converter, data)
    return resources(bundle, "Practitioner")


# --- PRD-7: a referral's provider ------------------------------------------------------------


def referrer(converter: Converter, prd_7: str) -> dict[str, Any]:
    """The referring provider (first PRD) of a REF whose PV1-7 names nobody."""
    data = set_field(set_field(REF, "PV1", 7, ""), "PRD", 7, prd_7, 1)
    return practitioners(converter, data)[0]


@pytest.mark.parametrize(
    "prd_7",
    [
        f"8{RPPS}^IDNPS",
        f"8{RPPS}^RPPS",
        f"8{RPPS}^RPPS^ASIP-SANTE-PS",
        f"8{RPPS}^^1.2.250.1.71.4.2.1",
    ],
)
def test_a_referral_s_idnat_ps_is_the_doctor_pv1_7_names_by_rpps(
    converter: Converter, prd_7: str
) -> None:
    """The sample's PV1-7 names Dr Lambert by RPPS 10101234567 and its first PRD-7 by the same
    RPPS; with the PRD-7 written as the IdNat_PS, the message held two Practitioners of her."""
    both = set_field(REF, "PRD", 7, prd_7, 1)
    found = practitioners(converter, both)
    lambert = [p for p in found if p["name"][0]["family"] == "LAMBERT"]
    assert len(lambert) == 1
    bare = referrer(converter, f"{RPPS}^RPPS")
    prefixed = referrer(converter, prd_7)
    assert prefixed["id"] == bare["id"] == lambert[0]["id"]
    # The identifier the conditional modes search first, then the IdNat_PS as sent.
    assert written(bare) == [(ANS_PS, RPPS, "RPPS")]
    assert written(prefixed) == [(ANS_PS, RPPS, "RPPS"), (ANS_PS, f"8{RPPS}", "IDNPS")]


def test_a_referral_s_idnat_ps_of_an_adeli_number_is_that_adeli(converter: Converter) -> None:
    bare = referrer(converter, "751234567^ADELI")
    prefixed = referrer(converter, "0751234567^IDNPS")
    assert prefixed["id"] == bare["id"]
    assert written(prefixed) == [(ANS_PS, "751234567", "ADELI"), (ANS_PS, "0751234567", "IDNPS")]


@pytest.mark.parametrize(
    "prd_7", [f"{RPPS}^RPPS~8{RPPS}^IDNPS", f"8{RPPS}^IDNPS~{RPPS}^RPPS~8{RPPS}^RPPS"]
)
def test_both_forms_in_one_prd_7_write_each_identifier_once(
    converter: Converter, prd_7: str
) -> None:
    assert written(referrer(converter, prd_7)) == [
        (ANS_PS, RPPS, "RPPS"),
        (ANS_PS, f"8{RPPS}", "IDNPS"),
    ]


@pytest.mark.parametrize(
    "prd_7",
    [
        # Another authority's number that looks like an IdNat_PS, and other shapes.
        f"8{RPPS}^^1.2.250.1.999.1.1",
        f"7{RPPS}^RPPS",
        f"8{RPPS}9^RPPS",
    ],
)
def test_other_referral_numbers_are_kept_as_sent(converter: Converter, prd_7: str) -> None:
    found = referrer(converter, prd_7)
    assert [value for _, value, _ in written(found)] == [prd_7.split("^")[0]]
    assert found["id"] != referrer(converter, f"{RPPS}^RPPS")["id"]


# --- CDA authors and performers: one doctor across both paths ---------------------------------


def document_practitioners(converter: Converter, doc: bytes) -> list[dict[str, Any]]:
    return resources(converter.convert_document(doc).bundle, "Practitioner")


def v2_le_goff(converter: Converter, number: str, kind: str) -> dict[str, Any]:
    pv1_7 = f"{number}^LE GOFF^Antoine^^^Dr^^^{ANS_HD}^L^^^{kind}"
    return practitioners(converter, set_field(ORM, "PV1", 7, pv1_7))[0]


def test_a_cda_idnat_ps_is_the_doctor_hl7_v2_names_by_rpps(converter: Converter) -> None:
    """The document's Practitioner was [root, extension] (no urn:oid:, the IdNat_PS as
    written): a third Practitioner beside HL7 v2's one for the RPPS and the IdNat_PS."""
    (author,) = document_practitioners(converter, VSM)
    bare_document = VSM.replace(b'extension="810100345678"', b'extension="10100345678"')
    (bare_author,) = document_practitioners(converter, bare_document)
    by_rpps = v2_le_goff(converter, "10100345678", "RPPS")
    assert author["id"] == bare_author["id"] == by_rpps["id"]
    assert v2_le_goff(converter, "810100345678", "IDNPS")["id"] == by_rpps["id"]
    assert written(author) == [
        (ANS_PS, "10100345678", "RPPS"),
        (ANS_PS, "810100345678", "IDNPS"),
    ]


def test_a_cda_id_other_than_the_idnat_ps_keeps_hl7_v2_s_identity(converter: Converter) -> None:
    """Any OID root is the XCN.9 `&<OID>&ISO` of HL7 v2: one Practitioner."""
    local = b'<id root="1.2.250.1.999.2.9" extension="SEC-0042"/>'
    (author,) = document_practitioners(converter, VSM.replace(VSM_ID, local))
    pv1_7 = "SEC-0042^LE GOFF^Antoine^^^Dr^^^CHU&1.2.250.1.999.2.9&ISO"
    assert author["id"] == practitioners(converter, set_field(ORM, "PV1", 7, pv1_7))[0]["id"]
    assert written(author) == [("urn:oid:1.2.250.1.999.2.9", "SEC-0042", None)]


def test_a_cda_idnat_ps_beside_its_rpps_writes_each_once(converter: Converter) -> None:
    both = (
        VSM_ID
        + b'<id root="1.2.250.1.71.4.2.1" extension="10100345678"/>'
        + VSM_ID
        + b'<id root="1.2.250.1.999.2.9" extension="SEC-0042"/>'
    )
    (author,) = document_practitioners(converter, VSM.replace(VSM_ID, both, 1))
    assert written(author) == [
        (ANS_PS, "10100345678", "RPPS"),
        (ANS_PS, "810100345678", "IDNPS"),
        ("urn:oid:1.2.250.1.999.2.9", "SEC-0042", None),
    ]


def test_a_cda_idnat_ps_of_an_adeli_number_is_that_adeli(converter: Converter) -> None:
    adeli = VSM.replace(b'extension="810100345678"', b'extension="0751234567"')
    (author,) = document_practitioners(converter, adeli)
    assert written(author) == [(ANS_PS, "751234567", "ADELI"), (ANS_PS, "0751234567", "IDNPS")]
    pv1_7 = f"751234567^LE GOFF^Antoine^^^Dr^^^{ANS_HD}^L^^^ADELI"
    assert author["id"] == practitioners(converter, set_field(ORM, "PV1", 7, pv1_7))[0]["id"]


# --- the Organization an HD names --------------------------------------------------------------


def sender_organization(converter: Converter, msh_4: str) -> dict[str, Any]:
    bundle, _ = convert_one(converter, set_field(ORM, "MSH", 4, msh_4))
    (found,) = [o for o in resources(bundle, "Organization") if "999.1" in str(o["identifier"])]
    return found


@pytest.mark.parametrize(
    "msh_4",
    ["CH^urn:oid:1.2.250.1.999.1^ISO", "CH^URN:OID:1.2.250.1.999.1^ISO", "CH^1.2.250.1.999.1^"],
)
def test_an_hd_s_oid_written_as_its_urn_is_one_organization(
    converter: Converter, msh_4: str
) -> None:
    bare = sender_organization(converter, "CH^1.2.250.1.999.1^ISO")
    found = sender_organization(converter, msh_4)
    assert found["id"] == bare["id"]
    assert found["identifier"] == bare["identifier"]
