"""Laboratory results and orders, pharmacy orders (session 20): rules found broken, on small
messages built here.

- A correction re-sending only the corrected OBX (every result OBX-11 a post-final status:
  C, A, B, D, W) no longer
  rewrites the DiagnosticReport: written from that message, its PUT replaced the stored
  report's result list with the corrected Observation alone, and the other results vanished
  from the report. A correction re-sending the whole report still rewrites it (corrected).
- OBX-29 QST / SCI (a question asked at order entry, supporting clinical information) is the
  order's supportingInfo, not a result of the report (IG ORU_R01 OBSERVATION rows).
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, refs, resources, segment

LAB = "SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
HIS = "SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
PID = "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^MR||LEROUX^Maëlle||19850612|F"
SODIUM = "OBX|1|NM|2951-2^Sodium^LN||140|mmol/L|||||F"
POTASSIUM = "OBX|2|NM|2823-3^Potassium^LN||6.9|mmol/L|||||F"
CHLORIDE = "OBX|3|NM|2075-0^Chloride^LN||101|mmol/L|||||F"
POTASSIUM_CORRECTED = "OBX|2|NM|2823-3^Potassium^LN||4.1|mmol/L|||||C"


def _msh(event: str, control: str) -> str:
    return (
        "MSH|^~\\&|SIL-GLYCINE|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520101500+0200||"
        f"{event}|{control}|P|2.5.1"
    )


def _order(status: str) -> list[str]:
    return [
        segment("ORC", {1: "RE", 2: f"IONO-1^{HIS}", 3: f"LAB1^{LAB}", 5: "CM"}),
        segment(
            "OBR",
            {
                1: "1",
                2: f"IONO-1^{HIS}",
                3: f"LAB1^{LAB}",
                4: "24326-1^Electrolytes^LN",
                7: "20240520080000+0200",
                25: status,
            },
        ),
    ]


def oru(control: str, status: str, *obxs: str) -> bytes:
    return message([_msh("ORU^R01^ORU_R01", control), PID, *_order(status), *obxs])


def oul(control: str, status: str, *obxs: str) -> bytes:
    spm = "SPM|1|PRL-1&SIH-ORCHIDEE^LAB1-S&SIL-GLYCINE||SER^Sérum^HL70487"
    return message([_msh("OUL^R22^OUL_R22", control), PID, spm, *_order(status)[::-1], *obxs])


def _values(bundle: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {
        o["code"]["coding"][0]["code"]: (o["status"], str(o.get("valueQuantity", {}).get("value")))
        for o in resources(bundle, "Observation")
    }


def test_correction_of_one_result_keeps_the_reports_other_results(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """The report of three results, then a correction of the potassium alone (OBR-25 C,
    OBX-11 C): the stored report still lists the three, the potassium is corrected."""
    fhir_server.reset()
    first, _ = convert_one(converter, oru("M1", "F", SODIUM, POTASSIUM, CHLORIDE))
    fhir_server.transact(first)
    correction, warnings = convert_one(converter, oru("M2", "C", POTASSIUM_CORRECTED))
    assert not resources(correction, "DiagnosticReport")
    assert any("not rewritten" in w and "OBX-11 C, A, B, D or W" in w for w in warnings)
    assert _values(correction) == {"2823-3": ("corrected", "4.1")}
    fhir_server.transact(correction)
    [entry] = fhir_server.search("DiagnosticReport")["entry"]
    assert refs(entry["resource"], "result") == refs(
        resources(first, "DiagnosticReport")[0], "result"
    )
    potassium = fhir_server.search("Observation", code="2823-3")["entry"][0]["resource"]
    assert (potassium["status"], str(potassium["valueQuantity"]["value"])) == ("corrected", "4.1")
    assert fhir_server.count("Observation") == 3


def test_correction_resending_the_whole_report_rewrites_it(converter: Converter) -> None:
    """Some OBX final beside the corrected one: the message is the whole report, written
    with status corrected and every result."""
    bundle, warnings = convert_one(converter, oru("M2", "C", SODIUM, POTASSIUM_CORRECTED, CHLORIDE))
    [report] = resources(bundle, "DiagnosticReport")
    assert report["status"] == "corrected"
    assert len(refs(report, "result")) == 3
    assert not any("not rewritten" in w for w in warnings)


@pytest.mark.parametrize("status", ["D", "W", "A"])
def test_retraction_of_one_result_does_not_rewrite_the_report(
    converter: Converter, status: str
) -> None:
    """D (deleted) and W (posted as wrong) make the Observation entered-in-error, A amended:
    re-sent alone, they would be the report's only result."""
    retracted = POTASSIUM.replace("|||||F", f"|||||{status}")
    bundle, warnings = convert_one(converter, oru("M2", "C", retracted))
    assert not resources(bundle, "DiagnosticReport")
    assert any("not rewritten" in w for w in warnings)
    [observation] = resources(bundle, "Observation")
    assert observation["status"] == ("amended" if status == "A" else "entered-in-error")


