"""Session 23, HL7 v2 templates.

- PV1-5 preadmit number (IG PV1[Encounter]: hospitalization.preAdmissionIdentifier). A
  pre-admission known by it alone had no identity: its A05, a re-sent A05 and its A38
  cancellation were three Encounters (put mode), the planned one never cancelled. It was
  also an Encounter.identifier beside PV1-19: once the stay was admitted under a visit
  number, a message naming the visit by its preadmit number alone matched two Encounters
  in the conditional modes and the server refused the message.
- PR1-4 procedure description is code.text when PR1-3.9 is not valued (IG PR1[Procedure]
  row 4), also beside a coded PR1-3: it was dropped.
- XAD.1 is an SAD (IG SAD[Address]): SAD.2 street name and SAD.3 dwelling number were
  dropped, so "1000&Hospital Lane" lost its street.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from converter.assembly.bundle import RequestMode
from tests.mappings.test_siu import message as siu_message
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import message, resources, segment

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
CHU_SYSTEM = "urn:oid:1.2.250.1.999.1.1"
PREADMIT = f"PRE-2024-0042^^^{CHU}"
VISIT = f"2024000505^^^{CHU}^VN"
ADMITTED = "20240422070000+0200"


def _adt(
    event: str,
    pv1: dict[int, str],
    *,
    structure: str = "ADT_A01",
    control: str | None = None,
    pid: dict[int, str] | None = None,
    more: tuple[str, ...] = (),
) -> bytes:
    """A small ADT message (few entries: the test server's conditional transactions take 8
    at most): no location, so no Location or Organization."""
    patient = {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle", 7: "19780114", 8: "F"}
    patient.update(pid or {})
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            f"ADT^{event}^{structure}|{control or 'S23-' + event}|P|2.5.1",
            segment("EVN", {1: event, 2: "20240410151230+0200"}),
            segment("PID", patient),
            segment("PV1", pv1),
            *more,
        ]
    )


def _encounter(converter: Converter, data: bytes) -> dict[str, Any]:
    [found] = resources(converter.convert_message(data).bundle, "Encounter")
    return found


def _values(identifiers: list[dict[str, Any]]) -> list[str]:
    return [i["value"] for i in identifiers]


# --- PV1-5 preadmit number ---------------------------------------------------------------


def test_a_pre_admission_known_by_its_preadmit_number_alone_is_one_encounter(
    converter: Converter,
) -> None:
    """A05, the A05 re-sent under another control id and the A38 that cancels it name one
    visit: they were three Encounters, the planned one never cancelled."""
    pre = {2: "I", 5: PREADMIT}
    first = _encounter(converter, _adt("A05", pre, structure="ADT_A05"))
    again = _encounter(converter, _adt("A05", pre, structure="ADT_A05", control="S23-A05-bis"))
    cancel = _encounter(converter, _adt("A38", pre, structure="ADT_A38"))
    assert first["id"] == again["id"] == cancel["id"]
    assert (first["status"], cancel["status"]) == ("planned", "cancelled")
    assert first["hospitalization"]["preAdmissionIdentifier"] == {
        "system": CHU_SYSTEM,
        "value": "PRE-2024-0042",
    }


def test_preadmit_numbers_of_one_authority_are_not_visit_numbers(converter: Converter) -> None:
    """Preadmit 123 and visit 123 of one hospital are two counters: two visits."""
    pre = _encounter(converter, _adt("A05", {2: "I", 5: f"123^^^{CHU}"}, structure="ADT_A05"))
    visit = _encounter(converter, _adt("A01", {2: "I", 19: f"123^^^{CHU}^VN"}))
    assert pre["id"] != visit["id"]


def test_an_admit_time_keeps_identifying_a_visit_without_a_visit_number(
    converter: Converter,
) -> None:
    """The preadmit number comes after the patient and PV1-44 in the identity: a visit that
    PV1-44 identified keeps its id, whether or not a message carries PV1-5."""
    with_preadmit = _encounter(converter, _adt("A01", {2: "I", 5: PREADMIT, 44: ADMITTED}))
    without = _encounter(converter, _adt("A03", {2: "I", 44: ADMITTED, 45: "20240426110000+0200"}))
    assert with_preadmit["id"] == without["id"]


def test_the_preadmit_number_is_no_identifier_beside_a_visit_number(converter: Converter) -> None:
    """IG PV1[Encounter]: PV1-5 → preAdmissionIdentifier; PV1-19 is the identifier."""
    found = _encounter(converter, _adt("A01", {2: "I", 5: PREADMIT, 19: VISIT, 44: ADMITTED}))
    assert _values(found["identifier"]) == ["2024000505"]
    assert found["hospitalization"]["preAdmissionIdentifier"]["value"] == "PRE-2024-0042"


def test_a_visit_number_keeps_one_encounter_from_a05_to_a01_and_a08(converter: Converter) -> None:
    """The visit number stays the identity, whether a message repeats PV1-5 or not."""
    ids = {
        _encounter(converter, _adt("A05", {2: "I", 5: PREADMIT, 19: VISIT}, structure="ADT_A05"))[
            "id"
        ],
        _encounter(converter, _adt("A01", {2: "I", 5: PREADMIT, 19: VISIT, 44: ADMITTED}))["id"],
        _encounter(converter, _adt("A08", {2: "I", 19: VISIT, 44: ADMITTED}))["id"],
    }
    assert len(ids) == 1


@pytest.mark.parametrize("mode", ["conditional-create", "conditional-update"])
def test_conditional_modes_match_a_pre_admission_on_its_preadmit_number(mode: RequestMode) -> None:
    """While no visit number names it, the preadmit number is what a conditional request
    finds the pre-admission by (R4 has no search parameter on preAdmissionIdentifier)."""
    writer = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    bundle = writer.convert_message(_adt("A05", {2: "I", 5: PREADMIT}, structure="ADT_A05")).bundle
    [request] = [
        e["request"] for e in bundle["entry"] if e["request"]["url"].startswith("Encounter")
    ]
    search = request.get("ifNoneExist") or request["url"].partition("?")[2]
    assert search == f"identifier={CHU_SYSTEM}|PRE-2024-0042"


def test_on_a_fhir_server_a_preadmit_message_after_the_admission_is_not_refused(
    fhir_server: FhirServer,
) -> None:
    """Conditional update: A05 (PV1-5 only), A01 (PV1-5 and PV1-19), then the A38 naming
    the visit by PV1-5 alone. Both Encounters listed the preadmit number, and the A38's
    conditional PUT matched two: the server refused the message."""
    fhir_server.reset()
    writer = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    for data in (
        _adt("A05", {2: "I", 5: PREADMIT}, structure="ADT_A05"),
        _adt("A01", {2: "I", 5: PREADMIT, 19: VISIT, 44: ADMITTED}),
        _adt("A38", {2: "I", 5: PREADMIT}, structure="ADT_A38"),
    ):
        fhir_server.transact(writer.convert_message(data).bundle)
    [pre] = fhir_server.search_by_identifier("Encounter", CHU_SYSTEM, "PRE-2024-0042")
    [stay] = fhir_server.search_by_identifier("Encounter", CHU_SYSTEM, "2024000505")
    assert (pre["status"], stay["status"]) == ("cancelled", "in-progress")


def test_a23_deletes_a_pre_admission_known_by_its_preadmit_number(converter: Converter) -> None:
    """A23 (delete a patient visit) names the visit as every message does: a pre-admission
    by PV1-5. It was refused (no PV1-19 nor PV1-44)."""
    pre = {2: "I", 5: PREADMIT}
    planned = _encounter(converter, _adt("A05", pre, structure="ADT_A05"))
    bundle = converter.convert_message(_adt("A23", pre, structure="ADT_A21")).bundle
    deletes = [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]
    assert deletes == [f"Encounter/{planned['id']}"]


def test_a23_without_any_visit_number_is_still_refused(converter: Converter) -> None:
    with pytest.raises(MappingError, match="PV1-5 preadmit number"):
        converter.convert_message(_adt("A23", {2: "I"}, structure="ADT_A21"))


def test_a_pv1_naming_only_a_preadmit_number_describes_a_visit(converter: Converter) -> None:
    """No class, location nor visit number, but a preadmit number: a visit, not a
    placeholder PV1 (which gives no Encounter)."""
    found = _encounter(converter, _adt("A05", {1: "1", 5: PREADMIT}, structure="ADT_A05"))
    assert found["hospitalization"]["preAdmissionIdentifier"]["value"] == "PRE-2024-0042"


def test_an_appointment_of_a_pre_admission_names_its_encounter(converter: Converter) -> None:
    """SIU writes the Encounter of a visit something identifies across the appointment's
    messages: a preadmit number does now (it was left out with a warning)."""
    pv1 = {1: "1", 2: "I", 5: PREADMIT}
    ids = set()
    for n, event in enumerate(["S12", "S14"]):
        conversion = converter.convert_message(
            siu_message(event, pv1=pv1, control_id=f"S23-SIU-{n}")
        )
        assert not [w for w in conversion.warnings if "PV1 without visit number" in w]
        [found] = resources(conversion.bundle, "Encounter")
        ids.add(found["id"])
    assert len(ids) == 1


# --- PR1-4 procedure description ---------------------------------------------------------


def _procedure(converter: Converter, pr1: dict[int, str]) -> dict[str, Any]:
    data = _adt(
        "A08",
        {2: "I", 19: VISIT},
        more=(segment("PR1", {1: "1", 5: "20240422080000+0200", **pr1}),),
    )
    [found] = resources(converter.convert_message(data).bundle, "Procedure")
    return found


def test_a_procedure_description_is_the_text_of_a_coded_procedure(converter: Converter) -> None:
    found = _procedure(
        converter,
        {3: "NFKA007^Arthroplastie totale du genou^CCAM", 4: "PTG droite, voie parapatellaire"},
    )
    assert found["code"]["text"] == "PTG droite, voie parapatellaire"
    assert found["code"]["coding"][0]["code"] == "NFKA007"


def test_a_procedure_description_is_the_text_beside_modifiers(converter: Converter) -> None:
    found = _procedure(
        converter,
        {3: "44970^Lap appendectomy^C4", 4: "Laparoscopic appendectomy", 16: "26^Professional^C4"},
    )
    assert found["code"]["coding"][0]["code"] == "44970:26"
    assert found["code"]["text"] == "Laparoscopic appendectomy"


def test_the_original_text_of_the_code_wins_over_the_description(converter: Converter) -> None:
    """IG PR1[Procedure] row 4: PR1-4 "IF PR1-3.9 NOT VALUED"."""
    found = _procedure(
        converter,
        {3: "44970^Lap appendectomy^C4^^^^^^As dictated", 4: "Laparoscopic appendectomy"},
    )
    assert found["code"]["text"] == "As dictated"


def test_the_description_does_not_change_a_coded_procedure_identity(converter: Converter) -> None:
    coded = {3: "NFKA007^Arthroplastie totale du genou^CCAM"}
    assert (
        _procedure(converter, coded)["id"]
        == _procedure(converter, {**coded, 4: "PTG droite"})["id"]
    )


# --- XAD.1 street address (SAD) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sad", "lines"),
    [
        ("1000&Hospital Lane", ["1000", "Hospital Lane"]),
        ("&Main Street&12", ["Main Street", "12"]),
        ("12 Main Street&Main Street&12", ["12 Main Street"]),
        ("12, MAIN STREET&Main Street&12", ["12, MAIN STREET"]),
        ("112 Main Street&&12", ["112 Main Street", "12"]),
        ("12 rue Garibaldi", ["12 rue Garibaldi"]),
    ],
)
def test_street_name_and_dwelling_number_are_address_lines(
    converter: Converter, sad: str, lines: list[str]
) -> None:
    """IG SAD[Address]: SAD.1, SAD.2, SAD.3 → line[1..3]; a part SAD.1 already holds is
    not written twice. XAD.2 other designation follows."""
    data = _adt(
        "A28",
        {1: "1"},
        structure="ADT_A05",
        pid={11: f"{sad}^Bat. B^Lyon^^69007^FRA^H"},
        more=(
            segment("NK1", {1: "1", 2: "MOREAU^Marc", 3: "SPO^Spouse^HL70063", 4: f"{sad}^^Lyon"}),
        ),
    )
    bundle = converter.convert_message(data).bundle
    [patient] = resources(bundle, "Patient")
    [relative] = resources(bundle, "RelatedPerson")
    assert patient["address"][0]["line"] == [*lines, "Bat. B"]
    assert relative["address"][0]["line"] == lines


# --- OBX-24 performing organization address ----------------------------------------------


def _oru(obx: dict[int, str]) -> bytes:
    return message(
        [
            "MSH|^~\\&|LAB|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240610090000+0200||"
            "ORU^R01^ORU_R01|S23-ORU|P|2.5.1",
            segment("PID", {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle"}),
            segment("OBR", {1: "1", 3: "F1^LAB", 4: "GLU^Glucose^L", 7: "20240610080000+0200"}),
            segment(
                "OBX",
                {1: "1", 2: "NM", 3: "2345-7^Glucose^LN", 5: "5.2", 6: "mmol/L", 11: "F", **obx},
            ),
        ]
    )


LAB = f"Laboratoire Central^^^^^{CHU}^XX^^^LAB01"
LAB_ADDRESS = "5 place d'Arsonval^^Lyon^^69003^FRA^B"


@pytest.mark.parametrize("director", ["", "10101234563^LEROY^Paul"])
def test_the_performing_organization_has_its_address(converter: Converter, director: str) -> None:
    """IG OBX[Observation] row 24: OBX-24 → the OBX-23 Organization's address (with or
    without an OBX-25 medical director). It was dropped."""
    bundle = converter.convert_message(_oru({23: LAB, 24: LAB_ADDRESS, 25: director})).bundle
    [observation] = resources(bundle, "Observation")
    [lab] = [o for o in resources(bundle, "Organization") if o.get("name") == "Laboratoire Central"]
    assert f"Organization/{lab['id']}" in [p["reference"] for p in observation["performer"]]
    assert lab["address"] == [
        {
            "use": "work",
            "line": ["5 place d'Arsonval"],
            "city": "Lyon",
            "postalCode": "69003",
            "country": "FRA",
        }
    ]


def test_a_performing_organization_without_address_is_as_before(converter: Converter) -> None:
    bundle = converter.convert_message(_oru({23: LAB})).bundle
    [lab] = [o for o in resources(bundle, "Organization") if o.get("name") == "Laboratoire Central"]
    assert "address" not in lab
