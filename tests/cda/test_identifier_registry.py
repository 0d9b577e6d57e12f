"""Well-known identifier OIDs become their FHIR identifier-registry URIs (regression).

C-CDA on FHIR (CDA id → FHIR identifier, "URL exists: translate"): an id whose root is
the SSN OID 2.16.840.1.113883.4.1 has the system http://hl7.org/fhir/sid/us-ssn, the NPI
2.16.840.1.113883.4.6 http://hl7.org/fhir/sid/us-npi (code map IdentifierSystemOid);
any other OID stays ``urn:oid:``. Resource identity is the id's root and extension as
written, so the system a root maps to never changes a Patient's or Practitioner's id.
"""

from __future__ import annotations

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of

SSN = '<id root="2.16.840.1.113883.4.1" extension="123-45-6789"/>'
LOCAL = '<id root="1.2.250.1.999.1.1" extension="IPP0001"/>'
NPI = '<id root="2.16.840.1.113883.4.6" extension="1234567893"/>'


def test_ssn_and_npi_roots_are_registry_systems(r4validator: R4Validator) -> None:
    document = (
        cda()
        .replace(LOCAL, LOCAL + SSN)
        .replace('<id root="1.2.250.1.71.4.2.1" extension="10101234567"/>', NPI)
    )
    bundle, _ = convert_document(document)
    [patient] = resources_of(bundle, "Patient")
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [
        ("urn:oid:1.2.250.1.999.1.1", "IPP0001"),
        ("http://hl7.org/fhir/sid/us-ssn", "123-45-6789"),
    ]
    [practitioner] = resources_of(bundle, "Practitioner")
    assert practitioner["identifier"] == [
        {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
    ]
    # The patient is keyed by its first id, as written: adding the SSN changes nothing.
    plain, _ = convert_document(cda())
    assert patient["id"] == resources_of(plain, "Patient")[0]["id"]
    assert r4validator.validate(bundle) == []
