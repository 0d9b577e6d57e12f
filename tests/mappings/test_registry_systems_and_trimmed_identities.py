"""Registry systems where templates wrote an authority themselves, and identities read
without the blanks a sender may put around a number.

identifiers.j2 writes ``identifier_system(hd_system(...))`` (the FHIR identifier
registry's URI for an OID it names, such as NPI 2.16.840.1.113883.4.6 → us-npi) while
identities keep hd_system's ``urn:oid:``. Organization.j2 (XON.6) and DFT.j2 (the PID-18
account a charge names by identifier) wrote the ``urn:oid:`` as Identifier.system: one
organization had two systems depending on the field that carried it, and a DFT's logical
reference did not name the Account the BAR wrote.

Account.j2 and Organization.j2 made their identity of the value as sent while writing it
trimmed: `` OLD-1`` and ``OLD-1`` were two Accounts holding the same identifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter import Converter
from converter.assembly.ids import stable_id
from tests.support.hl7_edit import convert_one, message, resources, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NPI_OID = "urn:oid:2.16.840.1.113883.4.6"
NPI = "1234567893"
CHU = "1.2.250.1.999.1.1"

ADT = message(
    [
        "MSH|^~\\&|APP|CHU-LYON|RECV|FAC|20260102100000+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1",
        f"PID|1||0012345^^^CHU-LYON&{CHU}&ISO^MR||DOE^JOHN||19800101|M",
        f"PD1|||Clinique du Parc^L^^^^NPI&2.16.840.1.113883.4.6&ISO^XX^^^{NPI}",
        "PV1|1|I",
    ]
)


def the(bundle: dict[str, Any], rtype: str, **match: Any) -> dict[str, Any]:
    [found] = [r for r in resources(bundle, rtype) if all(r.get(k) == v for k, v in match.items())]
    return found


def clinic(converter: Converter, pd1_3: str) -> dict[str, Any]:
    bundle, _ = convert_one(converter, set_field(ADT, "PD1", 3, pd1_3))
    return the(bundle, "Organization", name="Clinique du Parc")


# -- registry systems ---------------------------------------------------------------------
def test_an_organization_npi_in_xon_6_has_the_registry_system_and_keeps_its_id(
    converter: Converter,
) -> None:
    bundle, _ = convert_one(converter, ADT)
    organization = the(bundle, "Organization", name="Clinique du Parc")
    [identifier] = organization["identifier"]
    assert (identifier["system"], identifier["value"]) == (NPI_SYSTEM, NPI)
    # The id it had when its Identifier.system was the urn:oid: (hd_system's value).
    namespace = converter.config.id_namespace
    assert organization["id"] == stable_id(namespace, "Organization", NPI_OID, NPI)


def test_an_organization_authority_outside_the_registry_keeps_its_urn(
    converter: Converter,
) -> None:
    organization = clinic(converter, f"Clinique du Parc^L^^^^CHU-LYON&{CHU}&ISO^XX^^^{NPI}")
    assert [(i["system"], i["value"]) for i in organization["identifier"]] == [
        (f"urn:oid:{CHU}", NPI)
    ]


def test_a_dft_names_the_account_by_the_system_the_bar_wrote(converter: Converter) -> None:
    """The DFT's Encounter.account and ChargeItem.account are logical references: their
    identifier must be the one the BAR's Account has, registry URI included."""
    account = f"CPT-2024-0042^^^NPI&{NPI_OID[8:]}&ISO^AN"
    bar = set_field((SAMPLES / "BAR_P01_add-account.hl7").read_bytes(), "PID", 18, account)
    dft = set_field((SAMPLES / "DFT_P03_charges.hl7").read_bytes(), "PID", 18, account)
    bar_bundle, _ = convert_one(converter, bar)
    [written] = resources(bar_bundle, "Account")
    [bar_identifier] = written["identifier"]
    assert bar_identifier["system"] == NPI_SYSTEM
    dft_bundle, _ = convert_one(converter, dft)
    named = [
        ref["identifier"]
        for rtype in ("Encounter", "ChargeItem")
        for resource in resources(dft_bundle, rtype)
        for ref in resource.get("account", [])
    ]
    assert len(named) >= 2
    for identifier in named:
        assert (identifier["system"], identifier["value"]) == (
            bar_identifier["system"],
            bar_identifier["value"],
        )


