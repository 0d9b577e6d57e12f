"""French terminologies get the canonical URIs the ANS publishes (ANS "Terminologies de
santé" CodeSystems, FR Core, ANS FR Document Core): HL7 v2 coding-system names through
mappings/codemaps/CodingSystem.csv (CWE.3), CDA codeSystem OIDs through
mappings/codemaps/CodeSystemOid.csv. Unknown names and OIDs come out as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.hl7_edit import convert_one, resources, set_field
from tests.support.r4validator import R4Validator

REPO = Path(__file__).resolve().parents[2]
DFT = REPO / "samples" / "hl7v2" / "DFT_P03_charges.hl7"
VSM = REPO / "samples" / "cda" / "VSM_synthese-medicale.xml"

CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
CIM10 = "https://smt.esante.gouv.fr/terminologie-cim-10"
ADICAP = "https://smt.esante.gouv.fr/terminologie-adicap"
BDPM = "https://smt.esante.gouv.fr/terminologie-bdpm"
CIP_UCD = "https://smt.esante.gouv.fr/terminologie-cip_ucd"
EDQM = "https://smt.esante.gouv.fr/terminologie-standardterms"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"

#: HL7 v2 coding-system name (CWE.3) → system URI.
V2_NAMES = {
    "CCAM": CCAM,
    "CIM10": CIM10,
    "CIM-10": CIM10,
    "ADICAP": ADICAP,
    "CIP": BDPM,
    "UCD": CIP_UCD,
    # Unchanged neighbours: HL7 table 0396's ICD-10 is WHO's, not the French PMSI edition.
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
}

#: CDA codeSystem OID → system URI.
CDA_OIDS = {
    "1.2.250.1.213.2.5": CCAM,  # CI-SIS's CCAM OID
    "1.2.250.1.215.300.1": CCAM,  # the ANS CodeSystem's own OID
    "1.2.250.1.213.2.11": ADICAP,
    "1.2.250.1.213.2.3.2": BDPM,  # CIP
    "1.2.250.1.213.2.61": CIP_UCD,  # UCD
    "0.4.0.127.0.16.1.1.2.1": EDQM,
    "1.2.250.1.213.1.1.4.12": TRE_A05,
    # Unchanged: the OID is WHO ICD-10's (C-CDA and IPS documents use it too).
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
}


@pytest.fixture(scope="module")
def cda_converter() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


def _procedure_system(converter: Converter, name: str) -> tuple[str | None, list[str]]:
    data = set_field(DFT.read_bytes(), "PR1", 3, f"JANM001^Lithotritie extracorporelle^{name}")
    bundle, warnings = convert_one(converter, data)
    [procedure] = resources(bundle, "Procedure")
    [coding] = procedure["code"]["coding"]
    assert coding["code"] == "JANM001"
    return coding.get("system"), warnings


@pytest.mark.parametrize(("name", "uri"), V2_NAMES.items())
def test_v2_coding_system_name_gives_the_uri(converter: Converter, name: str, uri: str) -> None:
    system, warnings = _procedure_system(converter, name)
    assert system == uri
    # The sample's credit says how it is read (a sender convention); nothing about codes.
    assert [w for w in warnings if "credit (FT1-6 CD)" not in w] == []


def test_v2_names_are_case_insensitive(converter: Converter) -> None:
    assert _procedure_system(converter, "ccam")[0] == CCAM


@pytest.mark.parametrize("name", ["NGAP", "99UCD", "LOCALXYZ", "L"])
def test_unknown_v2_name_gives_no_system(converter: Converter, name: str) -> None:
    """No citable canonical URI (NGAP), a local 99zzz or L name: the code without system
    (the bare name was a relative URI, which validators refuse, and one system for every
    sender's local codes)."""
    assert _procedure_system(converter, name)[0] is None


def test_dft_sample_codes_carry_the_french_uris(converter: Converter) -> None:
    bundle, _ = convert_one(converter, DFT.read_bytes())
    charge_systems = {
        c["code"]["coding"][0]["code"]: c["code"]["coding"][0].get("system")
        for c in resources(bundle, "ChargeItem")
    }
    assert charge_systems == {"JANM001": CCAM, "CS": None, "YYYY600": CCAM}
    [condition] = resources(bundle, "Condition")
    assert condition["code"]["coding"][0] == {
        "system": CIM10,
        "code": "N20.0",
        "display": "Calcul du rein",
    }


def _vsm_procedures(converter: Converter, oid: str) -> dict[str, Any]:
    xml = VSM.read_text(encoding="utf-8")
    assert xml.count('codeSystem="1.2.250.1.213.2.5"') == 2
    xml = xml.replace('codeSystem="1.2.250.1.213.2.5"', f'codeSystem="{oid}"')
    [conversion] = converter.convert(xml.encode("utf-8"), input_type="cda")
    assert conversion.warnings == ()
    return conversion.bundle


@pytest.mark.parametrize(("oid", "uri"), CDA_OIDS.items())
def test_cda_code_system_oid_gives_the_uri(cda_converter: Converter, oid: str, uri: str) -> None:
    bundle = _vsm_procedures(cda_converter, oid)
    systems = {
        p["code"]["coding"][0]["code"]: p["code"]["coding"][0]["system"]
        for p in resources(bundle, "Procedure")
    }
    assert systems == {"HHFA016": uri, "HMFC004": uri}


def test_unknown_cda_oid_comes_out_as_before(cda_converter: Converter) -> None:
    bundle = _vsm_procedures(cda_converter, "1.2.250.1.999.77.1")
    assert {p["code"]["coding"][0]["system"] for p in resources(bundle, "Procedure")} == {
        "urn:oid:1.2.250.1.999.77.1"
    }


def test_vsm_sample_routes_and_document_type(cda_converter: Converter) -> None:
    [conversion] = cda_converter.convert(VSM.read_bytes(), input_type="cda")
    bundle = conversion.bundle
    routes = [r["dosageInstruction"][0]["route"] for r in resources(bundle, "MedicationRequest")]
    routes += [r["route"] for r in resources(bundle, "Immunization")]
    assert len(routes) == 4
    assert {coding["system"] for route in routes for coding in route["coding"]} == {EDQM}
    [composition] = resources(bundle, "Composition")
    assert composition["type"]["coding"][0] == {
        "system": TRE_A05,
        "code": "SYNTH",
        "display": "Synthèse",
    }


def test_french_uris_validate(converter: Converter, r4validator: R4Validator) -> None:
    data = set_field(DFT.read_bytes(), "PR1", 3, "JANM001^Lithotritie extracorporelle^CCAM")
    bundle, _ = convert_one(converter, data)
    codings = [c for r in resources(bundle, "Procedure") for c in r["code"]["coding"]]
    assert {"system": CCAM, "code": "JANM001"}.items() <= codings[0].items(), codings
    assert r4validator.validate(bundle) == []
