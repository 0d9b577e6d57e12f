"""Master file notifications (HL7 v2.5 chapter 8): MFN^M02 staff and practitioners (root
MFN_M02: PractitionerStaff.j2, PractitionerRoleStaff.j2) and MFN^M05 patient locations
(root MFN_M05: LocationMaster.j2).

The point of converting them is that the structure referential enriches the Practitioner
and Location resources the ADT feed writes: a person named by RPPS in PV1-7 and the STF
record of that RPPS, a PV1-3 bed and the LOC record of that PL, must be one resource each
(same id), never twins. MFE-1 (table 0180) says what happens to each record: MAD / MUP
write it, MDC writes it inactive, MAC active again; MDL writes a Practitioner or Location
inactive (not deleted: clinical records refer to it) and DELETEs the record's
PractitionerRoles, which only the master file writes; a record replaces the record, so one
without any role (any event but MAD) DELETEs the sender's roles of set id 1 an earlier
record wrote. A file speaks for its sender: the
roles' ids include it, and a Practitioner named by an identifier other senders share
(RPPS) is never made inactive by one hospital's MDC / MDL. An incremental M05 refers to
the parents it does not describe without writing them. The goldens of ``MFN_M02_staff``
and ``MFN_M05_locations`` pin the whole bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import (
    by_reference,
    convert_one,
    lines,
    message,
    resources,
    set_field,
)
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
M02 = SAMPLES / "MFN_M02_staff.hl7"
M05 = SAMPLES / "MFN_M05_locations.hl7"
# Names Dr LEROY Paul (RPPS 10101234563) in PV1-7 and lies in bed CARDIO^412^1 of CHU-LYON.
ADT = SAMPLES / "ADT_A01_admission-full.hl7"
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
LEROY = "10101234563"


def practitioner(bundle: dict[str, Any], value: str) -> dict[str, Any]:
    """The one Practitioner of the bundle with identifier ``value``."""
    [found] = [
        p
        for p in resources(bundle, "Practitioner")
        if any(i.get("value") == value for i in p.get("identifier", []))
    ]
    return found


def deletions(bundle: dict[str, Any]) -> list[str]:
    return [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]


def record(data: bytes, *segments: str) -> bytes:
    """``data``'s MSH and MFI with ``segments`` as its only record."""
    head = [line for line in lines(data) if line.startswith(("MSH|", "MFI|"))]
    return message([*head, *segments])


@pytest.mark.parametrize("sample", [M02, M05], ids=lambda p: p.stem)
def test_the_samples_convert_and_validate(
    converter: Converter, r4validator: R4Validator, sample: Path
) -> None:
    bundle, _ = convert_one(converter, sample.read_bytes())
    assert r4validator.validate(bundle) == []
    [header] = resources(bundle, "MessageHeader")
    assert header["eventCoding"]["code"] == sample.stem.split("_")[1]


def test_m02_records_events_and_warnings(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, M02.read_bytes())
    leroy = practitioner(bundle, LEROY)
    assert leroy["active"] is True
    assert leroy["gender"] == "male"
    assert leroy["birthDate"] == "1972-04-15"
    assert leroy["identifier"][0]["system"] == RPPS_SYSTEM
    assert [c["coding"][0]["code"] for c in leroy["communication"]] == ["fr", "en"]
    assert leroy["qualification"][0]["code"]["coding"][0]["code"] == "MD"
    assert {"system": "email", "value": "paul.leroy@chu-lyon.example.fr"} in leroy["telecom"]
    # PRA-6 repeats the RPPS of STF-2: one identifier, not two.
    assert [i["value"] for i in leroy["identifier"]].count(LEROY) == 1
    # MDC deactivate of Mme ROUX, named by her RPPS: this hospital's file says nothing of
    # her elsewhere, so no active (her role here is inactive). MDL delete of M. JOLY, named
    # by the hospital's own identifier: written inactive.
    assert "active" not in practitioner(bundle, "10107890129")
    joly = practitioner(bundle, "INTERIMJ")
    assert joly["active"] is False
    # The roles: LEROY's PRA (specialties as text, PRA-8 period), ROUX's ended one, and
    # JOLY's ORG role DELETEd.
    roles = resources(bundle, "PractitionerRole")
    leroy_role = next(r for r in roles if r["practitioner"]["reference"].endswith(leroy["id"]))
    assert leroy_role["active"] is True
    assert leroy_role["period"] == {"start": "2005-09-01"}
    assert [s["text"] for s in leroy_role["specialty"]] == [
        "Cardiologie et maladies vasculaires",
        "Médecine intensive-réanimation",
    ]
    assert [r["active"] for r in roles] == [True, True, False]
    [deleted] = deletions(bundle)
    assert deleted.startswith("PractitionerRole/")
    assert warnings == [
        "MFE-1 MDL (delete) of STF[4]: the Practitioner is written inactive, not deleted "
        "(clinical records refer to it); the roles of this record (ORG) are deleted, other "
        "senders' roles of that person left as they are"
    ]


