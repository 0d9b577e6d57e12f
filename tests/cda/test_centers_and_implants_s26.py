"""Session 26: IVL_TS centers, and the patient of a Product Instance.

- An effectiveTime given only as ``<center value="…"/>`` (an IVL_TS centred on a moment,
  without low, high or @value) was read by ServiceRequest and Procedure only. A Medical
  Equipment supply's DeviceUseStatement had no timing, an Encounter Activity no period
  (and the status unknown), a Goal no startDate, a Result Observation took its
  organizer's span instead of its own moment, and a Result Organizer (DiagnosticReport)
  had no effective time. Each now reads the center as the point in time it is (as
  @value).
- A Product Instance (a procedure's focal device: an implant; a supplied device) wrote a
  Device without ``patient``: the implant of a restricted document stayed unlabelled
  (converter/assembly/confidentiality.py labels a Device by its patient). It now names
  the document's Patient, and its identity holds the patient (two patients' documents
  reusing a device id no longer share a Device naming one of them). The document's
  authoring device (software) names no patient and stays unlabelled.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

SNOMED = "2.16.840.1.113883.6.96"
LOINC = "2.16.840.1.113883.6.1"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CENTER = '<effectiveTime xsi:type="IVL_TS"><center value="20240305101500+0100"/></effectiveTime>'
MOMENT = "2024-03-05T10:15:00+01:00"


def _one(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    [resource] = resources_of(bundle, kind)
    return resource


def _convert_valid(body: str, r4validator: R4Validator, **kwargs: str) -> dict[str, Any]:
    bundle, warnings = convert_document(cda(body=body, **kwargs))
    assert warnings == ()
    assert r4validator.validate(bundle) == []
    return bundle


# -- centers ------------------------------------------------------------------------------
def _supply(time: str) -> str:
    return (
        '<entry><supply classCode="SPLY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.50" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.26" extension="SUP-1"/><statusCode code="completed"/>'
        f'{time}<quantity value="1"/>'
        '<participant typeCode="PRD"><participantRole classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.37"/>'
        '<id root="1.2.250.1.999.27" extension="CANE-1"/>'
        f'<playingDevice><code code="87405001" codeSystem="{SNOMED}" displayName="Cane"/>'
        "</playingDevice></participantRole></participant></supply></entry>"
    )


def test_a_supply_centred_on_a_moment_is_timed_then(r4validator: R4Validator) -> None:
    equipment = ("2.16.840.1.113883.10.20.22.2.23", "46264-8")
    bundle = _convert_valid(section(*equipment, _supply(CENTER)), r4validator)
    statement = _one(bundle, "DeviceUseStatement")
    assert statement["timingDateTime"] == MOMENT
    assert "timingPeriod" not in statement


def _encounter(time: str) -> str:
    return (
        '<entry><encounter classCode="ENC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.49" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.26" extension="ENC-1"/>'
        '<code code="AMB" codeSystem="2.16.840.1.113883.5.4" displayName="ambulatory"/>'
        f"{time}</encounter></entry>"
    )


def test_an_encounter_centred_on_a_moment_took_place_then(r4validator: R4Validator) -> None:
    """A center is the moment the encounter took place, read as a single @value: the
    period's start (C-CDA on FHIR IG, Encounters: @value → period.start; session 27
    aligned the center with it) and the encounter finished."""
    encounters = ("2.16.840.1.113883.10.20.22.2.22.1", "46240-8")
    bundle = _convert_valid(section(*encounters, _encounter(CENTER)), r4validator)
    encounter = _one(bundle, "Encounter")
    assert encounter["period"] == {"start": MOMENT}
    assert encounter["status"] == "finished"
    # low/high are read as before.
    span = '<effectiveTime><low value="20240305"/><high value="20240306"/></effectiveTime>'
    bundle = _convert_valid(section(*encounters, _encounter(span)), r4validator)
    assert _one(bundle, "Encounter")["period"] == {"start": "2024-03-05", "end": "2024-03-06"}


def _goal(time: str) -> str:
    return (
        '<entry><observation classCode="OBS" moodCode="GOL">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.121"/>'
        '<id root="1.2.250.1.999.26" extension="GOAL-1"/>'
        f'<code code="29463-7" codeSystem="{LOINC}" displayName="Body weight"/>'
        f'<statusCode code="active"/>{time}'
        '<value xsi:type="PQ" value="70" unit="kg"/></observation></entry>'
    )


def test_a_goal_centred_on_a_moment_starts_then(r4validator: R4Validator) -> None:
    goals = ("2.16.840.1.113883.10.20.22.2.60", "61146-7")
    bundle = _convert_valid(section(*goals, _goal(CENTER)), r4validator)
    goal = _one(bundle, "Goal")
    assert goal["startDate"] == "2024-03-05"
    assert goal["target"][0]["detailQuantity"]["value"] == 70
    assert "dueDate" not in goal["target"][0]


def _result(extension: str, code: str, time: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.2" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.26" extension="{extension}"/>'
        f'<code code="{code}" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f'{time}<value xsi:type="PQ" value="13.2" unit="g/dL"/></observation></component>'
    )


def _organizer(time: str, components: str) -> str:
    return (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.1" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.26" extension="PANEL-1"/>'
        f'<code code="57021-8" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f"{time}{components}</organizer></entry>"
    )


def test_an_observation_centred_on_a_moment_is_effective_then(
    r4validator: R4Validator,
) -> None:
    """A result's own center wins over its organizer's span (it is a time of its own);
    an organizer centred on a moment is its report's effective time."""
    results = ("2.16.840.1.113883.10.20.22.2.3.1", "30954-2")
    span = (
        '<effectiveTime><low value="20240305080000+0100"/>'
        '<high value="20240305120000+0100"/></effectiveTime>'
    )
    organizer = _organizer(span, _result("HB", "718-7", CENTER) + _result("PLT", "777-3", ""))
    bundle = _convert_valid(section(*results, organizer), r4validator)
    by_code = {o["code"]["coding"][0]["code"]: o for o in resources_of(bundle, "Observation")}
    assert by_code["718-7"]["effectiveDateTime"] == MOMENT
    assert "effectivePeriod" not in by_code["718-7"]
    # A result without a time still takes its organizer's.
    assert by_code["777-3"]["effectivePeriod"] == {
        "start": "2024-03-05T08:00:00+01:00",
        "end": "2024-03-05T12:00:00+01:00",
    }
    centred = _organizer(CENTER, _result("HB", "718-7", ""))
    bundle = _convert_valid(section(*results, centred), r4validator)
    assert _one(bundle, "DiagnosticReport")["effectiveDateTime"] == MOMENT
    assert _one(bundle, "Observation")["effectiveDateTime"] == MOMENT


