"""Session 25: an ANS IdNat_Struct holding a SIREN, SIRET, RPPS rang or ADELI rang.

The IdNat_Struct (OID 1.2.250.1.71.4.2.2, FR Core fr-core-organization slice idNatSt) is
a register's number behind a one-digit prefix: `0` + ADELI rang, `1` + FINESS, `2` +
SIREN, `3` + SIRET, `4` + RPPS rang. Only the FINESS was read (session 24: it is the
establishment's identity); the others were kept as sent, untyped in CDA. Now the
IdNat_Struct stays the identity and first identifier, typed IDNST, followed by the number
it holds as FR Core's slices write it (siren / siret: system https://sirene.fr, type SIREN
/ SIRET; rppsRang / adeliRang: https://rppsrang.esante.gouv.fr /
https://adelirang.esante.gouv.fr, type INTRN; code map IdNatStructPrefix). The prefix is
read only with the register's length: a bare FINESS under the same authority (IHE PAM
France sends them, `310781406` in Haute-Garonne) is not a SIRET.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.mappings.test_s24_second_wave import ANS_ST, MFN, _organization
from tests.support.r4validator import R4Validator

ROOT = Path(__file__).resolve().parents[2] / "samples"
CCD = (ROOT / "cda" / "CCD_lefevre-camille.xml").read_text(encoding="utf-8")
FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"


def _typed(code: str, system: str, value: str) -> dict[str, Any]:
    coding = {"system": FR_0203, "code": code}
    return {"type": {"coding": [coding]}, "system": system, "value": value}


def _without_displays(identifiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for identifier in identifiers:
        copy = dict(identifier)
        if "type" in copy:
            copy["type"] = {
                "coding": [
                    {k: v for k, v in coding.items() if k != "display"}
                    for coding in copy["type"]["coding"]
                ]
            }
        out.append(copy)
    return out


CASES = [
    ("312345678900012", "SIRET", "https://sirene.fr", "12345678900012"),
    ("2123456789", "SIREN", "https://sirene.fr", "123456789"),
    ("41010123456301", "INTRN", "https://rppsrang.esante.gouv.fr", "1010123456301"),
    ("069123456701", "INTRN", "https://adelirang.esante.gouv.fr", "69123456701"),
]


@pytest.mark.parametrize(("sent", "kind", "system", "number"), CASES)
def test_an_xon_idnat_struct_writes_the_register_number(
    converter: Converter, r4validator: R4Validator, sent: str, kind: str, system: str, number: str
) -> None:
    message = MFN.replace(b"FINEG^^^690781810", f"IDNST^^^{sent}".encode())
    bundle = converter.convert_message(message).bundle
    _, organization = _organization(bundle, sent)
    assert _without_displays(organization["identifier"]) == [
        _typed("IDNST", ANS_ST, sent),  # the identity, first: the conditional modes search it
        _typed(kind, system, number),
    ]
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize(("sent", "kind", "system", "number"), CASES)
def test_a_cda_idnat_struct_is_the_organization_the_xon_names(
    converter: Converter, sent: str, kind: str, system: str, number: str
) -> None:
    """One rule for both paths: same identity (the IdNat_Struct as sent), same identifiers."""
    v2_url, v2_org = _organization(
        converter.convert_message(MFN.replace(b"FINEG^^^690781810", f"^^^{sent}".encode())).bundle,
        sent,
    )
    xml = CCD.replace('extension="690099950"', f'extension="{sent}"')
    cda_url, cda_org = _organization(converter.convert_document(xml.encode()).bundle, sent)
    assert cda_url == v2_url
    assert cda_org["identifier"] == v2_org["identifier"]
    assert cda_org["identifier"][1]["system"] == system


@pytest.mark.parametrize(
    "value",
    [
        "310781406",  # a bare FINESS (département 31): 9 characters, not `3` + 14
        "250000015",  # a bare FINESS (Doubs): not `2` + 9
        "3123456789000",  # `3` + 12 digits: no SIRET
        "31234567890 012",  # a blank inside: not one number
        "5123456789",  # prefix 5 (TRE_G07's ended EJ code): not read
    ],
)
def test_other_values_under_the_authority_are_kept_as_sent(
    converter: Converter, value: str
) -> None:
    message = MFN.replace(b"FINEG^^^690781810", f"FINEG^^^{value}".encode())
    _, organization = _organization(converter.convert_message(message).bundle, value)
    assert [i["value"] for i in organization["identifier"]] == [value]
    assert organization["identifier"][0]["type"]["coding"][0]["code"] == "FINEG"


def test_a_site_map_changes_the_register_system(converter: Converter, tmp_path: Path) -> None:
    """The registers' systems are data: a deployment's copy of the map decides."""
    (tmp_path / "codemaps").mkdir()
    (tmp_path / "codemaps" / "IdNatStructPrefix.csv").write_text(
        "source_code,source_system,target_code,target_display,target_system,comment\n"
        "3+14,,SIRET,,urn:oid:1.2.250.1.999.77,test\n",
        encoding="utf-8",
    )
    local = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    message = MFN.replace(b"FINEG^^^690781810", b"^^^312345678900012")
    _, organization = _organization(local.convert_message(message).bundle, "312345678900012")
    assert organization["identifier"][1]["system"] == "urn:oid:1.2.250.1.999.77"
