"""ADT review (IG v2-to-FHIR ADT_A01 message map): ROL segments and PV1-37.

- ROL (HL7 v2.5 §15.4.7; IG ADT_A01 rows 13 and 19) used to be dropped without a word: a
  patient's ROL-3 PP is Patient.generalPractitioner (IG ROL[Patient-GeneralPractitioner]),
  a visit's ROL an Encounter.participant (IG ROL[Encounter-PractitionerRole]).
- PV1-37 discharged to location is a DLD (table 0113 code ^ effective date), not a PL: it
  used to become a ward of the hospital named after the code, with a "room" named after
  the date. IG DLD[Location-Discharge]: DLD.1 → Location.type."""

from __future__ import annotations

from typing import Any

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import message, resources, segment
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RPPS = "^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
#: Invented practitioners (RPPS-shaped numbers, not real ones).
GP = f"10100000001^MOREL^Anne{RPPS}"
CARDIOLOGIST = f"10100000002^GIRARD^Luc{RPPS}"
NURSE = f"10100000003^ROUX^Emma{RPPS}"
PP = "PP^Primary Care Provider^HL70443"
V2_0113 = "http://terminology.hl7.org/CodeSystem/v2-0113"
V2_0443 = "http://terminology.hl7.org/CodeSystem/v2-0443"
SNOMED = "http://snomed.info/sct"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def _adt(
    event: str,
    *,
    rols_after_pid: tuple[str, ...] = (),
    rols_after_pv1: tuple[str, ...] = (),
    pv1: dict[int, str] | None = None,
) -> bytes:
    visit = {
        2: "I",
        3: f"CARDIO^312^1^{CHU}",
        19: f"2024000777^^^{CHU}^VN",
        44: "20240610083000+0200",
    }
    visit.update(pv1 or {})
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240610090000+0200||"
            f"ADT^{event}^ADT_A01|ADT-REVIEW-{event}|P|2.5.1",
            segment("EVN", {1: event, 2: "20240610090000+0200"}),
            segment(
                "PID",
                {
                    1: "1",
                    3: f"0099887766^^^{CHU}^MR",
                    5: "BERNARD^Louise^^^^^L",
                    7: "19700402",
                    8: "F",
                },
            ),
            segment("PD1", {4: GP}),
            *rols_after_pid,
            segment("PV1", visit),
            *rols_after_pv1,
        ]
    )


def _one(converter: Converter, data: bytes) -> tuple[dict[str, Any], list[str]]:
    [conversion] = converter.convert(data)
    return conversion.bundle, [str(w) for w in conversion.warnings]


def _practitioner_ids(bundle: dict[str, Any], number: str) -> list[str]:
    return [
        p["id"]
        for p in resources(bundle, "Practitioner")
        if any(i.get("value") == number for i in p.get("identifier", []))
    ]


def test_patient_rol_pp_is_general_practitioner(
    converter: Converter, r4validator: R4Validator
) -> None:
    rol_gp = segment("ROL", {1: "1", 2: "AD", 3: PP, 4: CARDIOLOGIST})
    # The PD1-4 doctor named again by a ROL is listed once.
    rol_same = segment("ROL", {1: "2", 2: "UC", 3: PP, 4: GP})
    bundle, warnings = _one(converter, _adt("A01", rols_after_pid=(rol_gp, rol_same)))
    [patient] = resources(bundle, "Patient")
    listed = [ref["reference"] for ref in patient["generalPractitioner"]]
    [gp_id] = _practitioner_ids(bundle, "10100000001")
    [cardio_id] = _practitioner_ids(bundle, "10100000002")
    assert listed == [f"Practitioner/{gp_id}", f"Practitioner/{cardio_id}"]
    # A patient's PP is no visit participant.
    [encounter] = resources(bundle, "Encounter")
    participants = [p["individual"]["reference"] for p in encounter.get("participant", [])]
    assert f"Practitioner/{cardio_id}" not in participants
    assert not [w for w in warnings if "ROL" in w]
    assert r4validator.validate(bundle) == []


