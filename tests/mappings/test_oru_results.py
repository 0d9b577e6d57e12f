"""ORU^R01 results (root ORU_R01.j2, resources DiagnosticReport / Observation /
ServiceRequest): the rules a review found broken, on small messages built here.

- OBX-2 SN ratios keep their comparator and unit (IG SN[Ratio]: SN.1 → numerator.comparator
  unless "="; IG OBX[Observation] OBX-6 rows: the unit on numerator and denominator): a titer
  reported ">1:640" is not 1:640.
- A child result (OBR-29 parent, OBR-26 parent result; HL7 v2.5 §4.5.3.26 / §4.5.3.29) sent
  under its parent's order number is its own DiagnosticReport with its own results, based on
  the parent's ServiceRequest, instead of merging into the parent's report (one report with
  both codes, the child's OBX lost where it repeated a code and sub-id of the parent's).
- OBR-29 naming another order gives ServiceRequest.basedOn by identifier (IG OBR[ServiceRequest]
  rows 29).
"""

from __future__ import annotations

from typing import Any

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources, segment
from tests.support.r4validator import R4Validator

LAB = "SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
HIS = "SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
HEADER = [
    "MSH|^~\\&|SIL-GLYCINE|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520101500+0200||"
    "ORU^R01^ORU_R01|LAB-ORU-20240520-0042|P|2.5.1|||AL|NE||UNICODE UTF-8",
    "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^MR||LEROUX^Maëlle||19850612|F",
    "PV1|1|I|MED-INF^CH12^2^CHU-NANTES||||||||||||||||2024005501^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^VN",
]


def _obr(set_id: str, code: str, status: str, **more: str) -> str:
    fields = {1: set_id, 2: f"HEMOC-01^{HIS}", 3: f"LAB2405200042^{LAB}", 4: code}
    fields |= {7: "20240518220000+0200", 22: "20240520100000+0200", 24: "MB", 25: status}
    return segment("OBR", fields | {int(k[1:]): v for k, v in more.items()})


def _orc() -> str:
    return segment("ORC", {1: "RE", 2: f"HEMOC-01^{HIS}", 3: f"LAB2405200042^{LAB}", 5: "CM"})


#: A blood culture (preliminary: Staphylococcus aureus isolated, a comment) and its child
#: susceptibility panel (final), both under the culture's placer and filler numbers, as many
#: microbiology systems send them; the child's comment OBX repeats the parent's code, no sub-id.
CULTURE = message(
    [
        *HEADER,
        _orc(),
        _obr("1", "600-7^Bacteria identified in Blood by Culture^LN", "P"),
        "OBX|1|CWE|600-7^Bacteria identified^LN|1|3092008^Staphylococcus aureus^SCT||||||P",
        "OBX|2|ST|COMMIC^Commentaire microbiologie^L||Culture positive à 14 h.||||||P",
        _orc(),
        _obr(
            "2",
            "29576-6^Bacterial susceptibility panel^LN",
            "F",
            f26="600-7&Bacteria identified&LN^1^Staphylococcus aureus",
            f29="HEMOC-01&SIH-ORCHIDEE&1.2.250.1.999.1.10&ISO^LAB2405200042&SIL-GLYCINE&1.2.250.1.999.1.20&ISO",
        ),
        "OBX|1|SN|18964-7^Gentamicin [Susceptibility]^LN|1|<=^0.5|ug/mL^^UCUM||S|||F",
        "OBX|2|ST|COMMIC^Commentaire microbiologie^L||Souche sensible à la méticilline.||||||F",
    ]
)


def _codes(resource: dict[str, Any]) -> list[str]:
    return [c["code"] for c in resource["code"]["coding"]]