def test_m02_gives_the_practitioner_the_id_pv1_7_gives_it(converter: Converter) -> None:
    admitted, _ = convert_one(converter, ADT.read_bytes())
    listed, _ = convert_one(converter, M02.read_bytes())
    assert practitioner(listed, LEROY)["id"] == practitioner(admitted, LEROY)["id"]
    # Whatever the order of STF-2: the national (RPPS) identifier is the identity.
    data = M02.read_bytes()
    stf = next(line for line in lines(data) if line.startswith("STF|LEROYP"))
    fields = stf.split("|")
    fields[2] = "~".join(reversed(fields[2].split("~")))
    swapped = record(
        data, "MFE|MUP|X1|20240315103000+0100|LEROYP^LEROY Paul^L|CE", "|".join(fields)
    )
    again, _ = convert_one(converter, swapped)
    assert practitioner(again, LEROY)["id"] == practitioner(admitted, LEROY)["id"]


def test_m02_without_staff_identifier_list_matches_an_xcn_without_authority(
    converter: Converter,
) -> None:
    # STF-1 within the sending facility, as Practitioner.j2 scopes an XCN.1 without XCN.9.
    local = set_field(ADT.read_bytes(), "PV1", 7, "LEROYP^LEROY^Paul^^^Dr")
    admitted, _ = convert_one(converter, local)
    listed, _ = convert_one(
        converter,
        record(
            M02.read_bytes(),
            "MFE|MUP|X2|20240315103000+0100|LEROYP^LEROY Paul^L|CE",
            "STF|LEROYP^LEROY Paul^L||LEROY^Paul^^^Dr^^L",
        ),
    )
    [written] = resources(listed, "Practitioner")
    assert written["id"] == practitioner(admitted, "LEROYP")["id"]


def test_m02_mac_reactivates_and_an_unknown_event_warns(converter: Converter) -> None:
    data = M02.read_bytes()
    rpps = f"10107890129^^^ASIP-SANTE-PS&{RPPS_SYSTEM[8:]}&ISO^RPPS"
    stf = f"STF|ROUXC^ROUX Claire^L|{rpps}|ROUX^Claire"
    role = "PRA|ROUXC^ROUX Claire^L||SF|||||20120301|CHU-LYON^Hospices Civils de Lyon^L|||1"
    bundle, warnings = convert_one(
        converter, record(data, "MFE|MAC|X3|20240401|ROUXC|CE", stf, role)
    )
    assert practitioner(bundle, "10107890129")["active"] is True
    assert [r["active"] for r in resources(bundle, "PractitionerRole")] == [True]
    assert warnings == []
    bundle, warnings = convert_one(
        converter, record(data, "MFE|MXX|X4|20240401|ROUXC|CE", stf, role)
    )
    assert practitioner(bundle, "10107890129")["active"] is True
    assert len(warnings) == 1 and "MXX" in warnings[0]


def test_m05_gives_the_locations_the_ids_pv1_3_gives_them(converter: Converter) -> None:
    admitted, _ = convert_one(converter, ADT.read_bytes())
    [encounter] = resources(admitted, "Encounter")
    bed_ref = encounter["location"][0]["location"]["reference"]
    chain = [bed_ref]
    while "partOf" in by_reference(admitted, chain[-1]):
        chain.append(by_reference(admitted, chain[-1])["partOf"]["reference"])
    assert len(chain) == 4  # bed, room, unit, facility

    listed, warnings = convert_one(converter, M05.read_bytes())
    bed = by_reference(listed, bed_ref)
    assert bed["name"] == "Chambre 412 lit 1 (fenêtre)"
    assert bed["alias"] == ["1"]
    # The same hierarchy, each level from its own record.
    names = [by_reference(listed, ref)["name"] for ref in chain]
    assert names == [
        "Chambre 412 lit 1 (fenêtre)",
        "Chambre 412",
        "Cardiologie - unité 4A",
        "Hôpital Édouard-Herriot",
    ]
    assert [by_reference(listed, ref).get("partOf", {}).get("reference") for ref in chain] == [
        *chain[1:],
        None,
    ]
    usic = next(r for r in resources(listed, "Location") if r["name"].startswith("Soins"))
    assert usic["status"] == "inactive"
    assert warnings == [
        "not converted in MFN^M05: LCH, LRL, LCC (location characteristics, relationships "
        "other than PAR parent and charge codes have no element in R4 Location)"
    ]


