"""French patient identity in HL7 v2 (IHE PAM France) → FR Core 2.1.0 Patient elements.

- PID-3 INS (CX.4 OID 1.2.250.1.213.1.4.8 / .9 / .10 / .11, CX.5 ``INS``) → the ``use`` and
  ``type`` of FR Core's fr-core-patient-ins identifier slices;
- PID-32 identity reliability → the fr-core-identity-reliability extension (identityStatus);
- PID-11 address of type BDL (+ PID-23) → the patient-birthPlace extension, with the INSEE
  code as fr-core-address-insee-code, and no longer one of Patient.address;
- with an INS in PID-3, the legal name's XPN.3 (list of birth given names) → the
  fr-core-patient-birth-list-given-name extension, ``given`` the first birth given name alone;
- ZFD-5/6/7 → methodCollection, dateCollection, validationMode of fr-core-identity-reliability,
  ZFD-4 → fr-core-patient-birthdate-update-indicator.

Each case builds a small ADT^A04 (v2.5) around one PID; the golden samples
``ADT_A04_fr-ins-test`` and ``ADT_A28_fr-nia-born-abroad`` pin whole bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Conversion, Converter
from tests.support.r4validator import R4Validator

FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
FR_0445 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
COMMUNE = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
BIRTH_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
BIRTHDATE_UPDATE = (
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birthdate-update-indicator"
)
METHOD_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-method-collection"
MODE_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-mode-validation-identity"
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

IPP = "0012999001^^^CHU-LYON&1.2.250.1.999.1.1&ISO^PI"
INS = "290065935012354^^^ASIP-SANTE-INS-NIR-TEST&1.2.250.1.213.1.4.10&ISO^INS"
HOME = "3 rue de la Paix^^Lyon^^69002^FRA^H"


def adt(pid: dict[int, str], *, version: str = "2.5", extra: tuple[str, ...] = ()) -> bytes:
    """An ADT^A04 whose PID has the given fields (and an IPP, name, birth date, sex), then
    PV1 and the ``extra`` segments."""
    fields = {1: "1", 3: IPP, 5: "TEST^Camille^^^^^L", 7: "19900101", 8: "F"} | pid
    pid_segment = "|".join(["PID"] + [fields.get(n, "") for n in range(1, max(fields) + 1)])
    segments = [
        "MSH|^~\\&|SIH^1.2.250.1.999.1.10^ISO|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT"
        f"|20241105091522+0100||ADT^A04^ADT_A01|FR-TEST-0001|P|{version}|||AL|NE|FRA|UNICODE UTF-8",
        "EVN|A04|20241105091522+0100",
        pid_segment,
        "PV1|1|O",
        *extra,
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def convert(
    converter: Converter, pid: dict[int, str], version: str = "2.5", extra: tuple[str, ...] = ()
) -> tuple[dict[str, Any], Conversion]:
    conversion = converter.convert_message(adt(pid, version=version, extra=extra))
    patients = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]
    assert len(patients) == 1
    return patients[0], conversion


def extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension", []) if e["url"] == url]


# -- PID-3: INS identifiers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "type_code", "use"),
    [
        ("ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO", "INS-NIR", "official"),
        ("ASIP-SANTE-INS-NIA&1.2.250.1.213.1.4.9&ISO", "INS-NIA", "temp"),
        ("ASIP-SANTE-INS-NIR-TEST&1.2.250.1.213.1.4.10&ISO", "INS-NIR-TEST", "official"),
        ("ASIP-SANTE-INS-NIR-DEMO&1.2.250.1.213.1.4.11&ISO", "INS-NIR-DEMO", "official"),
        ("&1.2.250.1.213.1.4.8&ISO", "INS-NIR", "official"),
    ],
    ids=["INS-NIR", "INS-NIA", "INS-NIR-TEST", "INS-NIR-DEMO", "no-namespace"],
)
@pytest.mark.parametrize("cx5", ["INS", ""], ids=["CX.5=INS", "CX.5-empty"])
def test_ins_identifier_gets_fr_core_type_and_use(
    converter: Converter, authority: str, type_code: str, use: str, cx5: str
) -> None:
    patient, _ = convert(converter, {3: f"{IPP}~290065935012354^^^{authority}^{cx5}"})
    oid = authority.split("&")[1]
    ins = [i for i in patient["identifier"] if i["system"] == f"urn:oid:{oid}"]
    assert len(ins) == 1
    assert ins[0]["value"] == "290065935012354"
    assert ins[0]["use"] == use
    assert ins[0]["type"]["coding"] == [
        {"system": FR_0203, "code": type_code, "display": ins[0]["type"]["coding"][0]["display"]}
    ]
    assert "assigner" not in ins[0]


def test_ins_identifier_does_not_change_the_patient_id(converter: Converter) -> None:
    """The identity stays the IPP (PI) whatever the INS looks like."""
    with_ins, _ = convert(
        converter, {3: f"{IPP}~290065935012354^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"}
    )
    without_ins, _ = convert(converter, {3: IPP})
    assert with_ins["id"] == without_ins["id"]


@pytest.mark.parametrize(
    ("cx", "expected"),
    [
        # FR Core's NSS slice is the .8 OID with type NH: not an INS.
        (
            "285036938204569^^^&1.2.250.1.213.1.4.8&ISO^NH",
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "NH",
                            "display": "National Health Plan Identifier",
                        }
                    ]
                },
                "system": "urn:oid:1.2.250.1.213.1.4.8",
                "value": "285036938204569",
            },
        ),
        # An INS-C (OID .2) is not one of the INS slices mapped.
        (
            "1121717802492545833548^^^ASIP-SANTE-INS-C&1.2.250.1.213.1.4.2&ISO^INS-C",
            {
                "type": {
                    "coding": [
                        {
                            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                            "code": "INS-C",
                            "display": "Identifiant National de Santé Calculé",
                        }
                    ]
                },
                "system": "urn:oid:1.2.250.1.213.1.4.2",
                "value": "1121717802492545833548",
            },
        ),
    ],
    ids=["NH-under-INS-OID", "INS-C"],
)
def test_other_identifiers_keep_the_generic_mapping(
    converter: Converter, cx: str, expected: dict[str, Any]
) -> None:
    patient, _ = convert(converter, {3: f"{IPP}~{cx}"})
    assert patient["identifier"][1] == expected


# -- PID-32: identity reliability ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid32", "codings"),
    [
        ("VALI", [{"system": FR_0445, "code": "VALI", "display": "Identité validée"}]),
        ("PROV", [{"system": FR_0445, "code": "PROV", "display": "Identité provisoire"}]),
        (
            "VALI~HOMD",
            [
                {"system": FR_0445, "code": "VALI", "display": "Identité validée"},
                {"system": FR_0445, "code": "HOMD", "display": "Homonyme détecté"},
            ],
        ),
        (
            "AL",
            [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0445",
                    "code": "AL",
                    "display": "Patient/Person Name is an Alias",
                }
            ],
        ),
        # Extensible binding: an unknown code is kept, without a system.
        ("XYZ", [{"code": "XYZ"}]),
    ],
    ids=["VALI", "PROV", "VALI~HOMD", "HL7-AL", "unknown"],
)
def test_pid32_becomes_identity_reliability_extension(
    converter: Converter, pid32: str, codings: list[dict[str, str]]
) -> None:
    patient, _ = convert(converter, {32: pid32})
    found = extensions(patient, RELIABILITY)
    assert found == [
        {"url": RELIABILITY, "extension": [{"url": "identityStatus", "valueCoding": coding}]}
        for coding in codings
    ]


def test_pid32_as_cwe_in_v27(converter: Converter) -> None:
    """PID-32 is IS up to v2.6 and CWE from v2.7: the code is the first component."""
    patient, _ = convert(converter, {32: "VALI^Identité validée"}, version="2.7")
    assert extensions(patient, RELIABILITY) == [
        {
            "url": RELIABILITY,
            "extension": [
                {
                    "url": "identityStatus",
                    "valueCoding": {
                        "system": FR_0445,
                        "code": "VALI",
                        "display": "Identité validée",
                    },
                }
            ],
        }
    ]


def test_unknown_pid32_code_warns(converter: Converter) -> None:
    _, conversion = convert(converter, {32: "XYZ"})
    assert any("IdentityReliability" in w and "PID-32" in w for w in conversion.warnings), (
        conversion.warnings
    )
    _, known = convert(converter, {32: "VALI"})
    assert not any("IdentityReliability" in w for w in known.warnings)


# -- PID-11 BDL / PID-23: birthplace ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "birth_address"),
    [
        (
            {11: f"{HOME}~^^Lille^^59000^FRA^BDL^^59350", 23: "Lille"},
            {
                "extension": [
                    {"url": INSEE_CODE, "valueCoding": {"system": COMMUNE, "code": "59350"}}
                ],
                "text": "Lille",
                "city": "Lille",
                "district": "59350",
                "postalCode": "59000",
                "country": "FRA",
            },
        ),
        (
            {11: f"^^Ajaccio^^20000^FRA^BDL^^2A004~{HOME}"},
            {
                "extension": [
                    {"url": INSEE_CODE, "valueCoding": {"system": COMMUNE, "code": "2A004"}}
                ],
                "city": "Ajaccio",
                "district": "2A004",
                "postalCode": "20000",
                "country": "FRA",
            },
        ),
        # Born abroad: 99134 is INSEE's code for Spain, not a commune.
        (
            {11: f"{HOME}~^^Madrid^^^ESP^BDL^^99134", 23: "Madrid (Espagne)"},
            {"text": "Madrid (Espagne)", "city": "Madrid", "district": "99134", "country": "ESP"},
        ),
    ],
    ids=["commune", "corsica-first-repetition", "abroad"],
)
def test_bdl_address_is_the_birthplace_not_an_address(
    converter: Converter, pid: dict[int, str], birth_address: dict[str, Any]
) -> None:
    patient, _ = convert(converter, pid)
    assert extensions(patient, BIRTH_PLACE) == [{"url": BIRTH_PLACE, "valueAddress": birth_address}]
    assert patient["address"] == [
        {
            "use": "home",
            "line": ["3 rue de la Paix"],
            "city": "Lyon",
            "postalCode": "69002",
            "country": "FRA",
        }
    ]


def test_birth_place_text_alone_is_kept(converter: Converter) -> None:
    patient, _ = convert(converter, {11: HOME, 23: "Grenoble"})
    assert extensions(patient, BIRTH_PLACE) == [
        {"url": BIRTH_PLACE, "valueAddress": {"text": "Grenoble"}}
    ]
    assert len(patient["address"]) == 1


# -- PID-5: the list of birth given names ----------------------------------------------------


@pytest.mark.parametrize(
    ("xpn", "given", "birth_list"),
    [
        ("GILBERT^Louis^Louis Maurice^^^^L", ["Louis"], "Louis Maurice"),
        # One given name: the list is that name.
        ("ROUSSEL^Amélie^Amélie^^^^L", ["Amélie"], "Amélie"),
        # A hyphenated first name matches the list's spaced one (INS traits), case ignored.
        ("MARTIN^Jean-Pierre^JEAN PIERRE MARIE^^^^L", ["Jean-Pierre"], "JEAN PIERRE MARIE"),
        # Accents: the INS traits are written in capitals without them.
        ("ROUSSEL^Hélène^HELENE MARIE^^^^L", ["Hélène"], "HELENE MARIE"),
    ],
    ids=["list", "single", "hyphen", "accents"],
)
def test_ins_legal_name_carries_the_birth_list(
    converter: Converter, xpn: str, given: list[str], birth_list: str
) -> None:
    patient, _ = convert(converter, {3: f"{IPP}~{INS}", 5: xpn})
    official = patient["name"][0]
    assert official["use"] == "official"
    assert official["given"] == given
    assert official["extension"] == [{"url": BIRTH_LIST, "valueString": birth_list}]


@pytest.mark.parametrize(
    ("pid", "given"),
    [
        # No INS: the IG's XPN[HumanName], even for a list-shaped XPN.3.
        ({5: "GILBERT^Louis^Louis Maurice^^^^L"}, ["Louis", "Louis Maurice"]),
        # An INS, but XPN.3 is a second given name (base HL7), not a list starting with XPN.2.
        ({3: f"{IPP}~{INS}", 5: "LEFEBVRE^Antoine^Marc^^^^L"}, ["Antoine", "Marc"]),
        # An INS, but not the legal name: the usual name (D) keeps the generic mapping.
        ({3: f"{IPP}~{INS}", 5: "FAURE^Louis^Louis Maurice^^^^D"}, ["Louis", "Louis Maurice"]),
        # "Louise" does not start the list with the given name "Lou".
        ({3: f"{IPP}~{INS}", 5: "DUVAL^Lou^Louise Anne^^^^L"}, ["Lou", "Louise Anne"]),
    ],
    ids=["no-INS", "second-given-name", "usual-name", "prefix-not-a-word"],
)
def test_other_names_keep_the_ig_mapping(
    converter: Converter, pid: dict[int, str], given: list[str]
) -> None:
    patient, _ = convert(converter, pid)
    assert patient["name"][0]["given"] == given
    assert "extension" not in patient["name"][0]


def test_non_french_human_name_is_unchanged(converter: Converter) -> None:
    """A US legal name whose middle name repeats the first keeps given = XPN.2, XPN.3."""
    patient, _ = convert(
        converter,
        {
            3: "MRN12345^^^GENHOSP&2.16.840.1.113883.19.5&ISO^MR",
            5: "SMITH^Mary^Mary Ann^Jr^Dr^^L",
        },
    )
    assert patient["name"] == [
        {
            "use": "official",
            "family": "SMITH",
            "given": ["Mary", "Mary Ann"],
            "prefix": ["Dr"],
            "suffix": ["Jr"],
        }
    ]


# -- ZFD: INS identity qualification ----------------------------------------------------------


def reliability(patient: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [e["extension"] for e in extensions(patient, RELIABILITY)]


def test_zfd_completes_the_first_identity_reliability(converter: Converter) -> None:
    patient, conversion = convert(
        converter,
        {3: f"{IPP}~{INS}", 32: "VALI~HOMD"},
        extra=("ZFD|||N|Y|INSI|20241105091000+0100|CN|20310412",),
    )
    assert conversion.warnings == ()
    assert reliability(patient) == [
        [
            {
                "url": "identityStatus",
                "valueCoding": {"system": FR_0445, "code": "VALI", "display": "Identité validée"},
            },
            {
                "url": "methodCollection",
                "valueCoding": {"system": METHOD_CS, "code": "INSI", "display": "Téléservice INSI"},
            },
            {"url": "dateCollection", "valueDate": "2024-11-05"},
            {
                "url": "validationMode",
                "valueCoding": {
                    "system": MODE_CS,
                    "code": "CN",
                    "display": "Carte nationale d'identité",
                },
            },
        ],
        [
            {
                "url": "identityStatus",
                "valueCoding": {"system": FR_0445, "code": "HOMD", "display": "Homonyme détecté"},
            }
        ],
    ]
    assert extensions(patient, BIRTHDATE_UPDATE) == [
        {"url": BIRTHDATE_UPDATE, "valueBoolean": True}
    ]


def test_zfd_without_pid32_gives_its_own_reliability_extension(converter: Converter) -> None:
    patient, _ = convert(converter, {}, extra=("ZFD|||||SM",))
    assert reliability(patient) == [
        [
            {
                "url": "methodCollection",
                "valueCoding": {"system": METHOD_CS, "code": "SM", "display": "Saisie manuelle"},
            }
        ]
    ]
    assert extensions(patient, BIRTHDATE_UPDATE) == []


def test_unknown_zfd_codes(converter: Converter) -> None:
    """ZFD-5's binding is extensible (the code is kept, without a system); ZFD-7's is
    required (the code is not written). Both warn."""
    patient, conversion = convert(converter, {32: "PROV"}, extra=("ZFD|||||XX||ZZ",))
    assert reliability(patient) == [
        [
            {
                "url": "identityStatus",
                "valueCoding": {
                    "system": FR_0445,
                    "code": "PROV",
                    "display": "Identité provisoire",
                },
            },
            {"url": "methodCollection", "valueCoding": {"code": "XX"}},
        ]
    ]
    assert any("IdentityMethodCollection" in w and "ZFD-5" in w for w in conversion.warnings), (
        conversion.warnings
    )
    assert any("ZFD-7" in w and "ZZ" in w for w in conversion.warnings), conversion.warnings


def test_a_zfd4_neither_y_nor_n_is_dropped_with_a_warning(converter: Converter) -> None:
    patient, conversion = convert(converter, {32: "VALI"}, extra=("ZFD||||O",))
    assert extensions(patient, BIRTHDATE_UPDATE) == []
    assert any("ZFD-4" in w for w in conversion.warnings), conversion.warnings


def test_empty_zfd_adds_nothing(converter: Converter) -> None:
    """The corpus's ``ZFD|||N`` (SMS consent only) has nothing FR Core places."""
    with_zfd, conversion = convert(converter, {32: "VALI"}, extra=("ZFD|||N",))
    without, _ = convert(converter, {32: "VALI"})
    assert conversion.warnings == ()
    assert with_zfd == without


