"""PV2-1 prior pending location → Encounter.location, status planned (IG PV2[Encounter]
row 1: location[5], "planned"; its undefined temporaryLocation extension is "false").

Not listed in a cancellation (A26 cancel pending transfer, which requires PV2-1: the
voided transfer's place), as PV1-42 is not; a place PV1-3 / PV1-42 already lists is not
listed a second time. Invented patient (tests/mappings/test_adt_visit_review.py builds
the messages); beds 1 (PV1-3), 5 (PV1-42) and 7 (PV2-1) tell the places apart."""

from __future__ import annotations

from typing import Any

from converter import Converter
from tests.mappings.test_adt_visit_review import CHU, _adt, _convert
from tests.support.hl7_edit import resources
from tests.support.r4validator import R4Validator

PENDING = f"CHIR^201^5^{CHU}"
PRIOR_PENDING = f"PNEUMO^410^7^{CHU}"


def _locations(
    converter: Converter, r4validator: R4Validator, event: str, structure: str, prior: str
) -> list[tuple[str, str]]:
    """(bed, status) of each Encounter.location."""
    data = _adt(event, structure=structure, pv1={42: PENDING}, pv2={1: prior})
    bundle, warnings = _convert(converter, data)
    assert r4validator.validate(bundle) == []
    assert warnings == []
    beds = {f"Location/{loc['id']}": loc["name"] for loc in resources(bundle, "Location")}
    (encounter,) = resources(bundle, "Encounter")
    listed: list[dict[str, Any]] = encounter["location"]
    return [(beds[entry["location"]["reference"]], entry["status"]) for entry in listed]


def test_the_prior_pending_location_is_planned_except_when_cancelled(
    converter: Converter, r4validator: R4Validator
) -> None:
    pending_transfer = _locations(converter, r4validator, "A15", "ADT_A15", PRIOR_PENDING)
    assert pending_transfer == [("1", "active"), ("5", "reserved"), ("7", "planned")]
    # A26 cancels the pending transfer: neither its pending nor its prior pending place.
    cancelled = _locations(converter, r4validator, "A26", "ADT_A21", PRIOR_PENDING)
    assert cancelled == [("1", "active")]


def test_a_place_already_listed_is_not_listed_again_as_planned(
    converter: Converter, r4validator: R4Validator
) -> None:
    # The transfer done (A02): the prior pending place is where the patient is now; and
    # one still pending (PV1-42) keeps its own status. A third place is planned.
    assert _locations(converter, r4validator, "A02", "ADT_A02", f"CARDIO^312^1^{CHU}") == [
        ("1", "active"),
        ("5", "reserved"),
    ]
    assert _locations(converter, r4validator, "A15", "ADT_A15", PENDING) == [
        ("1", "active"),
        ("5", "reserved"),
    ]
    assert _locations(converter, r4validator, "A02", "ADT_A02", PRIOR_PENDING)[-1] == (
        "7",
        "planned",
    )
