"""Session 24: one Patient, Organization and Practitioner across HL7 v2 and CDA.

A data warehouse fed by an ADT feed and by CDA documents made two Patients of one person:
the HL7 v2 identity of PID-3 `IPP123^^^CHU&1.2.250.1.999.1&ISO^PI` is
[`urn:oid:1.2.250.1.999.1`, `IPP123`] (hl7v2 identifiers.j2 `scope`), the CDA one of
`<id root="1.2.250.1.999.1" extension="IPP123"/>` was [`1.2.250.1.999.1`, `IPP123`], and a
French document (ANS CI-SIS) lists the INS-NIR first, which CDA keyed on while HL7 v2 keys
on the IPP (PID-3's PI). The CDA Patient now takes the identity HL7 v2 gives the same
identifier, chosen as HL7 v2 chooses it, and lists it first (the conditional modes match
a Patient on its first identifier). The same for an Organization's id (a FINESS in an XON
and in a representedOrganization) and for a Practitioner's UUID root.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from converter import Converter, ConverterConfig, json_dumps
from converter.assembly.ids import stable_id
from tests.cda._support import cda, resources_of
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import references

IPP_ROOT = "1.2.250.1.999.1"
INS_ROOT = "1.2.250.1.213.1.4.8"
NIR = "189017511200512"
FINESS_ROOT = "1.2.250.1.71.4.2.2"
DOCTOR_UUID = "6B1F2E3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"
#: The one patientRole/id of tests.cda._support.cda(), replaced by the tests' own.
SUPPORT_PATIENT_ID = '<id root="1.2.250.1.999.1.1" extension="IPP0001"/>'


def adt(pid3: str, *, control_id: str = "S24-1", pd1: str = "", pv1_7: str = "") -> bytes:
    """An ADT^A01 of one patient whose PID-3 is ``pid3``."""
    segments = [
        "MSH|^~\\&|SIH|CHU^1.2.250.1.999.1.10^ISO|PASS|GHT|20240314083512+0100||"
        f"ADT^A01^ADT_A01|{control_id}|P|2.5.1",
        "EVN|A01|20240314083512+0100",
        f"PID|1||{pid3}||DUPONT^Marie||19850312|F",
        f"PD1|||{pd1}",
        f"PV1|1|I|CARDIO^412^1|||||{pv1_7}",
    ]
    return "\r".join(segments).encode()


def document(patient_ids: str, *, doc_extension: str = "S24-DOC-1", header: str = "") -> bytes:
    """A C-CDA document whose patientRole holds ``patient_ids`` (raw ``<id>`` elements)."""
    xml = cda(doc_id=f'<id root="1.2.250.1.999.3.1" extension="{doc_extension}"/>', header=header)
    assert SUPPORT_PATIENT_ID in xml
    return xml.replace(SUPPORT_PATIENT_ID, patient_ids).encode()


def ii(root: str, extension: str | None = None) -> str:
    return f'<id root="{root}" extension="{extension}"/>' if extension else f'<id root="{root}"/>'


def convert(
    converter: Converter, data: bytes, input_type: Literal["hl7v2", "cda"]
) -> dict[str, Any]:
    [conversion] = converter.convert(data, input_type=input_type)
    return conversion.bundle


def patient_of(bundle: dict[str, Any]) -> dict[str, Any]:
    [patient] = resources_of(bundle, "Patient")
    return patient


def ids_of(bundle: dict[str, Any], kind: str) -> set[str]:
    return {resource["id"] for resource in resources_of(bundle, kind)}


# -- Patient -----------------------------------------------------------------------------


def test_an_adt_and_a_french_document_of_one_patient_write_one_patient(
    converter: Converter,
) -> None:
    """PID-3 IPP (PI) + INS; the document lists the INS first, then the IPP."""
    message = adt(f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI~{NIR}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS")
    from_v2 = patient_of(convert(converter, message, "hl7v2"))
    from_cda = patient_of(
        convert(converter, document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "IPP123")), "cda")
    )
    assert from_cda["id"] == from_v2["id"]
    # Keyed on the IPP, as PID-3's PI: written first, as HL7 v2 writes its key.
    assert from_cda["identifier"][0] == {"system": f"urn:oid:{IPP_ROOT}", "value": "IPP123"}
    assert [i["value"] for i in from_cda["identifier"]] == ["IPP123", NIR]


def test_the_ipp_listed_first_gives_the_same_patient(converter: Converter) -> None:
    message = adt(f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI")
    from_v2 = patient_of(convert(converter, message, "hl7v2"))
    from_cda = patient_of(
        convert(converter, document(ii(IPP_ROOT, "IPP123") + ii(INS_ROOT, NIR)), "cda")
    )
    assert from_cda["id"] == from_v2["id"]


def test_an_ins_alone_is_the_key_as_an_ins_only_pid3(converter: Converter) -> None:
    message = adt(f"{NIR}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS")
    from_v2 = patient_of(convert(converter, message, "hl7v2"))
    from_cda = patient_of(convert(converter, document(ii(INS_ROOT, NIR)), "cda"))
    assert from_cda["id"] == from_v2["id"]
    # The same INS typed by its FR Core code, its authority left empty (hd_system's
    # type_code): one identity too.
    by_type = patient_of(convert(converter, adt(f"{NIR}^^^^INS-NIR", control_id="S24-2"), "hl7v2"))
    assert by_type["id"] == from_cda["id"]


def test_a_uuid_root_is_scoped_as_hl7_v2_scopes_a_uuid_authority(converter: Converter) -> None:
    root = "0D5C1E2B-3A4F-4B6C-9D8E-7F6A5B4C3D2E"
    from_v2 = patient_of(convert(converter, adt(f"P77^^^HIS&{root}&UUID^MR"), "hl7v2"))
    from_cda = patient_of(convert(converter, document(ii(root, "P77")), "cda"))
    assert from_cda["id"] == from_v2["id"]


def test_the_first_local_id_is_the_key_among_several(converter: Converter) -> None:
    """Two local numbers: the first listed, as before (HL7 v2's first PI)."""
    first = patient_of(convert(converter, adt(f"A1^^^X&{IPP_ROOT}&ISO^PI"), "hl7v2"))
    from_cda = patient_of(
        convert(
            converter,
            document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "A1") + ii("1.2.250.1.999.2", "B2")),
            "cda",
        )
    )
    assert from_cda["id"] == first["id"]


