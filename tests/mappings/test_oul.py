"""OUL^R22 / R23 / R24 unsolicited laboratory results (root OUL.j2; the IG has no OUL message
map: its segment maps linked as in ORU_R01), on the synthetic sample
samples/hl7v2/OUL_R22_lab-results.hl7: a serum specimen with an OBX of its own and two
orders (electrolytes, final; CRP, preliminary, with an order NTE), and a urine specimen
with one order (corrected culture, an ST and a CWE result, an OBX NTE).

The golden test pins the whole bundle; these check the rules one by one: each result is
linked to its own specimen and report in every version (hl7apy's v2.5.1 group names, v2.8's
ORDER_DOCUMENT), the R24 layout, ids shared with ORU^R01, OML^O21 and ORM^O01, and the
statuses from OBR-25 / OBX-11."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import convert_one as _convert
from tests.support.hl7_edit import insert_after as _insert_after
from tests.support.hl7_edit import lines as _lines
from tests.support.hl7_edit import message as _message
from tests.support.hl7_edit import resources as _of_type
from tests.support.hl7_edit import set_field as _set
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
OUL = (SAMPLES / "OUL_R22_lab-results.hl7").read_bytes()
OML = (SAMPLES / "OML_O21_lab-order.hl7").read_bytes()
ORM = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()

PLACER_1 = "CMD-2024-0521-01^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
SERUM, URINE = "PRL-2024-0521-01", "PRL-2024-0521-02"
IONO, CRP, ECBU = "LAB24052100311", "LAB24052100312", "LAB24052100313"
#: Result code → (the placer id of its Specimen, the filler number of its report).
RESULTS = {
    "2951-2": (SERUM, IONO),
    "2823-3": (SERUM, IONO),
    "1988-5": (SERUM, CRP),
    "5767-9": (URINE, ECBU),
    "630-4": (URINE, ECBU),
}


def _find(data: bytes, prefix: str, occurrence: int = 1) -> str:
    return [line for line in _lines(data) if line.startswith(prefix)][occurrence - 1]


def _drop(data: bytes, *prefixes: str) -> bytes:
    return _message([line for line in _lines(data) if not line.startswith(prefixes)])


def _by_ref(bundle: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    rtype, _, rid = ref["reference"].partition("/")
    [found] = [r for r in _of_type(bundle, rtype) if r["id"] == rid]
    return found


def _identifier(resource: dict[str, Any], *types: str) -> str:
    return next(
        i["value"] for i in resource["identifier"] if i["type"]["coding"][0]["code"] in types
    )


def _code(resource: dict[str, Any]) -> str:
    return resource["code"]["coding"][0]["code"]


def _links(bundle: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
    """Result code → (its Specimen's placer id, "OBR" for one made from the OBR's specimen
    fields, or None; the filler number of the report listing it), checking that the
    Observation's basedOn and specimen are its report's."""
    links: dict[str, tuple[str | None, str]] = {}
    for report in _of_type(bundle, "DiagnosticReport"):
        for ref in report.get("result", []):
            observation = _by_ref(bundle, ref)
            assert observation["basedOn"] == report["basedOn"]
            specimen = None
            if "specimen" in observation:
                assert observation["specimen"] in report["specimen"]
                found = _by_ref(bundle, observation["specimen"])
                specimen = _identifier(found, "PGN") if "identifier" in found else "OBR"
            links[_code(observation)] = (specimen, _identifier(report, "FILL"))
    return links


def _ids(bundle: dict[str, Any], *types: str) -> set[tuple[str, str]]:
    return {(r["resourceType"], r["id"]) for t in types for r in _of_type(bundle, t)}


# ----------------------------------------------------------------------------------------
# Each result with its own specimen and report, whatever the version.


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.2"])
def test_each_result_is_linked_to_its_specimen_and_report(
    converter: Converter, version: str
) -> None:
    """hl7apy's 2.5.1 tables name RESULT OBXTCDSIDNTE_SUPPGRP; 2.8 nests the ORC in
    COMMON_ORDER, whose ORDER_DOCUMENT a structure parser opens with the first result."""
    bundle, warnings = _convert(converter, _set(OUL, "MSH", 12, version))
    assert _links(bundle) == RESULTS
    reports = {_identifier(r, "FILL"): r for r in _of_type(bundle, "DiagnosticReport")}
    assert [len(reports[n]["result"]) for n in (IONO, CRP, ECBU)] == [2, 1, 2]
    notes = {
        _code(o): [n["text"] for n in o.get("note", [])] for o in _of_type(bundle, "Observation")
    }
    assert notes["2823-3"] == ["Hyperkaliémie : prélèvement non hémolysé, contrôle conseillé."]
    assert notes["2951-2"] == notes["1988-5"] == []
    assert warnings == []


def test_the_spm_obx_is_about_its_specimen_and_in_no_report(converter: Converter) -> None:
    bundle, _ = _convert(converter, OUL)
    [fasting] = [o for o in _of_type(bundle, "Observation") if o.get("focus")]
    assert _code(fasting) == "49541-6"
    assert _identifier(_by_ref(bundle, fasting["focus"][0]), "PGN") == SERUM
    # Its specimen has two orders: basedOn would have to choose one.
    assert "basedOn" not in fasting and "specimen" not in fasting
    listed = [r["reference"] for d in _of_type(bundle, "DiagnosticReport") for r in d["result"]]
    assert f"Observation/{fasting['id']}" not in listed


def test_an_order_note_goes_to_the_service_request(converter: Converter) -> None:
    bundle, _ = _convert(converter, OUL)
    notes = {
        _identifier(r, "PLAC"): [n["text"] for n in r.get("note", [])]
        for r in _of_type(bundle, "ServiceRequest")
    }
    assert notes == {
        "CMD-2024-0521-01": [],
        "CMD-2024-0521-02": ["Résultat préliminaire, en attente de validation biologique."],
        "CMD-2024-0521-03": [],
    }
    specimens = {
        _identifier(r, "PLAC"): [_identifier(_by_ref(bundle, s), "PGN") for s in r["specimen"]]
        for r in _of_type(bundle, "ServiceRequest")
    }
    assert specimens == {
        "CMD-2024-0521-01": [SERUM],
        "CMD-2024-0521-02": [SERUM],
        "CMD-2024-0521-03": [URINE],
    }


def test_an_order_document_before_the_results_is_left_out(converter: Converter) -> None:
    """v2.8 ORDER_DOCUMENT (OBX + TXA after the ORC): not converted, with a warning; the
    results after it keep their own notes."""
    document = ["OBX|1|ED|11502-2^Laboratory report^LN||^AP^PDF^Base64^JVBERi0=", "TXA|1|LR"]
    message = _insert_after(_set(OUL, "MSH", 12, "2.8"), "ORC|", *document)
    bundle, warnings = _convert(converter, message)
    assert _links(bundle) == RESULTS
    assert "11502-2" not in {_code(o) for o in _of_type(bundle, "Observation")}
    assert warnings == ["OUL^R22 order 1: an ORDER_DOCUMENT (OBX + TXA) is not converted"]


def test_an_orc_written_before_its_obr_is_still_its_order(converter: Converter) -> None:
    lines = _lines(OUL)
    for n, line in enumerate(lines):
        if line.startswith("ORC|"):
            lines[n - 1], lines[n] = lines[n], lines[n - 1]
    expected, _ = _convert(converter, OUL)
    bundle, _ = _convert(converter, _message(lines))
    assert _links(bundle) == RESULTS
    kept = ("ServiceRequest", "DiagnosticReport", "Observation", "Specimen")
    assert _ids(bundle, *kept) == _ids(expected, *kept)
    statuses = {_identifier(r, "PLAC"): r["status"] for r in _of_type(bundle, "ServiceRequest")}
    assert statuses == {
        "CMD-2024-0521-01": "completed",
        "CMD-2024-0521-02": "active",
        "CMD-2024-0521-03": "completed",
    }


def test_one_order_on_two_specimens_keeps_both_specimens_results(converter: Converter) -> None:
    """A second urine specimen under the same order (ECBU): one report listing both specimens
    and four Observations, each linked to its own specimen (none merged into another)."""
    second = [
        line.replace(URINE, "PRL-2024-0521-04").replace("SPM|2|", "SPM|3|")
        for line in _lines(OUL)[_lines(OUL).index(_find(OUL, "SPM|2|")) :]
    ]
    bundle, warnings = _convert(converter, _message(_lines(OUL) + second))
    [report] = [r for r in _of_type(bundle, "DiagnosticReport") if _identifier(r, "FILL") == ECBU]
    assert [_identifier(_by_ref(bundle, s), "PGN") for s in report["specimen"]] == [
        URINE,
        "PRL-2024-0521-04",
    ]
    results = [_by_ref(bundle, r) for r in report["result"]]
    assert [(_code(o), _identifier(_by_ref(bundle, o["specimen"]), "PGN")) for o in results] == [
        ("5767-9", URINE),
        ("630-4", URINE),
        ("5767-9", "PRL-2024-0521-04"),
        ("630-4", "PRL-2024-0521-04"),
    ]
    assert warnings == []


# ----------------------------------------------------------------------------------------
# R23 (containers) and R24 (order oriented) through the same root.


def test_r23_containers_are_left_out_with_a_warning(converter: Converter) -> None:
    message = _set(OUL, "MSH", 9, "OUL^R23^OUL_R23")
    message = _insert_after(message, "OBX|1|CWE|49541-6", "SAC|||TUBE-0521-01")
    message = _insert_after(message, "SPM|2|", "SAC|||TUBE-0521-02")
    bundle, warnings = _convert(converter, message)
    assert _links(bundle) == RESULTS
    assert warnings == [f"OUL^R23 specimen {n}: a SAC container is not converted" for n in (1, 2)]


def test_r24_orders_carry_their_own_specimens(converter: Converter) -> None:
    """OUL_R24: ORDER {OBR [ORC] [NTE] [SPECIMEN {SPM [OBX] [SAC]}] [RESULT {OBX [NTE]}]}. An
    OBX right after an SPM is the specimen's; after its SAC, the order's results."""
    lines = _lines(_set(OUL, "MSH", 9, "OUL^R24^OUL_R24"))
    header = lines[:3]
    spm_1, fasting, iono, orc_1, sodium, potassium, nte_k = lines[3:10]
    crp = lines[10:14]
    spm_2, ecbu, orc_3, *urine_results = lines[14:]
    order_1 = [iono, orc_1, spm_1, fasting, "SAC|||TUBE-0521-01", sodium, potassium, nte_k]
    order_3 = [ecbu, orc_3, spm_2, "SAC|||TUBE-0521-02", *urine_results]
    bundle, warnings = _convert(converter, _message([*header, *order_1, *crp, *order_3]))
    # The CRP order has no SPM: its specimen comes from the OBR's (OBR-14), as in ORU_R01.
    assert _links(bundle) == {**RESULTS, "1988-5": ("OBR", CRP)}
    [fasting_obs] = [o for o in _of_type(bundle, "Observation") if o.get("focus")]
    assert _identifier(_by_ref(bundle, fasting_obs["focus"][0]), "PGN") == SERUM
    # Its specimen belongs to one order: basedOn that order, as ORU_R01 does.
    assert _identifier(_by_ref(bundle, fasting_obs["basedOn"][0]), "PLAC") == "CMD-2024-0521-01"
    # Same Specimen, report and Observation ids as the R22 layout (plus the OBR's Specimen).
    r22, _ = _convert(converter, OUL)
    kept = ("Specimen", "DiagnosticReport", "Observation", "ServiceRequest")
    [crp_report] = [
        r for r in _of_type(bundle, "DiagnosticReport") if _identifier(r, "FILL") == CRP
    ]
    assert _ids(bundle, *kept) - _ids(r22, *kept) == {
        ("Specimen", crp_report["specimen"][0]["reference"].partition("/")[2])
    }
    assert warnings == [f"OUL^R24 specimen {n}: a SAC container is not converted" for n in (1, 2)]


# ----------------------------------------------------------------------------------------
# Ids shared with ORU^R01 (one report) and with OML^O21 / ORM^O01 (one request).


def _oru_for_order_1() -> bytes:
    """ORU^R01 of the electrolytes order: ORC before OBR, then its results, then its SPM
    with the SPM's OBX (ORU_R01 SPECIMEN / SPECIMEN_OBSERVATION)."""
    msh = _find(OUL, "MSH|").replace("OUL^R22^OUL_R22", "ORU^R01^ORU_R01")
    msh = msh.replace("LAB-OUL-20240521-000301", "LAB-ORU-20240521-000302")
    return _message(
        [
            msh,
            _find(OUL, "PID|"),
            _find(OUL, "PV1|"),
            _find(OUL, "ORC|").replace("ORC|SC|", "ORC|RE|"),
            _find(OUL, "OBR|1|"),
            _find(OUL, "OBX|1|NM|2951-2"),
            _find(OUL, "OBX|2|NM|2823-3"),
            _find(OUL, "NTE|1|L|Hyperkali"),
            _find(OUL, "SPM|1|"),
            _find(OUL, "OBX|1|CWE|49541-6"),
        ]
    )


