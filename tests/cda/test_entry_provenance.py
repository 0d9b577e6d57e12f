"""Entry-level authors → Provenance (C-CDA on FHIR IG, Participations: author →
Provenance): one per resource made from an entry that has authors, targeting it, each
author an agent (type author) referencing the Practitioner(Role) / Device / Organization
the rest of the document uses for that person — one Practitioner per person."""

from __future__ import annotations

import json
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.r4validator import R4Validator

from ._support import cda, resources_of

#: The header author of _support.cda(): Bruno Auteur.
HEADER_AUTHOR_ID = '<id root="1.2.250.1.71.4.2.1" extension="10101234567"/>'


def author(time: str = "20240310", *, person: str = HEADER_AUTHOR_ID, org: str = "") -> str:
    return (
        f'<author><time value="{time}"/><assignedAuthor>{person}'
        "<assignedPerson><name><given>Bruno</given><family>Auteur</family></name></assignedPerson>"
        f"{org}</assignedAuthor></author>"
    )


def _section(template: str, code: str, entries: str) -> str:
    return (
        f'<component><section><templateId root="{template}"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/><title>{code}</title>'
        f"<text>{code}</text>{entries}</section></component>"
    )


def _problem(authors: str, act_authors: str = "") -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.13" extension="C1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
        f'<statusCode code="active"/>{act_authors}'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.13" extension="P1"/>'
        '<code code="55607006" codeSystem="2.16.840.1.113883.6.96"/><statusCode code="completed"/>'
        '<effectiveTime><low value="2020"/></effectiveTime>'
        '<value xsi:type="CD" code="38341003" codeSystem="2.16.840.1.113883.6.96"/>'
        f"{authors}</observation></entryRelationship></act></entry>"
    )


def _result(organizer_authors: str, observation_authors: str) -> str:
    return (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.1" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.13" extension="R1"/>'
        '<code code="57698-3" codeSystem="2.16.840.1.113883.6.1"/><statusCode code="completed"/>'
        f'<effectiveTime value="20240304"/>{organizer_authors}'
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.2" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.13" extension="R2"/>'
        '<code code="2093-3" codeSystem="2.16.840.1.113883.6.1"/><statusCode code="completed"/>'
        '<effectiveTime value="20240304"/><value xsi:type="PQ" value="1.9" unit="g/L"/>'
        f"{observation_authors}</observation></component></organizer></entry>"
    )


#: section → (section templateId, LOINC code, an entry with one author, the type of the
#: resource the entry gives).
SECTIONS = {
    "allergies": (
        "2.16.840.1.113883.10.20.22.2.6.1",
        "48765-2",
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.30" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.13" extension="A1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
        '<statusCode code="active"/><entryRelationship typeCode="SUBJ">'
        '<observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.7" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.13" extension="A2"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/><statusCode code="completed"/>'
        '<value xsi:type="CD" code="416098002" codeSystem="2.16.840.1.113883.6.96"/>'
        f"{author()}"
        '<participant typeCode="CSM"><participantRole classCode="MANU">'
        '<playingEntity classCode="MMAT">'
        '<code code="7980" codeSystem="2.16.840.1.113883.6.88"/></playingEntity></participantRole>'
        "</participant></observation></entryRelationship></act></entry>",
        "AllergyIntolerance",
    ),
    "problems": (
        "2.16.840.1.113883.10.20.22.2.5.1",
        "11450-4",
        _problem(author()),
        "Condition",
    ),
    "medications": (
        "2.16.840.1.113883.10.20.22.2.1.1",
        "10160-0",
        '<entry><substanceAdministration classCode="SBADM" moodCode="INT">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.13" extension="M1"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20240301"/></effectiveTime>'
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        '<manufacturedMaterial><code code="197361" codeSystem="2.16.840.1.113883.6.88"/>'
        f"</manufacturedMaterial></manufacturedProduct></consumable>{author()}"
        "</substanceAdministration></entry>",
        "MedicationRequest",
    ),
    "procedures": (
        "2.16.840.1.113883.10.20.22.2.7.1",
        "47519-4",
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.13" extension="PR1"/>'
        '<code code="73761001" codeSystem="2.16.840.1.113883.6.96"/><statusCode code="completed"/>'
        f'<effectiveTime value="20240301"/>{author()}</procedure></entry>',
        "Procedure",
    ),
    "results": (
        "2.16.840.1.113883.10.20.22.2.3.1",
        "30954-2",
        _result(author(), ""),
        "DiagnosticReport",
    ),
    "anesthesia": (
        "2.16.840.1.113883.10.20.22.2.25",
        "59774-0",
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.13" extension="AN1"/>'
        '<code code="50697003" codeSystem="2.16.840.1.113883.6.96"/><statusCode code="completed"/>'
        f'<effectiveTime value="20240301"/>{author()}</procedure></entry>',
        "Procedure",
    ),
}


