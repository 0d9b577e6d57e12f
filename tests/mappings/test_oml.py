"""OML^O21 laboratory orders (root OML_O21.j2, IG message map OML_O21), on the synthetic
sample samples/hl7v2/OML_O21_lab-order.hl7: two ORDER groups, the first with a DG1, an NTE,
an order-entry OBX and an SPM, the second with a TQ1 priority and an NTE.

The golden test pins the whole bundle; these check the order-level rules one by one:
one ServiceRequest per ORC (including the ORCs a structure parser files as prior results),
each with its own specimens, ids shared with ORM^O01, status from ORC-1 / ORC-5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import by_reference, refs
from tests.support.hl7_edit import convert_one as _convert
from tests.support.hl7_edit import insert_after as _insert_after
from tests.support.hl7_edit import lines as _lines
from tests.support.hl7_edit import message as _message
from tests.support.hl7_edit import resources as _of_type
from tests.support.hl7_edit import set_field as _set

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
OML = (SAMPLES / "OML_O21_lab-order.hl7").read_bytes()
ORM = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()

PLACER_1 = "CMD-2024-0411-01^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
PLACER_2 = "CMD-2024-0411-02^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
SPM_2 = "SPM|1|CMD-2024-0411-02-S1&SIH-ORCHIDEE||SER^Sérum^HL70487|||||||||||||20240411083500+0200"


def _drop(data: bytes, *prefixes: str) -> bytes:
    """``data`` without the segments starting with one of ``prefixes``."""
    return _message([line for line in _lines(data) if not line.startswith(prefixes)])


def _placer(resource: dict[str, Any]) -> str:
    """The value of the PLAC (ServiceRequest) or PGN (Specimen) identifier."""
    return next(
        i["value"]
        for i in resource["identifier"]
        if i["type"]["coding"][0]["code"] in ("PLAC", "PGN")
    )


# ----------------------------------------------------------------------------------------
# One ServiceRequest per order, with its own specimens.

#: (case, message, {placer number: specimen ids expected in its ServiceRequest.specimen}).
ORDER_CASES = [
    (
        "sample: SPM in order 1 only",
        OML,
        {"CMD-2024-0411-01": ["CMD-2024-0411-01-S1"], "CMD-2024-0411-02": []},
    ),
    (
        "an SPM in each order",
        _insert_after(OML, "NTE|", SPM_2, occurrence=2),
        {"CMD-2024-0411-01": ["CMD-2024-0411-01-S1"], "CMD-2024-0411-02": ["CMD-2024-0411-02-S1"]},
    ),
    (
        "two SPMs in order 1",
        _insert_after(OML, "SPM|", SPM_2.replace("SPM|1|", "SPM|2|")),
        {
            "CMD-2024-0411-01": ["CMD-2024-0411-01-S1", "CMD-2024-0411-02-S1"],
            "CMD-2024-0411-02": [],
        },
    ),
    (
        "a third order after the second",
        _insert_after(
            OML,
            "NTE|",
            "ORC|NW|CMD-2024-0411-03^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO",
            "OBR|3|CMD-2024-0411-03^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO||2160-0^Creatinine^LN",
            SPM_2.replace("-02-S1", "-03-S1"),
            occurrence=2,
        ),
        {
            "CMD-2024-0411-01": ["CMD-2024-0411-01-S1"],
            "CMD-2024-0411-02": [],
            "CMD-2024-0411-03": ["CMD-2024-0411-03-S1"],
        },
    ),
    (
        "order 1 ending on its OBX",
        _drop(OML, "SPM|"),
        {"CMD-2024-0411-01": [], "CMD-2024-0411-02": []},
    ),
    (
        "order 1 ending on its DG1",
        _drop(OML, "SPM|", "OBX|"),
        {"CMD-2024-0411-01": [], "CMD-2024-0411-02": []},
    ),
    (
        "order 1 ending on its NTE",
        _drop(OML, "SPM|", "OBX|", "DG1|"),
        {"CMD-2024-0411-01": [], "CMD-2024-0411-02": []},
    ),
    (
        "order 1 ending on its OBR, order 2 without TQ1",
        _drop(OML, "SPM|", "OBX|", "DG1|", "NTE|1|P|Diab", "TQ1|"),
        {"CMD-2024-0411-01": [], "CMD-2024-0411-02": []},
    ),
    (
        "order 1 without OBR (ORC only)",
        _message([line for line in _lines(OML) if not line.startswith("OBR|1|")]),
        {"CMD-2024-0411-01": ["CMD-2024-0411-01-S1"], "CMD-2024-0411-02": []},
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES]
)
def test_each_order_is_one_service_request_with_its_own_specimens(
    converter: Converter, message: bytes, expected: dict[str, list[str]]
) -> None:
    bundle, _ = _convert(converter, message)
    requests = _of_type(bundle, "ServiceRequest")
    assert {_placer(r): r for r in requests}.keys() == expected.keys()
    for request in requests:
        specimens = [_placer(by_reference(bundle, ref)) for ref in refs(request, "specimen")]
        assert specimens == expected[_placer(request)], _placer(request)
    assert len(_of_type(bundle, "Specimen")) == sum(map(len, expected.values()))


@pytest.mark.parametrize("version", ["2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.3.1"])
def test_the_orders_are_the_same_in_every_version(converter: Converter, version: str) -> None:
    """2.4 nests ORDER in ORDER_GENERAL; 2.3.1 defines no OML_O21 (parsed without groups)."""
    bundle, _ = _convert(converter, _set(OML, "MSH", 12, version))
    requests = _of_type(bundle, "ServiceRequest")
    assert [_placer(r) for r in requests] == ["CMD-2024-0411-01", "CMD-2024-0411-02"]
    assert [len(refs(r, "specimen")) for r in requests] == [1, 0]
    assert [r.get("priority") for r in requests] == [None, "stat"]


def test_each_order_keeps_its_own_dg1_nte_obx_and_tq1(converter: Converter) -> None:
    bundle, warnings = _convert(converter, OML)
    first, second = _of_type(bundle, "ServiceRequest")
    [reason] = refs(first, "reasonReference")
    assert by_reference(bundle, reason)["code"]["coding"][0]["code"] == "E11.9"
    [info] = refs(first, "supportingInfo")
    assert by_reference(bundle, info)["code"]["coding"][0]["code"] == "49541-6"
    assert [n["text"] for n in first["note"]] == [
        "Diabète de type 2 sous metformine : contrôle trimestriel."
    ]
    assert "priority" not in first and "occurrenceTiming" not in first
    assert second["priority"] == "stat"  # TQ1-9 S (IG TQ1[ServiceRequest], ExtendedPriorityCodes)
    assert second["occurrenceTiming"]["repeat"]["boundsPeriod"] == {
        "start": "2024-04-11T09:30:00+02:00"
    }
    [note] = second["note"]
    assert note["text"].startswith("Fièvre")
    assert "reasonReference" not in second and "supportingInfo" not in second
    assert warnings == []


# ----------------------------------------------------------------------------------------
# Ids shared with ORM^O01: an order converted from either message is one ServiceRequest.


def _orm_with_placer(placer: str, sender: str | None = None) -> bytes:
    orm = _set(_set(ORM, "ORC", 2, placer), "OBR", 2, placer)
    return _set(orm, "MSH", 4, sender) if sender else orm


@pytest.mark.parametrize(
    ("placer", "same"),
    [
        (PLACER_1, True),  # universal id (OID): the scope whatever the sender
        ("CMD-2024-0411-01^SIH-ORCHIDEE", True),  # namespace only: the namespace
        ("CMD-2024-0411-01", False),  # no authority: scoped by each sender's facility
    ],
    ids=["universal id", "namespace", "no authority, other facility"],
)
def test_the_same_placer_number_in_orm_and_oml_is_one_service_request(
    converter: Converter, placer: str, same: bool
) -> None:
    oml = _set(_set(OML, "ORC", 2, placer), "OBR", 2, placer)
    oml_bundle, _ = _convert(converter, oml)
    orm_bundle, _ = _convert(converter, _orm_with_placer(placer))
    oml_request = _of_type(oml_bundle, "ServiceRequest")[0]
    [orm_request] = _of_type(orm_bundle, "ServiceRequest")
    assert (oml_request["id"] == orm_request["id"]) is same


def test_the_same_placer_number_without_authority_from_one_facility_is_one_service_request(
    converter: Converter,
) -> None:
    oml_bundle, _ = _convert(converter, _set(_set(OML, "ORC", 2, "CMD-7"), "OBR", 2, "CMD-7"))
    orm = _orm_with_placer("CMD-7", sender="CHU-LYON^1.2.250.1.999.1.1^ISO")
    orm_bundle, _ = _convert(converter, orm)
    assert (
        _of_type(oml_bundle, "ServiceRequest")[0]["id"]
        == (_of_type(orm_bundle, "ServiceRequest")[0]["id"])
    )


def test_a_resent_oml_updates_the_same_resources(converter: Converter) -> None:
    first, _ = _convert(converter, OML)
    again, _ = _convert(converter, _set(_set(OML, "MSH", 10, "CHU-OML-OTHER"), "ORC", 1, "XO"))
    kept = ("ServiceRequest", "Specimen", "Observation", "Condition")
    ids = [(r["resourceType"], r["id"]) for e in first["entry"] for r in [e["resource"]]]
    ids_again = [(r["resourceType"], r["id"]) for e in again["entry"] for r in [e["resource"]]]
    assert [i for i in ids if i[0] in kept] == [i for i in ids_again if i[0] in kept]


# ----------------------------------------------------------------------------------------
# Status and intent from ORC-1 / ORC-5 (code maps OrderStatus and
# OrderControlCode-ServiceRequest.status, as ORM_O01).


@pytest.mark.parametrize(
    ("orc_1", "orc_5", "status"),
    [
        ("NW", "", "active"),  # ORC-1 when ORC-5 is empty
        ("NW", "SC", "active"),
        ("NW", "IP", "active"),
        ("SC", "CM", "completed"),  # ORC-5 first
        ("CA", "CA", "revoked"),
        ("DC", "", "revoked"),
        ("OH", "", "on-hold"),
        ("XO", "ER", "entered-in-error"),
        ("SN", "", "unknown"),  # no request status in the IG's map
        ("RE", "", "unknown"),
    ],
)
def test_status_comes_from_orc_5_else_orc_1(
    converter: Converter, orc_1: str, orc_5: str, status: str
) -> None:
    message = _set(_set(OML, "ORC", 1, orc_1, 2), "ORC", 5, orc_5, 2)
    bundle, _ = _convert(converter, message)
    first, second = _of_type(bundle, "ServiceRequest")
    assert second["status"] == status
    assert second["intent"] == "order"
    assert first["status"] == "active"  # the other order keeps its own ORC


def test_a_reflex_order_has_intent_reflex_order(converter: Converter) -> None:
    bundle, _ = _convert(converter, _set(OML, "OBR", 11, "G", 2))
    assert [r["intent"] for r in _of_type(bundle, "ServiceRequest")] == ["order", "reflex-order"]


# ----------------------------------------------------------------------------------------
# What the orders hold besides ORC/OBR.


def test_an_spm_obx_is_an_observation_about_its_specimen(converter: Converter) -> None:
    obx = "OBX|1|NM|3141-9^Body weight Measured^LN||72|kg^kilogramme^UCUM|||||F"
    bundle, _ = _convert(converter, _insert_after(OML, "SPM|", obx))
    [specimen] = _of_type(bundle, "Specimen")
    about = [o for o in _of_type(bundle, "Observation") if o.get("focus")]
    assert [refs(o, "focus") for o in about] == [[f"Specimen/{specimen['id']}"]]
    request = _of_type(bundle, "ServiceRequest")[0]
    assert f"Observation/{about[0]['id']}" not in refs(request, "supportingInfo")


def test_an_obx_nte_is_the_observation_note_not_the_order_note(converter: Converter) -> None:
    bundle, _ = _convert(converter, _insert_after(OML, "OBX|", "NTE|1|P|Dernier repas à 20 h."))
    request = _of_type(bundle, "ServiceRequest")[0]
    [info] = refs(request, "supportingInfo")
    assert by_reference(bundle, info)["note"] == [{"text": "Dernier repas à 20 h."}]
    assert len(request["note"]) == 1


def test_the_obr_specimen_fields_give_a_specimen_when_there_is_no_spm(
    converter: Converter,
) -> None:
    message = _set(OML, "OBR", 15, "SER&Sérum&HL70070", 2)
    bundle, _ = _convert(converter, message)
    second = _of_type(bundle, "ServiceRequest")[1]
    [ref] = refs(second, "specimen")
    assert by_reference(bundle, ref)["type"]["coding"][0]["code"] == "SER"


def test_allergies_of_the_patient_group_are_converted(converter: Converter) -> None:
    al1 = "AL1|1|DA|1605^acétaminophène^L|MO|Éruption cutanée"
    bundle, _ = _convert(converter, _insert_after(OML, "PV1|", al1))
    [allergy] = _of_type(bundle, "AllergyIntolerance")
    assert allergy["patient"]["reference"] == f"Patient/{_of_type(bundle, 'Patient')[0]['id']}"


def test_a_prior_result_is_left_out_with_a_warning(converter: Converter) -> None:
    prior = [
        "PID|1||0012400561^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||HUET^Hélène",
        "ORC|RE|CMD-2023-1102-09^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO||||CM",
        "OBR|1|CMD-2023-1102-09^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO||4548-4^HbA1c^LN",
        "OBX|1|NM|4548-4^HbA1c^LN||7.4|%^%^UCUM|||||F",
    ]
    bundle, warnings = _convert(converter, _insert_after(OML, "SPM|", *prior))
    placers = [_placer(r) for r in _of_type(bundle, "ServiceRequest")]
    assert placers == ["CMD-2024-0411-01", "CMD-2024-0411-02"]  # the ORC after it is an order
    assert len(_of_type(bundle, "Observation")) == 1  # the order-entry OBX only
    assert warnings == [
        "OML^O21 order 1: a prior result (PRIOR_RESULT, from its PID) is not converted"
    ]


def test_a_container_is_left_out_with_a_warning(converter: Converter) -> None:
    sac = ["SAC|||TUBE-0411-01", "OBX|1|NM|VOL^Volume^L||3|mL^millilitre^UCUM|||||F"]
    bundle, warnings = _convert(converter, _insert_after(OML, "SPM|", *sac))
    assert len(_of_type(bundle, "Observation")) == 1
    assert warnings == ["OML^O21 order 1: a SAC container and its OBX is not converted"]


def test_without_pid_no_order_resource_is_made(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _drop(OML, "PID|", "PV1|"))
    assert not _of_type(bundle, "ServiceRequest") and not _of_type(bundle, "Specimen")
    assert warnings == [
        f"OML^O21 order {n}: no PID, so no ServiceRequest (its subject is required)" for n in (1, 2)
    ]
