"""VXU^V04 doses (Immunization.j2, VXU_V04.j2): identity of doses without an order number,
and the status of a refusal sent without a completion status.

- ORC-3 "9999" is the CDC IG's "no filler order number" (historical doses, refusals:
  ``ORC|RE||9999^CDC`` in the NIST test messages). It was taken as the order number: every
  such dose of every patient of one sender was one Immunization (two historical doses of one
  message merged into one, a second patient's dose replaced the first's), and its OBX
  Observations too.
- A dose without ORC (2.3.1, 2.4) gave its OBX Observations ids derived from the message: a
  re-sent VXU added a copy of each.
- RXA-18 (refusal reason) with an empty RXA-20 was written ``completed``: a refused vaccine
  counted as given.
"""

from __future__ import annotations

from pathlib import Path

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator

_OBX = (
    "OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1"
    "|V01^Not VFC eligible^HL70064||||||F|||20240315"
)


def _vxu(
    control: str,
    orc: str | None,
    version: str = "2.5.1",
    mrn: str = "0012422301",
    rxa_tail: str = "|||||||||||CP|A",
) -> bytes:
    """Two doses (HepB, DTaP) of one patient, each with its ORC (when given; ``{n}`` in it
    numbers the dose) and an OBX."""
    segments = [
        f"MSH|^~\\&|LOGICIEL-PMI|CENTRE-PMI-LYON3^1.2.250.1.999.3.1^ISO|PASSERELLE|GHT|"
        f"20240315103000+0100||VXU^V04^VXU_V04|{control}|P|{version}|||ER|AL|||||Z22^CDCPHINVS",
        f"PID|1||{mrn}^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F",
    ]
    doses = (("08^HepB^CVX", "20231120"), ("20^DTaP^CVX", "20240115"))
    for n, (vaccine, when) in enumerate(doses, 1):
        if orc:
            segments.append(orc.format(n=n))
        segments += [f"RXA|0|1|{when}||{vaccine}|999|||01^Historical^NIP001{rxa_tail}", _OBX]
    return message(segments)


