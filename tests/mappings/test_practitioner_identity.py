"""One practitioner, one Practitioner: national register numbers and assigning authorities
read the same way wherever and however they are written.

French feeds name a doctor by the RPPS number in many shapes: XCN.9 in full
(``ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO``), XCN.13 ``RPPS`` alone with no XCN.9, an MFN
PRA-6 ``10003456789^RPPS`` (PLN), an STF-2 typed RPPS without CX.4. Each shape used to
give its own identity (the last three scoped by the sending facility), so the warehouse
held several Practitioners of one doctor, one per hospital and per message type. An
authority written with blanks around its name, or as ``urn:oid:…``, was another scope or
no system at all: the survivor of a merge whose MRG-1 wrote ``CHU `` was taken for another
record and retired in favour of itself. A master file's Practitioner lists each identifier
once, and an XCN.7 degree is a qualification, not a second name of the same doctor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.datetimes import TimestampConverter
from converter.templates.codemaps import CodeMaps
from converter.templates.filters import ValueFilters
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "hl7v2"
ADT = SAMPLES / "ADT_A01_admission-full.hl7"  # PV1-7 Dr LEROY, RPPS with the full HD
A40 = SAMPLES / "ADT_A40_merge-patient.hl7"
M02 = SAMPLES / "MFN_M02_staff.hl7"
REF = SAMPLES / "REF_I12_referral.hl7"  # PRD-7 10101234567^RPPS (Dr LAMBERT)
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
FULL_HD = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
NUMBER = "10003456789"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"
# The first MFN record (Dr LEROY), its STF and its PRA.
LEROY_MFE = "MFE|MAD|CHU-MFN-20240315-000201-1|"
LEROY_STF = "STF|LEROYP^LEROY Paul^L|"
LEROY_PRA = "PRA|LEROYP^LEROY Paul^L|"


def with_number(resource: dict[str, Any], value: str) -> bool:
    return any(i.get("value") == value for i in resource.get("identifier", []))


def practitioners(bundle: dict[str, Any], value: str) -> list[dict[str, Any]]:
    return [p for p in resources(bundle, "Practitioner") if with_number(p, value)]


def systems(resource: dict[str, Any], value: str) -> list[str | None]:
    """The system of every identifier of ``resource`` holding ``value``."""
    return [i.get("system") for i in resource["identifier"] if i.get("value") == value]


def admitted_by(converter: Converter, xcn: str, msh4: str | None = None) -> dict[str, Any]:
    """The Practitioner of PV1-7 ``xcn`` in the ADT sample (MSH-4 replaced when given)."""
    data = set_field(ADT.read_bytes(), "PV1", 7, xcn)
    if msh4 is not None:
        data = set_field(data, "MSH", 4, msh4)
    bundle, _ = convert_one(converter, data)
    [found] = practitioners(bundle, xcn.split("^")[0])
    return found


def first_record(stf: str, pra: str, event: str = "MAD") -> bytes:
    """The M02 sample's header and its first record only, with that STF and PRA."""
    data = M02.read_bytes()
    kept: list[str] = []
    for line in lines(data):
        if line.startswith("MFE|") and not line.startswith(LEROY_MFE):
            break
        if line.startswith(LEROY_MFE):
            line = line.replace("MFE|MAD|", f"MFE|{event}|", 1)
        elif line.startswith(LEROY_STF):
            line = stf
        elif line.startswith(LEROY_PRA):
            line = pra
        kept.append(line)
    return message(kept)


def pra_with(pra6: str) -> str:
    """The sample's first PRA with PRA-6 ``pra6``."""
    fields = next(line for line in lines(M02.read_bytes()) if line.startswith(LEROY_PRA))
    parts = fields.split("|")
    parts[6] = pra6
    return "|".join(parts)


@pytest.fixture(scope="module")
def local_rpps(tmp_path_factory: pytest.TempPathFactory) -> Converter:
    """A site whose ``RPPS`` namespace is a local list (a row without target)."""
    site = tmp_path_factory.mktemp("site")
    (site / "codemaps").mkdir()
    (site / "codemaps" / "AssigningAuthority.csv").write_text(
        HEADER + "RPPS,,,,,local list\n", encoding="utf-8"
    )
    return Converter(ConverterConfig(default_timezone="Europe/Paris", template_dirs=(site,)))


