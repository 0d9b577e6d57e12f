"""Strict HL7 v2 validation (``strict_hl7``) of order messages: ORM^O01, OML^O21, OMG^O19.

hl7apy 1.3 misreads these structures (ORM_O01's choice of detail segment, the second ORC
of an OML / OMG filed as a prior result's): their segment order is checked by
``converter.hl7v2.strict_structure`` and each segment by hl7apy. Valid orders pass; a
required field or segment missing, a segment out of place or a bad datatype is refused,
named, without its value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from converter.convert import Converter, ConverterConfig
from converter.errors import ParseError
from converter.hl7v2.strict import validate_strictly

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"


def _sample(name: str) -> str:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")


def _segments(text: str) -> list[str]:
    return text.split("\r")


def _join(segments: list[str]) -> str:
    return "\r".join(segments)


OML = _sample("OML_O21_lab-order.hl7")
OMG = _sample("OMG_O19_radiology-order.hl7")
ORM_MED = _sample("ORM_O01_medication-order.hl7")
# The radiology ORM is v2.3.1, whose TN (XTN-1) has a US format "+33 1 …" breaks: the
# numbers are kept in their components (country, area, local) only.
ORM_RAD = re.sub(r"\|\+33 [0-9 ]+\^", "|^", _sample("ORM_O01_radiology-order.hl7"))
ORM_MED_NO_RXR = _join([s for s in _segments(ORM_MED) if not s.startswith("RXR")])


def _refusal(text: str) -> ParseError:
    with pytest.raises(ParseError) as refused:
        validate_strictly(text, "CID-1")
    assert refused.value.control_id == "CID-1"
    return refused.value


def test_the_samples_of_order_messages_convert_in_strict_mode() -> None:
    # Before: the OML (two orders) was refused, "Missing required child
    # OML_O21_ORDER_PRIOR.OML_O21_OBSERVATION_PRIOR"; the ORMs for "ORDER_DETAIL max
    # limit" / "Missing required child … RQD".
    strict = Converter(ConverterConfig(strict_hl7=True, default_timezone="Europe/Paris"))
    for text in (OML, OMG, ORM_RAD, ORM_MED_NO_RXR):
        [conversion] = strict.convert(text.encode("utf-8"))
        kinds = {entry["resource"]["resourceType"] for entry in conversion.bundle["entry"]}
        assert "ServiceRequest" in kinds or "MedicationRequest" in kinds


@pytest.mark.parametrize("text", [OML, OMG, ORM_RAD, ORM_MED_NO_RXR])
@pytest.mark.parametrize("repeat", [1, 3])
def test_several_orders_pass(text: str, repeat: int) -> None:
    # The sample's orders (two in the OML, the OMG and the pharmacy ORM), repeated.
    segments = _segments(text)
    first_orc = next(i for i, s in enumerate(segments) if s.startswith("ORC"))
    message = _join(segments[:first_orc] + segments[first_orc:] * repeat)
    validate_strictly(message, "CID-1")


def test_an_order_whose_last_segment_is_a_specimen_is_followed_by_a_new_order() -> None:
    # The ORC after an SPM is what hl7apy filed as a prior result's (OBSERVATION_PRIOR
    # then missing): the OML sample's first order ends with its SPM.
    names = [s[:3] for s in _segments(OML)]
    assert names[names.index("SPM") + 1] == "ORC"
    validate_strictly(OML, "CID-1")


def test_a_pharmacy_orm_with_an_rxr_is_refused_naming_it() -> None:
    # v2.5.1 ORM_O01 (ch. 4, the IG's ORM_O01 message map) has no RXR: pharmacy orders
    # with a route are OMP^O09. The conversion still reads it; strict mode does not.
    refused = _refusal(ORM_MED)
    assert refused.location == "RXR"
    assert refused.hl7_error_code == "100"
    assert "segment RXR (segment 7) out of place in ORDER_DETAIL of ORM_O01" in str(refused)


@pytest.mark.parametrize(
    ("text", "segment", "group"),
    [
        # DG1 moved before the OBR of the OML's first order (hl7apy ignores order).
        (OML, "DG1", "ORDER"),
        (OMG, "DG1", "ORDER"),
        # The ORM's DG1 moved before its OBR.
        (ORM_RAD, "DG1", "ORDER"),
    ],
)
def test_a_segment_out_of_place_is_refused_naming_it(text: str, segment: str, group: str) -> None:
    segments = _segments(text)
    moved = next(s for s in segments if s.startswith(segment))
    segments.remove(moved)
    obr = next(i for i, s in enumerate(segments) if s.startswith("OBR"))
    segments.insert(obr, moved)
    refused = _refusal(_join(segments))
    assert refused.location == segment
    assert refused.hl7_error_code == "100"
    assert f"segment {segment} (segment {obr + 1}) out of place in {group}" in str(refused)


def test_a_segment_unknown_to_the_structure_is_refused() -> None:
    segments = _segments(OML)
    segments.insert(3, "RXR|PO^Voie orale^HL70162")
    refused = _refusal(_join(segments))
    assert refused.location == "RXR"
    assert "segment RXR (segment 4) out of place in PATIENT_VISIT" in str(refused)


@pytest.mark.parametrize(("text", "missing"), [(OMG, "OBR"), (ORM_RAD, "ORC")])
def test_a_required_segment_missing_is_refused_naming_it(text: str, missing: str) -> None:
    segments = [s for s in _segments(text) if not s.startswith(missing)]
    refused = _refusal(_join(segments))
    assert refused.hl7_error_code == "100"
    assert f"required {missing} missing" in str(refused)
    assert refused.location == missing


def test_an_orm_detail_choice_holds_one_segment() -> None:
    # ORDER_DETAIL holds one of OBR | RQD | RQ1 | RXO | ODS | ODT, not two.
    segments = _segments(ORM_MED_NO_RXR)
    rxo = next(i for i, s in enumerate(segments) if s.startswith("RXO"))
    segments.insert(rxo + 1, "OBR|1|X-1^DPI^1.2.3^ISO||ABC^Test^L")
    refused = _refusal(_join(segments))
    assert refused.location == "OBR"
    assert "out of place in ORDER_DETAIL" in str(refused)


@pytest.mark.parametrize("text", [OML, OMG, ORM_RAD, ORM_MED_NO_RXR])
def test_a_required_field_missing_is_refused_naming_it(text: str) -> None:
    # PID-3 (patient identifier list) is required; hl7apy knows it, segment by segment.
    without = re.sub(r"\rPID\|1\|\|[^|]*\|", "\rPID|1|||", text)
    assert without != text
    refused = _refusal(without)
    assert refused.location == "PID-3"
    assert refused.hl7_error_code == "101"
    assert "PE00" not in str(refused) and "0012400561" not in str(refused)


def test_a_bad_datatype_in_an_order_is_refused_without_its_value() -> None:
    text = OML.replace("|20240411093000+0200||S^Urgent", "|11/04/2024 9h30||S^Urgent")
    assert text != OML
    refused = _refusal(text)
    assert refused.location == "TQ1-7"
    assert refused.hl7_error_code == "102"
    assert "9h30" not in str(refused)


PRIOR_OBR = "OBR|1|OLD-1^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO||4548-4^HbA1c^LN"
PRIOR_OBX = "OBX|1|NM|4548-4^HbA1c^LN||7.1|%^percent^UCUM|||||F"


def _after_first_specimen(*added: str) -> str:
    segments = _segments(OML)
    spm = next(i for i, s in enumerate(segments) if s.startswith("SPM"))
    return _join(segments[: spm + 1] + list(added) + segments[spm + 1 :])


def test_a_prior_result_without_its_orc_is_still_one() -> None:
    # OBR then OBX after the specimen: a prior result (ORDER_PRIOR, OBSERVATION_PRIOR),
    # followed by the second order's ORC.
    validate_strictly(_after_first_specimen(PRIOR_OBR, PRIOR_OBX), "CID-1")


def test_a_prior_result_without_its_observation_is_refused() -> None:
    refused = _refusal(_after_first_specimen(PRIOR_OBR))
    assert refused.location == "OBX"
    assert refused.hl7_error_code == "100"
    assert "required OBX missing in ORDER_PRIOR (segment 11)" in str(refused)


def test_z_segments_may_stand_anywhere() -> None:
    validate_strictly(_after_first_specimen("ZSP|1|site"), "CID-1")
    segments = _segments(ORM_RAD)
    validate_strictly(_join([segments[0], "ZMH|1", *segments[1:], "ZZZ|end"]), "CID-1")
    # … and do not count: a segment out of place after one is still named by its index.
    moved = _join([segments[0], "ZMH|1", "DG1|1||X^Y^I10|||W", *segments[1:]])
    refused = _refusal(moved)
    assert "segment DG1 (segment 3) out of place" in str(refused)