def _convert(body: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    return conversion.bundle, conversion.warnings


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


@pytest.mark.parametrize("name", SECTIONS)
def test_an_entry_author_gives_a_provenance_of_the_entry_resource(
    name: str, r4validator: R4Validator
) -> None:
    template, code, entry, kind = SECTIONS[name]
    bundle, warnings = _convert(_section(template, code, entry))
    assert warnings == ()
    [target] = resources_of(bundle, kind)
    [provenance] = resources_of(bundle, "Provenance")
    assert provenance["target"] == [{"reference": _ref(target)}]
    assert provenance["recorded"] == "2024-03-10T00:00:00+01:00"  # the document's offset
    [agent] = provenance["agent"]
    assert agent["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
        "code": "author",
        "display": "Author",
    }
    # The header author and the entry author are one person: one Practitioner.
    [practitioner] = resources_of(bundle, "Practitioner")
    assert agent["who"] == {"reference": _ref(practitioner)}
    [composition] = resources_of(bundle, "Composition")
    assert composition["author"] == [{"reference": _ref(practitioner)}]
    assert r4validator.validate(bundle) == [], json.dumps(r4validator.validate(bundle)[:3])


def test_without_an_author_there_is_no_provenance() -> None:
    template, code, _, _ = SECTIONS["problems"]
    bundle, _ = _convert(_section(template, code, _problem("")))
    assert len(resources_of(bundle, "Condition")) == 1  # the entry is converted, unattributed
    assert resources_of(bundle, "Provenance") == []


def test_the_concern_act_authors_stand_in_for_an_observation_without_any() -> None:
    template, code, _, _ = SECTIONS["problems"]
    bundle, _ = _convert(_section(template, code, _problem("", act_authors=author("20240201"))))
    [condition] = resources_of(bundle, "Condition")
    [provenance] = resources_of(bundle, "Provenance")
    assert provenance["target"] == [{"reference": _ref(condition)}]
    assert provenance["recorded"] == "2024-02-01T00:00:00+01:00"


def test_several_authors_are_agents_of_one_provenance_recorded_at_the_latest() -> None:
    other = '<id root="1.2.250.1.71.4.2.1" extension="10109999999"/>'
    org = (
        '<representedOrganization><id root="1.2.250.1.71.4.2.2" extension="690012345"/>'
        "<name>Laboratoire QA</name></representedOrganization>"
    )
    authors = author("20240302101500+0100") + author("20240305", person=other, org=org)
    template, code, _, _ = SECTIONS["problems"]
    bundle, _ = _convert(_section(template, code, _problem(authors)))
    [provenance] = resources_of(bundle, "Provenance")
    assert provenance["recorded"] == "2024-03-05T00:00:00+01:00"
    first, second = provenance["agent"]
    assert first["who"]["reference"].startswith("Practitioner/") and "onBehalfOf" not in first
    # A person of an organization: their PractitionerRole, which names the organization.
    [organization] = [
        o for o in resources_of(bundle, "Organization") if o.get("name") == "Laboratoire QA"
    ]
    [role] = resources_of(bundle, "PractitionerRole")
    assert second["who"] == {"reference": _ref(role)}
    assert role["organization"] == {"reference": _ref(organization)}
    assert len(resources_of(bundle, "Practitioner")) == 2


def test_an_author_time_without_a_day_gives_the_document_time() -> None:
    template, code, _, _ = SECTIONS["problems"]
    bundle, warnings = _convert(_section(template, code, _problem(author("202403"))))
    assert warnings == ()
    [provenance] = resources_of(bundle, "Provenance")
    assert provenance["recorded"] == "2024-03-12T14:30:00+01:00"  # the document's effectiveTime


def test_a_device_author_is_the_device_on_behalf_of_its_organization() -> None:
    device = (
        '<author><time value="20240310"/><assignedAuthor>'
        '<id root="1.2.250.1.999.14" extension="EHR"/>'
        "<assignedAuthoringDevice><manufacturerModelName>QA EHR</manufacturerModelName>"
        "<softwareName>QA EHR 1.0</softwareName></assignedAuthoringDevice>"
        '<representedOrganization><id root="1.2.250.1.71.4.2.2" extension="690012345"/>'
        "<name>Clinique QA</name></representedOrganization></assignedAuthor></author>"
    )
    template, code, _, _ = SECTIONS["problems"]
    bundle, _ = _convert(_section(template, code, _problem(device)))
    [provenance] = resources_of(bundle, "Provenance")
    [device_resource] = resources_of(bundle, "Device")
    [organization] = [
        o for o in resources_of(bundle, "Organization") if o.get("name") == "Clinique QA"
    ]
    # A device acts on behalf of its organization (US Core: onBehalfOf for a Device).
    assert provenance["agent"][0] == {
        "type": provenance["agent"][0]["type"],
        "who": {"reference": _ref(device_resource)},
        "onBehalfOf": {"reference": _ref(organization)},
    }


def test_a_result_and_its_organizer_each_have_their_authors() -> None:
    lab = '<id root="1.2.250.1.71.4.2.1" extension="10105551234"/>'
    template, code, _, _ = SECTIONS["results"]
    bundle, _ = _convert(
        _section(template, code, _result(author(), author("20240305", person=lab)))
    )
    [report] = resources_of(bundle, "DiagnosticReport")
    [observation] = resources_of(bundle, "Observation")
    targets = {p["target"][0]["reference"]: p for p in resources_of(bundle, "Provenance")}
    assert set(targets) == {_ref(report), _ref(observation)}
    assert targets[_ref(observation)]["recorded"] == "2024-03-05T00:00:00+01:00"


def test_one_practitioner_per_person_across_entries() -> None:
    template, code, _, _ = SECTIONS["problems"]
    second = _problem(author("20240302")).replace('"P1"', '"P2"')
    two = _problem(author("20240301")) + second.replace('"38341003"', '"44054006"')
    bundle, _ = _convert(_section(template, code, two))
    provenances = resources_of(bundle, "Provenance")
    assert len(provenances) == 2
    [practitioner] = resources_of(bundle, "Practitioner")
    assert {p["agent"][0]["who"]["reference"] for p in provenances} == {_ref(practitioner)}