# 1. MFN^M02 PRA-6 (PLN) typed RPPS.


@pytest.mark.parametrize("pra6", [f"{NUMBER}^RPPS", f"{NUMBER}^RPPS^Ordre des médecins"])
def test_an_mfn_pra_6_rpps_is_the_practitioner_pv1_7_names(converter: Converter, pra6: str) -> None:
    """A record naming the person by PRA-6 alone (no STF-1, no STF-2): before, a second
    Practitioner scoped by the sending facility (or by PLN.3's text), identifier without
    system."""
    from_adt = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS")
    bundle, _ = convert_one(converter, first_record("STF|||MARTIN^Jean^^^Dr^^L", pra_with(pra6)))
    [from_mfn] = practitioners(bundle, NUMBER)
    assert from_mfn["id"] == from_adt["id"]
    assert systems(from_mfn, NUMBER) == [RPPS_SYSTEM]


def test_an_mfn_mdc_of_a_pra_6_rpps_leaves_the_national_practitioner_active(
    converter: Converter,
) -> None:
    """One hospital's MDC says the doctor no longer works there, not that the national
    Practitioner every hospital names is inactive (as for an STF-2 RPPS)."""
    record = first_record("STF|||MARTIN^Jean^^^Dr^^L", pra_with(f"{NUMBER}^RPPS"), event="MDC")
    bundle, _ = convert_one(converter, record)
    [from_mfn] = practitioners(bundle, NUMBER)
    assert "active" not in from_mfn
    roles = resources(bundle, "PractitionerRole")
    assert roles and all(r["active"] is False for r in roles)


def test_an_stf_2_typed_rpps_without_authority_is_national(converter: Converter) -> None:
    from_adt = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS")
    stf = f"STF|MARTINJ^MARTIN Jean^L|{NUMBER}^^^^RPPS|MARTIN^Jean^^^Dr^^L"
    bundle, _ = convert_one(converter, first_record(stf, pra_with("")))
    [from_mfn] = practitioners(bundle, NUMBER)
    assert from_mfn["id"] == from_adt["id"]
    assert systems(from_mfn, NUMBER) == [RPPS_SYSTEM]


def test_a_referral_prd_7_rpps_beside_a_qualifier_is_national(converter: Converter) -> None:
    """PRD-7 ``…^RPPS^Ordre des médecins``: PLN.3 names who issued it, not an authority."""
    plain, _ = convert_one(converter, REF.read_bytes())
    qualified = REF.read_bytes().replace(b"10101234567^RPPS", b"10101234567^RPPS^Ordre des m")
    assert qualified != REF.read_bytes()
    again, _ = convert_one(converter, qualified)
    [before] = practitioners(plain, "10101234567")
    [after] = practitioners(again, "10101234567")
    assert after["id"] == before["id"]
    assert systems(after, "10101234567") == [RPPS_SYSTEM]


# 2. XCN.13 RPPS without XCN.9.


def test_an_xcn_typed_rpps_without_authority_is_one_practitioner_for_every_hospital(
    converter: Converter,
) -> None:
    full = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS")
    bare = f"{NUMBER}^MARTIN^Jean^^^^^^^^^^RPPS"
    lyon = admitted_by(converter, bare)
    vienne = admitted_by(converter, bare, msh4="CH-VIENNE^1.2.250.1.999.1.2^ISO")
    assert lyon["id"] == vienne["id"] == full["id"]
    assert systems(lyon, NUMBER) == [RPPS_SYSTEM]


def test_an_xcn_9_given_keeps_its_authority_whatever_xcn_13(converter: Converter) -> None:
    """A local list named in XCN.9 stays that list's, even typed RPPS."""
    local = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^^^^ANNUAIRE-LOCAL^^^^RPPS")
    national = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^^^^^^^^RPPS")
    assert local["id"] != national["id"]
    assert systems(local, NUMBER) == [None]


def test_a_site_keeping_rpps_local_keeps_it_facility_scoped(local_rpps: Converter) -> None:
    bare = f"{NUMBER}^MARTIN^Jean^^^^^^^^^^RPPS"
    lyon = admitted_by(local_rpps, bare)
    vienne = admitted_by(local_rpps, bare, msh4="CH-VIENNE^1.2.250.1.999.1.2^ISO")
    assert lyon["id"] != vienne["id"]
    assert systems(lyon, NUMBER) == [None]


