"""Pharmacy/treatment orders OMP^O09 (structure OMP_O09, v2.5+), routed to the RDE_O11 root,
on the synthetic sample samples/hl7v2/OMP_O09_pharmacy-order.hl7 (two orders: enoxaparin with
TQ1, NTE, RXR with a site and an OBX with its NTE; paracetamol with a TQ1 condition).

An OMP ORDER is an RDE ORDER without its RXE part: ORC [TIMING] RXO [NTE] {RXR} [COMPONENT]
[OBSERVATION] [FT1] [BLG]. The golden test pins the whole bundle; these check that the RDE
root reads it as it reads an RDE order, with the identity ORM and RDE give the request, so an
OMP order, the pharmacy's RDE encoding of it and an ORM^O01 RXO order are one
MedicationRequest."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.mappings.pharmacy_support import medication_request as _request
from tests.mappings.pharmacy_support import placer_of as _placer
from tests.support.hl7_edit import convert_one as _convert
from tests.support.hl7_edit import insert_after, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
OMP = (SAMPLES / "OMP_O09_pharmacy-order.hl7").read_bytes()
RDE = (SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7").read_bytes()
ORM = (SAMPLES / "ORM_O01_medication-order.hl7").read_bytes()

ORDER_1, ORDER_2 = "PRESC-2024-1105-01", "PRESC-2024-1105-02"
#: The RDE sample's first order (ORC-2 with its namespace).
RDE_PLACER = "PHA-2024-0316-11^DPI-ERABLE^1.2.250.1.999.2.20^ISO"


def _drop(data: bytes, prefix: str, occurrence: int = 1) -> bytes:
    """``data`` without the ``occurrence``-th line starting with ``prefix``."""
    found = lines(data)
    hits = [n for n, line in enumerate(found) if line.startswith(prefix)]
    del found[hits[occurrence - 1]]
    return message(found)


def _encoded(omp: bytes) -> bytes:
    """The pharmacy's RDE^O11 encoding of the OMP's orders: the same ORC and RXO, an RXE
    after the order's RXR."""
    rde = set_field(omp, "MSH", 9, "RDE^O11^RDE_O11")
    rde = insert_after(
        rde, "RXR|SC", "RXE||B01AB05^Énoxaparine^ATC|40||mg^milligramme^UCUM", occurrence=1
    )
    return insert_after(
        rde, "RXR|PO", "RXE||N02BE01^Paracétamol^ATC|1000||mg^milligramme^UCUM", occurrence=1
    )


# ----------------------------------------------------------------------------------------
# Routing: OMP^O09 converts with the RDE_O11 root (it was refused, HL7 error 201).


def test_omp_is_routed_to_the_rde_root(converter: Converter, r4validator: R4Validator) -> None:
    [conversion] = converter.convert(OMP)
    assert conversion.root_template == "hl7v2/messages/RDE_O11.j2"
    assert conversion.warnings == ()
    bundle = conversion.bundle
    assert [_placer(r) for r in resources(bundle, "MedicationRequest")] == [ORDER_1, ORDER_2]
    assert len(resources(bundle, "Observation")) == 1
    assert len(resources(bundle, "Patient")) == len(resources(bundle, "Encounter")) == 1
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6", "2.7", "2.8"])
def test_the_orders_are_the_same_in_every_version(converter: Converter, version: str) -> None:
    reference, _ = _convert(converter, OMP)
    bundle, warnings = _convert(converter, set_field(OMP, "MSH", 12, version))
    assert warnings == []
    for rtype in ("MedicationRequest", "Observation"):
        assert resources(bundle, rtype) == resources(reference, rtype), rtype


# ----------------------------------------------------------------------------------------
# One request per order: OMP, its RDE encoding and an ORM^O01 share its id.