def test_an_oru_and_an_oul_for_the_same_report_are_one_diagnostic_report(
    converter: Converter,
) -> None:
    oru, _ = _convert(converter, _oru_for_order_1())
    oul, _ = _convert(converter, OUL)
    kept = ("DiagnosticReport", "ServiceRequest", "Specimen", "Observation")
    assert len(_ids(oru, *kept)) == 6  # report, request, specimen, 2 results, the SPM's OBX
    assert _ids(oru, *kept) <= _ids(oul, *kept)
    [oru_report] = _of_type(oru, "DiagnosticReport")
    [oul_report] = [r for r in _of_type(oul, "DiagnosticReport") if r["id"] == oru_report["id"]]
    assert oul_report["result"] == oru_report["result"]
    assert oul_report["specimen"] == oru_report["specimen"]


@pytest.mark.parametrize("order", [OML, ORM], ids=["OML^O21", "ORM^O01"])
def test_the_order_then_its_oul_update_one_service_request(
    converter: Converter, order: bytes
) -> None:
    bundle, _ = _convert(converter, _set(_set(order, "ORC", 2, PLACER_1), "OBR", 2, PLACER_1))
    request = _of_type(bundle, "ServiceRequest")[0]
    oul, _ = _convert(converter, OUL)
    [same] = [r for r in _of_type(oul, "ServiceRequest") if r["id"] == request["id"]]
    assert _identifier(same, "PLAC") == "CMD-2024-0521-01"