def test_order_number_9999_is_no_identity(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    bundle, warnings = convert_one(converter, _vxu("PMI-1", "ORC|RE||9999^CDC"))
    assert not [w for w in warnings if "emitted twice" in w]
    doses = resources(bundle, "Immunization")
    assert [d["vaccineCode"]["coding"][0]["code"] for d in doses] == ["08", "20"]
    assert len({d["id"] for d in doses}) == 2
    # 9999 is no identifier: a conditional request on it would match other patients' doses.
    assert all("identifier" not in d for d in doses)
    observations = resources(bundle, "Observation")
    assert [o["partOf"][0]["reference"] for o in observations] == [
        f"Immunization/{d['id']}" for d in doses
    ]
    assert r4validator.validate(bundle) == []
    # Another patient's 9999 doses are their own; the same message re-sent updates.
    other, _ = convert_one(converter, _vxu("PMI-2", "ORC|RE||9999^CDC", mrn="0012499999"))
    assert not {d["id"] for d in doses} & {d["id"] for d in resources(other, "Immunization")}
    again, _ = convert_one(converter, _vxu("PMI-3", "ORC|RE||9999^CDC"))
    assert [d["id"] for d in resources(again, "Immunization")] == [d["id"] for d in doses]
    assert [o["id"] for o in resources(again, "Observation")] == [o["id"] for o in observations]
    fhir_server.transact(bundle)
    fhir_server.transact(other)
    fhir_server.transact(again)
    for patient in (resources(bundle, "Patient")[0], resources(other, "Patient")[0]):
        assert fhir_server.count("Immunization", patient=f"Patient/{patient['id']}") == 2
        assert fhir_server.count("Observation", subject=f"Patient/{patient['id']}") == 2


def test_dose_without_orc_keeps_its_observations_across_resends(
    converter: Converter, r4validator: R4Validator
) -> None:
    first, _ = convert_one(converter, _vxu("PMI-4", None, version="2.4"))
    second, _ = convert_one(converter, _vxu("PMI-5", None, version="2.4"))
    before, after = resources(first, "Observation"), resources(second, "Observation")
    assert len(before) == 2
    assert [o["id"] for o in before] == [o["id"] for o in after]
    assert len({o["id"] for o in before}) == 2
    assert r4validator.validate(first) == []


def test_refusal_reason_without_completion_status_is_not_done(
    converter: Converter, r4validator: R4Validator
) -> None:
    refused = "|||||||||00^Parental decision^NIP002|||A"
    bundle, warnings = convert_one(converter, _vxu("PMI-6", "ORC|RE||IZ-7-{n}^X", rxa_tail=refused))
    assert len(resources(bundle, "Immunization")) == 2
    for dose in resources(bundle, "Immunization"):
        assert dose["status"] == "not-done"
        assert dose["statusReason"]["coding"][-1]["code"] == "00"
    assert "RXA-18 (refusal reason) valued and RXA-20 empty: Immunization.status not-done" in (
        warnings
    )
    assert r4validator.validate(bundle) == []
    # What the sender wrote in RXA-20 / RXA-21 stands.
    completed = "|||||||||00^Parental decision^NIP002||CP|A"
    bundle, warnings = convert_one(
        converter, _vxu("PMI-7", "ORC|RE||IZ-8-{n}^X", rxa_tail=completed)
    )
    assert {d["status"] for d in resources(bundle, "Immunization")} == {"completed"}
    assert not [w for w in warnings if "RXA-18" in w]
    deleted = "|||||||||00^Parental decision^NIP002|||D"
    bundle, _ = convert_one(converter, _vxu("PMI-8", "ORC|RE||IZ-9-{n}^X", rxa_tail=deleted))
    assert {d["status"] for d in resources(bundle, "Immunization")} == {"entered-in-error"}


def test_reaction_obx_is_an_immunization_reaction(
    converter: Converter, r4validator: R4Validator
) -> None:
    """OBX 31044-1 (the CDC IG's reaction) was an Observation partOf the Immunization, but
    Immunization.reaction stayed empty: a reader of the Immunization saw no adverse event."""
    data = _vxu("PMI-9", "ORC|RE||IZ-10-{n}^X")
    reaction = (
        "OBX|2|CE|31044-1^Reaction^LN|2|VXC12^Fever of >40.5C within 48 hrs^CDCPHINVS"
        "||||||F|||20231121"
    )
    found = data.decode("utf-8").split("\r")
    found.insert(4, reaction)  # after the first dose's OBX
    bundle, _ = convert_one(converter, message([s for s in found if s]))
    first, second = resources(bundle, "Immunization")
    [observation] = [
        o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "31044-1"
    ]
    assert first["reaction"] == [
        {"date": "2023-11-21", "detail": {"reference": f"Observation/{observation['id']}"}}
    ]
    assert observation["partOf"] == [{"reference": f"Immunization/{first['id']}"}]
    assert "reaction" not in second
    assert r4validator.validate(bundle) == []


def test_no_vaccine_administered_is_not_done(
    converter: Converter, r4validator: R4Validator
) -> None:
    """CVX 998 ("no vaccine administered", an RXA carrying a contraindication or immunity
    OBX) sent with RXA-20 CP was a completed Immunization: a dose counted that was never
    given."""
    data = _vxu("PMI-11", "ORC|RE||IZ-11-{n}^X").replace(b"08^HepB^CVX", b"998^No vaccine^CVX")
    bundle, warnings = convert_one(converter, data)
    first, second = resources(bundle, "Immunization")
    assert (first["status"], second["status"]) == ("not-done", "completed")
    assert "RXA-5 is CVX 998 (no vaccine administered): Immunization.status not-done" in warnings
    assert r4validator.validate(bundle) == []
    # The code 998 of another system is not CVX's.
    other = _vxu("PMI-12", "ORC|RE||IZ-12-{n}^X").replace(b"08^HepB^CVX", b"998^Local^L")
    assert resources(convert_one(converter, other)[0], "Immunization")[0]["status"] == "completed"


def test_nip002_refusal_reason_is_translated(
    converter: Converter, r4validator: R4Validator
) -> None:
    """RXA-18 in the CDC IG's NIP002 codes was written as its own coding only, which no
    reader outside that guide understands; R4's immunization-status-reason codes now come
    first. A local code that happens to read 00 is not translated."""
    tail = "|||||||||{reason}||RE|A"
    nip002 = _vxu(
        "PMI-13", "ORC|RE||IZ-13-{n}^X", rxa_tail=tail.format(reason="01^Religion^NIP002")
    )
    bundle, _ = convert_one(converter, nip002)
    reason = resources(bundle, "Immunization")[0]["statusReason"]
    assert reason["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "RELIG",
        "display": "religious objection",
    }
    assert reason["coding"][1]["code"] == "01"
    assert r4validator.validate(bundle) == []
    local = _vxu("PMI-14", "ORC|RE||IZ-14-{n}^X", rxa_tail=tail.format(reason="00^Refus^L"))
    reason = resources(convert_one(converter, local)[0], "Immunization")[0]["statusReason"]
    assert [c["code"] for c in reason["coding"]] == ["00"]


def test_vis_named_by_vaccine_type_is_education(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    """The CDC IG's VIS by vaccine type (30956-7 with the edition 29768-9 and presentation
    29769-7 dates in one OBX-4 group) was left out of Immunization.education: only the
    document-type form (69764-9) was read, so most VXU lost the VIS the family was given."""
    vis = [
        "OBX|2|CE|30956-7^vaccine type^LN|2|45^HepB, unspecified formulation^CVX||||||F",
        "OBX|3|TS|29768-9^Date VIS published^LN|2|20120202||||||F",
        "OBX|4|TS|29769-7^Date VIS presented^LN|2|20231120||||||F",
        # A vaccine type without a VIS date is not a VIS (a contraindication's, an immunity's).
        "OBX|5|CE|30956-7^vaccine type^LN|3|20^DTaP^CVX||||||F",
    ]
    found = _vxu("PMI-15", "ORC|RE||IZ-15-{n}^X").decode("utf-8").split("\r")
    bundle, _ = convert_one(converter, message([*found[:4], *vis, *found[4:]]))
    first, second = resources(bundle, "Immunization")
    assert first["education"] == [
        {
            "_documentType": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-SC-coding",
                        "valueCoding": {
                            "system": "http://hl7.org/fhir/sid/cvx",
                            "code": "45",
                            "display": "HepB, unspecified formulation",
                        },
                    }
                ]
            },
            "publicationDate": "2012-02-02",
            "presentationDate": "2023-11-20",
        }
    ]
    assert "education" not in second
    assert r4validator.validate(bundle) == []
    fhir_server.transact(bundle)