# 3. One authority, one scope and one system, whatever its spelling.


@pytest.mark.parametrize(
    "xcn9",
    [
        "ASIP-SANTE-PS",
        " ASIP-SANTE-PS ",
        "1.2.250.1.71.4.2.1",
        "urn:oid:1.2.250.1.71.4.2.1",
        "URN:OID:1.2.250.1.71.4.2.1",
        "&1.2.250.1.71.4.2.1&ISO",
        "&urn:oid:1.2.250.1.71.4.2.1&ISO",
    ],
)
def test_every_spelling_of_an_authority_is_one_system_and_identity(
    converter: Converter, xcn9: str
) -> None:
    full = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS")
    other = admitted_by(converter, f"{NUMBER}^MARTIN^Jean^^^Dr^^^{xcn9}^L^^^RPPS")
    assert other["id"] == full["id"]
    assert systems(other, NUMBER) == [RPPS_SYSTEM]


def test_a_patient_authority_written_as_a_urn_has_its_system(converter: Converter) -> None:
    """PID-3 ``^^^urn:oid:…``: before, an identifier without system, its URN as assigner."""
    written = set_field(ADT.read_bytes(), "PID", 3, "0012345678^^^urn:oid:1.2.250.1.999.1.1^MR")
    bundle, _ = convert_one(converter, written)
    [patient] = resources(bundle, "Patient")
    [identifier] = patient["identifier"]
    assert identifier["system"] == "urn:oid:1.2.250.1.999.1.1"
    assert "assigner" not in identifier


@pytest.mark.parametrize(
    "msh4", ["^urn:oid:1.2.250.1.999.1.1^ISO", "urn:oid:1.2.250.1.999.1.1", "1.2.250.1.999.1.1"]
)
def test_a_sending_facility_as_a_urn_is_the_facility_its_oid_names(
    converter: Converter, msh4: str
) -> None:
    """An XCN without authority is scoped by MSH-4: its OID as a URN was another scope."""
    sample = admitted_by(converter, "LOC123^LEROY^Paul")  # MSH-4 CHU-LYON^1.2.250.1.999.1.1^ISO
    assert admitted_by(converter, "LOC123^LEROY^Paul", msh4=msh4)["id"] == sample["id"]


def test_a_facility_scope_drops_the_urn_of_its_oid() -> None:
    filters = ValueFilters(
        TimestampConverter("Europe/Paris"),
        CodeMaps.load([REPO / "mappings" / "codemaps"]),
        strict=True,
    )
    assert filters.facility_scope("urn:oid:1.2.250.1.999.1.1") == "1.2.250.1.999.1.1"
    assert filters.hd_system(" urn:oid:1.2.250.1.999.1.1 ") == "urn:oid:1.2.250.1.999.1.1"
    # Not an OID after the prefix: a name like any other, kept as written.
    assert filters.facility_scope("urn:oid:CHU") == "urn:oid:CHU"
    assert filters.hd_system("urn:oid:CHU") is None


@pytest.mark.parametrize("mrg1", ["0012345999^^^CHU ^MR", "0012345999^^^ CHU^MR"])
def test_a_merge_naming_the_survivor_with_blanks_round_its_authority_retires_nothing(
    converter: Converter, mrg1: str
) -> None:
    """MRG-1 ``…^^^CHU ^MR`` is PID-3 ``…^^^CHU^MR``: before, taken for another record, the
    survivor was written inactive and replaced by itself."""
    data = set_field(A40.read_bytes(), "PID", 3, "0012345999^^^CHU^MR")
    bundle, warnings = convert_one(converter, set_field(data, "MRG", 1, mrg1))
    [patient] = resources(bundle, "Patient")
    assert patient.get("active") is not False
    assert "link" not in patient
    assert [i["value"] for i in patient["identifier"]] == ["0012345999"]
    assert "MRG-1 names the surviving patient of PID itself; no merge link written" in warnings


# Each identifier once in a master file's Practitioner.