def test_oul_correction_of_one_result_does_not_rewrite_the_report(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, oul("M2", "C", POTASSIUM_CORRECTED))
    assert not resources(bundle, "DiagnosticReport")
    assert any("not rewritten" in w for w in warnings)
    assert _values(bundle) == {"2823-3": ("corrected", "4.1")}
    whole, _ = convert_one(converter, oul("M3", "C", SODIUM, POTASSIUM_CORRECTED))
    [report] = resources(whole, "DiagnosticReport")
    assert report["status"] == "corrected" and len(refs(report, "result")) == 2


QUESTION = "OBX|4|CWE|49541-6^Fasting status^LN||Y^Yes^HL70136||||||F||||||||||||||||||QST"
CLINICAL = "OBX|5|ST|8661-1^Chief complaint^LN||Asthénie||||||F||||||||||||||||||SCI"


def _supporting_and_results(bundle: dict[str, Any]) -> tuple[set[str], set[str]]:
    by_ref = {
        f"Observation/{o['id']}": o["code"]["coding"][0]["code"]
        for o in resources(bundle, "Observation")
    }
    [request] = resources(bundle, "ServiceRequest")
    [report] = resources(bundle, "DiagnosticReport")
    return (
        {by_ref[r] for r in refs(request, "supportingInfo")},
        {by_ref[r] for r in refs(report, "result")},
    )


def test_oru_question_and_clinical_information_are_the_orders_supporting_info(
    converter: Converter,
) -> None:
    bundle, _ = convert_one(converter, oru("M1", "F", SODIUM, QUESTION, CLINICAL))
    supporting, results = _supporting_and_results(bundle)
    assert supporting == {"49541-6", "8661-1"}
    assert results == {"2951-2"}
    [fasting] = [
        o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "49541-6"
    ]
    assert fasting["category"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0936",
        "code": "QST",
    }


def test_oul_question_is_the_orders_supporting_info(converter: Converter) -> None:
    bundle, _ = convert_one(converter, oul("M1", "F", SODIUM, QUESTION))
    supporting, results = _supporting_and_results(bundle)
    assert supporting == {"49541-6"}
    assert results == {"2951-2"}


def test_question_answered_in_the_order_and_echoed_in_the_result_is_one_observation(
    converter: Converter,
) -> None:
    """Identified by the request's number (placer first) as OML_O21 identifies an order's
    OBX: the ORU echoing an OML's answer updates it rather than adding a copy."""
    oml = message(
        [
            _msh("OML^O21^OML_O21", "O1"),
            PID,
            segment("ORC", {1: "NW", 2: f"IONO-1^{HIS}"}),
            segment("OBR", {1: "1", 2: f"IONO-1^{HIS}", 4: "24326-1^Electrolytes^LN"}),
            QUESTION.replace("OBX|4|", "OBX|1|"),
        ]
    )
    order, _ = convert_one(converter, oml)
    result, _ = convert_one(converter, oru("M1", "F", SODIUM, QUESTION))
    ids = {
        bundle_name: {
            o["id"]
            for o in resources(b, "Observation")
            if o["code"]["coding"][0]["code"] == "49541-6"
        }
        for bundle_name, b in (("oml", order), ("oru", result))
    }
    assert ids["oml"] == ids["oru"] and len(ids["oml"]) == 1


