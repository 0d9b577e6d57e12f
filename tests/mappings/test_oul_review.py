"""OUL^R22 child results (root OUL.j2), the rule ORU_R01.j2 has: a child result (OBR-29
parent, OBR-26 parent result; HL7 v2.5 §4.5.3.26 / §4.5.3.29) sent under its parent's own
order number is a DiagnosticReport of its own, with its own results, based on the parent's
ServiceRequest, instead of merging into the parent's report (one report with both codes and
the parent's status, "emitted twice" warned)."""

from __future__ import annotations

from typing import Any

from converter import Converter
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator

LAB = "SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
HIS = "SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
PARENT = (
    "HEMOC-01&SIH-ORCHIDEE&1.2.250.1.999.1.10&ISO^LAB2405200042&SIL-GLYCINE&1.2.250.1.999.1.20&ISO"
)


def _obr(set_id: str, code: str, status: str, child: str = "") -> str:
    return (
        f"OBR|{set_id}|HEMOC-01^{HIS}|LAB2405200042^{LAB}|{code}|||20240518220000+0200"
        f"|||||||||||||||20240520100000+0200||MB|{status}{child}"
    )


ORC = f"ORC|SC|HEMOC-01^{HIS}|LAB2405200042^{LAB}||CM"
HEADER = [
    "MSH|^~\\&|SIL-GLYCINE|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520101500+0200||"
    "OUL^R22^OUL_R22|LAB-OUL-20240520-0042|P|2.5.1|||AL|NE||UNICODE UTF-8",
    "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^MR||LEROUX^Maëlle||19850612|F",
    "SPM|1|HEMOC-01-S1&SIH-ORCHIDEE||BLD^Sang^HL70487",
]
CULTURE = [
    _obr("1", "600-7^Bacteria identified in Blood by Culture^LN", "P"),
    ORC,
    "OBX|1|CWE|600-7^Bacteria identified^LN|1|3092008^Staphylococcus aureus^SCT||||||P",
    "OBX|2|ST|COMMIC^Commentaire microbiologie^L||Culture positive à 14 h.||||||P",
]
PANEL = [
    _obr(
        "2",
        "29576-6^Bacterial susceptibility panel^LN",
        "F",
        f"|600-7&Bacteria identified&LN^1^Staphylococcus aureus|||{PARENT}",
    ),
    ORC,
    "NTE|1|L|Antibiogramme validé.",
    "OBX|1|SN|18964-7^Gentamicin [Susceptibility]^LN|1|<=^0.5|ug/mL^^UCUM||S|||F",
    "OBX|2|ST|COMMIC^Commentaire microbiologie^L||Souche sensible à la méticilline.||||||F",
]


def _codes(resource: dict[str, Any]) -> list[str]:
    return [c["code"] for c in resource["code"]["coding"]]


def _texts(bundle: dict[str, Any], report: dict[str, Any]) -> list[str]:
    by_id = {o["id"]: o for o in resources(bundle, "Observation")}
    return sorted(
        by_id[r["reference"].split("/")[1]].get("valueString", "") for r in report["result"]
    )


def test_oul_child_result_is_a_report_of_its_own(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, message([*HEADER, *CULTURE, *PANEL]))
    assert not [w for w in warnings if "emitted twice" in w], warnings
    assert [w for w in warnings if "child result" in w and "NTE" in w]
    reports = {_codes(r)[0]: r for r in resources(bundle, "DiagnosticReport")}
    assert set(reports) == {"600-7", "29576-6"}
    culture, panel = reports["600-7"], reports["29576-6"]
    assert _codes(culture) == ["600-7"] and _codes(panel) == ["29576-6"]
    assert (culture["status"], panel["status"]) == ("preliminary", "final")
    # One order, the culture's, not rewritten by the child (its code, no child NTE).
    [request] = resources(bundle, "ServiceRequest")
    assert _codes(request) == ["600-7"] and "note" not in request
    assert (
        culture["basedOn"] == panel["basedOn"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    )
    assert {i["value"] for i in culture["identifier"]} == {"LAB2405200042", "HEMOC-01"}
    assert "identifier" not in panel
    assert _texts(bundle, culture) == ["", "Culture positive à 14 h."]
    assert _texts(bundle, panel) == ["", "Souche sensible à la méticilline."]
    assert r4validator.validate(bundle) == []


def test_oul_child_sent_alone_leaves_the_parents_results(converter: Converter) -> None:
    """The final panel sent later on its own does not overwrite the culture's report nor its
    comment (same code, no sub-id): its ids are the ones the combined message gives it."""
    both, _ = convert_one(converter, message([*HEADER, *CULTURE, *PANEL]))
    culture_only, _ = convert_one(converter, message([*HEADER, *CULTURE]))
    panel_only, _ = convert_one(converter, message([*HEADER, *PANEL]))
    ids = {r["id"] for r in resources(both, "Observation")}
    culture_ids = {r["id"] for r in resources(culture_only, "Observation")}
    panel_ids = {r["id"] for r in resources(panel_only, "Observation")}
    assert culture_ids | panel_ids == ids and not culture_ids & panel_ids
    [culture_report] = resources(culture_only, "DiagnosticReport")
    [panel_report] = resources(panel_only, "DiagnosticReport")
    assert panel_report["id"] != culture_report["id"]
    assert {panel_report["id"], culture_report["id"]} == {
        r["id"] for r in resources(both, "DiagnosticReport")
    }
    # Alone, the child still does not rewrite the parent's ServiceRequest.
    assert resources(panel_only, "ServiceRequest") == []


def test_oul_patient_observation_is_one_resource_across_messages(converter: Converter) -> None:
    """A PATIENT_OBSERVATION OBX (v2.7+) repeated by the next OUL updates one Observation
    (its id used to derive from the message: a copy per message)."""
    patient_obx = "OBX|1|NM|29463-7^Body weight^LN||62|kg^^UCUM|||||F|||20240518"

    def oul(control: str) -> bytes:
        header = HEADER[0].replace("|2.5.1|", "|2.7|").replace("LAB-OUL-20240520-0042", control)
        return message([header, HEADER[1], patient_obx, HEADER[2], *CULTURE])

    first, _ = convert_one(converter, oul("LAB-OUL-1"))
    second, _ = convert_one(converter, oul("LAB-OUL-2"))

    def weight(bundle: dict[str, Any]) -> dict[str, Any]:
        [found] = [o for o in resources(bundle, "Observation") if _codes(o) == ["29463-7"]]
        return found

    assert weight(first)["id"] == weight(second)["id"]
    assert "basedOn" not in weight(first)