def test_each_rxa_under_one_orc_is_a_dose(converter: Converter, r4validator: R4Validator) -> None:
    """Several RXA under one ORC (the parser keeps them, with their RXR and OBX, in that
    ORDER group): only the first became an Immunization, the others were dropped without a
    warning. Each is now its own dose with the RXR and OBX that follow it; the order number
    identifies the first only."""
    data = message(
        [
            "MSH|^~\\&|LOGICIEL-PMI|CENTRE-PMI-LYON3^1.2.250.1.999.3.1^ISO|PASSERELLE|GHT|"
            "20240315103000+0100||VXU^V04^VXU_V04|PMI-16|P|2.5.1|||ER|AL",
            "PID|1||0012422301^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F",
            "ORC|RE||IZ-16^X",
            "RXA|0|1|20231120||08^HepB^CVX|0.5|mL^^UCUM|||||||||||||CP|A",
            "RXR|C28161^IM^NCIT|LT^Left Thigh^HL70163",
            _OBX,
            "RXA|0|1|20231120||20^DTaP^CVX|0.5|mL^^UCUM|||||||||||||CP|A",
            "RXR|C28161^IM^NCIT|RT^Right Thigh^HL70163",
            "OBX|1|CE|31044-1^Reaction^LN|1|VXC12^Fever^CDCPHINVS||||||F|||20231121",
        ]
    )
    bundle, warnings = convert_one(converter, data)
    first, second = resources(bundle, "Immunization")
    assert [
        first["vaccineCode"]["coding"][0]["code"],
        second["vaccineCode"]["coding"][0]["code"],
    ] == [
        "08",
        "20",
    ]
    assert [first["site"]["coding"][0]["code"], second["site"]["coding"][0]["code"]] == ["LT", "RT"]
    assert first["identifier"][0]["value"] == "IZ-16" and "identifier" not in second
    eligibility, reaction = resources(bundle, "Observation")
    assert eligibility["partOf"] == [{"reference": f"Immunization/{first['id']}"}]
    assert reaction["partOf"] == [{"reference": f"Immunization/{second['id']}"}]
    assert "programEligibility" in first and "programEligibility" not in second
    assert second["reaction"][0]["detail"] == {"reference": f"Observation/{reaction['id']}"}
    assert any("2 RXA under one ORC" in w for w in warnings)
    assert r4validator.validate(bundle) == []


def test_obx_before_the_rxa_stays_with_the_dose(converter: Converter) -> None:
    """An OBX (and its NTE) sent between the ORC and the RXA, out of the grammar's order,
    still belongs to the order's dose."""
    data = message(
        [
            "MSH|^~\\&|LOGICIEL-PMI|CENTRE-PMI-LYON3^1.2.250.1.999.3.1^ISO|PASSERELLE|GHT|"
            "20240315103000+0100||VXU^V04^VXU_V04|PMI-17|P|2.5.1|||ER|AL",
            "PID|1||0012422301^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F",
            "ORC|RE||IZ-17^X",
            _OBX,
            "NTE|1||Éligibilité vérifiée.",
            "RXA|0|1|20231120||08^HepB^CVX|0.5|mL^^UCUM|||||||||||||CP|A",
        ]
    )
    bundle, _ = convert_one(converter, data)
    [dose] = resources(bundle, "Immunization")
    [observation] = resources(bundle, "Observation")
    assert observation["partOf"] == [{"reference": f"Immunization/{dose['id']}"}]
    assert observation["note"] == [{"text": "Éligibilité vérifiée."}]
    assert dose["programEligibility"][0]["coding"][0]["code"] == "V01"


def test_an_ncit_route_names_the_nci_thesaurus(converter: Converter) -> None:
    """RXR-1 in NCIT (as CDC's guide codes routes) had the system "NCIT", which names no
    code system; HL7 Terminology's URI for the NCI Thesaurus is used."""
    sample = Path(__file__).resolve().parents[2] / "samples/hl7v2/VXU_V04_immunization.hl7"
    bundle, _ = convert_one(converter, sample.read_bytes())
    systems = {
        coding["system"]
        for immunization in resources(bundle, "Immunization")
        for coding in immunization.get("route", {}).get("coding", [])
    }
    assert systems == {"http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"}
