"""Strict HL7 v2 validation (``strict_hl7``) of orders grouped by specimen: OML^O33, OML^O35.

OML_O33 (HL7 v2.5.1 ch. 4, orders for a specimen: SPECIMEN, then its ORDERs) and OML_O35
(for a specimen container: SPECIMEN, SPECIMEN_CONTAINER, then its ORDERs) nest OML_O21's
ORDER, PRIOR_RESULT included, whose ORDER_PRIOR may open with an ORC. hl7apy 1.3 reads them
as it reads OML_O21: the second ORC under one specimen went to a prior result, then refused
("Missing required child … OBSERVATION_PRIOR", no segment named), and a segment before its
OBR was filed by name and passed. They are checked as OML_O21 is, the segment order by
``converter.hl7v2.strict_structure`` and each segment by hl7apy. The messages are built
here from hl7apy's v2.5.1 and v2.8 structures; the patients are invented.

A prior result opened by its patient (PID, then ORC) was refused by the structure check of
all of them (OML_O21 and OMG_O19 too, tested here): its ORC now opens the ORDER_PRIOR still
required there, as the conversion's grouping reads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.convert import Converter, ConverterConfig
from converter.errors import ParseError
from converter.hl7v2 import parse_message
from converter.hl7v2.strict import validate_strictly

from ._support import CATALOG

VERSIONS = ("2.5.1", "2.8")
STRUCTURES = ("OML_O33", "OML_O35")


def _msh(structure: str, version: str) -> str:
    code, event = structure.split("_")
    return (
        "MSH|^~\\&|DPI-SGL|CH-VALMONT|SIL-BIO|LABO-VALMONT|20240411093000+0200||"
        f"{code}^{event}^{structure}|{_control_id(structure, version)}|P|{version}"
    )


def _control_id(structure: str, version: str) -> str:
    return f"VAL-{structure[-3:]}-{version.replace('.', '')}"


PID = (
    "PID|1||VAL000731^^^CH-VALMONT^PI||BERTHIER^Camille^^^^^L||19680923|F|||"
    "12 rue des Tilleuls^^Valmont^^71000^FRA"
)
PV1 = "PV1|1|O|CS-ENDO^^^CH-VALMONT"
NTE = "NTE|1||Patiente à jeun depuis 22 h"


def _specimen(n: int, kind: str) -> str:
    return f"SPM|{n}|PRE-{n}^DPI-SGL||{kind}|||||||||||||20240411080500+0200"


def _container(n: int) -> str:
    return f"SAC|||TUBE-{n}"


def _order(n: int, code: str, *, dg1: bool = False) -> list[str]:
    """ORC, TQ1, OBR (and a DG1) of order ``n``."""
    order = [
        f"ORC|NW|CMD-{n}^DPI-SGL|||||||20240411090000+0200",
        "TQ1|1||||||20240411093000+0200||R^Routine^HL70485",
        f"OBR|{n}|CMD-{n}^DPI-SGL||{code}",
    ]
    if dg1:
        order.append("DG1|1||E11.9^Diabète de type 2^I10|||W")
    return order


GLUCOSE = "2345-7^Glucose [Mass/volume] in Serum or Plasma^LN"
CREATININE = "2160-0^Creatinine [Mass/volume] in Serum or Plasma^LN"
POTASSIUM = "2823-3^Potassium [Moles/volume] in Serum or Plasma^LN"
PROTEIN = "5804-0^Protein [Mass/volume] in Urine by Test strip^LN"
SERUM = "SER^Serum^HL70487"
URINE = "UR^Urine^HL70487"


def _segments(structure: str, version: str) -> list[str]:
    """A valid message: two specimens, the first with two orders (in OML_O35, in one
    container, then a third order in a second container); OML_O21 and OMG_O19, whose
    orders are not grouped by specimen: two orders."""
    if structure in ("OML_O21", "OMG_O19"):
        orders = [*_order(1, GLUCOSE, dg1=True), *_order(2, CREATININE)]
        return [_msh(structure, version), NTE, PID, PV1, *orders]
    segments = [_msh(structure, version), NTE, PID, PV1, _specimen(1, SERUM)]
    if structure == "OML_O33":
        segments += [_container(1), *_order(1, GLUCOSE, dg1=True), *_order(2, CREATININE)]
        segments += [_specimen(2, URINE), *_order(3, PROTEIN)]
    else:
        segments += [_container(1), *_order(1, GLUCOSE, dg1=True), *_order(2, CREATININE)]
        segments += [_container(2), *_order(3, POTASSIUM)]
        segments += [_specimen(2, URINE), _container(3), *_order(4, PROTEIN)]
    return segments


def _join(segments: list[str]) -> str:
    return "\r".join(segments)


def _index(segments: list[str], prefix: str) -> int:
    """The 0-based index of the first segment starting with ``prefix``."""
    return next(i for i, segment in enumerate(segments) if segment.startswith(prefix))


def _refusal(text: str, control_id: str) -> ParseError:
    with pytest.raises(ParseError) as refused:
        validate_strictly(text, control_id)
    return refused.value


BOTH = pytest.mark.parametrize(
    ("structure", "version"), [(s, v) for s in STRUCTURES for v in VERSIONS]
)


@BOTH
def test_several_orders_for_one_specimen_pass(structure: str, version: str) -> None:
    # Before: "Missing required child OML_O3x_ORDER_PRIOR.OML_O3x_OBSERVATION_PRIOR".
    validate_strictly(_join(_segments(structure, version)), "CID-1")


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_prior_result_without_its_orc_is_still_one(structure: str) -> None:
    # v2.5.1: ORDER_PRIOR's ORC is optional, so OBR then OBX after an order's OBR is a
    # prior result of that order; the next ORC still opens the next order.
    segments = _segments(structure, "2.5.1")
    second = _index(segments, "ORC|NW|CMD-2")
    segments[second:second] = [
        "OBR|1|OLD-1^DPI-SGL||2345-7^Glucose^LN",
        "OBX|1|NM|2345-7^Glucose^LN||1.32|g/L^g/L^UCUM|||||F",
    ]
    validate_strictly(_join(segments), "CID-1")


PRIOR_PID = "PID|1||VAL000731^^^CH-VALMONT^PI||BERTHIER^Camille^^^^^L"
PRIOR_ORDER = [
    "ORC|NW|ANC-1^DPI-SGL",
    "OBR|1|ANC-1^DPI-SGL||2345-7^Glucose^LN",
    "OBX|1|NM|2345-7^Glucose^LN|1|1.32|g/L^g/L^UCUM|||||F",
]


@pytest.mark.parametrize(
    ("prior", "more_orders"),
    [
        pytest.param([PRIOR_PID, *PRIOR_ORDER], 0, id="prior-result"),
        # A second ORDER_PRIOR, ORC first, reads as one more order (with an OBX).
        pytest.param([PRIOR_PID, *PRIOR_ORDER, *PRIOR_ORDER], 1, id="then-an-order"),
    ],
)
@pytest.mark.parametrize("structure", [*STRUCTURES, "OML_O21", "OMG_O19"])
@pytest.mark.parametrize("version", VERSIONS)
def test_a_prior_result_opened_by_its_patient_keeps_its_orc(
    structure: str, version: str, prior: list[str], more_orders: int
) -> None:
    # A prior result opened by its PID (PATIENT_PRIOR): its ORC opens ORDER_PRIOR, still
    # required there, not a new ORDER; the next order's ORC opens the next ORDER. Before:
    # v2.5.1 refused that ORC ("out of place in PATIENT_PRIOR"); v2.8, whose ORDER_PRIOR
    # opens with ORC, filed the next order's ORC as a second prior order and refused its
    # TQ1 ("out of place in ORDER_PRIOR").
    segments = _segments(structure, version)
    second = _index(segments, "ORC|NW|CMD-2")
    segments[second:second] = prior
    text = _join(segments)
    validate_strictly(text, "CID-1")
    # The conversion's grouping reads it the same way.
    message = parse_message(text.encode("utf-8"), CATALOG)
    assert len(message.find("ORDER_PRIOR")) == 1
    orders = sum(segment.startswith("ORC|NW|CMD") for segment in segments)
    assert len(message.find("ORDER")) == orders + more_orders


@BOTH
def test_a_segment_before_its_obr_is_refused_naming_it_and_its_place(
    structure: str, version: str
) -> None:
    # The DG1 of the first order moved before its OBR: hl7apy filed it by name and let
    # it pass.
    segments = _segments(structure, version)
    dg1 = segments.pop(_index(segments, "DG1"))
    obr = _index(segments, "OBR")
    segments.insert(obr, dg1)
    control_id = _control_id(structure, version)
    refused = _refusal(_join(segments), control_id)
    assert refused.location == "DG1"
    assert refused.hl7_error_code == "100"
    assert refused.control_id == control_id
    # Named in the group of the segment before it (the order's TIMING, TQ1), where it
    # has no place either.
    assert str(refused) == (
        "not valid for its HL7 version (strict mode): segment DG1 "
        f"(segment {obr + 1}) out of place in TIMING of {structure} at DG1 (MSH-10 {control_id})"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_an_order_before_its_container_is_refused_naming_it(version: str) -> None:
    # OML_O35: the SAC comes before the orders it holds. hl7apy refused this naming no
    # segment ("Missing required child OML_O35_ORDER.ORC", HL7 error 101).
    segments = _segments("OML_O35", version)
    sac = segments.pop(_index(segments, "SAC"))
    orc = _index(segments, "ORC")
    segments.insert(orc + 1, sac)
    refused = _refusal(_join(segments), "CID-1")
    assert refused.location == "ORC"
    assert refused.hl7_error_code == "100"
    assert f"segment ORC (segment {orc + 1}) out of place in SPECIMEN of OML_O35" in str(refused)


@pytest.mark.parametrize(
    ("structure", "missing", "group"),
    [
        # No SPM: the first SAC opens nothing.
        ("OML_O33", "SPM", ""),
        ("OML_O35", "SPM", ""),
        # No ORC (OML_O33): the first order's TQ1 follows the SAC.
        ("OML_O33", "ORC", "SPECIMEN"),
        # No SAC (OML_O35): the first order follows the SPM.
        ("OML_O35", "SAC", "SPECIMEN"),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_required_segment_missing_is_refused_naming_it_and_its_place(
    structure: str, missing: str, group: str, version: str
) -> None:
    # Every one left out: one left out before another is named as the segment out of
    # place (its due place is further on), which the test above covers.
    segments = _segments(structure, version)
    where = _index(segments, missing)
    segments = [segment for segment in segments if not segment.startswith(missing)]
    control_id = _control_id(structure, version)
    refused = _refusal(_join(segments), control_id)
    assert refused.location == missing
    assert refused.hl7_error_code == "100"
    assert refused.control_id == control_id
    # The position is that of the segment before which it was due.
    assert str(refused) == (
        f"not valid for its HL7 version (strict mode): required {missing} missing in "
        f"{group or structure} (segment {where + 1}){' of ' + structure if group else ''} "
        f"at {missing} (MSH-10 {control_id})"
    )


@BOTH
def test_a_required_field_is_still_checked_by_hl7apy(structure: str, version: str) -> None:
    # Segment by segment, hl7apy still knows the fields: SPM-4 (specimen type) is required.
    segments = _segments(structure, version)
    spm = _index(segments, "SPM")
    segments[spm] = "SPM|1|PRE-1^DPI-SGL"
    refused = _refusal(_join(segments), "CID-1")
    assert refused.location == "SPM-4"
    assert refused.hl7_error_code == "101"


ROUTES = '[events]\n"OML^O33" = "SpecimenOrders"\n"OML^O35" = "SpecimenOrders"\n'
# The Patient of the PATIENT group: enough to show the message went through the grouping
# and a template, i.e. that it was converted.
ROOT = (
    '{% set patient = msg.find("PATIENT")[0] %}'
    '{% do emit("Patient", pid=patient.PID, pd1=patient.PD1) %}'
)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in templates have no root for OML^O33 / O35: a route of an override folder."""
    root = tmp_path_factory.mktemp("templates")
    (root / "hl7v2" / "messages").mkdir(parents=True)
    (root / "hl7v2" / "routes.toml").write_text(ROUTES, encoding="utf-8")
    (root / "hl7v2" / "messages" / "SpecimenOrders.j2").write_text(ROOT, encoding="utf-8")
    return root