def test_sn_ratio_keeps_its_comparator_and_unit(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = message(
        [
            *HEADER,
            _orc(),
            _obr("1", "5048-4^Nuclear Ab titer^LN", "F"),
            "OBX|1|SN|5048-4^Nuclear Ab [Titer] in Serum^LN||>^1^:^640|{titer}^titre^UCUM||H|||F",
        ]
    )
    bundle, _ = convert_one(converter, data)
    [observation] = resources(bundle, "Observation")
    ratio = observation["valueRatio"]
    unit = {"unit": "titre", "system": "http://unitsofmeasure.org", "code": "{titer}"}
    assert ratio["numerator"] == {"value": 1, "comparator": ">", **unit}
    assert ratio["denominator"] == {"value": 640, **unit}
    assert r4validator.validate(bundle) == []


def test_sn_ratio_with_equals_has_no_comparator(converter: Converter) -> None:
    data = message(
        [
            *HEADER,
            _orc(),
            _obr("1", "5048-4^Nuclear Ab titer^LN", "F"),
            "OBX|1|SN|5048-4^Nuclear Ab [Titer] in Serum^LN||=^1^:^80||||||F",
        ]
    )
    bundle, _ = convert_one(converter, data)
    [observation] = resources(bundle, "Observation")
    assert observation["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 80}}


def test_child_result_under_its_parents_number_is_a_report_of_its_own(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, CULTURE)
    assert not [w for w in warnings if "emitted twice" in w], warnings
    reports = {_codes(r)[0]: r for r in resources(bundle, "DiagnosticReport")}
    assert set(reports) == {"600-7", "29576-6"}
    culture, panel = reports["600-7"], reports["29576-6"]
    assert _codes(culture) == ["600-7"] and _codes(panel) == ["29576-6"]
    assert (culture["status"], panel["status"]) == ("preliminary", "final")
    # One order: the culture's; the child report is based on it, without rewriting it.
    [request] = resources(bundle, "ServiceRequest")
    assert _codes(request) == ["600-7"]
    parent_order = [{"reference": f"ServiceRequest/{request['id']}"}]
    assert culture["basedOn"] == panel["basedOn"] == parent_order
    # The parent's number stays the parent report's (conditional requests match on it).
    assert {i["value"] for i in culture["identifier"]} == {"LAB2405200042", "HEMOC-01"}
    assert "identifier" not in panel
    # Each report lists its own results; the child's comment is not lost in the parent's.
    observations = {o["id"]: o for o in resources(bundle, "Observation")}
    assert len(observations) == 4
    texts = {
        report: sorted(
            observations[r["reference"].split("/")[1]].get("valueString", "")
            for r in reports[report]["result"]
        )
        for report in reports
    }
    assert texts == {
        "600-7": ["", "Culture positive à 14 h."],
        "29576-6": ["", "Souche sensible à la méticilline."],
    }
    assert r4validator.validate(bundle) == []


def test_child_result_ids_are_stable_and_the_parents_unchanged(converter: Converter) -> None:
    """The parent keeps the id it had before child results were told apart (and which a
    message without the child gives it); the child's ids do not depend on the message."""
    alone = message([line for line in CULTURE.decode().split("\r") if line][:7])
    bundle_alone, _ = convert_one(converter, alone)
    bundle, _ = convert_one(converter, CULTURE)
    [parent_alone] = resources(bundle_alone, "DiagnosticReport")
    assert parent_alone["id"] in {r["id"] for r in resources(bundle, "DiagnosticReport")}
    resent = CULTURE.replace(b"LAB-ORU-20240520-0042", b"LAB-ORU-20240521-0007")
    again, _ = convert_one(converter, resent)
    assert {r["id"] for r in resources(again, "Observation")} == {
        r["id"] for r in resources(bundle, "Observation")
    }


def test_child_result_in_conditional_mode(converter: Converter) -> None:
    """The parent and child reports no longer share an identifier, so a conditional bundle
    is built (two reports carrying one filler number would be a BundleValidationError);
    the child report is written by its id."""
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-create")
    )
    bundle, _ = convert_one(conditional, CULTURE)
    requests = {
        e["resource"]["code"]["coding"][0]["code"]: e["request"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    }
    assert requests["600-7"]["method"] == "POST"
    assert requests["600-7"]["ifNoneExist"] == "identifier=urn:oid:1.2.250.1.999.1.20|LAB2405200042"
    assert requests["29576-6"]["method"] == "PUT"


def test_child_result_on_the_server(converter: Converter, fhir_server: FhirServer) -> None:
    """The preliminary culture alone, then the culture with its final susceptibility panel:
    the server holds two reports, the culture's code untouched, and four Observations (the
    culture's two, updated; the panel's two)."""
    alone = message([line for line in CULTURE.decode().split("\r") if line][:7])
    first, _ = convert_one(converter, alone)
    fhir_server.transact(first)
    bundle, _ = convert_one(converter, CULTURE)
    fhir_server.transact(bundle)
    [patient] = resources(bundle, "Patient")
    found = fhir_server.search("DiagnosticReport", subject=f"Patient/{patient['id']}")
    codes = sorted(
        tuple(c["code"] for c in e["resource"]["code"]["coding"]) for e in found["entry"]
    )
    assert codes == [("29576-6",), ("600-7",)]
    assert fhir_server.count("Observation", subject=f"Patient/{patient['id']}") == 4


def test_obr29_naming_another_order_is_basedon_by_identifier(converter: Converter) -> None:
    """A reflex order (OBR-11 G) reported with its own numbers, naming its parent in OBR-29."""
    orc = segment("ORC", {1: "RE", 2: f"HEMOC-02^{HIS}", 3: f"LAB2405200043^{LAB}", 5: "CM"})
    obr = segment(
        "OBR",
        {
            1: "1",
            2: f"HEMOC-02^{HIS}",
            3: f"LAB2405200043^{LAB}",
            4: "29576-6^Bacterial susceptibility panel^LN",
            11: "G",
            25: "F",
            29: "HEMOC-01&SIH-ORCHIDEE&1.2.250.1.999.1.10&ISO^LAB2405200042&SIL-GLYCINE",
        },
    )
    bundle, _ = convert_one(converter, message([*HEADER, orc, obr]))
    [request] = resources(bundle, "ServiceRequest")
    assert request["intent"] == "reflex-order"
    [based_on] = request["basedOn"]
    assert based_on["type"] == "ServiceRequest"
    assert based_on["identifier"]["value"] == "HEMOC-01"
    assert based_on["identifier"]["system"] == "urn:oid:1.2.250.1.999.1.10"
    assert based_on["identifier"]["type"]["coding"][0]["code"] == "PLAC"


def _with_patient_weight(control_id: str, weight: str) -> bytes:
    """A v2.8 ORU whose PATIENT group carries the patient's weight (PATIENT_OBSERVATION)."""
    msh = HEADER[0].replace("|2.5.1|", "|2.8|").replace("LAB-ORU-20240520-0042", control_id)
    return message(
        [
            msh,
            *HEADER[1:2],
            f"OBX|1|NM|29463-7^Body weight^LN||{weight}|kg^^UCUM|||||F|||20240520080000+0200",
            "OBX|2|NM|8302-2^Body height^LN||168|cm^^UCUM|||||F|||20240520080000+0200",
            HEADER[2],
            _orc(),
            _obr("1", "2345-7^Glucose^LN", "F"),
            "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM||N|||F",
        ]
    )


def test_patient_observations_are_one_resource_across_result_messages(
    converter: Converter,
) -> None:
    """Every result message repeating the patient's weight wrote a new Observation: its id
    derived from the message. They are facts of the visit now, identified as ADT's OBX."""
    first, _ = convert_one(converter, _with_patient_weight("LAB-1", "71"))
    second, _ = convert_one(converter, _with_patient_weight("LAB-2", "72"))

    def patient_facts(bundle: dict[str, Any]) -> dict[str, str]:
        return {
            o["code"]["coding"][0]["code"]: o["id"]
            for o in resources(bundle, "Observation")
            if not o.get("basedOn")
        }

    assert set(patient_facts(first)) == {"29463-7", "8302-2"}
    assert patient_facts(first) == patient_facts(second)
    assert len(set(patient_facts(first).values())) == 2
    [weight] = [
        o for o in resources(second, "Observation") if o["id"] == patient_facts(second)["29463-7"]
    ]
    assert weight["valueQuantity"]["value"] == 72