def test_a_resent_oul_updates_the_same_resources(converter: Converter) -> None:
    again = _set(_set(OUL, "MSH", 10, "LAB-OUL-20240521-000399"), "OBX", 11, "C", 2)
    first, _ = _convert(converter, OUL)
    second, _ = _convert(converter, again)
    kept = ("ServiceRequest", "DiagnosticReport", "Observation", "Specimen")
    assert _ids(first, *kept) == _ids(second, *kept)


# ----------------------------------------------------------------------------------------
# Statuses: OBR-25 through ResultStatus-Non-Queries, OBX-11 through
# ObservationResultStatusCodesInterpretation, each with Passerelle's supplement for the codes
# the IG leaves empty (the maps ORU_R01 uses).


@pytest.mark.parametrize(
    ("obr_25", "status"),
    [
        ("F", "final"),
        ("P", "preliminary"),
        ("C", "corrected"),
        ("R", "partial"),
        ("X", "cancelled"),
        ("I", "registered"),
        ("Y", "unknown"),
    ],
)
def test_the_report_status_comes_from_obr_25(
    converter: Converter, obr_25: str, status: str
) -> None:
    bundle, _ = _convert(converter, _set(OUL, "OBR", 25, obr_25, 3))
    statuses = {_identifier(r, "FILL"): r["status"] for r in _of_type(bundle, "DiagnosticReport")}
    assert statuses == {IONO: "final", CRP: "preliminary", ECBU: status}


