"""Session 21: immunization place, document notes and document identity.

- VXU: RXA-11 (administered-at location) is an LA2, whose components 9 to 16 are an
  address. It was read as a PL: the address was lost, an RXA-11 holding only an address
  gave the dose no location at all, and the street became a room's description.
- MDM: the NTEs of the document's OBX (IG MDM_T02 row 10.2, NTE[DocumentReference]:
  NTE-3 → content.attachment) were dropped without a word.
- MDM: a document without TXA-12 (unique document number) was identified by the message:
  a re-sent document with a new MSH-10 was a second DocumentReference, without a warning.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import (
    convert_one,
    insert_after,
    message,
    resources,
    segment,
    set_field,
)
from tests.support.r4validator import R4Validator

_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"


# -- VXU: RXA-11 in its LA2 form ------------------------------------------------------------

_MSH = "MSH|^~\\&|APP|FAC|PASSERELLE|GHT|20240315103000+0100||VXU^V04^VXU_V04|{control}|P|{version}"
_PID = "PID|1||0012422301^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F"
_ADDRESS = "10 rue Garibaldi^^Lyon^^69003^FRA"


def _vxu(
    administered_at: str,
    *,
    control: str = "S21-VXU",
    version: str = "2.5.1",
    rxa_27: str = "",
    rxa_28: str = "",
) -> bytes:
    """One HepB dose given at RXA-11 ``administered_at`` (and RXA-27, RXA-28 in v2.7+)."""
    fields = {1: "0", 2: "1", 3: "20240315", 5: "08^HepB^CVX", 6: "0.5", 7: "mL^mL^UCUM"}
    fields |= {9: "00^New^NIP001", 11: administered_at, 20: "CP", 21: "A"}
    if rxa_27 or rxa_28:
        fields |= {27: rxa_27, 28: rxa_28}
    return message(
        [
            _MSH.format(control=control, version=version),
            _PID,
            "ORC|RE||IZ-S21-1^FAC",
            segment("RXA", fields),
        ]
    )


def _place(bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The dose's Location and every Location of the bundle by reference."""
    locations = {f"Location/{r['id']}": r for r in resources(bundle, "Location")}
    (dose,) = resources(bundle, "Immunization")
    return locations[dose["location"]["reference"]], locations


def test_la2_address_is_the_address_of_the_place(
    converter: Converter, r4validator: R4Validator
) -> None:
    # The CDC guide's form: the clinic as LA2.4, then its address in LA2.9-14.
    bundle, _ = convert_one(converter, _vxu(f"^^^CLINIQUE&1.2.250.1.999.7&ISO^^^^^{_ADDRESS}"))
    place, _ = _place(bundle)
    assert place["name"] == "CLINIQUE"
    assert place["address"] == {
        "line": ["10 rue Garibaldi"],
        "city": "Lyon",
        "postalCode": "69003",
        "country": "FRA",
    }
    assert r4validator.validate(bundle) == []
    # Without the address the place is the one it always was (same id, no address).
    plain, _ = convert_one(converter, _vxu("^^^CLINIQUE&1.2.250.1.999.7&ISO"))
    plain_place, _ = _place(plain)
    assert plain_place["id"] == place["id"]
    assert "address" not in plain_place