def test_a_report_without_a_time_spans_its_results_centers(r4validator: R4Validator) -> None:
    """An organizer without a time spans its results' times: a center is one of them."""
    results = ("2.16.840.1.113883.10.20.22.2.3.1", "30954-2")
    later = '<effectiveTime><center value="20240305111500+0100"/></effectiveTime>'
    organizer = _organizer("", _result("HB", "718-7", CENTER) + _result("PLT", "777-3", later))
    bundle = _convert_valid(section(*results, organizer), r4validator)
    assert _one(bundle, "DiagnosticReport")["effectivePeriod"] == {
        "start": MOMENT,
        "end": "2024-03-05T11:15:00+01:00",
    }


# -- the patient of a product instance ------------------------------------------------------
PROCEDURES = ("2.16.840.1.113883.10.20.22.2.7.1", "47519-4")
DEVICE_AUTHOR = (
    '<author><time value="20240305"/><assignedAuthor>'
    '<id root="1.2.250.1.999.14" extension="EHR"/>'
    "<assignedAuthoringDevice><manufacturerModelName>QA EHR</manufacturerModelName>"
    "<softwareName>QA EHR 1.0</softwareName></assignedAuthoringDevice>"
    "</assignedAuthor></author>"
)


def _implant(udi: str = "(01)51022222233336(21)S26") -> str:
    """A pacemaker implantation, its device a Product Instance (4.37), written by an EHR."""
    return (
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.26" extension="PROC-1"/>'
        f'<code code="307280005" codeSystem="{SNOMED}" '
        'displayName="Implantation of cardiac pacemaker"/>'
        f'<statusCode code="completed"/><effectiveTime value="20240305"/>{DEVICE_AUTHOR}'
        '<participant typeCode="DEV"><participantRole classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.37"/>'
        f'<id root="2.16.840.1.113883.3.3719" extension="{udi}"/>'
        f'<playingDevice><code code="14106009" codeSystem="{SNOMED}" '
        'displayName="Cardiac pacemaker"/></playingDevice>'
        "</participantRole></participant></procedure></entry>"
    )


def _split_devices(bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the implant, the authoring device)."""
    devices = resources_of(bundle, "Device")
    [implant] = [d for d in devices if d.get("udiCarrier")]
    [software] = [d for d in devices if d is not implant]
    return implant, software


def test_an_implant_is_the_patient_s_device(r4validator: R4Validator) -> None:
    bundle = _convert_valid(section(*PROCEDURES, _implant()), r4validator)
    patient = _one(bundle, "Patient")
    implant, software = _split_devices(bundle)
    assert implant["patient"]["reference"].endswith(patient["id"])
    assert "patient" not in software
    procedure = _one(bundle, "Procedure")
    assert procedure["focalDevice"][0]["manipulated"]["reference"].endswith(implant["id"])
    # A supplied device (Medical Equipment) is the patient's too.
    equipment = ("2.16.840.1.113883.10.20.22.2.23", "46264-8")
    bundle = _convert_valid(section(*equipment, _supply("")), r4validator)
    patient = _one(bundle, "Patient")
    assert _one(bundle, "Device")["patient"]["reference"].endswith(patient["id"])


def test_the_implant_of_a_restricted_document_is_labelled(r4validator: R4Validator) -> None:
    normal = '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>'
    document = cda(body=section(*PROCEDURES, _implant()))
    assert normal in document
    restricted = document.replace(normal, normal.replace('"N"', '"R"'))
    bundle, warnings = convert_document(restricted)
    assert warnings == ()
    assert r4validator.validate(bundle) == []
    implant, software = _split_devices(bundle)
    assert implant["meta"]["security"] == [{"system": V3, "code": "R", "display": "restricted"}]
    # The authoring software is shared: no patient, no label.
    assert "security" not in software.get("meta", {})
    # A normal document labels nothing.
    bundle, _ = convert_document(document)
    implant, _ = _split_devices(bundle)
    assert "security" not in implant.get("meta", {})


def test_two_patients_reusing_a_device_id_have_two_devices() -> None:
    """The identity holds the patient: one Device naming the last patient was shared."""
    first, _ = convert_document(cda(body=section(*PROCEDURES, _implant("DEV-REUSED"))))
    other_patient = cda(body=section(*PROCEDURES, _implant("DEV-REUSED"))).replace(
        'extension="IPP0001"', 'extension="IPP0002"'
    )
    second, _ = convert_document(other_patient)
    mine, theirs = _split_devices(first)[0], _split_devices(second)[0]
    assert mine["id"] != theirs["id"]
    assert mine["patient"] != theirs["patient"]