@pytest.mark.parametrize("sample", ["ADT_A04_fr-ins-test", "ADT_A28_fr-nia-born-abroad"])
def test_french_samples_are_valid_r4(
    converter: Converter, r4validator: R4Validator, sample: str
) -> None:
    conversion = converter.convert_message((SAMPLES / f"{sample}.hl7").read_bytes())
    assert conversion.warnings == ()
    patient = next(
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    assert extensions(patient["name"][0], BIRTH_LIST)
    assert [s["url"] for s in reliability(patient)[0]] == [
        "identityStatus",
        "methodCollection",
        "dateCollection",
        "validationMode",
    ]
    assert r4validator.validate(conversion.bundle) == []
    for entry in conversion.bundle["entry"]:
        assert r4validator.validate(entry["resource"]) == [], entry["resource"]["resourceType"]


# -- a message with nothing French -----------------------------------------------------------


def test_non_french_patient_is_unchanged(converter: Converter) -> None:
    """No INS, no PID-32, no BDL: the Patient is what the generic IG mapping gives (this
    case guards the other outputs; it passes before and after the French mapping)."""
    patient, conversion = convert(
        converter,
        {
            3: "MRN12345^^^GENHOSP&2.16.840.1.113883.19.5&ISO^MR"
            "~123-45-6789^^^SSA&2.16.840.1.113883.4.1&ISO^SS",
            5: "DOE^Jane^Q^^^^L",
            11: "100 Main St^^Springfield^IL^62701^USA^H~^^Chicago^IL^^USA^BR",
            23: "Chicago",
        },
    )
    assert conversion.warnings == ()
    del patient["id"]
    assert patient == {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                            "display": "Medical record number",
                        }
                    ]
                },
                "system": "urn:oid:2.16.840.1.113883.19.5",
                "value": "MRN12345",
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "SS",
                            "display": "Social Security number",
                        }
                    ]
                },
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": "123-45-6789",
            },
        ],
        "name": [{"use": "official", "family": "DOE", "given": ["Jane", "Q"]}],
        "gender": "female",
        "birthDate": "1990-01-01",
        "address": [
            {
                "use": "home",
                "line": ["100 Main St"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
                "country": "USA",
            },
            {"city": "Chicago", "state": "IL", "country": "USA"},
        ],
        "extension": [{"url": BIRTH_PLACE, "valueAddress": {"text": "Chicago"}}],
    }