def test_patient_rol_other_than_pp_is_warned_and_deleted_roles_left_out(
    converter: Converter,
) -> None:
    care_team = segment("ROL", {1: "1", 2: "AD", 3: "CP^Consulting Provider^HL70443", 4: NURSE})
    deleted = segment("ROL", {1: "2", 2: "DE", 3: PP, 4: CARDIOLOGIST})
    bundle, warnings = _one(converter, _adt("A08", rols_after_pid=(care_team, deleted)))
    [patient] = resources(bundle, "Patient")
    [gp_id] = _practitioner_ids(bundle, "10100000001")
    assert [ref["reference"] for ref in patient["generalPractitioner"]] == [f"Practitioner/{gp_id}"]
    assert _practitioner_ids(bundle, "10100000002") == []
    assert _practitioner_ids(bundle, "10100000003") == []
    assert any("ROL CP after PID" in w and "CareTeam" in w for w in warnings)


def test_visit_rol_is_encounter_participant(converter: Converter, r4validator: R4Validator) -> None:
    rol = segment(
        "ROL",
        {
            1: "1",
            2: "AD",
            3: "AT^Attending^HL70443",
            4: CARDIOLOGIST,
            5: "20240610083000+0200",
            6: "20240612180000+0200",
        },
    )
    deleted = segment("ROL", {1: "2", 2: "DE", 3: "CP^Consulting Provider^HL70443", 4: NURSE})
    bundle, _ = _one(converter, _adt("A01", rols_after_pv1=(rol, deleted)))
    [encounter] = resources(bundle, "Encounter")
    [cardio_id] = _practitioner_ids(bundle, "10100000002")
    [participant] = [
        p
        for p in encounter["participant"]
        if p["individual"]["reference"] == f"Practitioner/{cardio_id}"
    ]
    codings = participant["type"][0]["coding"]
    assert {"system": V3_PARTICIPATION, "code": "ATND", "display": "attender"} in codings
    assert any(c["system"] == V2_0443 and c["code"] == "AT" for c in codings)
    assert participant["period"] == {
        "start": "2024-06-10T08:30:00+02:00",
        "end": "2024-06-12T18:00:00+02:00",
    }
    assert _practitioner_ids(bundle, "10100000003") == []
    assert r4validator.validate(bundle) == []


def test_discharged_to_location_is_a_kind_of_place(
    converter: Converter, r4validator: R4Validator
) -> None:
    """PV1-37 `SNF^20240616` (v2.5 DLD: IS code ^ effective date)."""
    discharge = {36: "04", 37: "SNF^20240616", 45: "20240616110000+0200"}
    bundle, _ = _one(converter, _adt("A03", pv1=discharge))
    [encounter] = resources(bundle, "Encounter")
    destination = encounter["hospitalization"]["destination"]["reference"]
    [location] = [
        loc for loc in resources(bundle, "Location") if f"Location/{loc['id']}" == destination
    ]
    assert location["mode"] == "kind"
    assert location["type"] == [{"coding": [{"system": V2_0113, "code": "SNF"}]}]
    assert "partOf" not in location and "physicalType" not in location
    # Neither the code nor the date became a ward or a room of the hospital.
    places = [loc for loc in resources(bundle, "Location") if loc.get("mode") == "instance"]
    names = [loc.get("name") for loc in places]
    assert "SNF" not in names and "20240616" not in names
    assert r4validator.validate(bundle) == []


def test_discharged_to_location_v27_cwe(converter: Converter) -> None:
    """From v2.7 DLD.1 is a CWE, its parts sub-components; one destination code is one
    Location whatever the patient."""
    discharge = {37: "SNF&Skilled nursing facility&HL70113^20240616", 45: "20240616110000+0200"}
    first, _ = _one(converter, _adt("A03", pv1=discharge))
    other = _adt("A03", pv1={**discharge, 19: f"2024000888^^^{CHU}^VN"})
    second, _ = _one(converter, other.replace(b"0099887766", b"0099887700"))
    ids = []
    for bundle in (first, second):
        [encounter] = resources(bundle, "Encounter")
        ids.append(encounter["hospitalization"]["destination"]["reference"])
        [location] = [loc for loc in resources(bundle, "Location") if loc["mode"] == "kind"]
        assert location["name"] == "Skilled nursing facility"
        assert location["type"][0]["coding"][0] == {
            "system": V2_0113,
            "code": "SNF",
            "display": "Skilled nursing facility",
        }
    assert ids[0] == ids[1]