@pytest.mark.parametrize(
    "stf2",
    [
        f"{NUMBER}^^^{FULL_HD}^RPPS~{NUMBER}^^^ASIP-SANTE-PS^RPPS",
        f"{NUMBER}^^^{FULL_HD}^RPPS~{NUMBER}^^^^RPPS",
    ],
)
def test_an_stf_2_listing_one_identifier_twice_writes_it_once(
    converter: Converter, stf2: str
) -> None:
    stf = f"STF|MARTINJ^MARTIN Jean^L|{stf2}|MARTIN^Jean^^^Dr^^L"
    bundle, _ = convert_one(converter, first_record(stf, pra_with("")))
    [from_mfn] = practitioners(bundle, NUMBER)
    assert systems(from_mfn, NUMBER) == [RPPS_SYSTEM]


@pytest.mark.parametrize("pra6", [f"{NUMBER}^RPPS", "LIC-1^SL^CA"])
def test_pra_segments_repeating_one_pra_6_write_it_once(converter: Converter, pra6: str) -> None:
    pra = pra_with(pra6)
    record = first_record("STF|||MARTIN^Jean^^^Dr^^L", pra)
    twice = message([*lines(record), pra.replace("|||1", "|||2")])
    assert twice.count(pra6.encode()) == 2
    bundle, _ = convert_one(converter, twice)
    [from_mfn] = practitioners(bundle, pra6.split("^")[0])
    assert len(from_mfn["identifier"]) == 1


# XCN.7 degree.


def test_an_xcn_degree_is_a_qualification_not_a_second_name(converter: Converter) -> None:
    """IG XCN[Practitioner]: XCN.7 → qualification.code. As a name suffix, the doctor named
    with ``MD`` in PV1-7 and without it in PV1-17 got two names."""
    with_degree = f"{NUMBER}^MARTIN^Jean^^^Dr^MD^^{FULL_HD}^L^^^RPPS"
    without = f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS"
    data = set_field(set_field(ADT.read_bytes(), "PV1", 7, with_degree), "PV1", 17, without)
    bundle, _ = convert_one(converter, data)
    [doctor] = practitioners(bundle, NUMBER)
    assert doctor["name"] == [
        {"use": "official", "family": "MARTIN", "given": ["Jean"], "prefix": ["Dr"]}
    ]
    [qualification] = doctor["qualification"]
    [coding] = qualification["code"]["coding"]
    assert (coding["system"], coding["code"]) == (
        "http://terminology.hl7.org/CodeSystem/v2-0360",
        "MD",
    )


def test_an_mfn_mdl_of_a_pra_6_rpps_does_not_write_the_national_practitioner(
    converter: Converter,
) -> None:
    """MDL of a record identified only by a national PRA-6 (no PLN.3): the shared
    Practitioner is not written (it was PUT, with a warning saying "written inactive")."""
    record = first_record("STF|||MARTIN^Jean^^^Dr^^L", pra_with(f"{NUMBER}^RPPS"), event="MDL")
    bundle, warnings = convert_one(converter, record)
    assert practitioners(bundle, NUMBER) == []
    assert any("MDL" in w and "shared with other senders" in w for w in warnings)


def test_xcn_name_type_and_dates_are_the_names_use_and_period(converter: Converter) -> None:
    """IG XCN[Practitioner]: XCN.10 → name.use (NameType), XCN.19/20 → name.period, else the
    XCN.17 validity range. A mention without them (PV1-17) is the same name written with
    less: one name, not two (the merge gathers it)."""
    dated = f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS^^^^^^20200101^20301231"
    ranged = f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^L^^^RPPS^^^^20190101&20291231"
    plain = f"{NUMBER}^MARTIN^Jean^^^Dr^^^{FULL_HD}^^^^RPPS"
    data = set_field(set_field(ADT.read_bytes(), "PV1", 7, dated), "PV1", 17, plain)
    [doctor] = practitioners(convert_one(converter, data)[0], NUMBER)
    assert doctor["name"] == [
        {
            "use": "official",
            "family": "MARTIN",
            "given": ["Jean"],
            "prefix": ["Dr"],
            "period": {"start": "2020-01-01", "end": "2030-12-31"},
        }
    ]
    data = set_field(set_field(ADT.read_bytes(), "PV1", 7, ranged), "PV1", 17, plain)
    [doctor] = practitioners(convert_one(converter, data)[0], NUMBER)
    [name] = doctor["name"]
    assert name["period"] == {"start": "2019-01-01", "end": "2029-12-31"}