def test_m05_parents_come_from_their_records_in_any_order(converter: Converter) -> None:
    # Bed first, then its unit: the bed's partOf is the unit's own record (its name), and
    # nothing is emitted twice with different values.
    data = M05.read_bytes()
    found = lines(data)
    head = found[:2]
    groups: list[list[str]] = []
    for line in found[2:]:
        if line.startswith("MFE|"):
            groups.append([])
        groups[-1].append(line)
    reordered = message([*head, *[line for group in reversed(groups) for line in group]])
    bundle, warnings = convert_one(converter, reordered)
    original, _ = convert_one(converter, data)
    assert {r["id"]: r for r in resources(bundle, "Location")} == {
        r["id"]: r for r in resources(original, "Location")
    }
    assert not any("emitted twice" in w for w in warnings)


def test_m05_mdl_writes_the_location_inactive_without_deleting_it(converter: Converter) -> None:
    data = M05.read_bytes()
    bundle, warnings = convert_one(
        converter,
        record(
            data,
            "MFE|MDL|X5|20240315|CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO|PL",
            "LOC|CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO|Lit 1|B",
            "LDP|CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO|4012^UF^L",
        ),
    )
    assert deletions(bundle) == []
    bed = next(r for r in resources(bundle, "Location") if r["name"] == "Lit 1")
    assert bed["status"] == "inactive"
    assert any("MDL" in w and "not deleted" in w for w in warnings)


