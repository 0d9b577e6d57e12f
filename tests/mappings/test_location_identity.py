"""PV1-3 → Location: the identity of a bed keeps the position of its missing parts.

Empty parts drop out of an ``_identity``; a bed under a room without point of care
(``^A^1``) and a bed under a point of care without room (``A^^1``) were one Location,
whichever message came last renaming the other's parents. Only these two shapes changed
id: the goldens' beds, with their full path, keep theirs.
"""

from __future__ import annotations

from typing import Any

from converter import Converter
from tests.support.hl7_edit import convert_one, message, resources

FACILITY = "HOP-PARIS-EST&1.2.250.1.999.2.1&ISO"


def _locations(converter: Converter, pl: str) -> dict[str, dict[str, Any]]:
    data = message(
        [
            "MSH|^~\\&|GAM|HOP-PARIS-EST|PASSERELLE|GHT|20241125221045+0100||ADT^A01^ADT_A01"
            "|LOC-1|P|2.5.1",
            "EVN|A01|20241125221045+0100",
            f"PID|1||PE1^^^{FACILITY}^MR||MERCIER^Noël||19840316|M",
            f"PV1|1|I|{pl}|||||||||||||||PE2024^^^{FACILITY}^VN",
        ]
    )
    bundle, _ = convert_one(converter, data)
    return {loc["physicalType"]["coding"][0]["code"]: loc for loc in resources(bundle, "Location")}


def test_beds_missing_their_room_or_their_point_of_care_are_two_locations(
    converter: Converter,
) -> None:
    no_poc = _locations(converter, f"^A^1^{FACILITY}")
    no_room = _locations(converter, f"A^^1^{FACILITY}")
    assert no_poc["bd"]["id"] != no_room["bd"]["id"]
    assert no_poc["ro"]["name"] == "A" and "wa" not in no_poc
    assert no_room["wa"]["name"] == "A" and "ro" not in no_room
    full = _locations(converter, f"A^A^1^{FACILITY}")
    assert full["bd"]["id"] not in (no_poc["bd"]["id"], no_room["bd"]["id"])