def test_two_patients_stay_two(converter: Converter) -> None:
    one = patient_of(convert(converter, document(ii(IPP_ROOT, "IPP123")), "cda"))
    other_number = patient_of(
        convert(converter, document(ii(IPP_ROOT, "IPP124"), doc_extension="D2"), "cda")
    )
    other_authority = patient_of(
        convert(converter, document(ii("1.2.250.1.999.2", "IPP123"), doc_extension="D3"), "cda")
    )
    v2_other = patient_of(convert(converter, adt(f"IPP124^^^CHU&{IPP_ROOT}&ISO^PI"), "hl7v2"))
    assert len({one["id"], other_number["id"], other_authority["id"]}) == 3
    assert v2_other["id"] == other_number["id"] != one["id"]
    # Two hospitals' records of one person (one INS, two IPPs): two Patients, as in HL7 v2.
    a = patient_of(convert(converter, document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "X1")), "cda"))
    b = patient_of(
        convert(
            converter,
            document(ii(INS_ROOT, NIR) + ii("1.2.250.1.999.2", "X1"), doc_extension="D4"),
            "cda",
        )
    )
    assert a["id"] != b["id"]


def test_a_document_without_a_usable_patient_id_keeps_its_own_patient(
    converter: Converter,
) -> None:
    """No id with a root: the Patient's id derives from the document, as before."""
    nameless = '<id nullFlavor="UNK"/><id extension="LOCAL-1"/>'
    first = patient_of(convert(converter, document(nameless), "cda"))
    second = patient_of(convert(converter, document(nameless, doc_extension="D2"), "cda"))
    assert first["id"] != second["id"]
    assert first["identifier"] == [{"value": "LOCAL-1"}]
    # A root alone is the identifier, its identity the root as before.
    [root_only] = resources_of(
        convert(converter, document(ii("1.2.250.1.999.5.5")), "cda"), "Patient"
    )
    assert root_only["id"] == stable_id("", "Patient", "1.2.250.1.999.5.5")