def test_on_a_fhir_server_the_master_files_enrich_what_the_adt_wrote(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    admitted, _ = convert_one(converter, ADT.read_bytes())
    fhir_server.transact(admitted)
    before = fhir_server.search_by_identifier("Practitioner", RPPS_SYSTEM, LEROY)
    assert len(before) == 1 and "telecom" not in before[0]
    locations = fhir_server.count("Location")

    # The sample's last record (MDL) DELETEs a role this server never held: Medplum answers
    # 404 for the whole transaction (the service's delivery then checks the target is gone
    # and sends the rest, see README "Delivering"); the first three records here.
    data = M02.read_bytes()
    fhir_server.transact(convert_one(converter, record(data, *lines(data)[2:-3]))[0])
    fhir_server.transact(convert_one(converter, M05.read_bytes())[0])

    [leroy] = fhir_server.search_by_identifier("Practitioner", RPPS_SYSTEM, LEROY)
    assert leroy["id"] == before[0]["id"]
    assert leroy["gender"] == "male" and leroy["telecom"]
    [role] = fhir_server.search("PractitionerRole", practitioner=f"Practitioner/{leroy['id']}")[
        "entry"
    ]
    assert role["resource"]["active"] is True
    # The referential's five locations: four the ADT had written (bed, room, unit,
    # facility), one new (the closed unit).
    assert fhir_server.count("Location") == locations + 1
    [encounter] = resources(admitted, "Encounter")
    bed_id = encounter["location"][0]["location"]["reference"].split("/")[1]
    [bed] = [e["resource"] for e in fhir_server.search("Location", _id=bed_id)["entry"]]
    assert bed["name"] == "Chambre 412 lit 1 (fenêtre)"

    # MDL of M. JOLY, whose role the MAD of the same record had written: the role is gone,
    # the Practitioner stays, inactive.
    joly = lines(data)[-3:]
    assert joly[0].startswith("MFE|MDL")
    fhir_server.transact(
        convert_one(converter, record(data, joly[0].replace("MFE|MDL", "MFE|MAD"), *joly[1:]))[0]
    )
    assert fhir_server.count("PractitionerRole") == 4
    fhir_server.transact(convert_one(converter, record(data, *joly))[0])
    assert fhir_server.count("PractitionerRole") == 3
    [person] = fhir_server.search_by_identifier(
        "Practitioner", "urn:oid:1.2.250.1.999.1.1", "INTERIMJ"
    )
    assert person["active"] is False


# -- a file speaks for its sender (roles per sender; a shared identity never deactivated) --

LYON = ("CHU-LYON", "1.2.250.1.999.1.1")
VILLEFRANCHE = ("CH-VILLEFRANCHE", "1.2.250.1.999.2.1")
LEROY_RPPS = f"{LEROY}^^^ASIP-SANTE-PS&{RPPS_SYSTEM[8:]}&ISO^RPPS"


def staff_file(sender: tuple[str, str], event: str, control: str, *tail: str) -> bytes:
    """One MF_STAFF record of Dr LEROY (RPPS) from ``sender``, with ``tail`` (PRA/ORG)."""
    facility, oid = sender
    return message(
        [
            f"MSH|^~\\&|RH|{facility}^{oid}^ISO|PASSERELLE|GHT|20240315103000+0100||"
            f"MFN^M02^MFN_M02|{control}|P|2.5",
            "MFI|PRA^Practitioner master file^HL70175||UPD|||AL",
            f"MFE|{event}|{control}-1|20240315103000+0100|LEROYP^LEROY Paul^L|CE",
            f"STF|LEROYP^LEROY Paul^L|{LEROY_RPPS}|LEROY^Paul^^^Dr^^L|MED|M|19720415|A",
            *tail,
        ]
    )


def pra(institution: str) -> str:
    return f"PRA|LEROYP^LEROY Paul^L||PH||Cardiologie|||20050901|{institution}|||1"


def entry_urls(bundle: dict[str, Any], method: str, rtype: str) -> list[str]:
    return [
        e["request"]["url"]
        for e in bundle["entry"]
        if e["request"]["method"] == method and e["request"]["url"].startswith(rtype + "/")
    ]


def test_m02_roles_are_the_senders_and_a_national_practitioner_stays_active(
    converter: Converter, r4validator: R4Validator
) -> None:
    lyon, _ = convert_one(converter, staff_file(LYON, "MAD", "A1", pra("CHU-LYON^HCL^L")))
    vf, _ = convert_one(converter, staff_file(VILLEFRANCHE, "MDC", "B1", pra("CH-VF^CH VF^L")))
    [lyon_role] = resources(lyon, "PractitionerRole")
    [vf_role] = resources(vf, "PractitionerRole")
    # Same person (RPPS), same PRA set id 1: two roles, one per hospital.
    assert practitioner(lyon, LEROY)["id"] == practitioner(vf, LEROY)["id"]
    assert lyon_role["id"] != vf_role["id"]
    assert (lyon_role["active"], vf_role["active"]) == (True, False)
    # Villefranche's MDC says nothing of Dr LEROY in Lyon: no active on the Practitioner.
    assert "active" not in practitioner(vf, LEROY)
    assert r4validator.validate(vf) == []
    # Villefranche's MDL: its own role DELETEd, the national Practitioner not written.
    deleting, warnings = convert_one(
        converter, staff_file(VILLEFRANCHE, "MDL", "B2", pra("CH-VF^CH VF^L"))
    )
    assert deletions(deleting) == [f"PractitionerRole/{vf_role['id']}"]
    assert resources(deleting, "Practitioner") == []
    assert warnings == [
        "MFE-1 MDL (delete) of STF: the Practitioner is not written (its identifier is shared "
        "with other senders, so this file says nothing of the person elsewhere) nor deleted; "
        "the roles of this record (PRA) are deleted, other senders' roles of that person "
        "left as they are"
    ]


def test_m02_the_senders_own_identifier_may_be_written_inactive(converter: Converter) -> None:
    # STF-2 under the sending facility's own authority, and STF-1 alone: the hospital's key.
    own = f"LEROYP^^^CHU-LYON&{LYON[1]}&ISO^EI"
    data = staff_file(LYON, "MDC", "A2", pra("CHU-LYON^HCL^L")).replace(
        LEROY_RPPS.encode(), own.encode()
    )
    bundle, _ = convert_one(converter, data)
    [person] = resources(bundle, "Practitioner")
    assert person["active"] is False
    bundle, _ = convert_one(converter, data.replace(own.encode(), b""))
    [person] = resources(bundle, "Practitioner")
    assert person["active"] is False
    # The same value under another facility's authority is shared: no active.
    bundle, _ = convert_one(converter, data.replace(LYON[1].encode() + b"&", b"1.2.3.4&"))
    [person] = resources(bundle, "Practitioner")
    assert "active" not in person


def test_on_a_fhir_server_one_hospitals_mdl_leaves_anothers_role(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    fhir_server.transact(
        convert_one(converter, staff_file(LYON, "MAD", "A1", pra("CHU-LYON^HCL^L")))[0]
    )
    fhir_server.transact(
        convert_one(converter, staff_file(VILLEFRANCHE, "MAD", "B1", pra("CH-VF^CH VF^L")))[0]
    )
    assert fhir_server.count("PractitionerRole") == 2
    fhir_server.transact(
        convert_one(converter, staff_file(VILLEFRANCHE, "MDL", "B2", pra("CH-VF^CH VF^L")))[0]
    )
    [person] = fhir_server.search_by_identifier("Practitioner", RPPS_SYSTEM, LEROY)
    assert person["active"] is True
    [role] = [e["resource"] for e in fhir_server.search("PractitionerRole")["entry"]]
    assert role["active"] is True
    assert role["organization"]["display"] == "HCL"


@pytest.mark.parametrize("event", ["MUP", "MAC", "MDC", "MDL"])
def test_m02_a_record_without_roles_deletes_the_roles_an_earlier_record_wrote(
    converter: Converter, event: str
) -> None:
    # A record replaces the record: re-sent without the PRA (or ORG) it had, the sender's
    # role of set id 1 must go, not stay active on the server.
    with_pra, _ = convert_one(converter, staff_file(LYON, "MAD", "A1", pra("CHU-LYON^HCL^L")))
    org = "ORG|1|URG^Urgences adultes^L|||E1|IDE^Infirmier^L|||20230101"
    with_org, _ = convert_one(converter, staff_file(LYON, "MAD", "A1", org))
    bundle, warnings = convert_one(converter, staff_file(LYON, event, "A3"))
    assert resources(bundle, "PractitionerRole") == []
    assert sorted(deletions(bundle)) == sorted(
        entry_urls(with_pra, "PUT", "PractitionerRole")
        + entry_urls(with_org, "PUT", "PractitionerRole")
    )
    [warning] = warnings
    assert warning.startswith(f"MFE-1 {event} ")
    assert "its PRA and ORG roles of set id 1 are deleted" in warning


def test_m02_an_added_record_without_roles_deletes_nothing(converter: Converter) -> None:
    # MAD adds a record the receiver does not hold: no role of it can be stored.
    bundle, warnings = convert_one(converter, staff_file(LYON, "MAD", "A3"))
    assert deletions(bundle) == [] and warnings == []


def test_on_a_fhir_server_a_record_resent_without_its_pra_removes_the_role(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    fhir_server.transact(
        convert_one(converter, staff_file(LYON, "MAD", "A1", pra("CHU-LYON^HCL^L")))[0]
    )
    assert fhir_server.count("PractitionerRole") == 1
    update, _ = convert_one(converter, staff_file(LYON, "MUP", "A2"))
    # The ORG role of set id 1 was never written: the delivery drops the DELETE this
    # server answers 404 (README "Delivering"); the rest is delivered as it would be.
    stored = {
        f"PractitionerRole/{e['resource']['id']}"
        for e in fhir_server.search("PractitionerRole")["entry"]
    }
    update["entry"] = [
        e
        for e in update["entry"]
        if e["request"]["method"] != "DELETE" or e["request"]["url"] in stored
    ]
    assert len(deletions(update)) == 1
    fhir_server.transact(update)
    assert fhir_server.count("PractitionerRole") == 0
    [person] = fhir_server.search_by_identifier("Practitioner", RPPS_SYSTEM, LEROY)
    assert person["active"] is True


def test_m02_org5_is_the_persons_identifier_not_a_roles(r4validator: R4Validator) -> None:
    # Two units, one employee number (ORG-5): in a conditional mode two roles with that
    # identifier would be one match; ORG-5 names the person in the organization.
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    employee = f"E1234^^^CHU-LYON&{LYON[1]}&ISO^EI"
    bundle, _ = convert_one(
        conditional,
        record(
            M02.read_bytes(),
            "MFE|MAD|X1|20240315|INTERIMJ^JOLY Marc^L|CE",
            f"STF|INTERIMJ^JOLY Marc^L|INTERIMJ^^^CHU-LYON&{LYON[1]}&ISO^EI|JOLY^Marc|IDE|M||A",
            f"ORG|1|URG^Urgences adultes^L|||{employee}|IDE^Infirmier^L|||20230101",
            f"ORG|2|REA^Réanimation^L|||{employee}|IDE^Infirmier^L|||20230101",
        ),
    )
    roles = resources(bundle, "PractitionerRole")
    assert len(roles) == 2 and not any("identifier" in r for r in roles)
    assert len(entry_urls(bundle, "PUT", "PractitionerRole")) == 2
    [person] = resources(bundle, "Practitioner")
    assert [i["value"] for i in person["identifier"]] == ["INTERIMJ", "E1234"]
    assert r4validator.validate(bundle) == []


# -- M05: increments, versions --------------------------------------------------------------

BED_PL = "CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO"


def test_m05_an_increment_refers_to_the_parents_it_does_not_describe(
    converter: Converter, fhir_server: FhirServer
) -> None:
    full, _ = convert_one(converter, M05.read_bytes())
    increment = set_field(
        record(
            M05.read_bytes(),
            f"MFE|MUP|X-1|20240401110000+0200|{BED_PL}|PL",
            f"LOC|{BED_PL}|Chambre 412 lit 1 (porte)|B",
        ),
        "MSH",
        10,
        "CHU-MFN-20240401-1",
    )
    bundle, _ = convert_one(converter, increment)
    # The bed only; its partOf the room the full file describes, which is not rewritten.
    [bed] = resources(bundle, "Location")
    room = next(r for r in resources(full, "Location") if r["name"] == "Chambre 412")
    assert bed["partOf"] == {"reference": f"Location/{room['id']}"}
    assert bed["name"] == "Chambre 412 lit 1 (porte)"

    fhir_server.reset()
    fhir_server.transact(full)
    fhir_server.transact(bundle)
    [stored] = [e["resource"] for e in fhir_server.search("Location", _id=room["id"])["entry"]]
    assert stored["name"] == "Chambre 412" and stored["type"]
    assert fhir_server.count("Location") == 5


def test_m05_v231_is_read_by_segment_as_the_groups_read_it(converter: Converter) -> None:
    # hl7apy has no MFN_M05 for 2.3.1: the message is parsed flat.
    data = M05.read_bytes()
    flat, warnings = convert_one(converter, set_field(data, "MSH", 12, "2.3.1"))
    grouped, expected = convert_one(converter, data)
    assert {r["id"]: r for r in resources(flat, "Location")} == {
        r["id"]: r for r in resources(grouped, "Location")
    }
    assert len(resources(flat, "Location")) == 5
    assert warnings == expected


@pytest.mark.parametrize(
    "pl",
    [
        "CARDIO^^1^CHU-LYON&1.2.250.1.999.1.1&ISO",  # a bed of the unit, no room
        "^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO",  # a bed of a room, no point of care
    ],
    ids=["bed-without-room", "bed-without-point-of-care"],
)
def test_m05_a_bed_without_room_or_unit_is_the_bed_pv1_3_names(
    converter: Converter, r4validator: R4Validator, pl: str
) -> None:
    # Location.j2 marks these beds' identity with the missing level; the record of the
    # same PL used to get the level alone, a twin of the ADT's bed (a second Location).
    admitted, _ = convert_one(converter, set_field(ADT.read_bytes(), "PV1", 3, pl))
    [encounter] = resources(admitted, "Encounter")
    bed_ref = encounter["location"][0]["location"]["reference"]
    listed, _ = convert_one(
        converter, record(M05.read_bytes(), f"MFE|MAD|X6|20240315|{pl}|PL", f"LOC|{pl}|Lit 1|B")
    )
    assert r4validator.validate(listed) == []
    [bed] = resources(listed, "Location")
    assert f"Location/{bed['id']}" == bed_ref
    assert bed["partOf"] == by_reference(admitted, bed_ref)["partOf"]


UNIT = "CHU-LYON&1.2.250.1.999.1.1&ISO"


def _par(child: str, parent: str, action: str = "") -> str:
    return f"LRL|{child}^^^{UNIT}|{action}|1|PAR^Parent location^HL70325||{parent}^^^{UNIT}"


@pytest.mark.parametrize("version", ["2.5", "2.3.1"])
def test_m05_lrl_parent_location_is_part_of(
    converter: Converter, r4validator: R4Validator, version: str
) -> None:
    # A referential sending its units flat (LOC-1 a point of care each) states the
    # hierarchy with LRL-4 PAR (table 0325) and LRL-6: it used to be dropped (partOf the
    # facility, a warning "not converted: LRL"), losing the pole → unit structure.
    data = record(
        M05.read_bytes(),
        f"MFE|MAD|1|20240315|POLE-CV^^^{UNIT}|PL",
        f"LOC|POLE-CV^^^{UNIT}|Pôle cardiovasculaire|N",
        f"MFE|MAD|2|20240315|4012^^^{UNIT}|PL",
        f"LOC|4012^^^{UNIT}|UF Cardiologie HC|N",
        _par("4012", "POLE-CV"),
        f"MFE|MUP|3|20240315|4013^^^{UNIT}|PL",
        f"LOC|4013^^^{UNIT}|UF USIC|N",
        f"LRL|4013^^^{UNIT}||2|LAB^Nearest lab^HL70325||LABO^^^{UNIT}",
        _par("4013", "POLE-XX"),
        f"MFE|MUP|4|20240315|4014^^^{UNIT}|PL",
        f"LOC|4014^^^{UNIT}|UF fermée|N",
        _par("4014", "POLE-CV", action="D"),
        f"MFE|MUP|5|20240315|4015^^^{UNIT}|PL",
        f"LOC|4015^^^{UNIT}|UF mal décrite|N",
        _par("4015", "4015"),
    )
    bundle, warnings = convert_one(converter, set_field(data, "MSH", 12, version))
    assert r4validator.validate(bundle) == []
    by_name = {r["name"]: r for r in resources(bundle, "Location")}
    pole = by_name["Pôle cardiovasculaire"]
    facility = pole["partOf"]["reference"]
    assert by_name["UF Cardiologie HC"]["partOf"] == {"reference": f"Location/{pole['id']}"}
    # A parent this message does not describe: referred to by the id PV1-3 gives it.
    admitted, _ = convert_one(converter, set_field(ADT.read_bytes(), "PV1", 3, f"POLE-XX^^^{UNIT}"))
    [encounter] = resources(admitted, "Encounter")
    assert by_name["UF USIC"]["partOf"] == {
        "reference": encounter["location"][0]["location"]["reference"]
    }
    # LRL-2 D removes the relation; a PAR naming the location itself is left out.
    assert by_name["UF fermée"]["partOf"]["reference"] == facility
    assert by_name["UF mal décrite"]["partOf"]["reference"] == facility
    assert any("LRL-6 (parent location)" in w and "left out" in w for w in warnings)
    # The nearest lab (LAB) is still not converted, and said so.
    assert any(w.startswith("not converted in MFN^M05: LRL") for w in warnings)


@pytest.mark.parametrize("version", ["2.5", "2.3.1"])
def test_m05_records_of_one_location_apply_in_message_order(
    converter: Converter, r4validator: R4Validator, version: str
) -> None:
    # An MAD then the MDC of the same bed in one message: the bed ends inactive. Both
    # records were rendered and the first kept ("emitted twice"), so the bed stayed active.
    data = record(
        M05.read_bytes(),
        f"MFE|MAD|1|20240315|{BED_PL}|PL",
        f"LOC|{BED_PL}|Lit 1|B",
        f"MFE|MDC|2|20240316|{BED_PL}|PL",
        f"LOC|{BED_PL}|Lit 1 (fermé)|B",
    )
    bundle, warnings = convert_one(converter, set_field(data, "MSH", 12, version))
    assert r4validator.validate(bundle) == []
    [bed] = resources(bundle, "Location")
    assert (bed["status"], bed["name"]) == ("inactive", "Lit 1 (fermé)")
    assert warnings == []
    # Reactivated later in the same message: active again.
    again = message([*lines(data), f"MFE|MAC|3|20240317|{BED_PL}|PL", f"LOC|{BED_PL}|Lit 1|B"])
    [bed] = resources(convert_one(converter, set_field(again, "MSH", 12, version))[0], "Location")
    assert (bed["status"], bed["name"]) == ("active", "Lit 1")
