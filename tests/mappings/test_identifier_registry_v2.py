"""HL7 v2 identifiers whose authority is in the FHIR identifier registry, and PID-19.

The IG's CX[Identifier] maps CX.4 to Identifier.system "if it is in the identifier
registry": a US SSN (``USSSA&2.16.840.1.113883.4.1&ISO``) is
``http://hl7.org/fhir/sid/us-ssn``, an NPI ``http://hl7.org/fhir/sid/us-npi``, as the CDA
side writes them (one code map, IdentifierSystemOid). The v2 side wrote ``urn:oid:…``:
one person, two systems depending on the document that carried them. Ids must not move:
the identities keep ``hd_system``'s ``urn:oid:`` value. PID-19 (SSN) had no system.

An Encounter known by its admit time (no visit number) is one visit whatever offset the
sender wrote that instant with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.ids import stable_id
from tests.support.hl7_edit import convert_one, message, resources, set_field
from tests.support.r4validator import R4Validator

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SSN_OID = "urn:oid:2.16.840.1.113883.4.1"
NPI_OID = "urn:oid:2.16.840.1.113883.4.6"
SSN = "123-45-6789"
NPI = "1234567893"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

MESSAGE = message(
    [
        "MSH|^~\\&|APP|CHU-LYON|RECV|FAC|20260102100000+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1",
        f"PID|1||{SSN}^^^USSSA&2.16.840.1.113883.4.1&ISO^SS||DOE^JOHN||19800101|M",
        "PV1|1|I|||||" + f"{NPI}^SMITH^ANNA^^^Dr^^^NPI&2.16.840.1.113883.4.6&ISO^L^^^NPI",
    ]
)


def identifiers(resource: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(i.get("system"), i["value"]) for i in resource.get("identifier", [])]


def the(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    [resource] = resources(bundle, rtype)
    return resource


def test_an_ssn_in_pid_3_has_the_registry_system_and_keeps_its_id(converter: Converter) -> None:
    bundle, _ = convert_one(converter, MESSAGE)
    patient = the(bundle, "Patient")
    assert identifiers(patient) == [(SSN_SYSTEM, SSN)]
    # The identity Passerelle gave this Patient before Identifier.system read the registry.
    namespace = converter.config.id_namespace
    assert patient["id"] == stable_id(namespace, "Patient", SSN_OID, SSN)


def test_an_npi_in_xcn_9_has_the_registry_system_and_keeps_its_id(converter: Converter) -> None:
    bundle, _ = convert_one(converter, MESSAGE)
    practitioner = the(bundle, "Practitioner")
    assert identifiers(practitioner) == [(NPI_SYSTEM, NPI)]
    namespace = converter.config.id_namespace
    assert practitioner["id"] == stable_id(namespace, "Practitioner", NPI_OID, NPI)


def test_the_ssn_namespace_alone_is_the_same_system_and_identity(converter: Converter) -> None:
    """``USSSA`` alone is read through AssigningAuthorityOid: the same system and id."""
    full, _ = convert_one(converter, MESSAGE)
    bare, _ = convert_one(converter, set_field(MESSAGE, "PID", 3, f"{SSN}^^^USSSA^SS"))
    assert identifiers(the(bare, "Patient")) == [(SSN_SYSTEM, SSN)]
    assert the(bare, "Patient")["id"] == the(full, "Patient")["id"]


def test_an_authority_outside_the_registry_keeps_its_urn(converter: Converter) -> None:
    edited = set_field(MESSAGE, "PID", 3, "0012345^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR")
    bundle, _ = convert_one(converter, edited)
    assert identifiers(the(bundle, "Patient")) == [("urn:oid:1.2.250.1.999.1.1", "0012345")]


def test_pid_19_is_a_us_ssn(converter: Converter, r4validator: R4Validator) -> None:
    """IG PID[Patient]: PID-19 → identifier type SS (v2-0203), system us-ssn."""
    edited = set_field(MESSAGE, "PID", 3, "0012345^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR")
    bundle, _ = convert_one(converter, set_field(edited, "PID", 19, "987-65-4321"))
    [ssn] = [i for i in the(bundle, "Patient")["identifier"] if i["value"] == "987-65-4321"]
    assert ssn["system"] == SSN_SYSTEM
    assert [(c["system"], c["code"]) for c in ssn["type"]["coding"]] == [(V2_0203, "SS")]
    assert r4validator.validate(bundle) == []


def test_pid_19_repeating_the_pid_3_ssn_is_listed_once(converter: Converter) -> None:
    bundle, _ = convert_one(converter, set_field(MESSAGE, "PID", 19, SSN))
    assert identifiers(the(bundle, "Patient")) == [(SSN_SYSTEM, SSN)]


def test_pid_19_beside_another_ssn_is_kept(converter: Converter) -> None:
    bundle, _ = convert_one(converter, set_field(MESSAGE, "PID", 19, "987-65-4321"))
    assert identifiers(the(bundle, "Patient")) == [(SSN_SYSTEM, SSN), (SSN_SYSTEM, "987-65-4321")]


# -- an Encounter known by its admit time ---------------------------------------------------


def encounter_id(converter: Converter, admitted: str) -> str:
    edited = set_field(MESSAGE, "PV1", 44, admitted)
    bundle, _ = convert_one(converter, edited)
    return str(the(bundle, "Encounter")["id"])


def patient_id(converter: Converter) -> str:
    bundle, _ = convert_one(converter, MESSAGE)
    return str(the(bundle, "Patient")["id"])


@pytest.mark.parametrize(
    ("admitted", "key"),
    [
        # Written today's way (no offset, or the zone's own): the key, so the id, unchanged.
        ("202601021000", "20260102100000+0100"),
        ("202601021000+0100", "20260102100000+0100"),
        ("20260102100000+0100", "20260102100000+0100"),
        # The same instants with another offset: the same visit.
        ("202601020900+0000", "20260102100000+0100"),
        ("20260102090000Z", "20260102100000+0100"),
        ("202601020400-0500", "20260102100000+0100"),
        ("202607150900+0100", "20260715100000+0200"),
        ("202607151000", "20260715100000+0200"),
    ],
)
def test_an_admit_time_is_one_visit_whatever_its_offset(
    converter: Converter, admitted: str, key: str
) -> None:
    namespace = converter.config.id_namespace
    expected = stable_id(namespace, "Encounter", patient_id(converter), key)
    assert encounter_id(converter, admitted) == expected


def test_the_admit_time_key_follows_the_configured_zone() -> None:
    """A converter in UTC reads ``+0100`` at its own wall clock."""
    utc = Converter(ConverterConfig(default_timezone="UTC"))
    namespace = utc.config.id_namespace
    expected = stable_id(namespace, "Encounter", patient_id(utc), "20260102090000+0000")
    assert encounter_id(utc, "202601021000+0100") == expected
    assert encounter_id(utc, "202601020900") == expected


def test_a_sending_facility_by_its_namespace_alone_is_the_one_with_its_oid(
    tmp_path: Path,
) -> None:
    """MSH-4 scopes the identifiers given without an authority: CHU-LYON and
    CHU-LYON^1.2.250.1.999.1.1^ISO were two scopes (two Patients for one MRN) when the
    site's AssigningAuthority map names CHU-LYON's OID."""
    site = tmp_path / "site"
    (site / "codemaps").mkdir(parents=True)
    (site / "codemaps" / "AssigningAuthority.csv").write_text(
        "source_code,source_system,target_code,target_display,target_system,comment\n"
        "CHU-LYON,,1.2.250.1.999.1.1,,,the hospital\n",
        encoding="utf-8",
    )
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", template_dirs=(site,)))
    without_authority = set_field(MESSAGE, "PID", 3, "0012345")
    ids = {
        the(convert_one(converter, set_field(without_authority, "MSH", 4, msh4))[0], "Patient")[
            "id"
        ]
        for msh4 in ("CHU-LYON", "CHU-LYON^1.2.250.1.999.1.1^ISO")
    }
    assert len(ids) == 1
    # Without the site's row, the namespace alone is a scope of its own, as before.
    plain = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    assert (
        the(convert_one(plain, set_field(without_authority, "MSH", 4, "CHU-LYON"))[0], "Patient")[
            "id"
        ]
        not in ids
    )
