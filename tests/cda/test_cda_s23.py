"""Session 23: observation values that carry nothing; times compared as instants.

An observation ``<value>`` without a value (``<value xsi:type="ST"/>``, a PQ with a unit
and no number, a CD without code, text or translation, an empty IVL_PQ, BL, REAL, RTO or
ED) gave an Observation with neither value[x] nor dataAbsentReason: a reader could not
tell "the result is missing" from "the converter lost it", and US Core (us-core-2) wants
one of the two. Such a value now gives ``dataAbsentReason`` (FHIR obs-6: only without a
value[x]), its code from the value's nullFlavor through the code map
``CdaNullFlavorDataAbsentReason`` (the C-CDA on FHIR ConceptMap
CF-NullFlavorDataAbsentReason, one data file for every place a nullFlavor becomes a
data-absent-reason), ``unknown`` without one (with a warning), ``unsupported`` for content of
a type no value[x] holds. A CD with a nullFlavor and an originalText keeps the text.

Timestamps compared as instants: a Result Organizer without a time spanned its results
by their wall clocks (results sent in two offsets gave a report starting at the later
one, whose end assembly dropped), and the latest / earliest author (recorder,
recordedDate, authoredOn, Provenance.recorded…) was chosen the same way.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DAR_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
RESULTS = ("2.16.840.1.113883.10.20.22.2.3.1", "30954-2")
VITALS = ("2.16.840.1.113883.10.20.22.2.4.1", "8716-3")
SOCIAL = ("2.16.840.1.113883.10.20.22.2.17", "29762-2")
FUNCTIONAL = ("2.16.840.1.113883.10.20.22.2.14", "47420-5")
MENTAL = ("2.16.840.1.113883.10.20.22.2.56", "10190-7")
PROBLEMS = ("2.16.840.1.113883.10.20.22.2.5.1", "11450-4")


def _observation(key: str, template: str, value: str, code: str = "2345-7") -> str:
    return (
        '<observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{template}" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.23" extension="{key}"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        '<statusCode code="completed"/><effectiveTime value="20240301103000+0100"/>'
        f"{value}</observation>"
    )


def _entry(key: str, template: str, value: str, code: str = "2345-7") -> str:
    return f"<entry>{_observation(key, template, value, code)}</entry>"


def _by_id(bundle: dict[str, Any], kind: str = "Observation") -> dict[str, dict[str, Any]]:
    return {
        identifier["value"]: resource
        for resource in resources_of(bundle, kind)
        for identifier in resource.get("identifier", [])
    }


def _value(resource: dict[str, Any]) -> dict[str, Any]:
    """The value[x] and dataAbsentReason members of an Observation (or component)."""
    return {
        k: v
        for k, v in resource.items()
        if k.startswith("value") or k in ("dataAbsentReason", "extension")
    }


def _absent(code: str) -> dict[str, Any]:
    return {"dataAbsentReason": {"coding": [{"system": DAR, "code": code}]}}


#: value XML → the Observation's value[x] / dataAbsentReason.
EMPTY_VALUES = {
    "PQ-UNK": ('<value xsi:type="PQ" nullFlavor="UNK"/>', _absent("unknown")),
    "PQ-unit-only": ('<value xsi:type="PQ" unit="mg"/>', _absent("unknown")),
    "PQ-unit-NAV": ('<value xsi:type="PQ" unit="mg" nullFlavor="NAV"/>', _absent("temp-unknown")),
    "ST-empty": ('<value xsi:type="ST"/>', _absent("unknown")),
    "ST-blank": ('<value xsi:type="ST">  </value>', _absent("unknown")),
    "ST-MSK": ('<value xsi:type="ST" nullFlavor="MSK"/>', _absent("masked")),
    "CD-empty": ('<value xsi:type="CD"/>', _absent("unknown")),
    "CD-ASKU": ('<value xsi:type="CD" nullFlavor="ASKU"/>', _absent("asked-unknown")),
    "CD-OTH-empty-text": (
        '<value xsi:type="CD" nullFlavor="OTH"><originalText/></value>',
        _absent("unsupported"),
    ),
    "CD-OTH-text": (
        '<value xsi:type="CD" nullFlavor="OTH"><originalText>Traces</originalText></value>',
        {"valueCodeableConcept": {"text": "Traces"}},
    ),
    "CD-OTH-reference": (
        '<value xsi:type="CD" nullFlavor="OTH"><originalText><reference value="#t1"/>'
        "</originalText></value>",
        {"valueCodeableConcept": {"text": "Narrative text"}},
    ),
    "IVL_PQ-empty": (
        '<value xsi:type="IVL_PQ"><low nullFlavor="NI"/><high nullFlavor="NI"/></value>',
        _absent("unknown"),
    ),
    "INT-NI": ('<value xsi:type="INT" nullFlavor="NI"/>', _absent("unknown")),
    "REAL-empty": ('<value xsi:type="REAL"/>', _absent("unknown")),
    "BL-empty": ('<value xsi:type="BL"/>', _absent("unknown")),
    "TS-NA": ('<value xsi:type="TS" nullFlavor="NA"/>', _absent("not-applicable")),
    "IVL_TS-empty": (
        '<value xsi:type="IVL_TS"><low nullFlavor="UNK"/></value>',
        _absent("unknown"),
    ),
    "RTO-empty": (
        '<value xsi:type="RTO_PQ_PQ"><numerator nullFlavor="NI"/>'
        '<denominator nullFlavor="NI"/></value>',
        _absent("unknown"),
    ),
    "RTO-half": (
        '<value xsi:type="RTO_PQ_PQ"><numerator value="1"/></value>',
        _absent("unsupported"),
    ),
    "ED-empty": ('<value xsi:type="ED"/>', _absent("unknown")),
    "II": ('<value xsi:type="II" root="1.2.3" extension="42"/>', _absent("unsupported")),
    # What has a value keeps it.
    "PQ": (
        '<value xsi:type="PQ" value="5.40" unit="mmol/L"/>',
        {
            "valueQuantity": {
                "value": Decimal("5.40"),
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            }
        },
    ),
    "ST": ('<value xsi:type="ST">positive</value>', {"valueString": "positive"}),
}


def _check(bundle: dict[str, Any], prefix: str) -> None:
    found = _by_id(bundle)
    for name, (_, expected) in EMPTY_VALUES.items():
        observation = found[f"{prefix}{name}"]
        assert _value(observation) == expected, name
        # obs-6: a dataAbsentReason only without a value.
        assert not (
            "dataAbsentReason" in observation and any(k.startswith("value") for k in observation)
        )


def test_results_without_a_value_say_why(r4validator: R4Validator) -> None:
    entries = "".join(
        _entry(f"R-{name}", "2.16.840.1.113883.10.20.22.4.2", xml)
        for name, (xml, _) in EMPTY_VALUES.items()
    )
    text = '<paragraph ID="t1">Narrative text</paragraph>'
    bundle, warnings = convert_document(cda(body=section(*RESULTS, entries, text=text)))
    _check(bundle, "R-")
    # A value without nullFlavor breaks C-CDA: said, with its location and no content.
    [warning] = [w for w in warnings if "entry[2]/" in w]
    assert warning.endswith(
        "entry[2]/observation/value: value of type PQ without a value or a nullFlavor; "
        "dataAbsentReason unknown"
    )
    assert not [w for w in warnings if "entry[1]/" in w]  # UNK says it all
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize(
    ("where", "template"),
    [
        (SOCIAL, "2.16.840.1.113883.10.20.22.4.38"),
        (FUNCTIONAL, "2.16.840.1.113883.10.20.22.4.67"),
        (MENTAL, "2.16.840.1.113883.10.20.22.4.74"),
        (FUNCTIONAL, "2.16.840.1.113883.10.20.22.4.69"),
    ],
    ids=["social-history", "functional-status", "mental-status", "assessment-scale"],
)
def test_every_observation_section_says_why(
    where: tuple[str, str], template: str, r4validator: R4Validator
) -> None:
    entries = "".join(
        _entry(f"S-{name}", template, xml, code="11331-6")
        for name, (xml, _) in EMPTY_VALUES.items()
    )
    text = '<paragraph ID="t1">Narrative text</paragraph>'
    bundle, _ = convert_document(cda(body=section(*where, entries, text=text)))
    _check(bundle, "S-")
    assert r4validator.validate(bundle) == []


def test_vital_signs_and_blood_pressure_components_say_why(r4validator: R4Validator) -> None:
    vital = "2.16.840.1.113883.10.20.22.4.27"
    values = {
        "HR": ('<value xsi:type="PQ" unit="/min"/>', "8867-4"),
        "SYS": ('<value xsi:type="PQ" nullFlavor="NAV"/>', "8480-6"),
        "DIA": ('<value xsi:type="PQ" value="80" unit="mm[Hg]"/>', "8462-4"),
    }
    components = "".join(
        f"<component>{_observation(key, vital, value, code)}</component>"
        for key, (value, code) in values.items()
    )
    body = section(
        *VITALS,
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.26" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.23" extension="PANEL"/>'
        '<code code="46680005" codeSystem="2.16.840.1.113883.6.96"/>'
        '<statusCode code="completed"/><effectiveTime value="20240301103000+0100"/>'
        f"{components}</organizer></entry>",
    )
    bundle, _ = convert_document(cda(body=body))
    found = _by_id(bundle)
    assert _value(found["HR"]) == _absent("unknown")
    [pressure] = [o for o in resources_of(bundle, "Observation") if o.get("component")]
    systolic, diastolic = pressure["component"]
    assert _value(systolic) == _absent("temp-unknown")
    assert _value(diastolic)["valueQuantity"]["value"] == 80
    assert "dataAbsentReason" not in pressure  # the panel holds no value of its own
    assert r4validator.validate(bundle) == []


def test_a_problem_value_with_only_a_null_flavor_or_a_text() -> None:
    def problem(key: str, value: str) -> str:
        return (
            '<entry><act classCode="ACT" moodCode="EVN">'
            '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
            f'<id root="1.2.250.1.999.23" extension="ACT-{key}"/>'
            '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
            '<statusCode code="active"/><effectiveTime><low value="20240301"/></effectiveTime>'
            '<entryRelationship typeCode="SUBJ">'
            + _observation(key, "2.16.840.1.113883.10.20.22.4.4", value, code="55607006").replace(
                'codeSystem="2.16.840.1.113883.6.1"', 'codeSystem="2.16.840.1.113883.6.96"'
            )
            + "</entryRelationship></act></entry>"
        )

    body = section(
        *PROBLEMS,
        problem(
            "P-OTH",
            '<value xsi:type="CD" nullFlavor="OTH"><originalText>Vertiges</originalText></value>',
        )
        + problem("P-ASKU", '<value xsi:type="CD" nullFlavor="ASKU"/>'),
    )
    bundle, _ = convert_document(cda(body=body))
    found = _by_id(bundle, "Condition")
    assert found["P-OTH"]["code"] == {"text": "Vertiges"}
    assert found["P-ASKU"]["code"] == {"coding": [{"system": DAR, "code": "asked-unknown"}]}


def test_every_null_flavor_reason_comes_from_the_code_map(tmp_path: Path) -> None:
    """One data file decides: a deployment's copy of the map changes the observation
    value, the observation code, the problem code and the procedure time alike."""
    (tmp_path / "codemaps").mkdir()
    (tmp_path / "codemaps" / "CdaNullFlavorDataAbsentReason.csv").write_text(
        "source_code,source_system,target_code,target_display,target_system,comment\n"
        f"UNK,,asked-declined,Asked But Declined,{DAR},test\n",
        encoding="utf-8",
    )
    problem = _observation(
        "P", "2.16.840.1.113883.10.20.22.4.4", '<value xsi:type="CD" nullFlavor="UNK"/>'
    )
    body = (
        section(
            *RESULTS,
            _entry("V", "2.16.840.1.113883.10.20.22.4.2", '<value xsi:type="PQ" nullFlavor="UNK"/>')
            + _entry(
                "C", "2.16.840.1.113883.10.20.22.4.2", '<value xsi:type="ST">x</value>'
            ).replace(
                '<code code="2345-7" codeSystem="2.16.840.1.113883.6.1"/>',
                '<code nullFlavor="UNK"/>',
            ),
        )
        + section(
            *PROBLEMS,
            '<entry><act classCode="ACT" moodCode="EVN">'
            '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
            '<id root="1.2.250.1.999.23" extension="ACT"/>'
            '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
            f'<entryRelationship typeCode="SUBJ">{problem}</entryRelationship></act></entry>',
        )
        + section(
            "2.16.840.1.113883.10.20.22.2.7.1",
            "47519-4",
            '<entry><procedure classCode="PROC" moodCode="EVN">'
            '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
            '<id root="1.2.250.1.999.23" extension="PROC"/>'
            '<code code="80146002" codeSystem="2.16.840.1.113883.6.96"/>'
            '<statusCode code="completed"/><effectiveTime nullFlavor="UNK"/></procedure></entry>',
        )
    )
    xml = cda(body=body).encode()
    config = ConverterConfig(default_timezone="Europe/Paris", template_dirs=(tmp_path,))
    [conversion] = Converter(config).convert(xml, input_type="cda")
    bundle = conversion.bundle
    observations = _by_id(bundle)
    assert _value(observations["V"]) == _absent("asked-declined")
    assert observations["C"]["code"]["extension"] == [
        {"url": DAR_EXTENSION, "valueCode": "asked-declined"}
    ]
    [condition] = resources_of(bundle, "Condition")
    assert condition["code"]["coding"][0]["code"] == "asked-declined"
    [procedure] = resources_of(bundle, "Procedure")
    assert procedure["_performedDateTime"]["extension"][0]["valueCode"] == "asked-declined"
    # The built-in map: the C-CDA on FHIR ConceptMap.
    default, _ = convert_document(xml)
    assert _value(_by_id(default)["V"]) == _absent("unknown")


def _result(key: str, time: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.2" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.23" extension="{key}"/>'
        '<code code="2345-7" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<statusCode code="completed"/><effectiveTime value="{time}"/>'
        '<value xsi:type="PQ" value="5.4" unit="mmol/L"/></observation></component>'
    )


def test_a_report_without_time_spans_its_results_by_instant(r4validator: R4Validator) -> None:
    """A Result Organizer without effectiveTime takes the earliest and latest of its
    results (IG). Compared by their wall clocks, a result at 10:00+01:00 (09:00 UTC)
    came after one at 09:30-05:00 (14:30 UTC): the report started at the later one and
    assembly dropped the end that came before it (per-1)."""
    organizer = (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.1" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.23" extension="PANEL"/>'
        '<code code="24323-8" codeSystem="2.16.840.1.113883.6.1"/>'
        '<statusCode code="completed"/>'
        + _result("PARIS", "202403011000+0100")
        + _result("NEW-YORK", "202403010930-0500")
        + _result("UTC", "202403011200+0000")
        + "</organizer></entry>"
    )
    bundle, warnings = convert_document(cda(body=section(*RESULTS, organizer)))
    [report] = resources_of(bundle, "DiagnosticReport")
    assert report["effectivePeriod"] == {
        "start": "2024-03-01T10:00:00+01:00",
        "end": "2024-03-01T09:30:00-05:00",
    }
    assert not [w for w in warnings if "end dropped" in w]
    assert r4validator.validate(bundle) == []


def _author(time: str, key: str) -> str:
    return (
        f'<author><time value="{time}"/><assignedAuthor>'
        f'<id root="1.2.250.1.71.4.2.1" extension="{key}"/>'
        f"<assignedPerson><name><given>{key}</given><family>Auteur</family></name>"
        "</assignedPerson></assignedAuthor></author>"
    )


def _practitioner(bundle: dict[str, Any], reference: dict[str, str]) -> str:
    index = {f"{r['resourceType']}/{r['id']}": r for r in (e["resource"] for e in bundle["entry"])}
    value: str = index[reference["reference"]]["identifier"][0]["value"]
    return value


def test_authors_writing_utc_and_local_time_order_by_instant() -> None:
    """Author times were compared by their wall clocks: an author at 10:00+01:00 (09:00
    UTC) came after one at 09:30+00:00, so the later author became the recordedDate and
    the earlier one the recorder; the Provenance took the earlier time as recorded."""
    authors = _author("202403011000+0100", "PARIS") + _author("202403010930+0000", "UTC")
    problem = (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.23" extension="ACT"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.23" extension="PROBLEM"/>'
        '<code code="55607006" codeSystem="2.16.840.1.113883.6.96"/>'
        '<statusCode code="completed"/><effectiveTime><low value="20240101"/></effectiveTime>'
        '<value xsi:type="CD" code="38341003" codeSystem="2.16.840.1.113883.6.96"/>'
        f"{authors}</observation></entryRelationship></act></entry>"
    )
    bundle, _ = convert_document(cda(body=section(*PROBLEMS, problem)))
    [condition] = resources_of(bundle, "Condition")
    assert condition["recordedDate"] == "2024-03-01T10:00:00+01:00"  # the earliest
    assert _practitioner(bundle, condition["recorder"]) == "UTC"  # the latest
    [provenance] = [
        p
        for p in resources_of(bundle, "Provenance")
        if p["target"][0]["reference"].startswith("Condition/")
    ]
    assert provenance["recorded"] == "2024-03-01T09:30:00+00:00"