def test_procedure_minutes_give_the_performed_period(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG PR1[Procedure]: PR1-5 → performedPeriod.start and PR1-5 + PR1-7 minutes → end when
    PR1-7 is valued and PR1-5 is precise to the minute; else PR1-5 → performedDateTime."""
    data = _adt("A08")
    pr1 = "PR1|1||DZQM006^Echographie-doppler transthoracique^CCAM||{start}||{minutes}"
    head = data.decode().split("\r")[:-1]
    timed = message([*head, pr1.format(start="202406102330+0200", minutes="45")])
    bundle, _ = _one(converter, timed)
    [procedure] = resources(bundle, "Procedure")
    assert procedure["performedPeriod"] == {
        "start": "2024-06-10T23:30:00+02:00",
        "end": "2024-06-11T00:15:00+02:00",
    }
    assert "performedDateTime" not in procedure
    assert r4validator.validate(bundle) == []
    cases = (
        ("20240610", "45", "2024-06-10"),
        ("202406102330+0200", "", "2024-06-10T23:30:00+02:00"),
    )
    for start, minutes, expected in cases:
        untimed = message([*head, pr1.format(start=start, minutes=minutes)])
        bundle, _ = _one(converter, untimed)
        [procedure] = resources(bundle, "Procedure")
        assert procedure["performedDateTime"] == expected
        assert "performedPeriod" not in procedure


def test_name_and_address_validity_ranges_before_v25(converter: Converter) -> None:
    """IG XPN[HumanName] XPN.10 and XAD[Address] XAD.12 (DR start & end): the only dates a
    v2.3 / v2.4 name or address has; XPN.12/13 and XAD.13/14 win when valued."""
    pid = (
        "PID|1||0099887766^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||"
        "BERNARD^Louise^^^^^L^^^19990101&20231231~MARTIN^Louise^^^^^M^^^19900101&19981231^^20000101||19700402|F|||"
        "1 rue Mercière^^Lyon^^69002^FRA^H^^^^^20200101&20221231"
    )
    head = _adt("A08").decode().split("\r")[:-1]
    data = message([pid if line.startswith("PID|") else line for line in head])
    bundle, _ = _one(converter, data)
    [patient] = resources(bundle, "Patient")
    assert [n.get("period") for n in patient["name"]] == [
        {"start": "1999-01-01", "end": "2023-12-31"},
        {"start": "2000-01-01"},
    ]
    assert patient["address"][0]["period"] == {"start": "2020-01-01", "end": "2022-12-31"}


def test_guarantor_in_adt_is_warned(converter: Converter) -> None:
    data = _adt("A01")
    gt1 = "GT1|1||BERNARD^Paul||1 rue Mercière^^Lyon^^69002^FRA^H|||||SPO"
    bundle, warnings = _one(converter, message([*data.decode().split("\r")[:-1], gt1]))
    assert any(w.startswith("GT1 (guarantor) is not converted") for w in warnings)
    related = resources(bundle, "RelatedPerson")
    assert not [p for p in related if p.get("name", [{}])[0].get("given") == ["Paul"]]


def test_empty_parts_do_not_refuse_the_admission(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A PL naming only a building and floor, an XCN naming nobody, a blank AL1-5
    repetition: each used to leave a required element empty (Encounter.location.location,
    Procedure.performer.actor, AllergyIntolerance.reaction.manifestation), and the whole
    message was refused (BundleValidationError, AE)."""
    data = _adt("A01", pv1={3: "^^^^^^BAT-A^2", 6: "^^^^^^^^Ancienne chambre"})
    extra = [
        "AL1|1|DA^Allergie médicamenteuse^HL70127|764146007^Pénicilline^SCT|SV|Urticaire~ ",
        "PR1|1||DZQM006^Echographie^CCAM||20240610093000+0200|||^^^^^^^^ASIP-SANTE-PS|||"
        + CARDIOLOGIST,
    ]
    bundle, _ = _one(converter, message([*data.decode().split("\r")[:-1], *extra]))
    [encounter] = resources(bundle, "Encounter")
    assert "location" not in encounter
    [allergy] = resources(bundle, "AllergyIntolerance")
    assert [r["manifestation"] for r in allergy["reaction"]] == [[{"text": "Urticaire"}]]
    [procedure] = resources(bundle, "Procedure")
    [cardio_id] = _practitioner_ids(bundle, "10100000002")
    assert procedure["performer"] == [
        {
            "function": {"coding": [{"system": SNOMED, "code": "304292004", "display": "Surgeon"}]},
            "actor": {"reference": f"Practitioner/{cardio_id}"},
        }
    ]
    assert r4validator.validate(bundle) == []


def test_admission_and_discharge_on_the_server(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """An A01 with the patient's ROL PP and a visit ROL, then two patients' A03 to the same
    kind of place: the Encounter finished with its discharge destination,
    the GP on the Patient (until the A03, which names none, replaces it: see "Updates
    replace whole resources"), one `kind` Location for both discharges."""
    fhir_server.reset()
    visit_rol = segment("ROL", {1: "1", 2: "AD", 3: "AT^Attending^HL70443", 4: NURSE})
    patient_rol = segment("ROL", {1: "2", 2: "AD", 3: PP, 4: CARDIOLOGIST})
    admitted, _ = _one(
        converter, _adt("A01", rols_after_pid=(patient_rol,), rols_after_pv1=(visit_rol,))
    )
    fhir_server.transact(admitted)
    [patient] = resources(admitted, "Patient")
    stored_patient = fhir_server.read("Patient", patient["id"])
    assert stored_patient is not None
    gps = {ref["reference"] for ref in stored_patient["generalPractitioner"]}
    assert {f"Practitioner/{i}" for i in _practitioner_ids(admitted, "10100000002")} <= gps
    discharge = {37: "SNF^20240616", 45: "20240616110000+0200"}
    first, _ = _one(converter, _adt("A03", pv1=discharge))
    other = _adt("A03", pv1={**discharge, 19: f"2024000888^^^{CHU}^VN"})
    second, _ = _one(converter, other.replace(b"0099887766", b"0099887700"))
    for bundle in (first, second):
        fhir_server.transact(bundle)
    [encounter] = resources(admitted, "Encounter")
    stored = fhir_server.read("Encounter", encounter["id"])
    assert stored is not None and stored["status"] == "finished"
    destination = stored["hospitalization"]["destination"]["reference"]
    place = fhir_server.read("Location", destination.split("/")[1])
    assert place is not None and place["mode"] == "kind"
    kinds = [
        e["resource"]
        for e in fhir_server.search("Location", _count="100").get("entry", [])
        if e["resource"].get("mode") == "kind"
    ]
    assert len(kinds) == 1


def test_nameless_contacts_stay_apart(converter: Converter) -> None:
    """Two NK1 without NK1-2 (a spouse's and a mother's phone only) were one RelatedPerson
    holding both phones: the mother's number filed under the spouse."""
    data = _adt("A01")
    nk1s = [
        "NK1|1||SPO^Conjoint^HL70063||+33 6 11 11 11 11",
        "NK1|2||MTH^Mère^HL70063||+33 6 22 22 22 22",
    ]
    bundle, _ = _one(converter, message([*data.decode().split("\r")[:-1], *nk1s]))
    found = {
        person["relationship"][0]["coding"][-1]["code"]: [t["value"] for t in person["telecom"]]
        for person in resources(bundle, "RelatedPerson")
    }
    assert found == {"SPO": ["+33 6 11 11 11 11"], "MTH": ["+33 6 22 22 22 22"]}
    # A named contact keeps its identity: the patient and the name.
    named, _ = _one(
        converter,
        message([*data.decode().split("\r")[:-1], "NK1|1|BERNARD^Paul|SPO^Conjoint^HL70063"]),
    )
    renamed, _ = _one(
        converter,
        message([*data.decode().split("\r")[:-1], "NK1|1|BERNARD^Paul|FTH^Père^HL70063"]),
    )
    assert (
        resources(named, "RelatedPerson")[0]["id"] == resources(renamed, "RelatedPerson")[0]["id"]
    )