def test_la2_with_only_an_address_gives_a_location(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert_one(converter, _vxu(f"^^^^^^^^{_ADDRESS}"))
    place, _ = _place(bundle)
    assert place["address"]["city"] == "Lyon"
    assert "name" not in place
    assert r4validator.validate(bundle) == []
    # The same address on another message is the same Location.
    again, _ = convert_one(converter, _vxu(f"^^^^^^^^{_ADDRESS}", control="S21-VXU-2"))
    assert _place(again)[0]["id"] == place["id"]


def test_la2_street_is_not_a_room_description(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert_one(converter, _vxu(f"VACC^SALLE-2^^CLINIQUE^^^^^{_ADDRESS}"))
    room, locations = _place(bundle)
    assert room["name"] == "SALLE-2"
    assert "description" not in room
    assert room["address"]["line"] == ["10 rue Garibaldi"]
    # Only the most specific level carries the address.
    ward = locations[room["partOf"]["reference"]]
    assert ward["name"] == "VACC"
    assert "address" not in ward
    assert r4validator.validate(bundle) == []


def test_rxa_28_wins_over_the_la2_address(converter: Converter, r4validator: R4Validator) -> None:
    other = "5 place Bellecour^^Lyon^^69002^FRA"
    bundle, _ = convert_one(
        converter, _vxu(f"^^^CLINIQUE^^^^^{_ADDRESS}", version="2.7", rxa_28=other)
    )
    place, _ = _place(bundle)
    assert place["name"] == "CLINIQUE"
    assert place["address"]["postalCode"] == "69002"
    assert r4validator.validate(bundle) == []
    # RXA-27 names the place: RXA-11's address is not given to another place.
    named, _ = convert_one(
        converter, _vxu(f"^^^CLINIQUE^^^^^{_ADDRESS}", version="2.7", rxa_27="VACC^^^HOPITAL")
    )
    place, _ = _place(named)
    assert place["name"] == "VACC"
    assert "address" not in place


# -- MDM: the document's notes ----------------------------------------------------------------

_T02 = (_SAMPLES / "MDM_T02_discharge-summary.hl7").read_bytes()


def _document(bundle: dict[str, Any]) -> dict[str, Any]:
    (document,) = resources(bundle, "DocumentReference")
    return document


def _texts(document: dict[str, Any]) -> list[str]:
    return [
        base64.b64decode(item["attachment"]["data"]).decode("utf-8")
        for item in document["content"]
        if "data" in item["attachment"]
    ]


@pytest.mark.parametrize("version", ["2.6", "2.5.1", "2.3.1"])
def test_notes_of_the_document_are_content(
    converter: Converter, r4validator: R4Validator, version: str
) -> None:
    data = set_field(_T02, "MSH", 12, version)
    data = insert_after(data, "OBX|5", "NTE|1|L|Relu et corrigé~par le Pr Faure.")
    bundle, _ = convert_one(converter, data)
    document = _document(bundle)
    texts = _texts(document)
    assert texts[-1] == "Relu et corrigé\npar le Pr Faure."
    assert texts[0].startswith("COMPTE RENDU D'HOSPITALISATION")
    assert document["content"][-1]["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert r4validator.validate(bundle) == []


def test_notes_of_the_order_are_not_the_documents(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = insert_after(
        _T02,
        "PV1|",
        "ORC|RE|CMD-1^DPI||||||||||10102345674^MOREL^Anne",
        "OBR|1|CMD-1^DPI||18842-5^Discharge summary^LN",
        "NTE|1|L|Note de la demande",
    )
    data = insert_after(data, "OBX|5", "NTE|1|L|Note du document")
    bundle, _ = convert_one(converter, data)
    texts = _texts(_document(bundle))
    assert "Note du document" in texts
    assert not any("Note de la demande" in text for text in texts)
    assert r4validator.validate(bundle) == []


# -- MDM: a document without its unique document number ---------------------------------------


def test_document_without_number_is_identified_by_its_file_name(
    converter: Converter, r4validator: R4Validator
) -> None:
    numberless = set_field(_T02, "TXA", 12, "")
    first, warnings = convert_one(converter, numberless)
    assert any("TXA-12" in warning and "TXA-16" in warning for warning in warnings)
    # Re-sent with a new control id and time: the same DocumentReference.
    resent = set_field(set_field(numberless, "MSH", 10, "HPE-MDM-RESENT"), "MSH", 7, "20240713")
    second, _ = convert_one(converter, resent)
    assert _document(second)["id"] == _document(first)["id"]
    assert r4validator.validate(first) == []
    # Another file name is another document.
    other, _ = convert_one(converter, set_field(resent, "TXA", 16, "CRH_autre.txt"))
    assert _document(other)["id"] != _document(first)["id"]
    # With TXA-12, the id is the one it always was (TXA-16 does not enter it).
    numbered, _ = convert_one(converter, _T02)
    renamed, _ = convert_one(converter, set_field(_T02, "TXA", 16, "CRH_autre.txt"))
    assert _document(numbered)["id"] == _document(renamed)["id"]


def test_document_without_number_nor_file_name_is_said(converter: Converter) -> None:
    data = set_field(set_field(_T02, "TXA", 12, ""), "TXA", 16, "")
    _, warnings = convert_one(converter, data)
    assert any("TXA-12" in warning and "this message" in warning for warning in warnings)


# -- MDM: availability and completion status read as codes are ---------------------------------

_T01 = (_SAMPLES / "MDM_T01_dictated-operative-report.hl7").read_bytes()


@pytest.mark.parametrize("written", ["CA", "ca", "CA ", " Ca"])
def test_a_cancel_written_in_any_case_is_entered_in_error(
    converter: Converter, r4validator: R4Validator, written: str
) -> None:
    # A status change notification saying "canceled": the root replaces the stored
    # content with a description; the document must not stay current.
    data = set_field(set_field(_T01, "MSH", 9, "MDM^T03^MDM_T01"), "TXA", 19, written)
    bundle, _ = convert_one(converter, data)
    document = _document(bundle)
    assert document["status"] == "entered-in-error"
    (extension,) = document["_status"]["extension"]
    assert extension["valueCodeableConcept"]["coding"][0]["code"] == "CA"
    assert r4validator.validate(bundle) == []
    # With content too.
    content, _ = convert_one(converter, set_field(_T02, "TXA", 19, written))
    assert _document(content)["status"] == "entered-in-error"


@pytest.mark.parametrize(
    ("written", "status"), [("la", "final"), ("AU ", "final"), ("ip", "preliminary")]
)
def test_completion_status_in_any_case(converter: Converter, written: str, status: str) -> None:
    bundle, _ = convert_one(converter, set_field(_T02, "TXA", 17, written))
    assert _document(bundle)["docStatus"] == status


def test_unknown_availability_and_completion_are_named(converter: Converter) -> None:
    data = set_field(set_field(_T02, "TXA", 19, "ZZ"), "TXA", 17, "YY")
    bundle, warnings = convert_one(converter, data)
    document = _document(bundle)
    assert document["status"] == "current"
    assert "docStatus" not in document
    assert any("TXA-19" in warning for warning in warnings)
    assert any("TXA-17" in warning for warning in warnings)
