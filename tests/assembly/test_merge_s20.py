"""One identifier, one name: a resource emitted twice gathers them, whatever each mention
wrote of them (session 20).

A doctor named with his RPPS typed in PV1-7 (XCN.13 ``RPPS``) and untyped in EVN-5 was a
Practitioner holding the same identifier twice, one with its type and one without; a
CDA author named with and without ``Dr`` held the name twice. The merge appended every
list item that was not identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter import Converter, ConverterConfig
from converter.assembly.merge import merge_into
from tests.support.hl7_edit import convert_one, resources, set_field

REPO = Path(__file__).resolve().parents[2]
A04 = REPO / "samples" / "hl7v2" / "ADT_A04_outpatient-registration.hl7"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
TYPED = {
    "type": {"coding": [{"system": "fr-core-cs-v2-0203", "code": "RPPS"}]},
    "system": RPPS,
    "value": "10104567896",
}
UNTYPED = {"system": RPPS, "value": "10104567896"}


def test_a_doctor_typed_in_pv1_and_untyped_in_evn_holds_his_rpps_once() -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    data = A04.read_bytes()
    for evn_5 in (
        # As the sample: XCN.13 left empty in EVN-5 (the untyped mention comes last).
        "10104567896^BLANC^Sebastien^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO",
        # And typed in EVN-5 only: the typed mention comes first.
        "10104567896^BLANC^Sebastien^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS",
    ):
        edited = set_field(data, "EVN", 5, evn_5)
        if evn_5.endswith("RPPS"):
            for field in (7, 17):
                edited = set_field(
                    edited,
                    "PV1",
                    field,
                    "10104567896^BLANC^Sebastien^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO",
                )
        bundle, _ = convert_one(converter, edited)
        [blanc] = [p for p in resources(bundle, "Practitioner") if "BLANC" in str(p["name"])]
        assert [i["value"] for i in blanc["identifier"]] == ["10104567896"]
        assert blanc["identifier"][0]["type"]["coding"][0]["code"] == "RPPS"
        assert len(blanc["name"]) == 1


def test_an_identifier_written_with_less_is_dropped_or_replaced_in_place() -> None:
    other = {"system": "urn:oid:1.2.250.1.999", "value": "X1"}
    target: dict[str, Any] = {"identifier": [dict(TYPED), dict(other)]}
    assert merge_into(target, {"identifier": [dict(UNTYPED)]}) == []
    assert target["identifier"] == [TYPED, other]

    # The held one is the smaller: the new one takes its place (the first mention's
    # position), with the new one's keys in the order its template wrote them.
    target = {"identifier": [dict(UNTYPED), dict(other)]}
    assert merge_into(target, {"identifier": [dict(TYPED)]}) == []
    assert target["identifier"] == [TYPED, other]
    assert list(target["identifier"][0]) == ["type", "system", "value"]


def test_objects_are_compared_key_by_key_lists_whole() -> None:
    with_text = {**TYPED, "type": {**TYPED["type"], "text": "RPPS"}}
    target: dict[str, Any] = {"identifier": [dict(with_text)]}
    merge_into(target, {"identifier": [dict(TYPED)]})
    assert target["identifier"] == [with_text]

    # ``given`` ["Jean"] is not within ["Jean", "Paul"]: two names, as before.
    jean = {"family": "DUPONT", "given": ["Jean"]}
    jean_paul = {"family": "DUPONT", "given": ["Jean", "Paul"]}
    target = {"name": [dict(jean_paul)]}
    merge_into(target, {"name": [dict(jean)]})
    assert target["name"] == [jean_paul, jean]


def test_items_differing_on_a_value_stay_two() -> None:
    official = {"use": "official", "family": "MARTIN", "given": ["Marie"]}
    maiden = {"use": "maiden", "family": "MARTIN", "given": ["Marie"]}
    target: dict[str, Any] = {"name": [dict(official)]}
    merge_into(target, {"name": [dict(maiden)]})
    assert target["name"] == [official, maiden]

    old = {**UNTYPED, "period": {"end": "2020"}}
    target = {"identifier": [dict(UNTYPED, period={"start": "2021"})]}
    merge_into(target, {"identifier": [dict(old)]})
    assert len(target["identifier"]) == 2


def test_a_name_with_its_prefix_gathers_the_same_name_without() -> None:
    dr = {"family": "Garnier", "given": ["Julien"], "prefix": ["Dr"]}
    target: dict[str, Any] = {"name": [dict(dr)]}
    merge_into(target, {"name": [{"family": "Garnier", "given": ["Julien"]}]})
    assert target["name"] == [dr]


def test_every_held_item_within_the_new_one_becomes_that_one() -> None:
    target: dict[str, Any] = {"identifier": [{"value": "1"}, {"system": "s"}, {"value": "2"}]}
    merge_into(target, {"identifier": [{"system": "s", "value": "1"}]})
    assert target["identifier"] == [{"system": "s", "value": "1"}, {"value": "2"}]


def test_other_lists_still_keep_every_item_not_identical() -> None:
    """Only identifiers and names are one thing however written: a telecom with and
    without its ``use`` is left as the sources wrote it."""
    phone = {"system": "phone", "value": "01"}
    target: dict[str, Any] = {"telecom": [dict(phone)]}
    merge_into(target, {"telecom": [{**phone, "use": "home"}]})
    assert target["telecom"] == [phone, {**phone, "use": "home"}]