def test_every_reference_to_the_patient_names_its_new_id(converter: Converter) -> None:
    bundle = convert(converter, document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "IPP123")), "cda")
    patient = patient_of(bundle)
    expected = stable_id("", "Patient", f"urn:oid:{IPP_ROOT}", "IPP123")
    assert patient["id"] == expected
    [entry] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    targets = {entry["fullUrl"], f"Patient/{expected}"}
    found = list(references(bundle))
    assert any(ref in targets for ref in found)
    # No reference names a Patient other than this one.
    assert all(ref in targets for ref in found if "Patient" in ref or ref.endswith(expected))
    patient_refs = [
        r["subject"]["reference"]
        for r in resources_of(bundle, "Composition") + resources_of(bundle, "DocumentReference")
    ]
    assert patient_refs and set(patient_refs) <= targets


def test_conditional_modes_match_the_document_patient_on_its_local_number() -> None:
    """In conditional-update, a French document's Patient was matched on the INS every
    hospital's record of the person holds: hospital B's document replaced hospital A's
    record. It is matched on its IPP, as the ADT feed's Patient is."""
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    bundle = convert(conditional, document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "IPP123")), "cda")
    [request] = [
        e["request"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert request["url"] == f"Patient?identifier=urn:oid:{IPP_ROOT}|IPP123"
    message = adt(f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI~{NIR}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS")
    v2_bundle = convert(conditional, message, "hl7v2")
    [v2_request] = [
        e["request"] for e in v2_bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert v2_request["url"] == request["url"]


# -- Organization and Practitioner ---------------------------------------------------------


def test_a_finess_in_an_xon_and_in_a_document_is_one_organization(converter: Converter) -> None:
    message = adt(
        f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI",
        pd1=f"CHU Lyon^^^^^FINESS&{FINESS_ROOT}&ISO^FINEG^^^690099901",
    )
    v2_bundle = convert(converter, message, "hl7v2")
    [finess] = [
        o
        for o in resources_of(v2_bundle, "Organization")
        if any(i.get("value") == "690099901" for i in o.get("identifier", []))
    ]
    # cda(): the custodian is `<id root="1.2.250.1.71.4.2.2" extension="690099901"/>`.
    cda_bundle = convert(converter, document(ii(IPP_ROOT, "IPP123")), "cda")
    assert finess["id"] in ids_of(cda_bundle, "Organization")


def test_an_hd_and_a_root_alone_stay_one_organization(converter: Converter) -> None:
    """MSH-4 `CHU^1.2.250.1.999.1.10^ISO` and `<id root="1.2.250.1.999.1.10"/>` (as before)."""
    v2_ids = ids_of(
        convert(converter, adt(f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI"), "hl7v2"), "Organization"
    )
    header = (
        "<informationRecipient><intendedRecipient><receivedOrganization>"
        '<id root="1.2.250.1.999.1.10"/><name>CHU</name>'
        "</receivedOrganization></intendedRecipient></informationRecipient>"
    )
    cda_ids = ids_of(
        convert(converter, document(ii(IPP_ROOT, "IPP123"), header=header), "cda"), "Organization"
    )
    assert v2_ids & cda_ids


def test_a_practitioner_with_a_uuid_root_is_the_one_hl7_v2_names(converter: Converter) -> None:
    message = adt(
        f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI", pv1_7=f"D42^LEROY^Paul^^^Dr^^^X&{DOCTOR_UUID}&UUID"
    )
    [v2_doctor] = resources_of(convert(converter, message, "hl7v2"), "Practitioner")
    header = (
        '<participant typeCode="IND"><associatedEntity classCode="PROV">'
        f'<id root="{DOCTOR_UUID}" extension="D42"/>'
        "<associatedPerson><name><family>Leroy</family></name></associatedPerson>"
        "</associatedEntity></participant>"
    )
    cda_bundle = convert(converter, document(ii(IPP_ROOT, "IPP123"), header=header), "cda")
    assert v2_doctor["id"] in ids_of(cda_bundle, "Practitioner")


# -- On a FHIR server ----------------------------------------------------------------------


def _post(server: FhirServer, bundle: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        server.base_url,
        content=json_dumps(bundle),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )


def test_on_a_fhir_server_the_adt_and_the_document_leave_one_patient(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """PUT by id (the default mode). The test server refuses a conditional transaction of
    this size; the conditional search is checked above."""
    fhir_server.reset()
    message = adt(
        f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI~{NIR}^^^ASIP-SANTE-INS-NIR&{INS_ROOT}&ISO^INS",
        pd1=f"CHU Lyon^^^^^FINESS&{FINESS_ROOT}&ISO^FINEG^^^690099901",
    )
    response = _post(fhir_server, convert(converter, message, "hl7v2"))
    assert response.status_code == 200, response.text[:500]
    xml = document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "IPP123"))
    response = _post(fhir_server, convert(converter, xml, "cda"))
    assert response.status_code == 200, response.text[:500]
    assert fhir_server.count("Patient") == 1
    assert fhir_server.count("Organization", identifier=f"urn:oid:{FINESS_ROOT}|690099901") == 1


def test_on_a_fhir_server_a_document_route_writing_patients_conditional_create_keeps_the_adt_one(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """One Patient now, so a document's Patient written `PUT` by id replaces what the ADT
    feed stored (its security label, its names). A document route writing Patients
    `conditional-create` (request_modes) leaves the stored one as it is and refers to it:
    matched on the IPP the document lists second, it was a second Patient."""
    fhir_server.reset()
    message = adt(f"IPP123^^^CHU&{IPP_ROOT}&ISO^PI").replace(b"PD1|||", b"PD1||||||||||||Y")
    from_v2 = convert(converter, message, "hl7v2")
    assert _post(fhir_server, from_v2).status_code == 200
    documents = Converter(
        ConverterConfig(
            default_timezone="Europe/Paris", request_modes=(("Patient", "conditional-create"),)
        )
    )
    xml = document(ii(INS_ROOT, NIR) + ii(IPP_ROOT, "IPP123"))
    response = _post(fhir_server, convert(documents, xml, "cda"))
    assert response.status_code == 200, response.text[:500]
    assert fhir_server.count("Patient") == 1
    stored = fhir_server.read("Patient", patient_of(from_v2)["id"])
    assert stored is not None
    assert stored["name"][0]["family"] == "DUPONT"
    assert [label["code"] for label in stored["meta"]["security"]] == ["R"]
    [composition] = [e["resource"] for e in fhir_server.search("Composition")["entry"]]
    assert composition["subject"]["reference"] == f"Patient/{stored['id']}"


# -- RelatedPerson -------------------------------------------------------------------------

MOTHER = (
    '<participant typeCode="IND"><associatedEntity classCode="NOK">'
    f'<id root="{IPP_ROOT}" extension="IPP-MERE"/>'
    '<code code="MTH" codeSystem="2.16.840.1.113883.5.111"/>'
    "<associatedPerson><name><given>Anne</given><family>Dupont</family></name>"
    "</associatedPerson></associatedEntity></participant>"
)


def test_a_related_person_with_an_id_is_each_patients_own(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """Twins' mother, with her id, in each child's document: one RelatedPerson per child
    (it was one for both, its `patient` the last document's child)."""
    fhir_server.reset()
    bundles = [
        convert(converter, document(ii(IPP_ROOT, twin), doc_extension=doc, header=MOTHER), "cda")
        for twin, doc in (("T1", "D1"), ("T2", "D2"))
    ]
    [first], [second] = (resources_of(b, "RelatedPerson") for b in bundles)
    assert first["id"] != second["id"]
    again = convert(
        converter, document(ii(IPP_ROOT, "T1"), doc_extension="D3", header=MOTHER), "cda"
    )
    assert [r["id"] for r in resources_of(again, "RelatedPerson")] == [first["id"]]
    for bundle in bundles:
        assert _post(fhir_server, bundle).status_code == 200
    stored = fhir_server.read("RelatedPerson", first["id"])
    assert stored is not None
    assert stored["patient"]["reference"] == f"Patient/{patient_of(bundles[0])['id']}"