@pytest.mark.parametrize("placer", [ORDER_1, ORDER_2])
def test_an_omp_order_and_its_rde_encoding_are_one_medication_request(
    converter: Converter, placer: str
) -> None:
    omp, _ = _convert(converter, OMP)
    rde, warnings = _convert(converter, _encoded(OMP))
    assert warnings == []
    ordered, encoded = _request(omp, placer), _request(rde, placer)
    assert ordered["id"] == encoded["id"]
    assert ordered["authoredOn"] == encoded["authoredOn"]
    assert ordered["dosageInstruction"][0]["timing"] == encoded["dosageInstruction"][0]["timing"]


def test_the_rde_sample_and_an_omp_for_its_placer_number_are_one_medication_request(
    converter: Converter,
) -> None:
    """The RDE sample's first order and an OMP carrying its placer number (ORC-2 with its
    namespace): separate messages, one request."""
    rde, _ = _convert(converter, RDE)
    omp, _ = _convert(converter, set_field(OMP, "ORC", 2, RDE_PLACER))
    placer = RDE_PLACER.split("^")[0]
    assert _request(omp, placer)["id"] == _request(rde, placer)["id"]
    # The ORM sample's order with that placer number is the same request too.
    orm, _ = _convert(converter, ORM)
    assert _request(orm, placer)["id"] == _request(rde, placer)["id"]


def test_another_placer_namespace_is_another_request(converter: Converter) -> None:
    rde, _ = _convert(converter, RDE)
    other = RDE_PLACER.replace("1.2.250.1.999.2.20", "1.2.250.1.999.2.21")
    omp, _ = _convert(converter, set_field(OMP, "ORC", 2, other))
    placer = RDE_PLACER.split("^")[0]
    assert _request(omp, placer)["id"] != _request(rde, placer)["id"]


# ----------------------------------------------------------------------------------------
# The order's segments: TQ1 timing, RXO, NTE, RXR, OBX; status from ORC as in ORM.


def test_the_first_order_of_the_sample(converter: Converter) -> None:
    bundle, _ = _convert(converter, OMP)
    request = _request(bundle, ORDER_1)
    assert request["status"] == "active"  # ORC-1 NW, ORC-5 empty
    assert request["intent"] == "original-order"
    assert request["priority"] == "routine"  # TQ1-9
    assert request["authoredOn"] == "2024-11-05T10:12:00+01:00"  # ORC-9 of an NW
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "B01AB05"  # RXO-1
    assert request["note"] == [
        {"text": "Prévention de la maladie thromboembolique veineuse : patient alité."}
    ]
    [dosage] = request["dosageInstruction"]
    assert dosage["text"] == "1 injection sous-cutanée par jour à 18 h"  # TQ1-11
    assert dosage["timing"]["repeat"] == {
        "boundsPeriod": {"start": "2024-11-05T18:00:00+01:00", "end": "2024-11-14T18:00:00+01:00"},
        "count": 10,
        "frequency": 1,  # TQ1-3 Q24H (RepeatPattern-TimingRepeat-Passerelle)
        "period": 24,
        "periodUnit": "h",
        "timeOfDay": ["18:00:00"],
    }
    assert dosage["route"]["coding"][0]["code"] == "SQ"  # RXR-1 SC
    assert dosage["site"]["coding"][0]["code"] == "ADB"  # RXR-2
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 40  # RXO-2, no RXO-3
    assert dosage["maxDosePerPeriod"]["numerator"]["value"] == 40  # RXO-23
    assert request["dispenseRequest"] == {
        "quantity": {
            "value": 10,
            "unit": "seringue préremplie",
            "system": "http://unitsofmeasure.org",
            "code": "{syringe}",
        },
        "numberOfRepeatsAllowed": 0,
    }
    assert request["substitution"]["allowedCodeableConcept"]["coding"][0]["code"] == "N"
    [observation] = resources(bundle, "Observation")
    assert request["supportingInformation"] == [{"reference": f"Observation/{observation['id']}"}]
    assert observation["note"] == [{"text": "Pesée du matin, à jeun."}]


