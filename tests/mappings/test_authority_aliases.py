"""An assigning authority written by its namespace alone is the authority its OID names.

IHE PAM France writes the national registries' HDs in full
(``ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO``), but many senders write the namespace alone
(``ASIP-SANTE-PS``). Read as two systems, they made two identities: the doctor of an MFN
STF-2 a second Practitioner beside the one PV1-7 names, a patient's INS no INS at all. The
built-in code map ``AssigningAuthorityOid`` gives the national namespaces their OIDs; a
site's own namespaces (an order number's ``DPI-ERABLE``) get theirs from a site code map
``AssigningAuthority`` in an override directory, since no built-in table can know them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ADT = SAMPLES / "ADT_A01_admission-full.hl7"  # PV1-7 Dr LEROY, RPPS with the full HD
M02 = SAMPLES / "MFN_M02_staff.hl7"
RDE = SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7"  # ORC-2 ...^DPI-ERABLE^1.2.250.1.999.2.20^ISO
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
LEROY = "10101234563"
ORDER = "PHA-2024-0316-11"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"


def practitioners(bundle: dict[str, Any], value: str) -> list[dict[str, Any]]:
    return [
        p
        for p in resources(bundle, "Practitioner")
        if any(i.get("value") == value for i in p.get("identifier", []))
    ]


def requests(bundle: dict[str, Any], value: str) -> list[dict[str, Any]]:
    return [
        r
        for r in resources(bundle, "MedicationRequest")
        if any(i.get("value") == value for i in r.get("identifier", []))
    ]


def first_order_only(data: bytes, control: str, orc2: str) -> bytes:
    """The RDE sample's header, patient and first order, ORC-2 set to ``orc2``."""
    kept: list[str] = []
    orders = 0
    for line in lines(data):
        orders += line.startswith("ORC|")
        if orders < 2:
            kept.append(line)
    edited = set_field(message(kept), "MSH", 10, control)
    return set_field(edited, "ORC", 2, orc2)


@pytest.fixture(scope="module")
def site_converter(tmp_path_factory: pytest.TempPathFactory) -> Converter:
    """A site whose override directory names its prescribing application's OID."""
    site = tmp_path_factory.mktemp("site")
    (site / "codemaps").mkdir()
    (site / "codemaps" / "AssigningAuthority.csv").write_text(
        HEADER + "DPI-ERABLE,,1.2.250.1.999.2.20,,,prescribing application\n"
        # A row without target: this site's "RPPS" namespace is a local list, not the
        # national directory.
        "RPPS,,,,,local list\n",
        encoding="utf-8",
    )
    return Converter(ConverterConfig(default_timezone="Europe/Paris", template_dirs=(site,)))


def test_an_mfn_rpps_without_oid_is_the_practitioner_pv1_7_names(converter: Converter) -> None:
    """STF-2 ``^^^ASIP-SANTE-PS^RPPS``: before, a second Practitioner (identity scoped by the
    name ``ASIP-SANTE-PS``, identifier without system) beside PV1-7's."""
    admitted, _ = convert_one(converter, ADT.read_bytes())
    stf2 = f"{LEROY}^^^ASIP-SANTE-PS^RPPS"
    listed, _ = convert_one(converter, set_field(M02.read_bytes(), "STF", 2, stf2))
    [from_adt] = practitioners(admitted, LEROY)
    [from_mfn] = practitioners(listed, LEROY)
    assert from_mfn["id"] == from_adt["id"]
    assert {"system": RPPS_SYSTEM, "value": LEROY} in [
        {k: i[k] for k in ("system", "value") if k in i} for i in from_mfn["identifier"]
    ]


def test_an_xcn_authority_without_oid_is_the_one_with_it(converter: Converter) -> None:
    full, _ = convert_one(converter, ADT.read_bytes())
    short = ADT.read_bytes().replace(b"ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", b"ASIP-SANTE-PS")
    assert short != ADT.read_bytes()
    bare, _ = convert_one(converter, short)
    assert sorted(p["id"] for p in resources(bare, "Practitioner")) == sorted(
        p["id"] for p in resources(full, "Practitioner")
    )


def test_an_ins_without_oid_is_an_ins(converter: Converter) -> None:
    """PID-3 ``^^^ASIP-SANTE-INS-NIR^INS``: before, an identifier without system, no INS-NIR
    type, and (its patient identified by the MR) nothing telling it is the INS."""
    full, _ = convert_one(converter, ADT.read_bytes())
    short = ADT.read_bytes().replace(
        b"ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO", b"ASIP-SANTE-INS-NIR"
    )
    assert short != ADT.read_bytes()
    bare, _ = convert_one(converter, short)
    [patient_full] = resources(full, "Patient")
    [patient_bare] = resources(bare, "Patient")
    assert patient_bare["id"] == patient_full["id"]
    assert patient_bare["identifier"] == patient_full["identifier"]


def test_an_order_number_echoed_without_oid_needs_the_site_alias(
    converter: Converter, site_converter: Converter
) -> None:
    """ORC-2 ``PHA-2024-0316-11^DPI-ERABLE`` after a NW that carried the OID: the site's
    AssigningAuthority row makes it the same MedicationRequest; no built-in table knows a
    hospital's application, so without the row it stays another order."""
    data = RDE.read_bytes()
    placed = first_order_only(data, "RDE-1", f"{ORDER}^DPI-ERABLE^1.2.250.1.999.2.20^ISO")
    echoed = set_field(first_order_only(data, "RDE-2", f"{ORDER}^DPI-ERABLE"), "ORC", 1, "XO")
    ids = {}
    for name, conv in (("builtin", converter), ("site", site_converter)):
        [first] = requests(convert_one(conv, placed)[0], ORDER)
        [second] = requests(convert_one(conv, echoed)[0], ORDER)
        ids[name] = (first["id"], second["id"])
        assert first["identifier"][0]["system"] == "urn:oid:1.2.250.1.999.2.20"
        if name == "site":
            assert second["identifier"][0]["system"] == "urn:oid:1.2.250.1.999.2.20"
    assert ids["site"][0] == ids["site"][1]
    assert ids["builtin"][0] != ids["builtin"][1]
    # The full EI gives the same id with or without the site's map.
    assert ids["site"][0] == ids["builtin"][0]


def test_a_site_row_without_target_keeps_a_namespace_local(
    converter: Converter, site_converter: Converter
) -> None:
    """The built-in map reads a namespace ``RPPS`` as the national directory; a site whose
    ``RPPS`` is something else says so with an empty target."""
    stf2 = f"{LEROY}^^^RPPS^RPPS"
    data = set_field(M02.read_bytes(), "STF", 2, stf2)
    [national] = practitioners(convert_one(converter, data)[0], LEROY)
    [local] = practitioners(convert_one(site_converter, data)[0], LEROY)
    assert national["identifier"][0]["system"] == RPPS_SYSTEM
    assert "system" not in local["identifier"][0]
    assert local["id"] != national["id"]