# -- identities without surrounding blanks -------------------------------------------------
def test_an_account_number_sent_with_blanks_is_the_same_account(converter: Converter) -> None:
    ids = set()
    for number in ("OLD-1", " OLD-1", "OLD-1 ", "  OLD-1  "):
        edited = set_field(ADT, "PID", 18, f"{number}^^^CHU-LYON&{CHU}&ISO^AN")
        bundle, _ = convert_one(converter, edited)
        [account] = resources(bundle, "Account")
        assert [i["value"] for i in account["identifier"]] == ["OLD-1"]
        ids.add(account["id"])
    # One Account, whose id is the one the number sent without blanks always had.
    namespace = converter.config.id_namespace
    assert ids == {stable_id(namespace, "Account", f"urn:oid:{CHU}", "OLD-1")}


def test_a_prior_account_in_mrg_3_sent_with_blanks_is_the_same_account(
    converter: Converter,
) -> None:
    """MRG-3 (ADT^A06's prior account) goes through the same identity."""
    ids = set()
    for number in ("OLD-1", " OLD-1 "):
        edited = message(
            [
                "MSH|^~\\&|APP|CHU-LYON|RECV|FAC|20260102100000+0100||ADT^A06^ADT_A06|M1|P|2.5.1",
                "EVN|A06|20260102100000+0100",
                f"PID|1||0012345^^^CHU-LYON&{CHU}&ISO^MR||DOE^JOHN||19800101|M",
                f"MRG|0012345^^^CHU-LYON&{CHU}&ISO^MR||{number}^^^CHU-LYON&{CHU}&ISO^AN",
                "PV1|1|I",
            ]
        )
        bundle, _ = convert_one(converter, edited)
        [account] = resources(bundle, "Account")
        assert [i["value"] for i in account["identifier"]] == ["OLD-1"]
        ids.add(account["id"])
    assert len(ids) == 1


def test_an_organization_identifier_sent_with_blanks_is_the_same_organization(
    converter: Converter,
) -> None:
    plain = clinic(converter, f"Clinique du Parc^L^^^^NPI&2.16.840.1.113883.4.6&ISO^XX^^^{NPI}")
    padded = clinic(converter, f"Clinique du Parc^L^^^^NPI&2.16.840.1.113883.4.6&ISO^XX^^^ {NPI} ")
    assert padded["id"] == plain["id"]
    assert [i["value"] for i in padded["identifier"]] == [NPI]


def test_an_organization_known_by_its_name_sent_with_blanks_is_the_same_one(
    converter: Converter,
) -> None:
    plain = clinic(converter, "Clinique du Parc")
    bundle, _ = convert_one(converter, set_field(ADT, "PD1", 3, " Clinique du Parc ^L"))
    padded = the(bundle, "Organization", id=plain["id"])
    assert padded["name"] == "Clinique du Parc"


def test_an_identity_is_the_same_whatever_blanks_surround_its_values() -> None:
    """Every resource's identity reads its values as its identifiers are written
    (trimmed): a sender padding the MRN, the visit number, the doctor's id and the order
    numbers made a second Patient, Encounter, Practitioner, ServiceRequest,
    DiagnosticReport and Observations holding the same identifiers."""
    converter = Converter()
    data = (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes()
    padded = set_field(
        data,
        "PID",
        3,
        " 0012400550^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR~292106938203146 "
        "^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS",
    )
    pv1 = next(line for line in data.decode().split("\r") if line.startswith("PV1|"))
    fields = pv1.split("|")
    fields[7] = " " + fields[7]  # the attending doctor's id
    fields[19] = fields[19].replace("^", " ^", 1)  # the visit number
    padded = set_field(padded, "PV1", 7, fields[7])
    padded = set_field(padded, "PV1", 19, fields[19])
    for segment in ("ORC", "OBR"):
        padded = set_field(
            padded, segment, 3, " LAB24031400123 ^SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
        )

    def ids(raw: bytes) -> dict[str, list[str]]:
        bundle, _ = convert_one(converter, raw)
        kept = ("Patient", "Encounter", "Practitioner", "ServiceRequest", "DiagnosticReport")
        found: dict[str, list[str]] = {}
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] in (*kept, "Observation"):
                found.setdefault(resource["resourceType"], []).append(resource["id"])
        return {k: sorted(v) for k, v in found.items()}

    assert ids(padded) == ids(data)