def _request_message(
    event: str, control: str, version: str, orc: dict[int, str], *more: str
) -> bytes:
    msh = (
        "MSH|^~\\&|DPI|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520161500+0200||"
        f"{event}|{control}|P|{version}"
    )
    return message([msh, PID, segment("ORC", orc), *more])


NW_TIME = "20240520101500+0200"
CANCEL_TIME = "20240520160000+0200"


def test_order_creation_date_is_authored_on_whatever_the_order_control(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """ORC-37 (v2.7+ order creation date/time) is the order's date on any control: a cancel
    carrying it keeps the authoredOn the NW wrote. ORC-9 of a cancel is the cancel's time
    (HL7 v2.5 §4.5.1.9), never the order's: no authoredOn from it."""
    obr = segment("OBR", {1: "1", 2: f"IONO-1^{HIS}", 4: "24326-1^Electrolytes^LN"})
    new = _request_message(
        "OML^O21^OML_O21", "O1", "2.7", {1: "NW", 2: f"IONO-1^{HIS}", 9: NW_TIME}, obr
    )
    cancel = {1: "CA", 2: f"IONO-1^{HIS}", 9: CANCEL_TIME}
    fhir_server.reset()
    for data in (
        new,
        _request_message("OML^O21^OML_O21", "O2", "2.7", cancel | {37: NW_TIME}, obr),
    ):
        bundle, _ = convert_one(converter, data)
        fhir_server.transact(bundle)
    [entry] = fhir_server.search("ServiceRequest")["entry"]
    assert entry["resource"]["authoredOn"] == "2024-05-20T10:15:00+02:00"
    without, _ = convert_one(
        converter, _request_message("OML^O21^OML_O21", "O3", "2.7", cancel, obr)
    )
    [request] = resources(without, "ServiceRequest")
    assert "authoredOn" not in request


RXE = (
    "RXE||9417523^AMOXICILLINE 1 g^99UCD|1||{tbl}^comprimé^UCUM|||||21|{tbl}^comprimé^UCUM|2|||"
    "RX-778812"
)
RXD = "RXD|1|9417523^AMOXICILLINE 1 g^99UCD|20240521090000+0200|21|{tbl}^comprimé^UCUM||RX-778812"


def test_pharmacy_prescription_number_identifies_the_request_the_dispense_names(
    converter: Converter,
) -> None:
    """RXE-15 prescription number → MedicationRequest.identifier (after the order numbers),
    the value RXD-7 gives authorizingPrescription.identifier; ORC-37 → authoredOn on a
    change (XO), ORC-9 of the change not."""
    orc = {1: "XO", 2: f"PHA-1^{HIS}", 9: CANCEL_TIME, 37: NW_TIME}
    rde, _ = convert_one(converter, _request_message("RDE^O11^RDE_O11", "R1", "2.7", orc, RXE))
    [request] = resources(rde, "MedicationRequest")
    assert request["identifier"][-1] == {"value": "RX-778812"}
    assert request["identifier"][0]["value"] == "PHA-1"
    assert request["authoredOn"] == "2024-05-20T10:15:00+02:00"
    assert request["dispenseRequest"]["numberOfRepeatsAllowed"] == 2
    rds, _ = convert_one(
        converter,
        _request_message("RDS^O13^RDS_O13", "D1", "2.5", {1: "RE", 2: f"PHA-1^{HIS}"}, RXE, RXD),
    )
    [dispense] = resources(rds, "MedicationDispense")
    [rebuilt] = resources(rds, "MedicationRequest")
    assert dispense["authorizingPrescription"][0]["identifier"]["value"] == "RX-778812"
    assert {"value": "RX-778812"} in rebuilt["identifier"]


def test_order_numbers_that_differ_between_orc_and_obr_are_reported(converter: Converter) -> None:
    """HL7 v2 requires ORC-2 = OBR-2 when both are sent; the IG's ServiceRequest rows are
    circular. The ORC's number identifies the order (one id across ORM, ORU, RDE) and the
    conversion says the OBR's was not written."""
    data = oru("M1", "F", SODIUM).replace(
        f"|IONO-1^{HIS}|LAB1^{LAB}|24326-1".encode(), f"|IONO-9^{HIS}|LAB1^{LAB}|24326-1".encode()
    )
    bundle, warnings = convert_one(converter, data)
    [request] = resources(bundle, "ServiceRequest")
    assert [i["value"] for i in request["identifier"]][:1] == ["IONO-1"]
    assert any(w.startswith("ORC-2 and OBR-2 name different orders") for w in warnings)
    _, clean = convert_one(converter, oru("M1", "F", SODIUM))
    assert not any("name different orders" in w for w in clean)


FACILITY = "Clinique du Parc^^^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^FI^^^CDP-01"
PROVIDER = "10105678907^GUERIN^Mathilde^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"


def _requester(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    [request] = resources(bundle, rtype)
    target = request["requester"]["reference"]
    rtype_of_target = target.split("/")[0]
    [found] = [
        r for r in resources(bundle, rtype_of_target) if f"{rtype_of_target}/{r['id']}" == target
    ]
    return found


def test_ordering_facility_is_the_requester_without_an_ordering_provider(
    converter: Converter,
) -> None:
    """IG ORC-21 → requester(PractitionerRole.organization): with no ORC-12 the facility is
    the requester (R4 allows an Organization); beside ORC-12, a PractitionerRole joins
    them (tests/hl7v2/test_orders_s21.py)."""
    obr = segment("OBR", {1: "1", 2: f"IONO-1^{HIS}", 4: "24326-1^Electrolytes^LN"})
    orc = {1: "NW", 2: f"IONO-1^{HIS}", 21: FACILITY}
    bundle, warnings = convert_one(
        converter, _request_message("OML^O21^OML_O21", "O1", "2.5", orc, obr)
    )
    facility = _requester(bundle, "ServiceRequest")
    assert (facility["resourceType"], facility["name"]) == ("Organization", "Clinique du Parc")
    assert not any("ORC-21/22/23" in w for w in warnings)
    rde, _ = convert_one(
        converter, _request_message("RDE^O11^RDE_O11", "R1", "2.5", orc | {2: f"PHA-1^{HIS}"}, RXE)
    )
    assert _requester(rde, "MedicationRequest")["name"] == "Clinique du Parc"
    both, warnings = convert_one(
        converter, _request_message("OML^O21^OML_O21", "O2", "2.5", orc | {12: PROVIDER}, obr)
    )
    assert _requester(both, "ServiceRequest")["resourceType"] == "PractitionerRole"
    assert not any(w.startswith("ORC-21") for w in warnings)


@pytest.mark.parametrize("event", ["ORU^R01^ORU_R01", "OUL^R22^OUL_R22"])
def test_question_without_a_patient_is_still_converted(converter: Converter, event: str) -> None:
    """Without PID there is no ServiceRequest to list it: the QST answer is written like the
    results beside it (not dropped)."""
    data = message(
        [
            _msh(event, "M1"),
            segment("OBR", {1: "1", 3: f"LAB1^{LAB}", 4: "24326-1^Electrolytes^LN"}),
            SODIUM,
            QUESTION,
        ]
    )
    bundle, _ = convert_one(converter, data)
    codes = {o["code"]["coding"][0]["code"] for o in resources(bundle, "Observation")}
    assert codes == {"2951-2", "49541-6"}