@BOTH
def test_strict_mode_converts_a_valid_message_and_lenient_mode_is_unaffected(
    structure: str, version: str, templates: Path
) -> None:
    def converter(*, strict: bool) -> Converter:
        return Converter(
            ConverterConfig(
                template_dirs=(templates,), strict_hl7=strict, default_timezone="Europe/Paris"
            )
        )

    strict, lenient = converter(strict=True), converter(strict=False)
    valid = _segments(structure, version)
    [converted] = strict.convert(_join(valid).encode("utf-8"))
    [patient] = [e["resource"] for e in converted.bundle["entry"]]
    assert patient["resourceType"] == "Patient"
    assert patient["name"][0]["family"] == "BERTHIER"
    [as_lenient] = lenient.convert(_join(valid).encode("utf-8"))
    assert as_lenient.bundle == converted.bundle
    # A DG1 before its OBR: strict mode refuses it (MSH-10 from the message), lenient
    # mode (the default) converts it as before.
    dg1 = valid.pop(_index(valid, "DG1"))
    valid.insert(_index(valid, "OBR"), dg1)
    misplaced = _join(valid).encode("utf-8")
    with pytest.raises(ParseError) as refused:
        strict.convert(misplaced)
    assert refused.value.control_id == _control_id(structure, version)
    assert refused.value.location == "DG1"
    [converted_anyway] = lenient.convert(misplaced)
    # The same resources (the Bundle's own id is the message's digest).
    assert converted_anyway.bundle["entry"] == as_lenient.bundle["entry"]