@pytest.mark.parametrize(
    ("obx_11", "status"),
    [
        ("F", "final"),
        ("P", "preliminary"),
        ("C", "corrected"),
        ("A", "amended"),
        ("W", "entered-in-error"),
        ("R", "preliminary"),
        ("U", "final"),
        ("N", "unknown"),
    ],
)
def test_the_observation_status_comes_from_obx_11(
    converter: Converter, obx_11: str, status: str
) -> None:
    # The 4th OBX is the CRP, the only result of its order.
    bundle, _ = _convert(converter, _set(OUL, "OBX", 11, obx_11, 4))
    statuses = {_code(o): o["status"] for o in _of_type(bundle, "Observation")}
    assert statuses == {
        "49541-6": "final",
        "2951-2": "final",
        "2823-3": "final",
        "1988-5": status,
        "5767-9": "final",
        "630-4": "corrected",
    }


# ----------------------------------------------------------------------------------------
# What surrounds the specimens.


def test_without_pid_no_request_but_the_reports_are_made(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _drop(OUL, "PID|", "PV1|"))
    assert not _of_type(bundle, "ServiceRequest")
    assert len(_of_type(bundle, "DiagnosticReport")) == 3
    assert warnings == [
        f"OUL^R22 order {n}: no PID, so no ServiceRequest (its subject is required)"
        for n in (1, 2, 3)
    ]


def test_a_patient_obx_is_about_the_patient_in_no_report(
    converter: Converter, r4validator: R4Validator
) -> None:
    """v2.7 PATIENT_OBSERVATION (an OBX after the PID)."""
    obx = "OBX|1|NM|29463-7^Body weight^LN||81|kg^kilogramme^UCUM|||||F|||20240521080000+0200"
    message = _insert_after(_set(OUL, "MSH", 12, "2.7"), "PID|", obx)
    bundle, warnings = _convert(converter, message)
    [weight] = [o for o in _of_type(bundle, "Observation") if _code(o) == "29463-7"]
    assert weight["subject"] == {"reference": f"Patient/{_of_type(bundle, 'Patient')[0]['id']}"}
    assert not {"basedOn", "specimen", "focus"} & weight.keys()
    assert _links(bundle) == RESULTS
    assert warnings == []
    assert r4validator.validate(bundle) == []
