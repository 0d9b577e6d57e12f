"""Result times, problems without a code, and medication repeat counts.

* A Result (or Vital Sign) Observation without an effectiveTime of its own took place
  at its organizer's time (the organizer's time spans its results, C-CDA on FHIR,
  Results). Before, its Observation had no effective[x]: a "results of the last 30 days"
  query never found it, and a vital sign without one breaks R4's vital signs profile.
* A Problem Observation whose value is only a nullFlavor (``<value xsi:type="CD"
  nullFlavor="UNK"/>``) gave a Condition without code: a problem list entry saying
  nothing. It now keeps the value's originalText, else the observation's text, as
  code.text; with neither it is the DataAbsentReason concept (US Core, Missing Data:
  extensible binding, neither text nor code), its code from the nullFlavor.
* repeatNumber: a Medication Activity's own counts the administrations allowed (C-CDA
  CONF:1098-7555: "3" = up to 3 times) → dosageInstruction.timing.repeat.count; in EVN
  mood it is a rank, dropped with a warning. The Supply Order's counts every fill, the
  first included → numberOfRepeatsAllowed = value - 1 (IG, Medications); a range gives
  its high - 1, a nullFlavor nothing.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

SNOMED = "2.16.840.1.113883.6.96"
LOINC = "2.16.840.1.113883.6.1"
RESULTS = "2.16.840.1.113883.10.20.22.2.3.1"
VITALS = "2.16.840.1.113883.10.20.22.2.4.1"
PROBLEMS = "2.16.840.1.113883.10.20.22.2.5.1"
MEDICATIONS = "2.16.840.1.113883.10.20.22.2.1.1"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def _observation(template: str, extension: str, code: str, time: str, value: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{template}" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.61" extension="{extension}"/>'
        f'<code code="{code}" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f"{time}{value}</observation></component>"
    )


def _organizer(template: str, time: str, components: str) -> str:
    return (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        f'<templateId root="{template}" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.60" extension="PANEL-1"/>'
        f'<code code="57021-8" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f"{time}{components}</organizer></entry>"
    )


def _by_code(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["code"]["coding"][0]["code"]: r for r in resources_of(bundle, "Observation")}


def test_a_result_without_a_time_takes_its_organizers(r4validator: R4Validator) -> None:
    hemoglobin = _observation(
        "2.16.840.1.113883.10.20.22.4.2",
        "HB",
        "718-7",
        "",
        '<value xsi:type="PQ" value="13.2" unit="g/dL"/>',
    )
    unknown_time = _observation(
        "2.16.840.1.113883.10.20.22.4.2",
        "PLT",
        "777-3",
        '<effectiveTime nullFlavor="UNK"/>',
        '<value xsi:type="PQ" value="250" unit="10*3/uL"/>',
    )
    own_time = _observation(
        "2.16.840.1.113883.10.20.22.4.2",
        "WBC",
        "6690-2",
        '<effectiveTime value="20240310091500+0100"/>',
        '<value xsi:type="PQ" value="6.1" unit="10*3/uL"/>',
    )
    period = (
        '<effectiveTime><low value="20240310083000+0100"/>'
        '<high value="20240310093000+0100"/></effectiveTime>'
    )
    body = section(
        RESULTS,
        "30954-2",
        _organizer("2.16.840.1.113883.10.20.22.4.1", period, hemoglobin + unknown_time + own_time),
    )
    bundle, _ = convert_document(cda(body=body))
    by_code = _by_code(bundle)
    organizer_time = {"start": "2024-03-10T08:30:00+01:00", "end": "2024-03-10T09:30:00+01:00"}
    assert by_code["718-7"]["effectivePeriod"] == organizer_time
    assert by_code["777-3"]["effectivePeriod"] == organizer_time
    # An observation's own time still wins over its organizer's.
    assert by_code["6690-2"]["effectiveDateTime"] == "2024-03-10T09:15:00+01:00"
    assert "effectivePeriod" not in by_code["6690-2"]
    [report] = resources_of(bundle, "DiagnosticReport")
    assert report["effectivePeriod"] == organizer_time
    assert r4validator.validate(bundle) == []


def test_a_vital_sign_without_a_time_takes_its_organizers(r4validator: R4Validator) -> None:
    weight = _observation(
        "2.16.840.1.113883.10.20.22.4.27",
        "W",
        "29463-7",
        "",
        '<value xsi:type="PQ" value="70" unit="kg"/>',
    )
    systolic = _observation(
        "2.16.840.1.113883.10.20.22.4.27",
        "SYS",
        "8480-6",
        "",
        '<value xsi:type="PQ" value="120" unit="mm[Hg]"/>',
    )
    diastolic = _observation(
        "2.16.840.1.113883.10.20.22.4.27",
        "DIA",
        "8462-4",
        "",
        '<value xsi:type="PQ" value="80" unit="mm[Hg]"/>',
    )
    body = section(
        VITALS,
        "8716-3",
        _organizer(
            "2.16.840.1.113883.10.20.22.4.26",
            '<effectiveTime value="20240311080000+0100"/>',
            weight + systolic + diastolic,
        ),
    )
    bundle, _ = convert_document(cda(body=body))
    by_code = _by_code(bundle)
    assert by_code["29463-7"]["effectiveDateTime"] == "2024-03-11T08:00:00+01:00"
    assert by_code["85354-9"]["effectiveDateTime"] == "2024-03-11T08:00:00+01:00"
    assert r4validator.validate(bundle) == []


def _problem(extension: str, value: str, text: str = "") -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.62" extension="C{extension}"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<effectiveTime><low value="20230101"/></effectiveTime>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.62" extension="{extension}"/>'
        f'<code code="55607006" codeSystem="{SNOMED}" displayName="Problem"/>{text}'
        '<statusCode code="completed"/><effectiveTime><low value="20230101"/></effectiveTime>'
        f"{value}</observation></entryRelationship></act></entry>"
    )


def test_a_problem_whose_value_is_a_null_flavor_keeps_a_code(r4validator: R4Validator) -> None:
    body = section(
        PROBLEMS,
        "11450-4",
        _problem("UNK", '<value xsi:type="CD" nullFlavor="UNK"/>')
        + _problem("MSK", '<value xsi:type="CD" nullFlavor="MSK"/>')
        + _problem(
            "NI-TEXT",
            '<value xsi:type="CD" nullFlavor="NI">'
            "<originalText>Chronic fatigue, cause not found</originalText></value>",
        )
        + _problem(
            "NI-NARRATIVE",
            '<value xsi:type="CD" nullFlavor="NI"/>',
            '<text><reference value="#p1"/></text>',
        ),
        text='<paragraph ID="p1">Recurrent dizziness</paragraph>',
    )
    bundle, warnings = convert_document(cda(body=body))
    codes = {c["identifier"][0]["value"]: c.get("code") for c in resources_of(bundle, "Condition")}
    assert codes == {
        "UNK": {"coding": [{"system": DAR, "code": "unknown"}]},
        "MSK": {"coding": [{"system": DAR, "code": "masked"}]},
        "NI-TEXT": {"text": "Chronic fatigue, cause not found"},
        "NI-NARRATIVE": {"text": "Recurrent dizziness"},
    }
    assert len([w for w in warnings if "Condition.code is data-absent" in w]) == 2
    assert r4validator.validate(bundle) == []


def _medication(extension: str, mood: str, repeat: str = "", supply: str = "") -> str:
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="{mood}">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.63" extension="{extension}"/>'
        '<statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20240301"/></effectiveTime>'
        f"{repeat}"
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        '<manufacturedMaterial><code code="197361" codeSystem="2.16.840.1.113883.6.88" '
        'displayName="amlodipine 5 MG Oral Tablet"/></manufacturedMaterial>'
        f"</manufacturedProduct></consumable>{supply}</substanceAdministration></entry>"
    )


def _supply_order(repeat: str) -> str:
    return (
        '<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="INT">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.17" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.64"/><statusCode code="completed"/>'
        f'{repeat}<quantity value="30"/></supply></entryRelationship>'
    )


def test_repeat_numbers_of_a_medication_and_its_supply_order(r4validator: R4Validator) -> None:
    body = section(
        MEDICATIONS,
        "10160-0",
        _medication("COUNT", "INT", '<repeatNumber value="3"/>')
        + _medication(
            "COUNT-RANGE", "INT", '<repeatNumber><low value="2"/><high value="6"/></repeatNumber>'
        )
        + _medication("RANK", "EVN", '<repeatNumber value="2"/>')
        + _medication("FILLS", "INT", supply=_supply_order('<repeatNumber value="4"/>'))
        + _medication(
            "FILLS-RANGE",
            "INT",
            supply=_supply_order('<repeatNumber><low value="1"/><high value="6"/></repeatNumber>'),
        )
        + _medication("FILLS-UNK", "INT", supply=_supply_order('<repeatNumber nullFlavor="UNK"/>')),
    )
    bundle, warnings = convert_document(cda(body=body))
    requests = {r["identifier"][0]["value"]: r for r in resources_of(bundle, "MedicationRequest")}

    def repeat(key: str) -> dict[str, Any]:
        timing: dict[str, Any] = requests[key]["dosageInstruction"][0]["timing"]
        return {k: v for k, v in timing["repeat"].items() if k.startswith("count")}

    def repeats(key: str) -> Any:
        return requests[key].get("dispenseRequest", {}).get("numberOfRepeatsAllowed")

    # The activity's own repeatNumber: administrations allowed, never refills.
    assert repeat("COUNT") == {"count": 3}
    assert repeat("COUNT-RANGE") == {"count": 2, "countMax": 6}
    assert repeat("RANK") == {}
    assert [w for w in warnings if "repeatNumber of an administration event" in w]
    assert [repeats(key) for key in ("COUNT", "COUNT-RANGE", "RANK")] == [None, None, None]
    # The Supply Order's: every fill, the first included.
    assert [repeats(key) for key in ("FILLS", "FILLS-RANGE", "FILLS-UNK")] == [3, 5, None]
    assert [repeat(key) for key in ("FILLS", "FILLS-RANGE", "FILLS-UNK")] == [{}, {}, {}]
    assert r4validator.validate(bundle) == []