def test_the_second_order_keeps_its_own_timing_and_route(converter: Converter) -> None:
    bundle, _ = _convert(converter, OMP)
    request = _request(bundle, ORDER_2)
    [dosage] = request["dosageInstruction"]
    assert dosage["timing"]["code"]["coding"][0]["code"] == "Q6H"
    assert dosage["additionalInstruction"] == [{"text": "Si douleur (EVA > 3)"}]  # TQ1-10
    assert dosage["route"]["coding"][0]["code"] == "PO"
    assert "site" not in dosage
    assert "supportingInformation" not in request
    assert "note" not in request


@pytest.mark.parametrize(
    ("control", "status", "expected"),
    [
        ("NW", "", "active"),
        ("OC", "", "cancelled"),
        ("CA", "CA", "cancelled"),
        ("DC", "", "stopped"),
        ("NW", "CM", "completed"),
    ],
)
def test_status_comes_from_orc_as_in_orm(
    converter: Converter, control: str, status: str, expected: str
) -> None:
    omp = set_field(set_field(OMP, "ORC", 1, control), "ORC", 5, status)
    bundle, _ = _convert(converter, omp)
    assert _request(bundle, ORDER_1)["status"] == expected


def test_only_the_first_rxr_and_tq1_are_read(converter: Converter) -> None:
    omp = insert_after(OMP, "RXR|SC", "RXR|IM^Voie intramusculaire^HL70162")
    omp = insert_after(omp, "TQ1|", "TQ1|2||Q12H&Toutes les 12 heures&HL70335")
    bundle, _ = _convert(converter, omp)
    [dosage] = _request(bundle, ORDER_1)["dosageInstruction"]
    assert dosage["route"]["coding"][0]["code"] == "SQ"
    assert dosage["timing"]["code"]["coding"][0]["code"] == "Q24H"


def test_the_ft1_and_blg_of_an_order_do_not_take_its_notes(converter: Converter) -> None:
    """An NTE after FT1 / BLG belongs to no segment the root converts."""
    omp = insert_after(OMP, "RXR|PO", "BLG|D", "NTE|1|P|Note de facturation")
    bundle, warnings = _convert(converter, omp)
    assert warnings == []
    assert "note" not in _request(bundle, ORDER_2)


# ----------------------------------------------------------------------------------------
# What is not converted is a warning; a missing medication is refused with its field.

#: (case, message, warning prefix).
WARNING_CASES = [
    (
        "RXC component",
        insert_after(OMP, "RXR|PO", "RXC|B|N02BE01^Paracétamol^ATC|1000|mg^milligramme^UCUM"),
        "ORDER 2: 1 RXC component(s) not converted",
    ),
    ("ORDER without RXO", _drop(OMP, "RXO|", 2), "ORDER 2: neither RXE nor RXO"),
    ("OMP without PID", _drop(OMP, "PID|"), "ORDER 1: no PID, so no MedicationRequest"),
    (
        "OMP without ORC",
        message([line for line in lines(OMP) if line[:3] in ("MSH", "PID", "PV1")]),
        "OMP^O09 without any ORC",
    ),
]


@pytest.mark.parametrize(
    ("data", "warning"), [c[1:] for c in WARNING_CASES], ids=[c[0] for c in WARNING_CASES]
)
def test_what_is_not_converted_is_a_warning(
    converter: Converter, data: bytes, warning: str
) -> None:
    _, warnings = _convert(converter, data)
    assert any(w.startswith(warning) for w in warnings), warnings


def test_a_missing_medication_is_refused_with_its_field(converter: Converter) -> None:
    omp = set_field(OMP, "RXO", 1, "", 1)
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    for conv in (converter, lenient):
        with pytest.raises(MappingError) as raised:
            conv.convert(omp)
        assert raised.value.location == "RXO-1"
        assert raised.value.reason == "the requested give code (RXO-1) is missing"
