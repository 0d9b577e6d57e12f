"""Laboratory and general orders (ORM^O01, OML^O21, OMG^O19): a review, on the samples of
samples/hl7v2 edited field by field.

- An order number (EI) keeps its authority: the same number under the same namespace with
  two universal ids is two orders. (`123^LAB` and `123^LAB^1.2.250.1.1^ISO` stay two
  scopes unless the site's AssigningAuthority map names LAB's OID: resolving a namespace
  through the message header was tried and left out, since it would make an order's id
  depend on which header fields each sender fills.)
- ORC-5 A (some results available) is not in the IG's OrderStatus map: the request was
  written "unknown" over an active one; OrderStatus-ServiceRequest.status-Passerelle keeps it
  active.
- A child order naming its parent in ORC-8 only (ORC-1 CH, OBR-29 empty) had no basedOn.
- SPM-21 (specimen reject reason) was dropped: a rejected specimen read as fit for testing.
"""

from __future__ import annotations

from pathlib import Path

from converter import Converter
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ORM = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()
VXU = (SAMPLES / "VXU_V04_immunization.hl7").read_bytes()
OML = (SAMPLES / "OML_O21_lab-order.hl7").read_bytes()


def _one(converter: Converter, data: bytes, rtype: str) -> dict[str, object]:
    bundle, _ = convert_one(converter, data)
    found = resources(bundle, rtype)
    assert found, f"no {rtype}"
    return found[0]


def _orm_numbered(number: str, sender: str = "LAB^1.2.250.1.1^ISO", control: str = "1") -> bytes:
    """The radiology ORM with ORC-2 and OBR-2 set to ``number``, MSH-3 to ``sender``."""
    data = set_field(set_field(ORM, "ORC", 2, number), "OBR", 2, number)
    return set_field(set_field(data, "MSH", 3, sender), "MSH", 10, f"ORM-{control}")


# ----------------------------------------------------------------------------------------
# One order number, two spellings of its authority.


def test_order_numbers_of_two_authorities_stay_two_orders(converter: Converter) -> None:
    """The same namespace with another universal id is another authority, and a namespace
    alone is a third scope (without an AssigningAuthority row naming its OID)."""
    ours = _one(converter, _orm_numbered("123^LAB^1.2.250.1.1^ISO"), "ServiceRequest")["id"]
    other = _one(converter, _orm_numbered("123^LAB^9.9.9^ISO"), "ServiceRequest")["id"]
    alone = _one(converter, _orm_numbered("123^LAB"), "ServiceRequest")["id"]
    assert len({ours, other, alone}) == 3


# ----------------------------------------------------------------------------------------
# Order status, parent orders, rejected specimens.


def test_order_status_some_results_available_keeps_the_order_active(
    converter: Converter,
) -> None:
    """ORC-5 A (table 0038: some, but not all, results available) has no row in the IG's
    OrderStatus map: the order was written "unknown", with a warning, over an active one."""
    data = set_field(set_field(ORM, "ORC", 1, "SC"), "ORC", 5, "A")
    bundle, warnings = convert_one(converter, data)
    [request] = resources(bundle, "ServiceRequest")
    assert request["status"] == "active"
    assert not [w for w in warnings if "OrderStatus" in w]
    [before] = resources(convert_one(converter, ORM)[0], "ServiceRequest")
    assert request["id"] == before["id"]


def test_child_order_names_its_parent_from_orc_8(converter: Converter) -> None:
    """ORC-1 CH with the parent in ORC-8 (EIP, as OBR-29) and OBR-29 empty: basedOn the
    parent's placer number, as OBR-29 gives it."""
    parent_orc = next(line for line in lines(ORM) if line.startswith("ORC|"))
    parent_obr = next(line for line in lines(ORM) if line.startswith("OBR|"))
    child_orc = lines(
        set_field(
            set_field(
                message([parent_orc.replace("RAD-2024-0315-07", "RAD-CHILD-1")]), "ORC", 1, "CH"
            ),
            "ORC",
            8,
            "RAD-2024-0315-07&DPI-ERABLE&1.2.250.1.999.2.20&ISO",
        )
    )
    data = message([*lines(ORM), *child_orc, parent_obr.replace("RAD-2024-0315-07", "RAD-CHILD-1")])
    bundle, _ = convert_one(converter, data)
    parent, child = resources(bundle, "ServiceRequest")
    assert "basedOn" not in parent
    [based_on] = child["basedOn"]
    assert based_on["type"] == "ServiceRequest"
    assert based_on["identifier"]["value"] == "RAD-2024-0315-07"
    assert based_on["identifier"]["system"] == "urn:oid:1.2.250.1.999.2.20"
    assert based_on["identifier"]["type"]["coding"][0]["code"] == "PLAC"


def test_rejected_specimen_is_unsatisfactory_with_its_reasons(
    converter: Converter, r4validator: R4Validator
) -> None:
    """SPM-21 (reject reason) was dropped: a specimen the laboratory refused read as
    available (SPM-20 Y) or said nothing at all."""
    data = set_field(set_field(OML, "SPM", 20, "Y"), "SPM", 21, "RB^^HL70490~^Tube non étiqueté")
    bundle, _ = convert_one(converter, data)
    [specimen] = resources(bundle, "Specimen")
    assert specimen["status"] == "unsatisfactory"
    assert [note["text"] for note in specimen["note"]] == [
        "Specimen rejected: Broken container",
        "Specimen rejected: Tube non étiqueté",
    ]
    [accepted] = resources(convert_one(converter, set_field(OML, "SPM", 20, "Y"))[0], "Specimen")
    assert accepted["status"] == "available"
    assert "note" not in accepted
    assert accepted["id"] == specimen["id"]
    assert r4validator.validate(bundle) == []


def test_pharmacy_order_status_some_results_available_is_active(converter: Converter) -> None:
    """ORC-5 A on an RDE: the MedicationRequest stays active (it was written without a
    status the map knew, with a warning)."""
    rde = (SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7").read_bytes()
    bundle, warnings = convert_one(converter, set_field(rde, "ORC", 5, "A"))
    requests = resources(bundle, "MedicationRequest")
    assert requests and requests[0]["status"] == "active"
    assert not [w for w in warnings if "OrderStatus" in w]
